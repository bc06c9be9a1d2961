/*
 * The write transactions of one batch: one on the log, one on the index.
 * Runs on the shard's committer thread, one batch at a time; begins and
 * commits on that thread, as LMDB requires. Reads only the batch and the
 * borrowed requests it holds.
 */
#include "internal.h"

#include "evf/log.h"
#include "records.h"

#include <errno.h>
#include <string.h>
#include <sys/statvfs.h>

/* With less room than this left, a failed write of the log is the disk filling up. */
#define LOG_ROOM_FULL (64u << 20)

/*
 * A causation or correlation id as stored: the event's own id text when
 * none is given or the one given is that id (the short form then leaves
 * both out, records.h); otherwise the given one in lowercase, in buf.
 */
static char *other_id(const char *given, const struct evf_uuid *own, char *own_text,
                      char buf[EVF_UUID_TEXT_LEN + 1]) {
  struct evf_uuid id;
  if (given[0] == '\0' || evf_uuid_parse(given, strlen(given), &id) != 0 ||
      memcmp(&id, own, sizeof(id)) == 0)
    return own_text;
  evf_uuid_format(&id, buf);
  return buf;
}

/*
 * The open write transactions of a batch, with a cursor per database that
 * takes an insert per event: no cursor set-up per insert, and an insert
 * whose key lands on the page the cursor last wrote searches that page
 * only, not the tree from its root.
 */
struct batch_txns {
  MDB_txn *log, *index;
  MDB_cursor *events, *stream_index, *event_ids;
};

/* The event as stored: packed straight into LMDB's buffer (MDB_RESERVE). */
static int put_event(struct batch_txns *txns, const struct store_append *req, size_t i) {
  const Api__EventData *in = req->request->events[i];
  char id[EVF_UUID_TEXT_LEN + 1], causation[EVF_UUID_TEXT_LEN + 1],
      correlation[EVF_UUID_TEXT_LEN + 1];
  evf_uuid_format(&req->ids[i], id);

  Api__Event event = API__EVENT__INIT;
  event.id = id;
  event.stream = req->request->stream;
  event.version = req->first_version + (uint32_t)i;
  event.type = in->type;
  event.data = in->data;
  event.metadata = in->metadata;
  event.causation_id = other_id(in->causation_id, &req->ids[i], id, causation);
  event.correlation_id = other_id(in->correlation_id, &req->ids[i], id, correlation);
  event.added_at = req->added_at;
  event.position = req->first_position + i;

  uint8_t key[RECORD_POSITION_LEN];
  record_position_key(key, event.position);
  MDB_val k = {sizeof(key), key};
  struct record_event_text text;
  MDB_val v = {record_event_stored_size(&event, &text), NULL};
  /* Positions rise within a shard: appending is exact and cheap. */
  int rc = mdb_cursor_put(txns->events, &k, &v, MDB_APPEND | MDB_RESERVE);
  if (rc != 0)
    return rc;
  record_event_encode(&event, &text, v.mv_data);
  return 0;
}

/*
 * Inserts a key that must be new. When it is likely above every key of the
 * database, MDB_APPEND goes down the right edge of the tree with no key
 * comparison; LMDB refuses such an append with MDB_KEYEXIST if the key is
 * not the highest after all, and the insert is then made the normal way
 * (which also catches a real duplicate).
 */
static int put_new(MDB_cursor *cursor, MDB_val *k, MDB_val *v, bool likely_highest) {
  if (likely_highest) {
    int rc = mdb_cursor_put(cursor, k, v, MDB_APPEND);
    if (rc != MDB_KEYEXIST)
      return rc;
  }
  return mdb_cursor_put(cursor, k, v, MDB_NOOVERWRITE);
}

/* The append's run: its stream's newest entry, last of all when the stream is the newest. */
static int put_run(struct batch_txns *txns, const struct shard *shard,
                   const struct store_append *req) {
  struct record_run run = {.first_version = req->first_version,
                           .first_position = req->first_position,
                           .count = (uint32_t)req->request->n_events};
  uint8_t key[RECORD_INDEX_KEY_LEN], value[RECORD_RUN_MAX];
  record_index_key(key, req->stream_id, run.first_version);
  MDB_val k = {sizeof(key), key}, v = {record_run_encode(value, &run), value};
  bool newest_stream = req->stream_id + 1 == shard->batch.next_stream_id;
  return put_new(txns->stream_index, &k, &v, newest_stream);
}

