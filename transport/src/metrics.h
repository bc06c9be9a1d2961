#ifndef TRANSPORT_METRICS_H
#define TRANSPORT_METRICS_H

/*
 * DESIGN
 * Prometheus metrics (text exposition format 0.0.4) for GET /metrics.
 *
 * Each shard's tp_server embeds one struct tp_metrics. Only that shard's
 * thread writes it (the tp_metrics_* counting calls below); any thread
 * reads it while rendering, without a lock: every field is an atomic with
 * relaxed order, and its single writer adds with a load and a store (no
 * locked instruction on the request path). tp_metrics_render() sums the
 * shards' counters, reads the engine's statistics (store_shard_stats and
 * the totals) and the process figures from /proc, and writes the text.
 *
 * Wiring, for the server:
 *   - struct tp_server has `struct tp_metrics metrics;`; main's thread calls
 *     tp_metrics_init() on each before store_start() (another shard may
 *     render it as soon as its own thread runs).
 *   - gRPC calls and appends are counted in grpc.c and rpc.c; the HTTP
 *     server calls tp_metrics_http_request() once per answered request and
 *     tp_metrics_append() once per answered append.
 *   - Whoever opens or closes a connection calls tp_metrics_connections()
 *     on its shard's metrics, with +1 or -1.
 *   - GET /metrics answers 200 with TP_METRICS_CONTENT_TYPE and the text of
 *     tp_metrics_render(), given every shard's metrics.
 *
 * Labels are bounded: methods and routes come from the fixed tables
 * below, codes are gRPC status names or HTTP status numbers. Series with
 * labels of a request are written once they have counted something.
 */

#include "buf.h"
#include "evf/status.h"
#include "evf/store.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define TP_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

enum tp_metrics_transport { TP_METRICS_GRPC, TP_METRICS_HTTP, TP_METRICS_TRANSPORTS };

/* The gRPC methods (label: "api.EventStore/AppendToStream", ...), then "unknown". */
#define TP_METRICS_GRPC_METHODS 13
#define TP_METRICS_GRPC_UNKNOWN (TP_METRICS_GRPC_METHODS - 1)
#define TP_METRICS_GRPC_CODES 17 /* OK .. UNAUTHENTICATED */

/* The routes of the HTTP API and its endpoints (label: the name in the comment). */
enum tp_metrics_route {
  TP_METRICS_ROUTE_VERSION,      /* "version" */
  TP_METRICS_ROUTE_UPTIME,       /* "uptime" */
  TP_METRICS_ROUTE_LIST_STREAMS, /* "list_streams" */
  TP_METRICS_ROUTE_STREAM_COUNT, /* "stream_count" */
  TP_METRICS_ROUTE_EVENT_COUNT,  /* "event_count" */
  TP_METRICS_ROUTE_READ_GLOBAL,  /* "read_global" */
  TP_METRICS_ROUTE_READ_STREAM,  /* "read_stream" */
  TP_METRICS_ROUTE_APPEND,       /* "append" */
  TP_METRICS_ROUTE_GET_EVENT,    /* "get_event" */
  TP_METRICS_ROUTE_HEALTHZ,      /* "healthz" */
  TP_METRICS_ROUTE_READYZ,       /* "readyz" */
  TP_METRICS_ROUTE_METRICS,      /* "metrics" */
  TP_METRICS_ROUTE_SUBSCRIBE_ALL,    /* "subscribe_all" */
  TP_METRICS_ROUTE_SUBSCRIBE_STREAM, /* "subscribe_stream" */
  TP_METRICS_ROUTE_UNKNOWN,      /* "unknown": no route matched */
  TP_METRICS_ROUTES
};

/* HTTP status codes 100..599 are counted apart. */
#define TP_METRICS_HTTP_MIN_CODE 100
#define TP_METRICS_HTTP_CODES 500

/* Append results (label result): ok wrong_version already_exists invalid too_large storage_full error. */
#define TP_METRICS_APPEND_RESULTS 7

/* Request durations, 100 us to 10 s. */
#define TP_METRICS_DURATION_BOUNDS 16
/* Subscription lag: in events (0 to 10 M), in seconds (1 ms to 1 h). */
#define TP_METRICS_LAG_BOUNDS 8

