/*
 * A shard's thread and loop: receiving appends, group commit, replies.
 *
 * One batch at a time goes through: prepare (on the loop: check every
 * pending append against stored state and the batch so far, with a read
 * transaction) -> on the shard's committer thread: take positions from the
 * sequencer, write and commit, settle with the sequencer -> reply once the
 * watermark covers the batch (read-your-writes on the global stream).
 * Appends arriving meanwhile wait in `pending` and form the next batch: one
 * sync for many.
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include "internal.h"

#include "batch_index.h"
#include "evf/clock.h"
#include "evf/event_fields.h"
#include "evf/log.h"
#include "evf/status.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Bounds of one batch, well inside LMDB's dirty-page limit. */
#define MAX_BATCH_APPENDS 4096
#define MAX_BATCH_BYTES (64u << 20)
#define MAX_BATCH_CLAIMS 8192 /* client-given ids held at once (id_claims.c sizes for it) */
#define REPAIR_RETRY_MS 1000

enum verdict { VERDICT_WRITE, VERDICT_DONE, VERDICT_DEFER };

struct prepare_ctx {
  struct shard *shard;
  MDB_txn *own;
  MDB_txn **others;   /* read transactions on the other shards, opened on demand */
  int64_t now;
};

static int other_txn(struct prepare_ctx *ctx, unsigned shard, MDB_txn **out) {
  if (ctx->others[shard] == NULL) {
    int rc = mdb_txn_begin(ctx->shard->store->shards[shard].db.index_env, NULL, MDB_RDONLY,
                           &ctx->others[shard]);
    if (rc != 0)
      return db__error(rc, "beginning a read transaction");
  }
  *out = ctx->others[shard];
  return 0;
}

/* The stream as the batch so far leaves it: from the batch, else as committed. */
static int find_stream(struct prepare_ctx *ctx, const struct store_append *req,
                       struct batch_stream **out) {
  const char *name = req->request->stream;
  size_t len = strlen(name);
  uint64_t hash = req->stream_hash;
  struct batch_stream *s = batch_index_find_stream(ctx->shard->decided, name, len, hash);
  if (s == NULL) {
    struct stream_record record = {0};
    const struct stream_record *cached = stream_cache_find(ctx->shard->streams, name, len, hash);
    int rc = 0;
    if (cached != NULL)
      record = *cached;
    else
      rc = index_db__read_stream(ctx->own, &ctx->shard->db, name, len, &record);
    if (rc != 0 && rc != MDB_NOTFOUND)
      return db__error(rc, "reading a stream record");
    /*
     * A stream read is cached at once; a new one once its first commit
     * succeeded. Out of memory, it is only read again next time.
     */
    if (cached == NULL && rc == 0)
      (void)stream_cache_put(ctx->shard->streams, name, len, hash, &record);
    s = batch_index_add_stream(ctx->shard->decided, name, len, hash, &record,
                               rc == MDB_NOTFOUND);
    if (s == NULL)
      return -ENOMEM;
  }
  *out = s;
  return 0;
}

/* Where an id is stored: 1 in this shard (*position set), 2 elsewhere, 0 nowhere. */
static int locate_id(struct prepare_ctx *ctx, const struct evf_uuid *id, uint64_t *position) {
  struct evf_store *store = ctx->shard->store;
  MDB_val k = {sizeof(id->bytes), (void *)id->bytes}, v;
  int rc = mdb_get(ctx->own, ctx->shard->db.event_ids, &k, &v);
  if (rc == 0)
    return record_position_decode(v.mv_data, v.mv_size, position) ? 1 : EVF_EINTERNAL;
  if (rc != MDB_NOTFOUND)
    return db__error(rc, "reading an event id");
  for (unsigned s = 0; s < store->shard_count; s++) {
    MDB_txn *txn = NULL;
    if (s == ctx->shard->index)
      continue;
    if ((rc = other_txn(ctx, s, &txn)) != 0)
      return rc;
    rc = mdb_get(txn, store->shards[s].db.event_ids, &k, &v);
    if (rc == 0)
      return 2;
    if (rc != MDB_NOTFOUND)
      return db__error(rc, "reading an event id");
  }
  return 0;
}

