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

#include <inttypes.h>
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

/* One request of op to learn about the store; *events: what it counted. Returns 0 or -1 (why). */
static int probe(const struct lg_options *o, const struct sockaddr_storage *addr, uv_loop_t *loop,
                 uint64_t deadline, enum lg_op_id op, uint64_t *events, char *why, size_t why_len) {
  struct lg_run run;
  struct lg_result res;
  base_run(&run, o, addr, "probe");
  run.weights[op] = 1;
  run.items = 1;
  run.threads = run.connections = run.concurrency = 1;
  int failed = setup_phase(&run, loop, false, deadline, 1, 1, &res, why, why_len);
  struct lg_op_stats t = {0};
  if (res.stats)
    lg_stats_total(res.stats, &t);
  *events = t.events;
  lg_result_free(&res);
  return failed;
}

/* Subscribe scenarios: why the subscribers did not deliver what they owe, into why; or false. */
static bool delivery_failed(const struct lg_options *o, const struct lg_report *r, char *why,
                            size_t len) {
  const struct lg_stats *st = r->result->stats;
  uint64_t want = r->delivery_owed * o->subscribers, got = st->delivered;
  bool live = o->scenario->subs == LG_SUBS_LIVE;
  if (!live && st->op[LG_OP_SUBSCRIBE].ok < o->subscribers) {
    snprintf(why, len, "%" PRIu64 " of %u subscribers caught up", st->op[LG_OP_SUBSCRIBE].ok,
             o->subscribers);
    return true;
  }
  /* Catch-up: events appended meanwhile by someone else are delivered too. */
  if (got == want || (!live && got > want))
    return false;
  snprintf(why, len,
           "the subscribers delivered %" PRIu64 " events, %s %" PRIu64 " (%u x %" PRIu64 " %s)",
           got, got < want ? "short of" : "more than", want, o->subscribers, r->delivery_owed,
           live ? "acknowledged appends due in the measured time" : "events stored");
  return true;
}

/* Prints and writes the report; returns the exit code. */
static int report(const struct lg_options *o, const unsigned *weights, const struct lg_result *res,
                  uint64_t prefill_events, double prefill_s, uint64_t owed,
                  const char *setup_failure) {
  struct lg_op_stats t;
  lg_stats_total(res->stats, &t);
  double error_rate = lg_report_error_rate(res);
  struct lg_report r = {.opt = o, .result = res, .weights = weights,
                        .prefill_events = prefill_events, .prefill_s = prefill_s,
                        .delivery_owed = owed, .failure = setup_failure, .exit_code = EXIT_OK};
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
  } else if (o->scenario->subs != LG_SUBS_NONE && !res->interrupted &&
             delivery_failed(o, &r, why, sizeof(why))) {
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

  /*
   * Stream reads need their streams written; global reads and catch-up
   * subscriptions need a store that is not empty. Live subscriptions start
   * at its end: its event count is a position at or before the last one.
   */
  bool prefill = weights[LG_OP_READ_STREAM] && o.prefill > 0;
  enum lg_subs subs = o.scenario->subs;
  uint64_t stored = 0;
  if (!failed && !prefill && weights[LG_OP_READ_GLOBAL] && o.prefill > 0) {
    uint64_t read;
    failed = probe(&o, &addr, &loop, deadline, LG_OP_READ_GLOBAL, &read, why, sizeof(why));
    prefill = !failed && read == 0;
  } else if (!failed && subs != LG_SUBS_NONE) {
    failed = probe(&o, &addr, &loop, deadline, LG_OP_EVENT_COUNT, &stored, why, sizeof(why));
    prefill = !failed && subs == LG_SUBS_CATCH_UP && stored == 0 && o.prefill > 0;
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
    run.subs = subs;
    run.subscribers = subs != LG_SUBS_NONE ? o.subscribers : 0;
    run.sub_offset = subs == LG_SUBS_LIVE ? stored : 0;
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
  uint64_t owed = subs == LG_SUBS_LIVE       ? res.acked_in_window
                  : subs == LG_SUBS_CATCH_UP ? stored + prefill_events
                                             : 0;
  int code = report(&o, weights, &res, prefill_events, prefill_s, owed, failed ? why : NULL);
  lg_result_free(&res);
  uv_loop_close(&loop);
  return code;
}
