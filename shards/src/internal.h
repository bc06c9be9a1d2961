#ifndef SHARDS_INTERNAL_H
#define SHARDS_INTERNAL_H

/*
 * DESIGN
 * Threads: one thread per shard, each running a libuv loop; commits run
 * on a committer thread per shard (committer.h), one at a time, which takes
 * and settles the batch's positions with the sequencer's atomics
 * (sequencer.h); callers of store_append are shard threads or bound
 * external threads, each identified by a port.
 *
 * Rings: for every (port, shard) pair a request ring carries struct
 * store_append pointers from the port's thread to the owning shard, and a
 * reply ring carries them back. Requests are owned by their origin: the
 * owner only reads the borrowed input and writes the results, and the
 * origin runs the callback (Seastar's rule: the message returns to its
 * origin). A port sends at most REQ_RING_SIZE - 1 requests to a shard
 * before replies come back; beyond that it parks requests locally, in
 * order, and sends them as replies free credit. Reply rings have the same
 * size, so they can never fill.
 *
 * Wake-ups: enqueue, full fence, waker_send (waker.h) to the receiver's
 * loop; the receiver's callback drains all its rings.
 */

#include "evf/store.h"
#include "ring.h"
#include "sequencer.h"
#include "committer.h"
#include "id_claims.h"
#include "stats.h"
#include "stream_cache.h"
#include "waker.h"

#include <ck_ring.h>
#include <lmdb.h>
#include <stdatomic.h>

#define REQ_RING_SIZE 1024

/* A FIFO of appends linked through store_append.next. */
struct append_queue {
  struct store_append *head;
  struct store_append *tail;
  size_t length;
};

void append_queue_push(struct append_queue *q, struct store_append *req);
struct store_append *append_queue_pop(struct append_queue *q);
/** Puts all of other in front of q and empties other. */
void append_queue_prepend(struct append_queue *q, struct append_queue *other);

struct port_dest {
  unsigned in_flight;           /* requests sent to this shard, not yet replied */
  struct append_queue parked;   /* waiting for credit, in submit order */
};

struct store_port {
  struct evf_store *store;
  unsigned id;                  /* 0..shards-1: the shard ports; then external */
  struct waker *wake;           /* wakes this port's loop */
  struct waker external_wake;   /* the waker of an external port */
  bool bound;
  struct port_dest *dests;      /* one per shard */
};

/*
 * A shard's two environments: the log (events; synced per SYNC), and the
 * index derived from it (never synced per commit; index_db.c says how it
 * recovers). A batch commits the log first, then the index; readers open
 * the index first, then the log, so every position the index names is
 * in the log they read.
 */
struct shard_db {
  MDB_env *env;                 /* the log */
  MDB_dbi events;
  MDB_dbi meta;
  MDB_env *index_env;
  MDB_dbi streams;
  MDB_dbi stream_index;
  MDB_dbi event_ids;
  MDB_dbi index_meta;
  bool index_mapped;            /* MDB_WRITEMAP, its room reserved ahead (index_room.c) */
  uint64_t index_reserved;      /* bytes of the index file allocated; the index's writer only */
  uint64_t index_need;          /* the last transaction's bound on the file's end, bytes */
  atomic_uint_fast64_t index_overruns; /* transactions past it (a wrong bound); tests read it */
};

enum shard_state { SHARD_IDLE, SHARD_COMMITTING };

struct batch {
  struct append_queue writes;   /* accepted appends to write, in order */
  uint32_t event_count;
  uint32_t claimed_ids;         /* client-given ids its appends claimed: all they carry */
  uint64_t next_stream_id;      /* to persist with the batch, if it created streams */
  bool creates_streams;
  int status;                   /* commit result, set off-loop */
  bool index_behind;            /* set off-loop: the log holds what the index could not take */
  bool reindexed;               /* set off-loop: indexed from the log, new streams numbered anew */
  bool repair;                  /* no writes: index the log's events the index lacks */
  uint64_t commit_ns;           /* how long the commit took, set off-loop */
};

struct shard {
  struct evf_store *store;
  unsigned index;
  struct shard_db db;
  uv_thread_t thread;
  uv_loop_t loop;
  struct waker wake;
  struct committer committer;    /* runs the batch's write transaction */
  uv_check_t batcher;
  uv_timer_t repair_timer;       /* retries an index repair while nothing else asks for one */
  bool stop_hook_called;
  bool closed;
  bool watches_watermark;        /* call on_watermark when it moves */
  unsigned watermark_watch;      /* the reasons last given to the sequencer */
  uint64_t watermark_seen;       /* the last one on_watermark was called with */

