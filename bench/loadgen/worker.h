#ifndef LOADGEN_WORKER_H
#define LOADGEN_WORKER_H

/*
 * DESIGN
 * A run is one phase of load: the measured load, or a setup phase (a probe
 * of the global stream, a prefill of streams) that sends a fixed number of
 * requests. run.c, on the main thread, starts one worker thread per
 * thread of the run. A worker owns a uv loop, its share of the connections,
 * their in-flight slots (one struct lg_call each, with its own copy of the
 * request templates), and its stats: no other thread touches them while it
 * runs. Crossing threads are only:
 *  - run->ready and run->done (atomic counters) then uv_async_send(run->notify):
 *    a worker tells the main loop it is connected, or finished;
 *  - the run's times, written by the main thread before its release store to
 *    run->go, then uv_async_send(w->wake): every worker is connected, start;
 *  - run->stop_ns (atomic, set once: Ctrl-C, or a worker whose connection
 *    failed), then uv_async_send(w->wake) to each worker: stop and drain;
 *  - w->live_* (atomic, relaxed): progress counters the main loop reads once
 *    a second for the progress line;
 *  - subscribe (live): a worker whose appends are all answered adds the
 *    events it had acknowledged from the measured time to
 *    run->acked_in_window, then counts itself in run->drained (release)
 *    and uv_async_send(run->notify); once every worker has, the main thread
 *    wakes them all, and each subscriber learns what it is owed.
 * The main thread reads a worker's stats only after joining its thread.
 *
 * Slots: each connection has writers_per_conn slots for the scenario's
 * requests, then its subscribers' (subscriber k is on connection
 * k % connections). Live subscribers open when the worker's connections
 * are up; the worker tells the run it is ready only once they are caught
 * up, so every event appended in the run is delivered live. Each append
 * carries its due time (--rate) or send time; a subscriber measures
 * latency from it, and counts only events due in the measured time.
 *
 * In a worker, a slot keeps one call in flight. Closed loop: its answer
 * sends the slot's next request. With --rate: requests are due at fixed
 * intervals from the start (the worker's share of the rate); a slot that
 * is free takes the oldest due request, and its latency counts from the
 * time it was due, so a server that falls behind shows its queueing
 * (no coordinated omission). The due times are kept with a timerfd (libuv
 * timers have millisecond resolution).
 */

#include "call.h"
#include "grpc_conn.h"
#include "http_conn.h"
#include "options.h"
#include "request.h"
#include "scenario.h"
#include "stats.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

struct lg_run {
  /* Set before the workers start; read-only afterwards. */
  const struct lg_options *opt;
  const char *label;            /* "prefill", "measure": for messages */
  enum lg_proto proto;
  struct sockaddr_storage addr;
  const char *authority;
  unsigned weights[LG_OP_COUNT];
  unsigned weight_total;
  uint64_t items;               /* > 0: exactly this many requests, all counted, then stop */
  uint64_t requests;            /* measured requests in total; 0 with items 0: run for duration */
  double duration_s, warmup_s, rate;
  unsigned threads, connections, concurrency;
  unsigned total_slots;
  unsigned writers_per_conn;    /* slots per connection for the weighted operations */
  unsigned slots_per_conn;      /* those and subscriber slots */
  enum lg_subs subs;
  unsigned subscribers;         /* SubscribeToAll calls (subs != NONE) */
  uint64_t sub_offset;          /* where they start (live: the store's event count) */
  unsigned name_width;
  uint64_t timeout_ns;
  uint32_t prefill_chunk;       /* events per prefill append */
  uint32_t prefill_last;        /* events in each stream's last prefill append */
  uint32_t prefill_per_stream;  /* prefill appends per stream */
  struct lg_tmpl proto_req[LG_OP_COUNT];
  struct lg_tmpl proto_prefill_last;

  /* Written by the main thread before its release store to go. */
  uint64_t t_start, t_measure, t_end;

  atomic_int go;
  atomic_uint_fast64_t stop_ns;
  atomic_uint ready;
  atomic_uint done;
  atomic_uint drained;                    /* subscribe: workers whose appends are answered */
  atomic_uint_fast64_t acked_in_window;   /* subscribe: their events due in the measured time */
  uv_async_t *notify;
};

struct lg_worker;

/* One connection of a worker. */
struct lg_wconn {
  struct lg_worker *worker;
  struct lg_grpc_conn *grpc;
  struct lg_http_conn *http;
  bool up;
  bool dead;
};

/* One call kept in flight. */
struct lg_slot {
  struct lg_call call;
  struct lg_worker *worker;
  struct lg_wconn *conn;
  unsigned index;               /* across the run's workers */
  enum lg_op_id op;             /* of the call in flight */
  bool busy;
  bool measured;                /* --requests: sent after the warmup, within the quota */
  bool unused;                  /* nothing for it to do (append-occ with fewer streams than slots) */
  uint64_t intended_ns;         /* when it was due (closed loop: when it was sent) */
  uint64_t stream;              /* of the call in flight */
  uint64_t item;                /* items runs: which item the call in flight is */
  uint32_t events;              /* prefill: events the call in flight writes */
  struct lg_tmpl req[LG_OP_COUNT];
  struct lg_tmpl req_last;      /* prefill: a stream's last, shorter, append */
  uint64_t global_offset;       /* read-global: where this reader is */
  uint32_t *occ_versions;       /* append-occ: the next version of each stream it owns */
  uint32_t occ_count, occ_next, occ_current;
  /* Streaming operations. */
  struct lg_grpc_stream grpc_stream;
  bool stream_open;             /* between a successful open and its closed_cb */
  struct lg_buf scratch;        /* the request being encoded */
  uint32_t window;              /* batch-append: requests in flight at most */
  uint32_t *win_free;           /* free entries of the window */
  uint32_t win_nfree;
  uint64_t *win_sent_ns;        /* per entry: when its request was sent; 0: free */
  bool *win_measured;
  uint64_t win_seq;
  /* subscribe */
  bool subscriber;              /* a subscriber slot; the others write */
  bool sub_live;                /* caught up: what follows is live */
  bool sub_stopping;            /* the run is over: end once every owed event is in */
  bool sub_cancelled;           /* we ended the call */
  uint64_t sub_opened_ns;
  uint64_t sub_position;        /* of the last event delivered */
  uint64_t sub_events;          /* events counted (catch-up: until caught up) */
  uint64_t sub_bytes;
};