/*
 * An append deferred for another shard's claims is decided again once a
 * shard drops claims. The waiting shard sets its flag, then looks once
 * more (the claims may have gone between its look and the flag); a shard
 * that dropped claims reads the flags after (both sequentially consistent:
 * one of the two sees the other) and wakes the shards waiting.
 */
static void wait_for_claims(struct shard *shard) {
  if (!atomic_exchange(&shard->waits_for_claims, true))
    waker_send(&shard->wake); /* the look after the flag: a loop turn, so the batcher runs */
}

static void wake_claim_waiters(struct shard *shard) {
  if (!shard->dropped_claims)
    return;
  shard->dropped_claims = false;
  struct evf_store *store = shard->store;
  for (unsigned s = 0; s < store->shard_count; s++) {
    struct shard *other = &store->shards[s];
    if (atomic_load(&other->waits_for_claims) && atomic_exchange(&other->waits_for_claims, false))
      waker_send(&other->wake);
  }
}

/* Withdraws the claims on the append's client-given ids before event `end`. */
static void drop_claims(struct shard *shard, struct store_append *req, size_t end) {
  for (size_t i = 0; i < end; i++) {
    if (store__client_id(req->request, i)) {
      id_claims_drop(&shard->store->id_claims, &req->ids[i], shard->index);
      shard->dropped_claims = true;
    }
  }
}

static void release_ids(struct shard *shard, struct store_append *req) {
  if (req->claimed_ids == 0)
    return;
  drop_claims(shard, req, req->request->n_events);
  req->claimed_ids = 0;
}

/*
 * The read transactions open on other shards take new snapshots (a reset
 * and renew keeps their reader slots); one that cannot is ended, and
 * begins again when next needed.
 */
static void renew_other_txns(struct prepare_ctx *ctx) {
  struct evf_store *store = ctx->shard->store;
  for (unsigned s = 0; s < store->shard_count; s++) {
    MDB_txn *txn = ctx->others[s];
    if (txn == NULL)
      continue;
    mdb_txn_reset(txn);
    if (mdb_txn_renew(txn) != 0) {
      mdb_txn_abort(txn);
      ctx->others[s] = NULL;
    }
  }
}

/*
 * Claims every client-given id of the append (id_claims.h) before the ids
 * are looked for. An id another append holds defers this one to the next
 * batch. The other shards are then read from snapshots taken after the
 * claims: an id another shard stored and let go of is in them.
 */
static enum verdict claim_ids(struct prepare_ctx *ctx, struct store_append *req) {
  struct shard *shard = ctx->shard;
  uint32_t taken = 0;
  for (size_t i = 0; i < req->request->n_events; i++) {
    if (!store__client_id(req->request, i))
      continue;
    enum id_claim c = id_claims_take(&shard->store->id_claims, &req->ids[i], shard->index);
    if (c == ID_CLAIM_TAKEN) {
      taken++;
      continue;
    }
    drop_claims(shard, req, i);
    /* A withdrawn claim is a dropped one: the shard it raced may be waiting for it. */
    shard->dropped_claims |= c == ID_CLAIM_RACED;
    /*
     * In the way are claims other appends will let go of, unless the batch
     * has nothing else: then it is this append itself (a window of the
     * table full of its ids, or two of its ids with one fingerprint).
     */
    bool others = c == ID_CLAIM_HELD || c == ID_CLAIM_RACED;
    if (others)
      wait_for_claims(shard);
    if (others || shard->batch.writes.head != NULL)
      return VERDICT_DEFER;
    req->status = EVF_ETOOBIG;
    req->detail = "too many client-given event ids in one append to check at once; send them "
                  "in smaller appends";
    return VERDICT_DONE;
  }
  if (taken > 0) {
    req->claimed_ids = taken;
    renew_other_txns(ctx);
  }
  return VERDICT_WRITE;
}

