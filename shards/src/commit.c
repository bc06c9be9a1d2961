/*
 * The write transaction of one batch. Runs on the shard's committer thread,
 * one batch at a time; begins and commits on that thread, as LMDB
 * requires. Reads only the batch and the borrowed requests it holds.
 */
#include "internal.h"

#include "records.h"

#include <string.h>

static void lowercase_uuid(const char *given, const char *fallback, char out[EVF_UUID_TEXT_LEN + 1]) {
  struct evf_uuid id;
  if (given[0] != '\0' && evf_uuid_parse(given, strlen(given), &id) == 0)
    evf_uuid_format(&id, out);
  else
    memcpy(out, fallback, EVF_UUID_TEXT_LEN + 1);
}

/* The event as stored: packed straight into LMDB's buffer (MDB_RESERVE). */
static int put_event(MDB_txn *txn, struct shard_db *db, const struct store_append *req, size_t i) {
  const Api__EventData *in = req->request->events[i];
  char id[EVF_UUID_TEXT_LEN + 1], causation[EVF_UUID_TEXT_LEN + 1],
      correlation[EVF_UUID_TEXT_LEN + 1];
  evf_uuid_format(&req->ids[i], id);
  lowercase_uuid(in->causation_id, id, causation);
  lowercase_uuid(in->correlation_id, id, correlation);

  Api__Event event = API__EVENT__INIT;
  event.id = id;
  event.stream = req->request->stream;
  event.version = req->first_version + (uint32_t)i;
  event.type = in->type;
  event.data = in->data;
  event.metadata = in->metadata;
  event.causation_id = causation;
  event.correlation_id = correlation;
  event.added_at = req->added_at;
  event.position = req->first_position + i;

  uint8_t key[RECORD_POSITION_LEN];
  record_position_key(key, event.position);
  MDB_val k = {sizeof(key), key};
  MDB_val v = {record_event_size(&event), NULL};
  /* Positions rise within a shard: appending is exact and cheap. */
  int rc = mdb_put(txn, db->events, &k, &v, MDB_APPEND | MDB_RESERVE);
  if (rc != 0)
    return rc;
  record_event_encode(&event, v.mv_data);
  return 0;
}

/*
 * Inserts a key that must be new. When it is likely above every key of the
 * database, MDB_APPEND skips the search from the root; LMDB refuses such an
 * append with MDB_KEYEXIST if the key is not the highest after all, and the
 * insert is then made the normal way (which also catches a real duplicate).
 */
static int put_new(MDB_txn *txn, MDB_dbi dbi, MDB_val *k, MDB_val *v, bool likely_highest) {
  if (likely_highest) {
    int rc = mdb_put(txn, dbi, k, v, MDB_APPEND);
    if (rc != MDB_KEYEXIST)
      return rc;
  }
  return mdb_put(txn, dbi, k, v, MDB_NOOVERWRITE);
}

/*
 * The newest stream's index entries sort last, and ids the store generated
 * (UUIDv7, time-ordered) nearly always sort after every id stored before.
 */
static int put_indexes(MDB_txn *txn, struct shard *shard, const struct store_append *req,
                       size_t i) {
  struct shard_db *db = &shard->db;
  uint32_t version = req->first_version + (uint32_t)i;
  uint64_t position = req->first_position + i;
  uint8_t index_key[RECORD_INDEX_KEY_LEN], pos[RECORD_POSITION_LEN], id_value[RECORD_EVENT_ID_LEN];
  record_index_key(index_key, req->stream_id, version);
  record_position_key(pos, position);
  MDB_val k = {sizeof(index_key), index_key}, v = {sizeof(pos), pos};
  bool newest_stream = req->stream_id + 1 == shard->batch.next_stream_id;
  int rc = put_new(txn, db->stream_index, &k, &v, newest_stream);
  if (rc != 0)
    return rc;
  struct event_id_record id_record = {position, req->stream_id, version};
  record_event_id_encode(id_value, &id_record);
  MDB_val idk = {sizeof(req->ids[i].bytes), (void *)req->ids[i].bytes};
  MDB_val idv = {sizeof(id_value), id_value};
  bool generated = req->request->events[i]->id[0] == '\0';
  return put_new(txn, db->event_ids, &idk, &idv, generated);
}

static int put_stream(MDB_txn *txn, struct shard_db *db, const struct store_append *req) {
  struct stream_record record = {
      .stream_id = req->stream_id,
      .next_version = req->first_version + (uint32_t)req->request->n_events,
      .created_at = req->created_at,
  };
  uint8_t value[RECORD_STREAM_LEN];
  record_stream_encode(value, &record);
  MDB_val k = {strlen(req->request->stream), req->request->stream}, v = {sizeof(value), value};
  return mdb_put(txn, db->streams, &k, &v, 0);
}

static int write_append(MDB_txn *txn, struct shard *shard, const struct store_append *req) {
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < req->request->n_events; i++) {
    if ((rc = put_event(txn, &shard->db, req, i)) == 0)
      rc = put_indexes(txn, shard, req, i);
  }
  return rc != 0 ? rc : put_stream(txn, &shard->db, req);
}

int commit__batch(struct shard *shard) {
  struct shard_db *db = &shard->db;
  MDB_txn *txn;
  int rc = mdb_txn_begin(db->env, NULL, 0, &txn);
  if (rc != 0)
    return db__error(rc, "beginning a write transaction");
  for (struct store_append *req = shard->batch.writes.head; rc == 0 && req; req = req->next)
    rc = write_append(txn, shard, req);
  if (rc == 0 && shard->batch.creates_streams)
    rc = db__put_next_stream_id(txn, db, shard->batch.next_stream_id);
  if (rc != 0) {
    mdb_txn_abort(txn);
    return db__error(rc, "writing a batch");
  }
  /* With SYNC=full this is where the batch becomes durable. */
  return db__error(mdb_txn_commit(txn), "committing a batch");
}
