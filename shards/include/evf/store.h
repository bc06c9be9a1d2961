#ifndef EVF_STORE_H
#define EVF_STORE_H

/*
 * The storage engine: the only door to stored events.
 *
 * A store is a data folder of shards. Each shard is a thread running a libuv
 * loop and owns one LMDB environment (DATA/shard-NNN/) holding the streams
 * that hash to it. The sequencer's atomics hand out global positions and
 * publish the watermark. See shards/README.md for the on-disk format.
 *
 * Appends go through a port: a thread's identity towards the shards. Each
 * shard thread has one (store_shard_port()); other threads (tools, tests)
 * use one of the external ports reserved at open. An append is submitted on
 * the port's thread and completes there, from the port's loop, once its
 * transaction is durable.
 *
 * Reads run on the calling thread, any thread, against LMDB read
 * transactions; they never wait for a shard.
 */

#include "api.pb-c.h"
#include "evf/uuid.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct evf_store;
struct store_port;

/* Limits of names and types, in bytes. */
#define STORE_MAX_STREAM_NAME 200
#define STORE_MAX_EVENT_TYPE 200

struct store_options {
  const char *data_dir;
  unsigned shards;          /* 0: the recorded count, or one per online CPU for a new folder */
  bool sync_full;           /* false: commits are not synced (benchmarks only) */
  uint64_t map_size;        /* LMDB map size per shard, bytes */
  unsigned page_size;       /* the most events or names one read returns */
  uint64_t max_event_size;  /* an event larger than this, whole (as read), is refused; 0: none */
  unsigned external_ports;  /* ports for threads that are not shards */
  /*
   * Called on each shard thread: start before its loop runs, stop once when
   * the store begins to close (close what you opened on the loop there).
   */
  void (*on_shard_start)(struct evf_store *store, unsigned shard, uv_loop_t *loop, void *arg);
  void (*on_shard_stop)(struct evf_store *store, unsigned shard, uv_loop_t *loop, void *arg);
  /*
   * Called on a shard thread that watches the watermark (store_watch_watermark)
   * after the watermark moved; several moves may make one call.
   */
  void (*on_watermark)(struct evf_store *store, unsigned shard, uint64_t watermark, void *arg);
  void *hook_arg;
};

/**
 * Opens (or creates) the data folder and its environments; no thread runs
 * yet (store_start). Main thread only. On failure returns a negative code
 * and writes a message for an operator into err:
 *   EVF_EFORMAT  the folder has another format or shard count (both named),
 *                or is damaged; nothing in it was changed
 *   -EWOULDBLOCK another process has the folder open
 *   other        -errno or EVF_EINTERNAL from the file system or LMDB
 */
int store_open(const struct store_options *options, struct evf_store **out, char *err,
               size_t err_len);

/**
 * Sets the shard hooks (as in store_options) after open, for a caller that
 * needs the shard count to build them. Main thread, before store_start.
 */
void store_set_hooks(struct evf_store *store,
                     void (*on_start)(struct evf_store *, unsigned, uv_loop_t *, void *),
                     void (*on_stop)(struct evf_store *, unsigned, uv_loop_t *, void *),
                     void *arg);

/**
 * Starts the shard threads (each runs on_shard_start, then its loop) and
 * their committers. Main thread, once. Returns 0 or a uv error code; on
 * failure the store is left as opened, to be closed.
 */
int store_start(struct evf_store *store);

/**
 * Closes the store: new appends fail with EVF_ESHUTDOWN, appends already
 * submitted complete (their callbacks run on their ports' loops, which must
 * keep running), the on_shard_stop hooks run, and once every shard loop has
 * no handles left the threads are joined and the environments closed.
 * Main thread only; blocks until done.
 */
void store_close(struct evf_store *store);

/** Sets the on_watermark hook (as in store_options). Main thread, before store_start. */
void store_set_watermark_hook(struct evf_store *store,
                              void (*on_watermark)(struct evf_store *, unsigned, uint64_t, void *));

/**
 * Starts (on) or stops calls of on_watermark on this shard's thread. Call it
 * on that thread; a watcher sees every watermark from the next call on.
 */