  /* Loop-owned. */
  struct append_queue pending;
  enum shard_state state;
  struct batch batch;
  struct append_queue unseen;    /* durable, answered once the watermark covers them */
  uint64_t next_stream_id;
  uint64_t stored_next_stream_id; /* at most the counter the index's meta holds */
  bool index_behind;             /* the index lacks committed events: repair before deciding */
  struct batch_index *decided;   /* what the batch being prepared holds */
  struct stream_cache *streams;  /* committed state of streams decided lately */
  bool *reply_dirty;             /* per port: replies queued since the last flush */
  struct shard_stats stats;      /* written by the loop, read by any thread */
  bool dropped_claims;           /* since the claim waiters were last woken */
  struct evf_uuid *held_ids;     /* claimed by a batch the log took and the index did not */
  size_t held_id_count;
  atomic_bool waits_for_claims;  /* set by the loop, cleared (then woken) by any shard's */
};

struct evf_store {
  struct store_options options;
  unsigned shard_count;
  unsigned port_count;          /* shards + external */
  int lock_fd;
  struct shard *shards;
  struct store_port *ports;
  struct ring *requests;        /* [port * shard_count + shard] */
  struct ring *replies;         /* [shard * port_count + port] */
  struct sequencer sequencer;
  struct id_claims id_claims;
  bool started;                 /* threads running (store_start succeeded) */

  atomic_bool closing;
  atomic_size_t outstanding;    /* appends submitted and not yet completed */
};

static inline struct ring *store__request_ring(struct evf_store *s, unsigned port, unsigned shard) {
  return &s->requests[port * s->shard_count + shard];
}

static inline struct ring *store__reply_ring(struct evf_store *s, unsigned shard, unsigned port) {
  return &s->replies[shard * s->port_count + port];
}

/* Whether event i of an append carries a client-given id (else the store makes its id). */
static inline bool store__client_id(const Api__AppendToStreamRequest *request, size_t i) {
  return request->events[i]->id[0] != '\0';
}

/* port.c */
int port__init(struct store_port *port, struct evf_store *store, unsigned id);
void port__deinit(struct store_port *port);
/** Drains the reply rings of a port and runs completions. Port's thread. */
void port__drain_replies(struct store_port *port);
/** Sends a finished append back to its origin (or completes it in place). Owner's thread. */
void port__reply(struct shard *owner, struct store_append *req);
/** Wakes the origins that received replies during this batch. Owner's thread. */
void port__flush_replies(struct shard *owner);

/* shard.c */
/** Initializes the loop and handles; main thread, before any thread starts. */
int shard__init_loop(struct shard *shard);
/** Closes the handles and loop of a shard whose thread never ran. */
void shard__discard_loop(struct shard *shard);
int shard__start(struct shard *shard);
/** Waits for the thread to end (after the store began closing) and closes the loop. */
void shard__join(struct shard *shard);
/** Queues an append on its owner, from the owner's own thread. */
void shard__enqueue_local(struct shard *shard, struct store_append *req);
/** Tells the sequencer whether this shard needs wake-ups on watermark moves. Shard thread. */
void shard__update_watermark_watch(struct shard *shard);
/** Wakes every shard (closing, or the last append completed). Any thread. */
void store__wake_all(struct evf_store *store);

/* validate.c */
/** Checks the input of an append and fills req->ids. Origin's thread. */
int validate__append(const struct store_options *options, struct store_append *req);

/* commit.c */
/**
 * Writes the batch to the log and the index and commits both; sets
 * batch.index_behind if the log took it and the index did not (the batch
 * is then durable, and the status says what failed), and batch.reindexed
 * if the index took it from the log after its own commit failed (its new
 * streams then have the ids the index gave them). Committer thread.
 */
int commit__batch(struct shard *shard);
/** Brings the index level with the log after a failed index commit. Committer thread. */
int commit__repair_index(struct shard *shard);

/* db.c */
/*
 * The data folder's format, and each shard log's: 3 adds a short form of
 * stored events (records.h); a format 2 log is a format 3 log. Format 1
 * kept the index in the log's environment.
 */
