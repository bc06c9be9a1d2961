#ifndef LOADGEN_RUN_H
#define LOADGEN_RUN_H

/*
 * One run (a phase of load) driven from the main thread: it builds the
 * request templates, starts the workers (worker.h's DESIGN says what
 * crosses threads), starts them all at once when every connection is up,
 * stops them on Ctrl-C/SIGTERM or when one fails, prints a progress line
 * once a second when stderr is a terminal, joins them and merges their
 * results.
 */

#include "stats.h"
#include "worker.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct lg_result {
  struct lg_stats *stats;       /* merged over the workers; freed by lg_result_free */
  uint64_t appended_events;     /* acknowledged by appends in every phase */
  double duration_s;            /* the measured time */
  uint64_t rate_missed;         /* --rate: requests due but never sent (the client fell behind) */
  uint64_t acked_in_window;     /* subscribe: events acknowledged, due in the measured time */
  uint64_t window_from_ns, window_to_ns; /* the measured time (CLOCK_MONOTONIC); 0 when not run */
  bool interrupted;             /* Ctrl-C or SIGTERM */
  char failure[256];            /* why the run failed (a connection, a silent server), or "" */
};

/**
 * Makes run ready from the fields the caller set (opt, label, proto, addr,
 * authority, weights, items or requests or duration_s, warmup_s, rate,
 * threads, connections, concurrency, limits, prefill sizes, subs,
 * subscribers, sub_offset): computes the
 * rest and builds the prototype templates. Returns 0 or a negative errno.
 */
int lg_run_prepare(struct lg_run *run, uint32_t limit_stream, uint32_t limit_global);

/** Frees what lg_run_prepare allocated. */
void lg_run_deinit(struct lg_run *run);

/**
 * Runs it to the end on loop (the main thread's), filling *out. progress:
 * print the progress line. deadline_ns (monotonic; 0: none): then the run
 * is stopped as by Ctrl-C, and out->failure says so. Returns 0, or a
 * negative errno when the workers could not be started (out->failure says
 * why).
 */
int lg_run_execute(struct lg_run *run, uv_loop_t *loop, bool progress, uint64_t deadline_ns,
                   struct lg_result *out);

/** Frees out's memory. */
void lg_result_free(struct lg_result *out);

#endif
