#ifndef TRANSPORT_SUBS_H
#define TRANSPORT_SUBS_H

/*
 * DESIGN
 * Live subscriptions of one shard's loop, for every transport (gRPC
 * streams, Server-Sent Events). A subscription has a position: the last
 * global position it scanned (SubscribeToAll), or the next version of its
 * stream (SubscribeToStream). It is in one of two states:
 *
 *   behind: it reads pages from storage itself (store_read_global or
 *           store_read_stream), as fast as its consumer takes them;
 *   live:   the hub reads each newly committed range once, as the
 *           watermark moves, and hands it to every live subscription
 *           (SubscribeToStream ones through a table of stream names, so a
 *           commit touches only subscriptions of its streams).
 *
 * The hub's tail is the position up to which live subscriptions were
 * served. A behind subscription whose storage reads reach the tail becomes
 * live (nothing between is missed: storage holds everything up to the
 * watermark, and the tail only ever moves up to it). A live subscription
 * whose consumer holds SUBSCRIPTION_BUFFER bytes unsent falls behind at the
 * last event it took, and reads from storage again once the consumer drains
 * (the transport calls tp_sub_drained). So delivery is exactly once, in
 * order, never past the watermark, and a slow consumer costs at most its
 * buffer and never slows writers or other subscribers.
 *
 * New ranges are served from the store's watermark hook, so a loop whose
 * subscribers are live sleeps between commits. Other work (catch-up pages,
 * the rest of a range too large for one read) runs from an idle handle a
 * page at a time, so a loop with many subscriptions still serves its
 * connections.
 */

#include "buf.h"
#include "evf/store.h"
#include "metrics.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <uv.h>

struct tp_server;
struct tp_sub;
struct tp_hub;

/*
 * How a subscription's messages reach its consumer. The calls that queue a message return
 * 0, or the status that ends the subscription: -ENOMEM, EVF_EINTERNAL for
 * a stored event that does not decode, -ENOTCONN once the consumer is gone.
 */
struct tp_sub_sink {
  /** One event: its stored bytes (an encoded api.Event), its position and version. */
  int (*event)(struct tp_sub *sub, const uint8_t *event, size_t len, uint64_t position,
               uint32_t version);
  int (*caught_up)(struct tp_sub *sub, uint64_t position, uint32_t version);
  int (*checkpoint)(struct tp_sub *sub, uint64_t position);
  /** Bytes given to the sink and not yet taken by the consumer's connection. */
  size_t (*unsent)(struct tp_sub *sub);
  /** Sends what the calls above queued. */
  void (*flush)(struct tp_sub *sub);
  /**
   * Ends the subscription with why: EVF_ESHUTDOWN (the server is stopping),
   * -ENOMEM, or the error that failed a read of its events.
   */
  void (*end)(struct tp_sub *sub, int status);
  /** Optional: keeps an idle connection open through proxies, every SSE_HEARTBEAT_MS. */
  int (*heartbeat)(struct tp_sub *sub);
};

/* An event matches when its type is one of types (or there are none) and its stream starts with one of prefixes (or there are none). */
struct tp_sub_filter {
  char **types;
  size_t n_types;
  char **prefixes;
  size_t n_prefixes;
};

struct tp_sub {
  /* Set by the transport before tp_sub_start. */
  const struct tp_sub_sink *sink;
  enum tp_metrics_transport transport;
  bool one_stream;             /* SubscribeToStream */
  const char *stream;          /* one_stream: the name (borrowed while subscribed) */
  uint32_t next_version;       /* one_stream: the next version to deliver */
  uint64_t position;           /* all: the last position scanned */
  struct tp_sub_filter filter; /* all (borrowed while subscribed) */
  uint32_t checkpoint_every;   /* all: events scanned between checkpoints, 0: the server's */

  /* The hub's. */
  struct tp_hub *hub;
  LIST_ENTRY(tp_sub) every;    /* in hub->subs */
  LIST_ENTRY(tp_sub) live_link; /* in hub->live_all or a stream bucket, while live */
  TAILQ_ENTRY(tp_sub) ready_link; /* in hub->ready, while behind with work to do */
  bool live;
  bool ready;
  bool caught_up_sent;
  uint64_t reported;           /* the position of the last checkpoint sent */
  uint64_t scanned;            /* events scanned since */
};

LIST_HEAD(tp_sub_list, tp_sub);
TAILQ_HEAD(tp_sub_queue, tp_sub);

#define TP_HUB_BUCKETS 1024

/* One event of the range being handed out: its bytes are in the hub's chunk buffer. */
struct tp_hub_event {
  size_t offset, len;
  uint64_t position;
};

/* Embedded in struct tp_server; every field is private to subs.c. */
struct tp_hub {
  struct tp_server *server;
  struct evf_store *store;
  uv_idle_t worker;            /* runs while there is work: ready subscriptions, a tail to serve */
  uv_timer_t ticker;           /* checkpoints and lag, every SUBSCRIPTION_CHECKPOINT_MS */
  uv_timer_t beater;           /* heartbeats, every SSE_HEARTBEAT_MS */
  bool started, working, closed;
  bool tail_cut;               /* the last range read stopped short of the watermark */
  uint64_t tail;               /* live subscriptions were served up to this position */
  struct tp_sub_list subs;
  size_t count;
  struct tp_sub_list live_all;
  struct tp_sub_list buckets[TP_HUB_BUCKETS]; /* live SubscribeToStream, by name hash */
  size_t live_count, live_streams;
  struct tp_sub_queue ready;
  struct tp_buf chunk;         /* the events of (tail, next tail], once per range */
  struct tp_hub_event *events;
  size_t n_events, cap_events;
  bool range_cut;              /* the read stopped before the range's end (full, or no memory) */
};

/** Starts a server's hub on its loop (tp_server_start). */
void tp_hub_init(struct tp_hub *hub, struct tp_server *server);

/** Ends every subscription (the server stops: sink->end with shutdown) and closes the hub. */
void tp_hub_close(struct tp_hub *hub);

/** The store's on_watermark hook (hook_arg: the servers array). */
void tp_hub_watermark(struct evf_store *store, unsigned shard, uint64_t watermark, void *servers);

/** Starts a subscription: it catches up from storage, then goes live. */
void tp_sub_start(struct tp_hub *hub, struct tp_sub *sub);

/** Stops a subscription at once (cancelled, disconnected, ended); nothing more is sent. */
void tp_sub_stop(struct tp_sub *sub);

/** The consumer took bytes: a subscription held back by its buffer may go on. */
void tp_sub_drained(struct tp_sub *sub);

/* The most names a filter list holds, and the longest name. */
#define TP_SUB_FILTER_MAX_NAMES 100
#define TP_SUB_FILTER_MAX_NAME 200

/** NULL when a filter is acceptable, else why not (static text). */
const char *tp_sub_filter_check(const struct tp_sub_filter *filter);

/** Whether an event (stored bytes) passes a filter. */
bool tp_sub_filter_match(const struct tp_sub_filter *filter, const uint8_t *event, size_t len);

#endif