/*
 * The fields of the event stored at a position of this shard, from the log;
 * they point into the map, valid while log is. Returns an LMDB code.
 */
static int stored_event(MDB_txn *log, const struct shard_db *db, uint64_t position,
                        struct evf_event_fields *fields) {
  uint8_t key[RECORD_POSITION_LEN];
  record_position_key(key, position);
  MDB_val k = {sizeof(key), key}, v;
  int rc = db__indexed_event(log, db, &k, &v);
  if (rc == 0 && !evf_event_fields_read(v.mv_data, v.mv_size, fields))
    rc = MDB_CORRUPTED;
  return rc;
}

/*
 * Whether the n events at positions first..first+n-1 of this shard (the
 * ones an append's ids name, in order) are versions v..v+n-1 of its
 * stream; *version is then v. The first and the last decide it: versions
 * rise with positions within a stream, so n positions that begin at
 * version v and end at v+n-1 hold every version between. Read from the
 * log, as event_ids keeps positions only: retries alone pay for it.
 */
static int stored_as_one_run(struct prepare_ctx *ctx, const char *stream, uint64_t first,
                             size_t n, bool *run, uint32_t *version) {
  MDB_txn *log;
  struct evf_event_fields a, b;
  int rc = mdb_txn_begin(ctx->shard->db.env, NULL, MDB_RDONLY, &log);
  if (rc != 0)
    return db__error(rc, "beginning a read transaction");
  if ((rc = stored_event(log, &ctx->shard->db, first, &a)) == 0 &&
      (rc = stored_event(log, &ctx->shard->db, first + n - 1, &b)) == 0) {
    size_t len = strlen(stream);
    *run = a.stream_len == len && memcmp(a.stream, stream, len) == 0 && b.stream_len == len &&
           memcmp(b.stream, stream, len) == 0 && b.version == a.version + (uint32_t)(n - 1);
    *version = a.version;
  }
  mdb_txn_abort(log); /* after the comparisons: the fields point into its snapshot */
  return rc == 0 ? 0 : db__error(rc, "reading an event an id names");
}

/*
 * Client-given ids, claimed: a retry whose ids are all stored, in order, as
 * consecutive versions of this stream (an append stored whole, or a run of
 * it) succeeds without writing; any other reuse is EVF_EEXIST.
 */
static enum verdict check_ids(struct prepare_ctx *ctx, struct store_append *req,
                              const struct batch_stream *stream) {
  const Api__AppendToStreamRequest *r = req->request;
  size_t given = 0, stored_here = 0;
  uint64_t first = 0, position;
  bool in_order = !stream->is_new;
  for (size_t i = 0; i < r->n_events; i++) {
    if (!store__client_id(req->request, i))
      continue;
    given++;
    int where = locate_id(ctx, &req->ids[i], &position);
    if (where < 0) {
      req->status = where;
      return VERDICT_DONE;
    }
    if (where == 0)
      continue;
    if (where == 1 && stored_here == 0)
      first = position;
    in_order = in_order && where == 1 && i == stored_here && position == first + i;
    stored_here++;
  }
  if (given == 0 || stored_here == 0)
    return VERDICT_WRITE;
  bool run = false;
  uint32_t version = 0;
  int rc = 0;
  if (in_order && stored_here == r->n_events)
    rc = stored_as_one_run(ctx, r->stream, first, r->n_events, &run, &version);
  if (rc != 0 || !run) {
    req->status = rc != 0 ? rc : EVF_EEXIST;
    return VERDICT_DONE;
  }
  req->status = 0;
  req->first_version = version;
  req->first_position = first;
  return VERDICT_DONE;
}