void store_watch_watermark(struct evf_store *store, unsigned shard, bool on);

/** The number of shards (fixed for the data folder). Any thread, after open. */
unsigned store_shard_count(const struct evf_store *store);

/** The highest global position below which every position is settled. Any thread. */
uint64_t store_watermark(const struct evf_store *store);

/** The port of a shard thread. Use it on that thread only. */
struct store_port *store_shard_port(struct evf_store *store, unsigned shard);

/**
 * External port k (< options.external_ports; NULL past them). Bind it on
 * the thread that will use it, to that thread's loop, before its first
 * append; unbind it on the same thread once its appends have completed,
 * before closing the loop. Returns 0 or -errno (bind).
 */
struct store_port *store_external_port(struct evf_store *store, unsigned k);
int store_port_bind(struct store_port *port, uv_loop_t *loop);
void store_port_unbind(struct store_port *port);

/* ---- Appends ---- */

struct store_append;
typedef void (*store_append_cb)(struct store_append *req, int status);

/*
 * One append, owned by the caller. Set request, cb and data, then call
 * store_append(); keep the request alive until the callback.
 */
struct store_append {
  /* In: borrowed until the callback. */
  const Api__AppendToStreamRequest *request;
  store_append_cb cb;
  void *data;

  /* Out, valid in the callback. */
  struct evf_uuid *ids;     /* one per event, in order (freed by store_append_deinit); may
                               point into the request itself: use it in place, never copy *req */
  uint32_t first_version;   /* status 0 */
  uint64_t first_position;  /* status 0 */
  uint32_t actual_version;  /* status EVF_EVERSION: the stream's current length */
  const char *detail;       /* EVF_EINVAL or EVF_ETOOBIG from store_append: what is wrong (static) */

  /* Private to the store. */
  struct evf_uuid single_id;  /* ids of a one-event append */
  struct store_append *next;
  struct store_port *origin;
  uint64_t stream_hash;     /* of the stream's name: its shard, its slots in the shard's tables */
  unsigned owner;
  int status;
  bool alone;               /* retry in a batch of its own (its batch hit a full map) */
  bool new_stream;          /* the first append of a stream: writes its record */
  uint32_t claimed_ids;     /* client-given ids its shard holds claims on: all of them, or 0 */
  uint64_t stream_id;
  int64_t created_at;
  int64_t added_at;
};

/**
 * Submits an append on the port's thread. Returns 0 and later calls req->cb
 * on the port's loop with status:
 *   0               durable and visible to global reads (the watermark covers
 *                   it); first_version, first_position and ids set
 *                   (also for an idempotent retry, which writes nothing)
 *   EVF_EVERSION    expected version differs; actual_version set
 *   EVF_EEXIST      an event id is already used otherwise
 *   EVF_EFULL       the shard's map or the disk is full; nothing written
 *   EVF_ESHUTDOWN   the store closed before the append was batched
 *   EVF_EINTERNAL   a bug, logged
 * or returns, without a callback:
 *   EVF_EINVAL      bad input (names, types, ids, versions, UTF-8, no events)
 *   EVF_ETOOBIG     an event, whole (as read), would exceed max_event_size
 *   EVF_ESHUTDOWN   the store is closing
 *   -ENOMEM
 * Call store_append_deinit() after the callback (or after a failed submit).
 */
int store_append(struct store_port *port, struct store_append *req);

/** Frees what store_append() allocated in req (ids). Port's thread. */
void store_append_deinit(struct store_append *req);

/* ---- Reads: any thread, synchronous ---- */

/**
 * Visits one stored event: its bytes are an encoded api.Event, valid only
 * during the call. Return 0 to go on, non-zero to stop before this event
 * (it then does not count as read).
 */
typedef int (*store_event_cb)(const uint8_t *event, size_t len, uint64_t position, void *arg);

/**
 * For a caller that copies the events it reads: asked for room for one
 * event's len bytes, returns where the read is to write them, or NULL to
 * stop before this event. The read then writes the encoded api.Event there
 * with one copy, where a store_event_cb would be handed a copy of its own
 * for an event stored in the short form (shards/README.md). Called on the
 * reading thread; the read writes the room before it calls again or
 * returns and keeps no pointer to it, so the next call may move it.
 */
