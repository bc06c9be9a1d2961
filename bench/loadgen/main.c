/*
 * eventflowdb-bench: a load generator for a running EventflowDB server
 * (issue 5). It drives many HTTP/2 connections with many concurrent gRPC
 * calls each, or HTTP/1.1 keep-alive connections, from one or more
 * threads, and reports throughput and latency (see --help, and README.md's
 * Benchmarks section).
 *
 * main() parses the options, resolves the target, runs the setup phases a
 * scenario needs (a probe of the global stream, a prefill), then the
 * measured run (run.h), and reports. Only main exits.
 */
#include "options.h"
#include "report.h"
#include "run.h"

#include "evf/clock.h"

#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXIT_OK 0
#define EXIT_FAILED 1
#define EXIT_USAGE 2

#define PREFILL_APPEND_BYTES (256 * 1024) /* at most about this much data per prefill append */

static int resolve(const struct lg_options *o, struct sockaddr_storage *out, char *why,
                   size_t why_len) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV};
  struct addrinfo *res = NULL;
  int rc = getaddrinfo(o->host, o->port, &hints, &res);
  if (rc != 0) {
    snprintf(why, why_len, "cannot resolve %s: %s", o->host, gai_strerror(rc));
    return -1;
  }
  memcpy(out, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  return 0;
}

/* The fields of a run every phase shares. */
static void base_run(struct lg_run *run, const struct lg_options *o,
                     const struct sockaddr_storage *addr, const char *label) {
  memset(run, 0, sizeof(*run));
  run->opt = o;
  run->label = label;
  run->proto = o->scenario->proto;
  run->addr = *addr;
  run->authority = o->target;
}

/*
 * Runs a setup phase, whose every request must succeed. Returns 0, or -1
 * with the reason in why. res is filled either way; the caller frees it.
 */
static int setup_phase(struct lg_run *run, uv_loop_t *loop, bool progress, uint64_t deadline,
                       uint32_t limit_stream, uint32_t limit_global, struct lg_result *res,
                       char *why, size_t why_len) {
  int rc = lg_run_prepare(run, limit_stream, limit_global);
  if (rc == 0)
    rc = lg_run_execute(run, loop, progress, deadline, res);
  else
    memset(res, 0, sizeof(*res));
  lg_run_deinit(run);
  if (rc != 0 && res->failure[0] == '\0')
    snprintf(res->failure, sizeof(res->failure), "cannot build the requests: %s", strerror(-rc));
  struct lg_op_stats t = {0};
  if (res->stats)
    lg_stats_total(res->stats, &t);
  if (rc == 0 && !res->failure[0] && !res->interrupted && !t.errors && t.ok == run->items)
    return 0;
  snprintf(why, why_len, "%s failed: %s", run->label,
           res->failure[0]      ? res->failure
           : res->interrupted   ? "interrupted"
           : t.errors           ? res->stats->first_error
                                : "not every request was answered");
  return -1;
}

/* Prints and writes the report; returns the exit code. */
static int report(const struct lg_options *o, const unsigned *weights, const struct lg_result *res,
                  uint64_t prefill_events, double prefill_s, const char *setup_failure) {
  struct lg_op_stats t;
  lg_stats_total(res->stats, &t);
  double error_rate = lg_report_error_rate(res);
  struct lg_report r = {.opt = o, .result = res, .weights = weights,
                        .prefill_events = prefill_events, .prefill_s = prefill_s,
                        .failure = setup_failure, .exit_code = EXIT_OK};
  char why[320];
  if (r.failure != NULL) {
  } else if (res->failure[0]) {
    r.failure = res->failure;
  } else if (t.ok + t.conflicts + t.errors == 0) {
    r.failure = "no request completed in the measured time";
  } else if (error_rate > o->max_error_rate) {
    snprintf(why, sizeof(why), "error rate %.4f is above --max-error-rate %g", error_rate,
             o->max_error_rate);
    r.failure = why;
  }
  if (r.failure)
    r.exit_code = EXIT_FAILED;
  if (!o->quiet)
    lg_report_print(stdout, &r);
  else if (r.failure)
    fprintf(stderr, "eventflowdb-bench: %s\n", r.failure);
  int rc;
  if (o->json_path && (rc = lg_report_json(o->json_path, &r)) != 0) {
    fprintf(stderr, "eventflowdb-bench: cannot write %s: %s\n", o->json_path, strerror(-rc));
    r.exit_code = EXIT_FAILED;
  }
  return r.exit_code;
}