static enum verdict decide(struct prepare_ctx *ctx, struct store_append *req) {
  struct batch_stream *stream = NULL;
  int rc = find_stream(ctx, req, &stream);
  if (rc != 0) {
    req->status = rc;
    return VERDICT_DONE;
  }
  enum verdict v = claim_ids(ctx, req);
  if (v == VERDICT_WRITE)
    v = check_ids(ctx, req, stream);
  if (v != VERDICT_WRITE)
    return v;
  uint32_t length = stream->record.next_version;
  int32_t expected = req->request->version;
  if (expected >= 0 && (uint32_t)expected != length) {
    req->actual_version = length;
    req->status = EVF_EVERSION;
    return VERDICT_DONE;
  }
  if (req->request->n_events > UINT32_MAX - length) {
    req->status = EVF_ETOOBIG;
    return VERDICT_DONE;
  }
  req->new_stream = stream->is_new && stream->record.stream_id == 0;
  if (req->new_stream) {
    stream->record.stream_id = ctx->shard->next_stream_id++;
    stream->record.created_at = ctx->now;
  }
  req->stream_id = stream->record.stream_id;
  req->created_at = stream->record.created_at;
  req->added_at = ctx->now;
  req->first_version = length;
  stream->record.next_version = length + (uint32_t)req->request->n_events;
  return VERDICT_WRITE;
}

static size_t payload_bytes(const struct store_append *req) {
  size_t bytes = 0;
  for (size_t i = 0; i < req->request->n_events; i++)
    bytes += req->request->events[i]->data.len + req->request->events[i]->metadata.len;
  return bytes;
}

static void end_read_txns(struct prepare_ctx *ctx) {
  struct evf_store *store = ctx->shard->store;
  if (ctx->own)
    mdb_txn_abort(ctx->own);
  for (unsigned s = 0; s < store->shard_count; s++) {
    if (ctx->others[s])
      mdb_txn_abort(ctx->others[s]);
  }
}

/*
 * Whether the batch takes no more: bytes or claimed ids enough, or next
 * comes an append to retry alone.
 */
static bool batch_full(const struct shard *shard, size_t bytes) {
  const struct store_append *next = shard->pending.head;
  return bytes >= MAX_BATCH_BYTES || shard->batch.claimed_ids >= MAX_BATCH_CLAIMS ||
         next == NULL || (next->alone && shard->batch.writes.head != NULL);
}

/* Whether an append of the same stream was deferred (the queue is nearly always empty). */
static bool stream_deferred(const struct append_queue *deferred, const struct store_append *req) {
  for (const struct store_append *d = deferred->head; d != NULL; d = d->next) {
    if (strcmp(d->request->stream, req->request->stream) == 0)
      return true;
  }
  return false;
}

void shard__update_watermark_watch(struct shard *shard) {
  unsigned reasons = (shard->watches_watermark ? SEQ_WATCH_SUBSCRIBERS : 0) |
                     (shard->unseen.head != NULL ? SEQ_WATCH_ACKS : 0);
  if (reasons == shard->watermark_watch)
    return;
  shard->watermark_watch = reasons;
  sequencer_watch_watermark(&shard->store->sequencer, shard->index, reasons);
}

static uint64_t last_position(const struct store_append *req) {
  return req->first_position + req->request->n_events - 1;
}

/*
 * Replies to a failed append at once, and holds a durable one until the
 * watermark covers it: once acknowledged, an append is visible to global
 * reads and subscriptions (read-your-writes), not only durable.
 */
static void answer(struct shard *shard, struct store_append *req) {
  if (req->status == 0)
    append_queue_push(&shard->unseen, req);
  else
    port__reply(shard, req);
}

/* Replies to the held appends that the watermark now covers. */
static void answer_visible(struct shard *shard) {
  shard__update_watermark_watch(shard);
  /* seq_cst after the watch flag: a move published before the sequencer saw it is seen here. */
  uint64_t watermark = atomic_load(&shard->store->sequencer.watermark);
  struct store_append *head;
  while ((head = shard->unseen.head) != NULL && last_position(head) <= watermark)
    port__reply(shard, append_queue_pop(&shard->unseen));
  port__flush_replies(shard);
  shard__update_watermark_watch(shard);
}

/*
 * The index lacks events the log holds (its commit failed after the log's):
 * the committer indexes them from the log before anything more is decided.
 */