#define STORE_FORMAT 3
/** Opens the log and the index of a shard, bringing the index level with the log. */
int db__open(struct shard_db *db, const char *path, const struct store_options *options,
             unsigned index, unsigned shard_count, char *err, size_t err_len);
void db__close(struct shard_db *db);
/** Creates and opens an LMDB environment in folder `path` (created if missing). */
int db__open_env(MDB_env **env, const char *path, size_t map_size, unsigned flags, char *err,
                 size_t err_len);
/** The highest position stored, 0 for none. */
int db__last_position(struct shard_db *db, uint64_t *position);
/** The same in a transaction on the log. Returns an LMDB code. */
int db__log_last_position(MDB_txn *txn, struct shard_db *db, uint64_t *position);
/**
 * The event an index entry names (its value, a position key) in a read of
 * the log. MDB_CORRUPTED for a damaged key or an event the log lacks.
 */
int db__indexed_event(MDB_txn *log, const struct shard_db *db, const MDB_val *position_key,
                      MDB_val *event);
/** An 8-byte meta record; *found false (and *value untouched) when absent. LMDB codes. */
int db__meta_get_u64(MDB_txn *txn, MDB_dbi meta, const char *key, uint64_t *value, bool *found);
int db__meta_put_u64(MDB_txn *txn, MDB_dbi meta, const char *key, uint64_t value);

/* index_db.c */
/** Opens DATA/shard-NNN/index: trusted, caught up from the log, or rebuilt from it. */
int index_db__open(struct shard_db *db, const char *shard_path, size_t map_size, char *err,
                   size_t err_len);
/** Syncs the index and marks it closed cleanly. */
void index_db__close(struct shard_db *db);
/**
 * The stream's run the cursor is on after op (records.h): MDB_NOTFOUND on
 * another stream's entry (left undecoded) or past the last one.
 */
int index_db__run_at(MDB_cursor *cursor, MDB_cursor_op op, uint64_t stream_id,
                     struct record_run *run);
/** A stream's length: where its last run in stream_index ends. Returns an LMDB code. */
int index_db__stream_length(MDB_txn *txn, struct shard_db *db, uint64_t stream_id,
                            uint32_t *length);
/** A stream's record and length as the index holds them; MDB_NOTFOUND for a new stream. */
int index_db__read_stream(MDB_txn *txn, struct shard_db *db, const char *name, size_t len,
                          struct stream_record *record);
/** Indexes the log's events the index lacks; *events says how many. Returns an LMDB code. */
int index_db__catch_up(struct shard_db *db, uint64_t *events);
/** The next stream id the index records (1 for none). */
int index_db__next_stream_id(struct shard_db *db, uint64_t *id);

/* index_room.c */
/**
 * Whether the file system of the index's data file (in dir, created if
 * missing) allocates on request: the index may then be mapped writable.
 */
bool index_room__can_reserve(const char *dir, const char *data_path);
/* Every index record (key, value and LMDB's node) is at most a sixteenth of a page. */
#define INDEX_RECORD_MAX 256
/* What a write transaction adds to the index: runs of consecutive keys, and their bytes. */
struct index_growth {
  uint64_t puts;
  uint64_t runs;  /* of keys put in rising order into one gap; any other put is a run of its own */
  uint64_t bytes; /* records added, at most */
};
/** Puts whose keys may each go anywhere. */
struct index_growth index_room__puts(uint64_t puts);
/**
 * Allocates the disk blocks the write transaction txn may need for growth,
 * before it writes. txn is NULL before the index's databases are open (the
 * puts are then the main database's). Returns 0, an errno value (ENOSPC:
 * no room) or an LMDB code.
 */
int index_room__reserve(struct shard_db *db, MDB_txn *txn, const struct index_growth *growth);
/** After a committed transaction: counts and logs one that went past its reservation's bound. */
void index_room__check(struct shard_db *db);

/** Maps an LMDB or system error to an EVF code. */
int db__status(int mdb_rc);
/** The same, logging the unexpected ones (all but a full map or disk, a big batch, no memory). */
int db__error(int mdb_rc, const char *what);
/** An LMDB code as text; MDB_CORRUPTED, which our checks of stored data return too, as such. */
const char *db__strerror(int mdb_rc);

#endif