/* Ids the store generated (UUIDv7, time-ordered) nearly always sort after every id stored. */
static int put_id(struct batch_txns *txns, const struct store_append *req, size_t i) {
  uint8_t pos[RECORD_POSITION_LEN];
  record_position_key(pos, req->first_position + i);
  MDB_val k = {sizeof(req->ids[i].bytes), (void *)req->ids[i].bytes}, v = {sizeof(pos), pos};
  return put_new(txns->event_ids, &k, &v, !store__client_id(req->request, i));
}

/* A new stream's record; its length lives in stream_index. */
static int put_stream(MDB_txn *index, struct shard_db *db, const struct store_append *req) {
  struct stream_record record = {.stream_id = req->stream_id, .created_at = req->created_at};
  uint8_t value[RECORD_STREAM_LEN];
  record_stream_encode(value, &record);
  MDB_val k = {strlen(req->request->stream), req->request->stream}, v = {sizeof(value), value};
  return mdb_put(index, db->streams, &k, &v, MDB_NOOVERWRITE);
}

static int write_append(struct batch_txns *txns, struct shard *shard,
                        const struct store_append *req) {
  int rc = put_run(txns, shard, req);
  for (size_t i = 0; rc == 0 && i < req->request->n_events; i++) {
    if ((rc = put_event(txns, req, i)) == 0)
      rc = put_id(txns, req, i);
  }
  return rc != 0 || !req->new_stream ? rc : put_stream(txns->index, &shard->db, req);
}

/* The index's meta: how far it reaches into the log, and the stream counter when it moved. */
static int put_index_meta(MDB_txn *index, struct shard *shard) {
  const struct batch *batch = &shard->batch;
  const struct store_append *last = batch->writes.tail;
  uint64_t through = last->first_position + last->request->n_events - 1;
  int rc = db__meta_put_u64(index, shard->db.index_meta, "indexed_through", through);
  if (rc == 0 && batch->creates_streams)
    rc = db__meta_put_u64(index, shard->db.index_meta, "next_stream_id", batch->next_stream_id);
  return rc;
}

/* The cursors close with their transactions. */
static int open_cursors(struct batch_txns *txns, const struct shard_db *db) {
  int rc = mdb_cursor_open(txns->log, db->events, &txns->events);
  if (rc == 0)
    rc = mdb_cursor_open(txns->index, db->stream_index, &txns->stream_index);
  if (rc == 0)
    rc = mdb_cursor_open(txns->index, db->event_ids, &txns->event_ids);
  return rc;
}

static int write_batch(struct batch_txns *txns, struct shard *shard) {
  int rc = open_cursors(txns, &shard->db);
  for (struct store_append *req = shard->batch.writes.head; rc == 0 && req; req = req->next)
    rc = write_append(txns, shard, req);
  return rc != 0 ? rc : put_index_meta(txns->index, shard);
}

/* A record's bytes in a leaf: LMDB's node (8-byte header, key, value) and its pointer. */
#define LEAF_RECORD(key, value) (8 + (key) + (value) + 2)
#define STREAM_INDEX_RECORD LEAF_RECORD(RECORD_INDEX_KEY_LEN, RECORD_RUN_MAX)
#define EVENT_ID_RECORD LEAF_RECORD(16, RECORD_POSITION_LEN)

/*
 * The runs the store's own ids for the batch make in event_ids. Each
 * thread makes its ids in rising order (evf_uuid_v7_at), and a shard keeps
 * each port's appends in order: those that sort after every stored id go
 * in after it, one run per port they came from. Any other (made before
 * the last one stored, on another thread) may go anywhere: a run of its own.
 */
static uint64_t generated_id_runs(MDB_txn *index, const struct shard_db *db,
                                  const struct batch *batch, uint64_t generated,
                                  unsigned port_count) {
  MDB_cursor *cursor;
  MDB_val last = {0, NULL}, v;
  if (generated < 2 || mdb_cursor_open(index, db->event_ids, &cursor) != 0)
    return generated;
  int rc = mdb_cursor_get(cursor, &last, &v, MDB_LAST);
  mdb_cursor_close(cursor);
  if (rc != 0 && rc != MDB_NOTFOUND)
    return generated;
  bool from_port[port_count];
  memset(from_port, 0, sizeof(from_port));
  uint64_t runs = 0;
  for (const struct store_append *req = batch->writes.head; req; req = req->next) {
    for (size_t i = 0; i < req->request->n_events; i++) {
      if (store__client_id(req->request, i))
        continue;
      MDB_val id = {sizeof(req->ids[i].bytes), (void *)req->ids[i].bytes};
      if (rc == 0 && record_key_compare(&id, &last) <= 0)
        runs++;
      else if (!from_port[req->origin->id]) {
        from_port[req->origin->id] = true;
        runs++;
      }
    }
  }
  return runs < generated ? runs : generated;
}