static void start_repair(struct shard *shard) {
  uv_timer_stop(&shard->repair_timer);
  shard->batch.writes = (struct append_queue){0};
  shard->batch.event_count = 0;
  shard->batch.repair = true;
  shard->state = SHARD_COMMITTING;
  committer_submit(&shard->committer);
}

/* Decides the pending appends into a batch; answers those that need no write. */
static void prepare_batch(struct shard *shard) {
  struct batch *batch = &shard->batch;
  struct evf_store *store = shard->store;
  MDB_txn *others[store->shard_count];
  memset(others, 0, sizeof(others));
  struct prepare_ctx ctx = {.shard = shard, .others = others, .now = evf_now_ms()};
  struct append_queue deferred = {0}, answered = {0};
  size_t budget = shard->pending.length < MAX_BATCH_APPENDS ? shard->pending.length
                                                             : MAX_BATCH_APPENDS;
  if (shard->pending.head->alone)
    budget = 1;
  size_t bytes = 0;
  int rc = mdb_txn_begin(shard->db.index_env, NULL, MDB_RDONLY, &ctx.own);
  if (rc != 0) {
    ctx.own = NULL;
    rc = db__error(rc, "beginning a read transaction");
  }
  batch_index_clear(shard->decided);
  batch->writes = (struct append_queue){0};
  batch->event_count = 0;
  batch->claimed_ids = 0;

  while (budget-- > 0 && !batch_full(shard, bytes)) {
    struct store_append *req = append_queue_pop(&shard->pending);
    enum verdict v = VERDICT_DONE;
    if (rc != 0)
      req->status = rc;
    else if (stream_deferred(&deferred, req))
      v = VERDICT_DEFER; /* behind a deferred append of its stream: keep their order */
    else
      v = decide(&ctx, req);
    if (v != VERDICT_WRITE)
      release_ids(shard, req);
    if (v == VERDICT_WRITE) {
      append_queue_push(&batch->writes, req);
      batch->event_count += (uint32_t)req->request->n_events;
      batch->claimed_ids += req->claimed_ids;
      bytes += payload_bytes(req);
    } else if (v == VERDICT_DEFER) {
      append_queue_push(&deferred, req);
    } else {
      append_queue_push(&answered, req);
    }
  }
  end_read_txns(&ctx);
  append_queue_prepend(&shard->pending, &deferred);
  wake_claim_waiters(shard);
  /* Answered only now: their origins free them, and the batch index borrowed their names. */
  struct store_append *req;
  while ((req = append_queue_pop(&answered)) != NULL)
    answer(shard, req);
  answer_visible(shard);
  if (batch->event_count == 0)
    return;
  batch->next_stream_id = shard->next_stream_id;
  /* Meta's counter is rewritten only when it moved: one page less per commit. */
  batch->creates_streams = shard->next_stream_id != shard->stored_next_stream_id;
  shard->state = SHARD_COMMITTING;
  committer_submit(&shard->committer);
}

static void reply_appends(struct shard *shard, struct append_queue *appends, int status) {
  struct store_append *req;
  while ((req = append_queue_pop(appends)) != NULL) {
    req->status = status;
    answer(shard, req);
  }
  answer_visible(shard);
}

/* Hands the committer its next job when appends wait and it is free. */
static void start_next_batch(struct shard *shard) {
  if (shard->state != SHARD_IDLE || shard->pending.head == NULL)
    return;
  if (shard->index_behind)
    start_repair(shard);
  else
    prepare_batch(shard);
}

static void maybe_stop(struct shard *shard);

static void assign_positions(struct shard *shard, uint64_t first_position) {
  uint64_t position = first_position;
  for (struct store_append *req = shard->batch.writes.head; req; req = req->next) {
    req->first_position = position;
    position += req->request->n_events;
  }
}

