#ifndef LOADGEN_STATS_H
#define LOADGEN_STATS_H

/*
 * Counters of one worker thread (or, merged, of a run): per operation the
 * requests that succeeded, events and bytes, conflicts, errors and a
 * latency histogram (microseconds), and the errors by what they were (gRPC
 * status name, HTTP status, timeout, reset stream, lost connection, bad
 * response), and what subscriptions delivered. Plain memory owned by one thread; merged after the join.
 */

#include "call.h"
#include "histogram.h"
#include "scenario.h"

#include <stdint.h>

#define LG_GRPC_STATUSES 17
#define LG_HTTP_STATUSES 600

struct lg_op_stats {
  uint64_t ok;                  /* requests that succeeded */
  uint64_t events;              /* events they wrote or read */
  uint64_t bytes;               /* response body bytes of successful reads */
  uint64_t conflicts;           /* append-occ: wrong expected version */
  uint64_t errors;              /* every other failure */
  struct lg_hist latency;       /* us, of every request that got an answer */
};

struct lg_stats {
  struct lg_op_stats op[LG_OP_COUNT];
  uint64_t grpc[LG_GRPC_STATUSES + 1];  /* the last one: statuses above 16 */
  uint64_t http[LG_HTTP_STATUSES];
  uint64_t timeouts, resets, closed, bad;
  uint64_t delivered;           /* events subscriptions delivered that count (lg_worker_delivered) */
  uint64_t delivered_bytes;     /* their SubscriptionResponse bytes */
  struct lg_hist delivery;      /* live subscribe: append-to-delivery latency, us */
  char first_error[256];        /* "NAME: message" of the first error */
};

/** Makes s empty. */
void lg_stats_init(struct lg_stats *s);

/** Counts a failed request by its reply (not a conflict). */
void lg_stats_error(struct lg_stats *s, const struct lg_reply *r);

/** Adds from to into (first_error: into's, else from's). */
void lg_stats_merge(struct lg_stats *into, const struct lg_stats *from);

/** The sum over every operation, latency histograms merged, into *total. */
void lg_stats_total(const struct lg_stats *s, struct lg_op_stats *total);

/** Calls fn for each kind of error that occurred, with its name and count. */
void lg_stats_each_error(const struct lg_stats *s,
                         void (*fn)(const char *name, uint64_t count, void *arg), void *arg);

#endif