typedef uint8_t *(*store_event_room_cb)(size_t len, uint64_t position, void *arg);

/** Visits a stream name, valid during the call. Return 0 to go on, non-zero to stop. */
typedef int (*store_name_cb)(const char *name, size_t len, void *arg);

/**
 * Events of a stream with version >= from_version, ascending, at most limit
 * (0 or above the page size: the page size). An unknown stream visits
 * nothing. Returns 0, EVF_EINVAL (bad name), -ENOMEM (no buffer to make a
 * short event whole in) or EVF_EINTERNAL.
 */
int store_read_stream(struct evf_store *store, const char *stream, size_t len,
                      uint32_t from_version, uint32_t limit, store_event_cb cb, void *arg);
/** The same, writing each event where room says; never -ENOMEM. */
int store_read_stream_into(struct evf_store *store, const char *stream, size_t len,
                           uint32_t from_version, uint32_t limit, store_event_room_cb room,
                           void *arg);

/**
 * Committed events with offset < position <= watermark, ascending, merged
 * across shards, at most limit (as above). *checkpoint is the position of the
 * last visited event, or offset when none. Returns 0, -ENOMEM (as above)
 * or EVF_EINTERNAL.
 */
int store_read_global(struct evf_store *store, uint64_t offset, uint32_t limit,
                      store_event_cb cb, void *arg, uint64_t *checkpoint);
/** The same, writing each event where room says; never -ENOMEM. */
int store_read_global_into(struct evf_store *store, uint64_t offset, uint32_t limit,
                           store_event_room_cb room, void *arg, uint64_t *checkpoint);

/** The event with this id (text): 0, EVF_EINVAL (not a UUID), EVF_ENOTFOUND or -ENOMEM. */
int store_get_event(struct evf_store *store, const char *id, size_t len, store_event_cb cb,
                    void *arg);

/** Exact totals. Return 0 or EVF_EINTERNAL. */
int store_event_count(struct evf_store *store, int64_t *count);
int store_stream_count(struct evf_store *store, int64_t *count);

/** Stream names in byte order, skipping skip, at most limit (as above). */
int store_list_streams(struct evf_store *store, uint32_t skip, uint32_t limit,
                       store_name_cb cb, void *arg);

/** Whether a stream name is valid: 1..200 bytes of UTF-8, not reserved. */
bool store_stream_name_valid(const char *name, size_t len);

/* ---- Statistics: any thread, without locks ---- */

#define STORE_HISTOGRAM_MAX_BOUNDS 16

/*
 * A histogram as read: observations counted under fixed upper bounds,
 * cumulative (as Prometheus exposes them). Values are integers in the
 * histogram's unit, which its name says.
 */
struct store_histogram {
  const uint64_t *bounds;   /* n_bounds upper bounds, ascending (static storage) */
  unsigned n_bounds;
  uint64_t cumulative[STORE_HISTOGRAM_MAX_BOUNDS]; /* observations <= bounds[i] */
  uint64_t count;           /* all observations: the +Inf bucket */
  uint64_t sum;             /* of the observed values */
};

struct store_shard_stats {
  /* Committed batches (failed commits are not observed). */
  struct store_histogram batch_events;  /* events per batch */
  struct store_histogram commit_ns;     /* writing and committing a batch, its sync included */
  uint64_t queue_depth;                 /* appends waiting on the shard for its next batch */
  uint64_t storage_used_bytes;          /* the log's pages in use in its map file (high-water mark) */
  uint64_t storage_map_bytes;           /* the log's map size: the most the shard can hold */
  uint64_t index_used_bytes;            /* the same for the index derived from the log */
  uint64_t index_map_bytes;
};

/**
 * Reads the statistics of a shard (< store_shard_count). Any thread, after
 * store_open; takes no lock and waits for nothing. Each figure is current,
 * but they are not one consistent snapshot (a histogram's sum may be an
 * observation ahead of its buckets); each count only grows.
 */
void store_shard_stats(struct evf_store *store, unsigned shard, struct store_shard_stats *out);

#endif