/* On the shard's committer thread. */
static void commit_job(void *arg) {
  struct shard *shard = arg;
  if (shard->batch.repair) {
    shard->batch.status = commit__repair_index(shard);
    return;
  }
  struct sequencer *sequencer = &shard->store->sequencer;
  assign_positions(shard, sequencer_grant(sequencer, shard->index, shard->batch.event_count));
  uint64_t started = evf_monotonic_ns();
  shard->batch.status = commit__batch(shard);
  shard->batch.commit_ns = evf_monotonic_ns() - started;
  /*
   * Settled here, not by the loop: the watermark moves before the loop wakes,
   * one hop less before the acknowledgement. Settled either way: a failed
   * commit leaves a harmless hole.
   */
  sequencer_settle(sequencer, shard->index);
}

/*
 * A batch too big for the map may hold appends that fit on their own: give
 * each another try in a batch of its own, in order, before failing it.
 */
static bool retry_alone(struct shard *shard, int status) {
  struct append_queue *writes = &shard->batch.writes;
  if ((status != EVF_EFULL && status != EVF_ETOOBIG) || writes->length < 2)
    return false;
  for (struct store_append *req = writes->head; req; req = req->next)
    req->alone = true;
  append_queue_prepend(&shard->pending, writes);
  return true;
}

/* Armed only while the shard is idle and behind; a repair that starts disarms it. */
static void repair_timer_cb(uv_timer_t *timer) { start_repair(timer->data); }

/*
 * Reads do not wait for appends: while the index lacks stored events, the
 * shard retries the repair every REPAIR_RETRY_MS until one works.
 */
static void schedule_repair(struct shard *shard) {
  uv_timer_start(&shard->repair_timer, repair_timer_cb, REPAIR_RETRY_MS, 0);
}

/* Other shards may decide the batch's client-given ids once it is indexed, or failed. */
static void release_batch_ids(struct shard *shard) {
  for (struct store_append *req = shard->batch.writes.head; req; req = req->next)
    release_ids(shard, req);
}

/*
 * A batch the log took but the index did not: other shards, which look for
 * ids in this shard's index, would not find its ids until the repair. The
 * shard keeps the claims (its appends are answered and freed) until then.
 */
static void hold_batch_ids(struct shard *shard) {
  if (shard->batch.claimed_ids == 0)
    return;
  size_t count = shard->held_id_count + shard->batch.claimed_ids;
  struct evf_uuid *held = realloc(shard->held_ids, count * sizeof(*held));
  if (held == NULL) {
    evf_error("shard %u: out of memory keeping the claims of an unindexed batch; its client ids "
              "are free again before the repair", shard->index);
    release_batch_ids(shard);
    return;
  }
  shard->held_ids = held;
  for (struct store_append *req = shard->batch.writes.head; req; req = req->next) {
    for (size_t i = 0; req->claimed_ids > 0 && i < req->request->n_events; i++) {
      if (store__client_id(req->request, i))
        held[shard->held_id_count++] = req->ids[i];
    }
    req->claimed_ids = 0;
  }
}

/* The repair indexed what the claims were kept for. */
static void drop_held_ids(struct shard *shard) {
  for (size_t i = 0; i < shard->held_id_count; i++)
    id_claims_drop(&shard->store->id_claims, &shard->held_ids[i], shard->index);
  shard->dropped_claims |= shard->held_id_count > 0;
  free(shard->held_ids);
  shard->held_ids = NULL;
  shard->held_id_count = 0;
}

/* Pending appends wait for a repair that works; they fail with a failed one. */
static void repair_done(struct shard *shard) {
  int status = shard->batch.status;
  shard->batch.repair = false;
  shard->state = SHARD_IDLE;
  if (status == 0) {
    shard->index_behind = false;
    shard->stored_next_stream_id = shard->batch.next_stream_id;
    /* The repair lengthened streams the cache knows shorter. */
    stream_cache_clear(shard->streams);
    drop_held_ids(shard);
    wake_claim_waiters(shard);
  } else {
    schedule_repair(shard);
  }
  struct store_append *req;
  while (status != 0 && (req = append_queue_pop(&shard->pending)) != NULL) {
    req->status = status;
    answer(shard, req);
  }
  answer_visible(shard);
  maybe_stop(shard);
}