/*
 * Where the batch's index puts go (index_room.c): an append's stream_index
 * entry, one put; the store's own ids (UUIDv7, by time) nearly all sort
 * after every stored id, a run per port; a client's id, a new stream's
 * record and the two meta records may go anywhere.
 */
static struct index_growth batch_growth(MDB_txn *index, const struct shard_db *db,
                                        const struct batch *batch, unsigned port_count) {
  uint64_t new_streams = 0;
  for (const struct store_append *req = batch->writes.head; req; req = req->next)
    new_streams += req->new_stream;
  /* Every client id of a batch's appends is claimed. */
  uint64_t events = batch->event_count, given = batch->claimed_ids, records = new_streams + 2;
  uint64_t generated = events - given, appends = batch->writes.length;
  uint64_t id_runs = generated_id_runs(index, db, batch, generated, port_count);
  return (struct index_growth){
      .puts = appends + events + records,
      .runs = appends + id_runs + given + records,
      .bytes = appends * STREAM_INDEX_RECORD + events * EVENT_ID_RECORD +
               records * INDEX_RECORD_MAX};
}

/* The log holds the batch and its index commit failed: index it from the log. */
static int index_from_log(struct shard *shard, int index_rc) {
  uint64_t indexed;
  evf_error("shard %u: committing the index of a stored batch: %s; indexing it from the log",
            shard->index, db__strerror(index_rc));
  int rc = index_db__catch_up(&shard->db, &indexed);
  shard->batch.index_behind = rc != 0;
  shard->batch.reindexed = rc == 0;
  if (rc != 0)
    evf_error("shard %u: indexing a stored batch from the log: %s; the shard repairs its index "
              "before it decides more appends", shard->index, db__strerror(rc));
  return db__error(rc, "indexing a stored batch from the log");
}

/*
 * LMDB reports a page write cut short as EIO (it has no better code), and
 * that is how a disk that fills up during a commit shows: storage full
 * when the log's file system has hardly any room left, not an internal
 * error.
 */
static int log_commit_error(MDB_env *log, int rc) {
  int fd;
  struct statvfs fs;
  if (rc == EIO && mdb_env_get_fd(log, &fd) == 0 && fstatvfs(fd, &fs) == 0 &&
      (uint64_t)fs.f_bavail * fs.f_frsize < LOG_ROOM_FULL)
    return ENOSPC;
  return rc;
}

int commit__batch(struct shard *shard) {
  struct shard_db *db = &shard->db;
  struct batch_txns txns = {0};
  shard->batch.index_behind = false;
  shard->batch.reindexed = false;
  int rc = mdb_txn_begin(db->env, NULL, 0, &txns.log);
  if (rc != 0)
    return db__error(rc, "beginning a write transaction");
  if ((rc = mdb_txn_begin(db->index_env, NULL, 0, &txns.index)) != 0) {
    mdb_txn_abort(txns.log);
    return db__error(rc, "beginning an index transaction");
  }
  /*
   * Every put happens before either commit: a full map, or a disk without
   * room for the index, fails the batch with nothing written.
   */
  struct index_growth growth =
      batch_growth(txns.index, db, &shard->batch, shard->store->port_count);
  if ((rc = index_room__reserve(db, txns.index, &growth)) != 0 ||
      (rc = write_batch(&txns, shard)) != 0) {
    mdb_txn_abort(txns.index);
    mdb_txn_abort(txns.log);
    return db__error(rc, "writing a batch");
  }
  /* With SYNC=full this is where the batch becomes durable; the index follows, unsynced. */
  if ((rc = mdb_txn_commit(txns.log)) != 0) {
    mdb_txn_abort(txns.index);
    return db__error(log_commit_error(db->env, rc), "committing a batch");
  }
  rc = mdb_txn_commit(txns.index);
  if (rc != 0)
    return index_from_log(shard, rc);
  index_room__check(db);
  return 0;
}

int commit__repair_index(struct shard *shard) {
  uint64_t indexed;
  int rc = index_db__catch_up(&shard->db, &indexed);
  if (rc != 0) {
    evf_error("shard %u: repairing the index from the log: %s", shard->index, db__strerror(rc));
    return db__error(rc, "repairing the index from the log");
  }
  evf_info("shard %u: the index is repaired (%llu events indexed from the log)", shard->index,
           (unsigned long long)indexed);
  return index_db__next_stream_id(&shard->db, &shard->batch.next_stream_id);
}
