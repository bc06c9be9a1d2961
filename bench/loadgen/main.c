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

static int resolve(const struct lg_options *o, struct sockaddr_storage *out) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV};
  struct addrinfo *res = NULL;
  int rc = getaddrinfo(o->host, o->port, &hints, &res);
  if (rc != 0) {
    fprintf(stderr, "eventflowdb-bench: cannot resolve %s: %s\n", o->host, gai_strerror(rc));
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

/* Runs a setup phase (all its requests counted); returns 0, or -1 with a message printed. */
static int setup_phase(struct lg_run *run, uv_loop_t *loop, bool progress, uint32_t limit_stream,
                       uint32_t limit_global, struct lg_result *res) {
  int rc = lg_run_prepare(run, limit_stream, limit_global);
  if (rc != 0) {
    fprintf(stderr, "eventflowdb-bench: %s: cannot build the requests: %s\n", run->label,
            strerror(-rc));
    lg_run_deinit(run);
    return -1;
  }
  lg_run_execute(run, loop, progress, res);
  lg_run_deinit(run);
  struct lg_op_stats t;
  lg_stats_total(res->stats, &t);
  if (res->failure[0] || res->interrupted || t.errors || t.ok != run->items) {
    fprintf(stderr, "eventflowdb-bench: %s failed: %s\n", run->label,
            res->failure[0]       ? res->failure
            : res->interrupted    ? "interrupted"
            : res->stats->first_error[0] ? res->stats->first_error
                                  : "not every request was answered");
    return -1;
  }
  return 0;
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
  struct sockaddr_storage addr;
  if (resolve(&o, &addr) != 0)
    return EXIT_FAILED;
  unsigned weights[LG_OP_COUNT] = {0};
  o.scenario->weights(&o, weights);
  bool progress = !o.quiet && isatty(STDERR_FILENO);
  uv_loop_t loop;
  uv_loop_init(&loop);

  /* Stream reads need their streams written; global reads need a store that is not empty. */
  bool prefill = weights[LG_OP_READ_STREAM] && o.prefill > 0;
  if (!prefill && weights[LG_OP_READ_GLOBAL] && o.prefill > 0) {
    struct lg_run probe;
    struct lg_result res;
    base_run(&probe, &o, &addr, "probe");
    probe.weights[LG_OP_READ_GLOBAL] = 1;
    probe.items = 1;
    probe.threads = probe.connections = probe.concurrency = 1;
    int rc = setup_phase(&probe, &loop, false, 1, 1, &res);
    struct lg_op_stats t;
    lg_stats_total(res.stats, &t);
    prefill = rc == 0 && t.events == 0;
    lg_result_free(&res);
    if (rc != 0)
      return EXIT_FAILED;
  }
  uint64_t prefill_events = 0;
  double prefill_s = 0;
  if (prefill) {
    struct lg_run fill;
    struct lg_result res;
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
    int rc = setup_phase(&fill, &loop, progress, o.limit_stream, o.limit_global, &res);
    prefill_s = (double)(evf_monotonic_ns() - t0) / 1e9;
    prefill_events = res.appended_events;
    lg_result_free(&res);
    if (rc != 0)
      return EXIT_FAILED;
  }

  struct lg_run run;
  struct lg_result res;
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
  if (rc != 0) {
    fprintf(stderr, "eventflowdb-bench: cannot build the requests: %s\n", strerror(-rc));
    return EXIT_FAILED;
  }
  lg_run_execute(&run, &loop, progress, &res);
  lg_run_deinit(&run);

  struct lg_op_stats t;
  lg_stats_total(res.stats, &t);
  double error_rate = lg_report_error_rate(&res);
  struct lg_report report = {.opt = &o, .result = &res, .weights = weights,
                             .prefill_events = prefill_events, .prefill_s = prefill_s,
                             .exit_code = EXIT_OK};
  char why[320];
  if (res.failure[0]) {
    report.failure = res.failure;
  } else if (t.ok + t.conflicts + t.errors == 0) {
    report.failure = "no request completed in the measured time";
  } else if (error_rate > o.max_error_rate) {
    snprintf(why, sizeof(why), "error rate %.4f is above --max-error-rate %g", error_rate,
             o.max_error_rate);
    report.failure = why;
  }
  if (report.failure)
    report.exit_code = EXIT_FAILED;
  if (!o.quiet)
    lg_report_print(stdout, &report);
  else if (report.failure)
    fprintf(stderr, "eventflowdb-bench: %s\n", report.failure);
  if (o.json_path && (rc = lg_report_json(o.json_path, &report)) != 0) {
    fprintf(stderr, "eventflowdb-bench: cannot write %s: %s\n", o.json_path, strerror(-rc));
    report.exit_code = EXIT_FAILED;
  }
  lg_result_free(&res);
  uv_loop_close(&loop);
  return report.exit_code;
}