/* The batch is durable, but not indexed: its appends are not visible to every read. */
static void fail_unindexed(struct shard *shard) {
  shard->index_behind = true;
  schedule_repair(shard);
  for (struct store_append *req = shard->batch.writes.head; req; req = req->next)
    req->detail = "the events were stored in the log, and are in the global stream, but the "
                  "stream index could not take them yet (see the server log); a retry stores "
                  "them again unless it carries the same client event ids";
  reply_appends(shard, &shard->batch.writes, EVF_EINTERNAL);
}

/* The streams of a committed batch, as they now are in the index. */
static void cache_committed_streams(struct shard *shard) {
  for (struct store_append *req = shard->batch.writes.head; req; req = req->next) {
    const char *name = req->request->stream;
    struct stream_record record = {
        .stream_id = req->stream_id,
        .created_at = req->created_at,
        .next_version = req->first_version + (uint32_t)req->request->n_events};
    /* Out of memory, the stream keeps a correct entry or has none (then it is read again). */
    (void)stream_cache_put(shard->streams, name, strlen(name), req->stream_hash, &record);
  }
}

/*
 * A batch indexed from the log after its index commit failed: the index
 * numbered its new streams itself, from the counter its meta holds, which
 * lags the loop's after a failed batch. What the loop decided about those
 * streams is not what the index holds.
 */
static void forget_reindexed_streams(struct shard *shard) {
  stream_cache_clear(shard->streams);
  shard->stored_next_stream_id = 0; /* unknown: the next batch rewrites the meta's counter */
}

static void commit_done(struct shard *shard) {
  if (shard->batch.repair) {
    repair_done(shard);
    return;
  }
  if (shard->batch.index_behind)
    hold_batch_ids(shard);
  else
    release_batch_ids(shard);
  wake_claim_waiters(shard);
  int status = shard->batch.status;
  shard->state = SHARD_IDLE;
  if (status == 0) {
    stats__commit(&shard->stats, shard->batch.event_count, shard->batch.commit_ns);
    shard->stored_next_stream_id = shard->batch.next_stream_id;
  }
  if (status == 0 && shard->batch.reindexed)
    forget_reindexed_streams(shard);
  else if (status == 0 && !shard->batch.index_behind)
    cache_committed_streams(shard);
  if (shard->batch.index_behind) {
    fail_unindexed(shard);
  } else if (!retry_alone(shard, status)) {
    struct append_queue committed = shard->batch.writes;
    shard->batch.writes = (struct append_queue){0};
    /*
     * The appends that waited during this commit go to the committer before
     * these replies are made and written: it would sit idle meanwhile.
     */
    start_next_batch(shard);
    reply_appends(shard, &committed, status);
  }
  maybe_stop(shard);
}

static void receive_requests(struct shard *shard) {
  struct evf_store *store = shard->store;
  for (unsigned p = 0; p < store->port_count; p++) {
    struct ring *r = store__request_ring(store, p, shard->index);
    struct store_append *req;
    while (ring_pop(r, &req))
      append_queue_push(&shard->pending, req);
  }
}

static void maybe_stop(struct shard *shard) {
  struct evf_store *store = shard->store;
  if (!atomic_load(&store->closing) || shard->closed)
    return;
  if (!shard->stop_hook_called) {
    shard->stop_hook_called = true;
    if (store->options.on_shard_stop)
      store->options.on_shard_stop(store, shard->index, &shard->loop, store->options.hook_arg);
  }
  if (atomic_load(&store->outstanding) == 0 && shard->state == SHARD_IDLE &&
      shard->pending.head == NULL) {
    shard->closed = true;
    waker_stop(&shard->wake);
    uv_close((uv_handle_t *)&shard->batcher, NULL);
    uv_close((uv_handle_t *)&shard->repair_timer, NULL);
  }
}