int main(int argc, char **argv) {
  struct lg_options o;
  switch (lg_options_parse(argc, argv, &o)) {
  case LG_PARSE_HELP:
    lg_options_usage(stdout);
    return EXIT_OK;
  case LG_PARSE_BAD:
    return EXIT_USAGE;
  case LG_PARSE_OK:
    break;
  }
  signal(SIGPIPE, SIG_IGN);
  unsigned weights[LG_OP_COUNT] = {0};
  o.scenario->weights(&o, weights);
  bool progress = !o.quiet && isatty(STDERR_FILENO);
  uint64_t deadline = o.max_time_s > 0 ? evf_monotonic_ns() + (uint64_t)(o.max_time_s * 1e9) : 0;
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct lg_result res = {0};
  char why[400] = "";
  struct sockaddr_storage addr;
  int failed = resolve(&o, &addr, why, sizeof(why));

  /* Stream reads need their streams written; global reads need a store that is not empty. */
  bool prefill = weights[LG_OP_READ_STREAM] && o.prefill > 0;
  if (!failed && !prefill && weights[LG_OP_READ_GLOBAL] && o.prefill > 0) {
    struct lg_run probe;
    base_run(&probe, &o, &addr, "probe");
    probe.weights[LG_OP_READ_GLOBAL] = 1;
    probe.items = 1;
    probe.threads = probe.connections = probe.concurrency = 1;
    failed = setup_phase(&probe, &loop, false, deadline, 1, 1, &res, why, sizeof(why));
    struct lg_op_stats t = {0};
    if (res.stats)
      lg_stats_total(res.stats, &t);
    prefill = !failed && t.events == 0;
    lg_result_free(&res);
    res = (struct lg_result){0};
  }
  uint64_t prefill_events = 0;
  double prefill_s = 0;
  if (!failed && prefill) {
    struct lg_run fill;
    base_run(&fill, &o, &addr, "prefill");
    fill.weights[LG_OP_PREFILL] = 1;
    uint64_t per_append = PREFILL_APPEND_BYTES / ((uint64_t)o.event_size + 64);
    fill.prefill_chunk = (uint32_t)(per_append < 1 ? 1 : per_append < o.prefill ? per_append : o.prefill);
    fill.prefill_per_stream = (o.prefill + fill.prefill_chunk - 1) / fill.prefill_chunk;
    fill.prefill_last = o.prefill - (fill.prefill_per_stream - 1) * fill.prefill_chunk;
    fill.items = (uint64_t)o.streams * fill.prefill_per_stream;
    fill.threads = 1;
    fill.connections = o.scenario->proto == LG_PROTO_HTTP ? 16 : 4;
    fill.concurrency = 16;
    if (!o.quiet)
      fprintf(stderr, "eventflowdb-bench: prefill: %u events into each of %u streams...\n",
              o.prefill, o.streams);
    uint64_t t0 = evf_monotonic_ns();
    failed = setup_phase(&fill, &loop, progress, deadline, o.limit_stream, o.limit_global, &res,
                         why, sizeof(why));
    prefill_s = (double)(evf_monotonic_ns() - t0) / 1e9;
    prefill_events = res.appended_events;
    lg_result_free(&res);
    res = (struct lg_result){0};
  }

  if (!failed) {
    struct lg_run run;
    base_run(&run, &o, &addr, "measure");
    memcpy(run.weights, weights, sizeof(weights));
    run.requests = o.requests;
    run.duration_s = o.duration_s;
    run.warmup_s = o.warmup_s;
    run.rate = o.rate;
    run.threads = o.threads;
    run.connections = o.connections;
    run.concurrency = o.concurrency;
    int rc = lg_run_prepare(&run, o.limit_stream, o.limit_global);
    if (rc == 0) {
      lg_run_execute(&run, &loop, progress, deadline, &res);
    } else {
      snprintf(why, sizeof(why), "cannot build the requests: %s", strerror(-rc));
      failed = -1;
    }
    lg_run_deinit(&run);
  }
  if (res.stats == NULL) { /* nothing was measured: report the failure with empty figures */
    res.stats = malloc(sizeof(*res.stats));
    if (res.stats == NULL) {
      fprintf(stderr, "eventflowdb-bench: %s\n", failed ? why : "out of memory");
      return EXIT_FAILED;
    }
    lg_stats_init(res.stats);
  }
  int code = report(&o, weights, &res, prefill_events, prefill_s, failed ? why : NULL);
  lg_result_free(&res);
  uv_loop_close(&loop);
  return code;
}