struct tp_metrics_histogram {
  atomic_uint_least64_t buckets[TP_METRICS_DURATION_BOUNDS + 1]; /* per bound, then above all */
  atomic_uint_least64_t sum_ns;
};

struct tp_metrics {
  atomic_uint_least64_t grpc_requests[TP_METRICS_GRPC_METHODS][TP_METRICS_GRPC_CODES];
  atomic_uint_least64_t http_requests[TP_METRICS_ROUTES][TP_METRICS_HTTP_CODES];
  struct tp_metrics_histogram grpc_duration[TP_METRICS_GRPC_METHODS];
  struct tp_metrics_histogram http_duration[TP_METRICS_ROUTES];
  atomic_uint_least64_t appends[TP_METRICS_APPEND_RESULTS];
  atomic_uint_least64_t events_appended;
  atomic_uint_least64_t bytes_appended;
  atomic_int_least64_t connections[TP_METRICS_TRANSPORTS];
  atomic_int_least64_t subscriptions[TP_METRICS_TRANSPORTS];
  atomic_uint_least64_t events_delivered;
  struct tp_metrics_histogram lag_events;   /* sum_ns holds events */
  struct tp_metrics_histogram lag_seconds;
};

/** Zeroes the metrics. Main thread, before any shard thread runs. */
void tp_metrics_init(struct tp_metrics *m);

/**
 * The gRPC method of a request path ("/api.EventStore/GetStream"), as an
 * index for tp_metrics_grpc_request(); TP_METRICS_GRPC_UNKNOWN for any
 * other path. Any thread.
 */
unsigned tp_metrics_grpc_method(const char *path, size_t len);

/**
 * Counts an answered gRPC call: its method (tp_metrics_grpc_method), its
 * status, and the time from its headers to its answer. Owner's thread.
 */
void tp_metrics_grpc_request(struct tp_metrics *m, unsigned method, enum evf_grpc_status status,
                             uint64_t duration_ns);

/**
 * Counts an answered HTTP request: its route, its status code (outside
 * 100..599 it counts as 500, a bug) and the time from its arrival to its
 * answer. Owner's thread.
 */
void tp_metrics_http_request(struct tp_metrics *m, enum tp_metrics_route route, int http_status,
                             uint64_t duration_ns);

/**
 * Counts an answered append, of either transport: status is 0 or the
 * error it failed with (from store_append or its callback; EVF_EINVAL for
 * a request that cannot be decoded). events and bytes (data plus metadata
 * of its events) are added to the appended totals when status is 0.
 * Owner's thread.
 */
void tp_metrics_append(struct tp_metrics *m, int status, uint64_t events, uint64_t bytes);

/** A connection opened (+1) or closed (-1) on this shard. Owner's thread. */
void tp_metrics_connections(struct tp_metrics *m, enum tp_metrics_transport transport, int delta);

/** A subscription started (+1) or ended (-1) on this shard. Owner's thread. */
void tp_metrics_subscriptions(struct tp_metrics *m, enum tp_metrics_transport transport,
                              int delta);

/** Events sent to subscribers. Owner's thread. */
void tp_metrics_delivered(struct tp_metrics *m, uint64_t events);

/**
 * One subscription's lag, observed periodically: events between its
 * position and the watermark, and the age of its oldest undelivered event
 * (0 when none). Owner's thread.
 */
void tp_metrics_subscription_lag(struct tp_metrics *m, uint64_t events, uint64_t age_ns);

/**
 * Appends the text of every metric to out: shards[0..shard_count) are the
 * metrics of every shard (borrowed, read without locks), the engine figures
 * come from store. Any thread; it reads /proc/self and runs two read
 * transactions per shard (the event and stream totals), so it costs well
 * under a millisecond. A figure that cannot be read (a /proc file, an LMDB
 * error, logged by the store) is left out. Returns 0 or -ENOMEM (out then
 * holds part of the text).
 */
int tp_metrics_render(struct tp_buf *out, struct evf_store *store,
                      const struct tp_metrics *const *shards, unsigned shard_count);

#endif