/* Tells the watermark's watcher on this thread that it moved. */
static void notice_watermark(struct shard *shard) {
  struct evf_store *store = shard->store;
  if (!shard->watches_watermark || store->options.on_watermark == NULL)
    return;
  uint64_t watermark = store_watermark(store);
  if (watermark == shard->watermark_seen)
    return;
  shard->watermark_seen = watermark;
  store->options.on_watermark(store, shard->index, watermark, store->options.hook_arg);
}

static void wake_cb(struct waker *w) {
  struct shard *shard = w->data;
  receive_requests(shard);
  port__drain_replies(&shard->store->ports[shard->index]);
  if (committer_take_done(&shard->committer))
    commit_done(shard);
  notice_watermark(shard);
  if (shard->unseen.head != NULL)
    answer_visible(shard);
  maybe_stop(shard);
}

/*
 * Runs once per loop turn after I/O: an idle shard makes a batch of
 * everything that arrived this turn. While a batch commits, appends wait;
 * commit_done makes the next batch of them as soon as it completes, and
 * those arriving later in that turn wait for the one after. What waits is
 * the queue depth.
 */
static void batcher_cb(uv_check_t *handle) {
  struct shard *shard = handle->data;
  start_next_batch(shard);
  stats__queue_depth(&shard->stats, shard->pending.length);
}

void shard__enqueue_local(struct shard *shard, struct store_append *req) {
  append_queue_push(&shard->pending, req);
  /* Make sure a loop turn (and so the batcher) follows even if nothing else wakes it. */
  waker_send(&shard->wake);
}

void store__wake_all(struct evf_store *store) {
  for (unsigned s = 0; s < store->shard_count; s++)
    waker_send(&store->shards[s].wake);
}

static void run(void *arg) {
  struct shard *shard = arg;
  struct evf_store *store = shard->store;
  if (store->options.on_shard_start)
    store->options.on_shard_start(store, shard->index, &shard->loop, store->options.hook_arg);
  uv_run(&shard->loop, UV_RUN_DEFAULT);
}

int shard__init_loop(struct shard *shard) {
  int rc = uv_loop_init(&shard->loop);
  if (rc != 0)
    return rc;
  if ((rc = waker_start(&shard->wake, &shard->loop, wake_cb, shard)) != 0) {
    uv_run(&shard->loop, UV_RUN_DEFAULT);
    uv_loop_close(&shard->loop);
    return rc;
  }
  uv_check_init(&shard->loop, &shard->batcher);
  uv_check_start(&shard->batcher, batcher_cb);
  uv_timer_init(&shard->loop, &shard->repair_timer);
  shard->repair_timer.data = shard;
  stats__init(&shard->stats);
  shard->batcher.data = shard;
  shard->state = SHARD_IDLE;
  return 0;
}

void shard__discard_loop(struct shard *shard) {
  waker_stop(&shard->wake);
  uv_close((uv_handle_t *)&shard->batcher, NULL);
  uv_close((uv_handle_t *)&shard->repair_timer, NULL);
  uv_run(&shard->loop, UV_RUN_DEFAULT);
  uv_loop_close(&shard->loop);
}

/* Names a thread as top -H, perf and /proc show it: Linux keeps 15 bytes. */
static void name_thread(uv_thread_t thread, const char *role, unsigned index) {
  char name[16];
  snprintf(name, sizeof(name), "evf-%s-%u", role, index);
  pthread_setname_np(thread, name);
}

int shard__start(struct shard *shard) {
  int rc = committer_start(&shard->committer, commit_job, shard, &shard->wake);
  if (rc != 0)
    return rc;
  if ((rc = uv_thread_create(&shard->thread, run, shard)) != 0) {
    committer_stop(&shard->committer);
    return rc;
  }
  /* Named before the store is open, so that nothing sees them unnamed once it serves. */
  name_thread(shard->committer.thread, "commit", shard->index);
  name_thread(shard->thread, "shard", shard->index);
  return 0;
}

void shard__join(struct shard *shard) {
  uv_thread_join(&shard->thread);
  committer_stop(&shard->committer); /* the loop ended idle: no commit in flight */
  uv_loop_close(&shard->loop);
}