enum lg_phase { LG_CONNECTING, LG_WAITING, LG_RUNNING, LG_DRAINING, LG_CLOSING };

struct lg_worker {
  struct lg_run *run;
  unsigned index;
  uv_thread_t thread;
  uv_loop_t loop;
  uv_async_t wake;
  uv_timer_t tick;              /* timeouts, progress */
  uv_timer_t end_timer;         /* the end of the measured time, then the drain bound */
  uv_poll_t pacer;              /* --rate: the timerfd */
  int timer_fd;
  enum lg_phase phase;
  struct lg_wconn *conns;
  unsigned n_conns, conns_up;
  struct lg_slot *slots;
  unsigned n_slots;
  struct lg_slot **free_slots;  /* --rate: slots waiting for a due request */
  unsigned n_free;
  uint64_t inflight;            /* unary calls; streaming: calls open */
  uint64_t stream_pending;      /* streaming: requests sent, not answered yet */
  uint64_t quota;               /* --requests: this worker's share */
  uint64_t measured_sent;
  uint64_t next_item, end_item; /* items runs: this worker's share */
  uint64_t rng;
  uint64_t next_stream;
  uint64_t next_id;             /* --client-ids: the next id's number (the worker's index first) */
  double interval_ns;           /* --rate: between this worker's due times */
  uint64_t sched_start;
  uint64_t sched_sent;
  unsigned subs;                /* subscriber slots in use */
  unsigned subs_open, subs_live;
  uint64_t subscribed_ns;       /* live subscribe: when its subscribers were opened */
  bool told_drained;            /* subscribe: counted in run->drained */
  bool owed_known;
  uint64_t owed;                /* subscribe: events each subscriber is owed */

  /* Results: read by the main thread after the join. */
  struct lg_stats *stats;
  uint64_t appended_events;     /* acknowledged by appends in every phase (warmup, drain too) */
  uint64_t last_measured_ns;
  uint64_t rate_missed;         /* --rate: requests due before the end but never sent */
  uint64_t acked_in_window;     /* subscribe: events acknowledged, due in the measured time */
  int setup_error;
  char fatal[256];              /* why the run failed here, or "" */

  /* Every completion, measured or not (warmup, prefill): the progress line. */
  uint64_t seen_ok, seen_events, seen_bytes, seen_errors;
  atomic_uint_fast64_t live_ok, live_events, live_errors, live_bytes;
};

/** True when slot index of run has work (append-occ: it owns at least one stream). */
bool lg_slot_usable(const struct lg_run *run, unsigned index);

/*
 * For streaming operations, on the worker's thread (see scenario.h).
 */

/** True while the slot may send another request. */
bool lg_worker_may_send(struct lg_slot *s, uint64_t now);

/** A request went out at now; returns whether it is measured (pass that to lg_worker_count). */
bool lg_worker_sent(struct lg_slot *s, uint64_t now);

/**
 * An answer to a request sent at intended_ns (or, for a subscription, an
 * event): counts it. out ERROR: reply says which error. answers_sent: it
 * answers a request counted by lg_worker_sent.
 */
void lg_worker_count(struct lg_slot *s, enum lg_outcome out, uint64_t events, uint64_t bytes,
                     const struct lg_reply *reply, uint64_t intended_ns, bool measured,
                     bool answers_sent);

/** The slot's streaming call ended (reply: how); lost requests still unanswered are errors. */
void lg_worker_call_ended(struct lg_slot *s, const struct lg_reply *reply, uint64_t lost);

/** Live subscribe: the slot's subscription is caught up (the run may start). */
void lg_worker_subscribed(struct lg_slot *s);

/**
 * A subscription delivered an event (bytes: its message). sent_ns (live):
 * the time the event carries; it counts when due in the measured time, with
 * its latency. Catch-up: every event counts. Returns whether it counted.
 */
bool lg_worker_delivered(struct lg_slot *s, uint64_t sent_ns, uint64_t bytes);

/**
 * True, with the events a subscriber is owed in *owed, once that is known
 * (live: every writer answered; catch-up: at once, 0).
 */
bool lg_worker_delivery_owed(struct lg_slot *s, uint64_t *owed);

/** Prepares w (storage owned by the caller) and starts its thread. Main thread. */
int lg_worker_start(struct lg_worker *w, struct lg_run *run, unsigned index);

/** Wakes w to look at run->go and run->stop_ns. Any thread, until lg_worker_join. */
void lg_worker_wake(struct lg_worker *w);

/**
 * Joins w's thread, closes its loop (only now: lg_worker_wake may be called
 * until the join) and frees what lg_worker_start allocated except stats
 * (the caller frees w->stats).
 */
void lg_worker_join(struct lg_worker *w);

#endif
