/*
 * Reads: synchronous, on the calling thread, in LMDB read transactions
 * (MDB_NOTLS lets any thread open them). Stored events are handed to the
 * caller as the encoded bytes in the map, valid during the callback, or,
 * where the event is stored in the short form (records.h), whole again: in
 * the caller's room (the _into reads) or in a buffer of the read's.
 */
#include "internal.h"

#include "evf/hash.h"
#include "evf/status.h"
#include "records.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static unsigned page_limit(const struct evf_store *store, uint32_t limit) {
  return limit == 0 || limit > store->options.page_size ? store->options.page_size : limit;
}

/*
 * Where a read hands its events: to a callback as bytes, or into the room a
 * callback gives (store.h). An event stored in the short form (records.h)
 * is made whole in that room, or, for a callback that takes bytes, in a
 * buffer of the read's own: on the stack unless an event is larger.
 */
struct reader { /* one of bytes and room is set */
  store_event_cb bytes;
  store_event_room_cb room;
  void *arg;
};

struct visitor {
  struct reader to;
  uint8_t *buf;
  size_t cap;
  uint8_t small[2048];
};

static void visitor_init(struct visitor *v, const struct reader *to) {
  v->to = *to;
  v->buf = v->small;
  v->cap = sizeof(v->small);
}

static void visitor_deinit(struct visitor *v) {
  if (v->buf != v->small)
    free(v->buf);
}

/* The visitor's own buffer, with room for size bytes; NULL when out of memory. */
static uint8_t *own_room(struct visitor *v, size_t size) {
  if (size <= v->cap)
    return v->buf;
  uint8_t *buf = malloc(size);
  if (buf == NULL)
    return NULL;
  visitor_deinit(v);
  v->buf = buf;
  v->cap = size;
  return buf;
}

/* Writes a stored event whole to out. */
static void write_whole(const MDB_val *event, const struct record_left_out *left_out, bool is_short,
                        uint8_t *out) {
  if (is_short)
    record_event_restore(event->mv_data, event->mv_size, left_out, out);
  else
    memcpy(out, event->mv_data, event->mv_size);
}

/*
 * Hands one stored event on, whole. Returns an LMDB code (ENOMEM); *stop is
 * set when the caller ends the read before this event.
 */
static int visit_event(struct visitor *v, const MDB_val *event, uint64_t position, bool *stop) {
  struct record_left_out left_out;
  bool is_short = record_event_left_out(event->mv_data, event->mv_size, &left_out);
  size_t size = is_short ? record_event_restored_size(event->mv_size, &left_out) : event->mv_size;
  if (v->to.room != NULL) {
    uint8_t *out = v->to.room(size, position, v->to.arg);
    if (out != NULL)
      write_whole(event, &left_out, is_short, out);
    *stop = out == NULL;
    return 0;
  }
  const uint8_t *bytes = event->mv_data;
  if (is_short) {
    uint8_t *own = own_room(v, size);
    if (own == NULL)
      return ENOMEM;
    write_whole(event, &left_out, is_short, own);
    bytes = own;
  }
  *stop = v->to.bytes(bytes, size, position, v->to.arg) != 0;
  return 0;
}

/* A read of the index and the log it points into. */
struct shard_read {
  MDB_txn *index;
  MDB_txn *log;
};

/* The index first: every position its snapshot names is in the log's, committed before it. */
static int begin_read(struct shard *shard, struct shard_read *r) {
  int rc = mdb_txn_begin(shard->db.index_env, NULL, MDB_RDONLY, &r->index);
  if (rc == 0 && (rc = mdb_txn_begin(shard->db.env, NULL, MDB_RDONLY, &r->log)) != 0)
    mdb_txn_abort(r->index);
  return rc == 0 ? 0 : db__error(rc, "beginning a read transaction");
}

static void end_read(struct shard_read *r) {
  mdb_txn_abort(r->log);
  mdb_txn_abort(r->index);
}

static int find_stream_id(struct shard *shard, struct shard_read *r, const char *stream,
                          size_t len, uint64_t *stream_id) {
  struct stream_record record;
  MDB_val k = {len, (void *)stream}, v;
  int rc = mdb_get(r->index, shard->db.streams, &k, &v);
  if (rc == 0 && !record_stream_decode(v.mv_data, v.mv_size, &record))
    rc = MDB_CORRUPTED;
  if (rc == 0)
    *stream_id = record.stream_id;
  return rc;
}

/*
 * Puts the cursor on the stream's run that holds `version`: the one whose
 * first version is the highest at or below it. MDB_NOTFOUND when the
 * version is past the stream's end. A stream's runs tile its versions from
 * 0, so a run of the stream above `version` with none holding it is damage.
 */
static int seek_run(MDB_cursor *cursor, uint64_t stream_id, uint32_t version,
                    struct record_run *run) {
  uint8_t key[RECORD_INDEX_KEY_LEN];
  record_index_key(key, stream_id, version);
  MDB_val k = {sizeof(key), key}, v;
  int rc = mdb_cursor_get(cursor, &k, &v, MDB_SET_RANGE);
  if (rc != 0 && rc != MDB_NOTFOUND)
    return rc;
  bool past_end = rc == MDB_NOTFOUND;
  if (!past_end && k.mv_size == sizeof(key) && memcmp(k.mv_data, key, sizeof(key)) == 0)
    return index_db__run_at(cursor, MDB_GET_CURRENT, stream_id, run);
  uint64_t above;
  bool run_above = !past_end && record_index_key_stream(&k, &above) && above == stream_id;
  rc = index_db__run_at(cursor, past_end ? MDB_LAST : MDB_PREV, stream_id, run);
  if (rc == 0 && record_run_holds(run, version))
    return 0;
  if (rc != 0 && rc != MDB_NOTFOUND)
    return rc;
  return run_above ? MDB_CORRUPTED : MDB_NOTFOUND;
}

/*
 * Visits a run's events from `version` on; *visited counts them, up to
 * limit. The events of a run are neighbours in the log: the first is
 * looked up, the others are the next ones.
 */
static int visit_run(MDB_cursor *log, const struct record_run *run, uint32_t version,
                     unsigned limit, struct visitor *v, unsigned *visited, bool *stop) {
  uint32_t i = version > run->first_version ? version - run->first_version : 0;
  uint8_t key[RECORD_POSITION_LEN];
  record_position_key(key, run->first_position + i);
  MDB_val k = {sizeof(key), key}, event;
  MDB_cursor_op op = MDB_SET_KEY;
  int rc = 0;
  for (; rc == 0 && !*stop && *visited < limit && i < run->count; i++, op = MDB_NEXT) {
    uint64_t position = run->first_position + i;
    rc = mdb_cursor_get(log, &k, &event, op);
    if (rc == MDB_NOTFOUND || (rc == 0 && (k.mv_size != RECORD_POSITION_LEN ||
                                           record_get_u64(k.mv_data) != position)))
      rc = MDB_CORRUPTED; /* an index entry without its event */
    if (rc == 0 && (rc = visit_event(v, &event, position, stop)) == 0 && !*stop)
      (*visited)++;
  }
  return rc;
}

/* The stream's runs and the log they point into, each with a cursor. */
struct stream_cursors {
  MDB_cursor *runs;
  MDB_cursor *log;
};

static int open_stream_cursors(struct shard *shard, struct shard_read *r,
                               struct stream_cursors *c) {
  int rc = mdb_cursor_open(r->index, shard->db.stream_index, &c->runs);
  if (rc == 0 && (rc = mdb_cursor_open(r->log, shard->db.events, &c->log)) != 0)
    mdb_cursor_close(c->runs);
  return rc;
}

static void close_stream_cursors(struct stream_cursors *c) {
  mdb_cursor_close(c->log);
  mdb_cursor_close(c->runs);
}

/* Returns an LMDB code; MDB_NOTFOUND at the end of the stream. */
static int visit_stream(struct shard *shard, struct shard_read *r, uint64_t stream_id,
                        uint32_t from_version, unsigned limit, const struct reader *to) {
  struct stream_cursors c;
  int rc = open_stream_cursors(shard, r, &c);
  if (rc != 0)
    return rc;
  struct record_run run;
  unsigned visited = 0;
  bool stop = false;
  struct visitor v;
  visitor_init(&v, to);
  rc = seek_run(c.runs, stream_id, from_version, &run);
  while (rc == 0 && (rc = visit_run(c.log, &run, from_version, limit, &v, &visited, &stop)) == 0 &&
         !stop && visited < limit) {
    uint32_t next_version = run.first_version + run.count;
    rc = index_db__run_at(c.runs, MDB_NEXT, stream_id, &run);
    if (rc == 0 && run.first_version != next_version)
      rc = MDB_CORRUPTED; /* the runs of a stream follow each other without a gap */
  }
  visitor_deinit(&v);
  close_stream_cursors(&c);
  return rc;
}

static int read_stream(struct evf_store *store, const char *stream, size_t len,
                       uint32_t from_version, uint32_t limit, const struct reader *to) {
  if (!store_stream_name_valid(stream, len))
    return EVF_EINVAL;
  struct shard *shard = &store->shards[evf_stream_shard(stream, len, store->shard_count)];
  struct shard_read r;
  int rc = begin_read(shard, &r);
  if (rc != 0)
    return rc;
  uint64_t stream_id;
  rc = find_stream_id(shard, &r, stream, len, &stream_id);
  if (rc == 0)
    rc = visit_stream(shard, &r, stream_id, from_version, page_limit(store, limit), to);
  end_read(&r);
  return rc == MDB_NOTFOUND ? 0 : db__error(rc, "reading a stream");
}

int store_read_stream(struct evf_store *store, const char *stream, size_t len,
                      uint32_t from_version, uint32_t limit, store_event_cb cb, void *arg) {
  return read_stream(store, stream, len, from_version, limit, &(struct reader){cb, NULL, arg});
}

int store_read_stream_into(struct evf_store *store, const char *stream, size_t len,
                           uint32_t from_version, uint32_t limit, store_event_room_cb room,
                           void *arg) {
  return read_stream(store, stream, len, from_version, limit, &(struct reader){NULL, room, arg});
}

/* One shard's cursor in a k-way merge. */
struct merge_head {
  MDB_txn *txn;
  MDB_cursor *cursor;
  MDB_val key;
  MDB_val value;
  bool live;
};

/* A database of a shard: its environment and handle. */
struct table {
  MDB_env *env;
  MDB_dbi dbi;
};

static struct table events_table(struct shard *shard) {
  return (struct table){shard->db.env, shard->db.events};
}

static struct table streams_table(struct shard *shard) {
  return (struct table){shard->db.index_env, shard->db.streams};
}

static int open_heads(struct evf_store *store, struct merge_head *heads,
                      struct table (*table)(struct shard *)) {
  for (unsigned s = 0; s < store->shard_count; s++) {
    struct table t = table(&store->shards[s]);
    int rc = mdb_txn_begin(t.env, NULL, MDB_RDONLY, &heads[s].txn);
    if (rc == 0 && (rc = mdb_cursor_open(heads[s].txn, t.dbi, &heads[s].cursor)) != 0)
      mdb_txn_abort(heads[s].txn);
    if (rc != 0) {
      heads[s].txn = NULL;
      return rc;
    }
  }
  return 0;
}

static void close_heads(struct evf_store *store, struct merge_head *heads) {
  for (unsigned s = 0; s < store->shard_count; s++) {
    if (heads[s].txn == NULL)
      continue;
    mdb_cursor_close(heads[s].cursor);
    mdb_txn_abort(heads[s].txn);
  }
}

/* Moves a head; it stays live while it is on an event at or below the watermark. */
static int move_event_head(struct merge_head *h, MDB_cursor_op op, uint64_t watermark) {
  int rc = mdb_cursor_get(h->cursor, &h->key, &h->value, op);
  h->live = rc == 0 && h->key.mv_size == RECORD_POSITION_LEN &&
            record_get_u64(h->key.mv_data) <= watermark;
  return rc == MDB_NOTFOUND ? 0 : rc;
}

static struct merge_head *lowest_position(struct merge_head *heads, unsigned count) {
  struct merge_head *best = NULL;
  for (unsigned s = 0; s < count; s++) {
    if (heads[s].live &&
        (best == NULL || record_get_u64(heads[s].key.mv_data) < record_get_u64(best->key.mv_data)))
      best = &heads[s];
  }
  return best;
}

static int read_global(struct evf_store *store, uint64_t offset, uint32_t limit,
                       const struct reader *to, uint64_t *checkpoint) {
  /* Loaded before the transactions begin: every event at or below it is visible to them. */
  uint64_t watermark = store_watermark(store);
  unsigned n = store->shard_count, max = page_limit(store, limit), visited = 0;
  *checkpoint = offset;
  if (offset >= watermark)
    return 0;
  struct merge_head heads[n];
  memset(heads, 0, sizeof(heads));
  uint8_t start[RECORD_POSITION_LEN];
  record_position_key(start, offset + 1);
  int rc = open_heads(store, heads, events_table);
  for (unsigned s = 0; rc == 0 && s < n; s++) {
    heads[s].key = (MDB_val){sizeof(start), start};
    rc = move_event_head(&heads[s], MDB_SET_RANGE, watermark);
  }
  struct merge_head *h;
  bool stop = false;
  struct visitor v;
  visitor_init(&v, to);
  while (rc == 0 && visited < max && (h = lowest_position(heads, n)) != NULL) {
    uint64_t position = record_get_u64(h->key.mv_data);
    if ((rc = visit_event(&v, &h->value, position, &stop)) != 0 || stop)
      break;
    *checkpoint = position;
    visited++;
    rc = move_event_head(h, MDB_NEXT, watermark);
  }
  visitor_deinit(&v);
  close_heads(store, heads);
  return db__error(rc, "reading the global stream");
}

int store_read_global(struct evf_store *store, uint64_t offset, uint32_t limit,
                      store_event_cb cb, void *arg, uint64_t *checkpoint) {
  return read_global(store, offset, limit, &(struct reader){cb, NULL, arg}, checkpoint);
}

int store_read_global_into(struct evf_store *store, uint64_t offset, uint32_t limit,
                           store_event_room_cb room, void *arg, uint64_t *checkpoint) {
  return read_global(store, offset, limit, &(struct reader){NULL, room, arg}, checkpoint);
}

int store_get_event(struct evf_store *store, const char *id, size_t len, store_event_cb cb,
                    void *arg) {
  struct evf_uuid uuid;
  if (evf_uuid_parse(id, len, &uuid) != 0)
    return EVF_EINVAL;
  for (unsigned s = 0; s < store->shard_count; s++) {
    struct shard *shard = &store->shards[s];
    struct shard_read r;
    int rc = begin_read(shard, &r);
    if (rc != 0)
      return rc;
    MDB_val k = {sizeof(uuid.bytes), uuid.bytes}, position_key, event;
    rc = mdb_get(r.index, shard->db.event_ids, &k, &position_key);
    if (rc == 0) {
      struct visitor visitor;
      bool ignored;
      visitor_init(&visitor, &(struct reader){cb, NULL, arg});
      if ((rc = db__indexed_event(r.log, &shard->db, &position_key, &event)) == 0)
        rc = visit_event(&visitor, &event, record_get_u64(position_key.mv_data), &ignored);
      visitor_deinit(&visitor);
    }
    end_read(&r);
    if (rc != MDB_NOTFOUND)
      return db__error(rc, "reading an event by id");
  }
  return EVF_ENOTFOUND;
}

static int count_entries(struct evf_store *store, struct table (*table)(struct shard *),
                         int64_t *count) {
  int64_t total = 0;
  for (unsigned s = 0; s < store->shard_count; s++) {
    struct table t = table(&store->shards[s]);
    MDB_txn *txn;
    MDB_stat stat;
    int rc = mdb_txn_begin(t.env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
      return db__error(rc, "beginning a read transaction");
    rc = mdb_stat(txn, t.dbi, &stat);
    mdb_txn_abort(txn);
    if (rc != 0)
      return db__error(rc, "mdb_stat");
    total += (int64_t)stat.ms_entries;
  }
  *count = total;
  return 0;
}

int store_event_count(struct evf_store *store, int64_t *count) {
  return count_entries(store, events_table, count);
}

int store_stream_count(struct evf_store *store, int64_t *count) {
  return count_entries(store, streams_table, count);
}

static int compare_names(const MDB_val *a, const MDB_val *b) {
  size_t n = a->mv_size < b->mv_size ? a->mv_size : b->mv_size;
  int c = memcmp(a->mv_data, b->mv_data, n);
  return c != 0 ? c : (a->mv_size > b->mv_size) - (a->mv_size < b->mv_size);
}

static struct merge_head *lowest_name(struct merge_head *heads, unsigned count) {
  struct merge_head *best = NULL;
  for (unsigned s = 0; s < count; s++) {
    if (heads[s].live && (best == NULL || compare_names(&heads[s].key, &best->key) < 0))
      best = &heads[s];
  }
  return best;
}

static int move_name_head(struct merge_head *h, MDB_cursor_op op) {
  int rc = mdb_cursor_get(h->cursor, &h->key, &h->value, op);
  h->live = rc == 0;
  return rc == MDB_NOTFOUND ? 0 : rc;
}

int store_list_streams(struct evf_store *store, uint32_t skip, uint32_t limit,
                       store_name_cb cb, void *arg) {
  unsigned n = store->shard_count, max = page_limit(store, limit), visited = 0;
  uint64_t skipped = 0;
  struct merge_head heads[n];
  memset(heads, 0, sizeof(heads));
  int rc = open_heads(store, heads, streams_table);
  for (unsigned s = 0; rc == 0 && s < n; s++)
    rc = move_name_head(&heads[s], MDB_FIRST);
  struct merge_head *h;
  while (rc == 0 && visited < max && (h = lowest_name(heads, n)) != NULL) {
    if (skipped < skip)
      skipped++;
    else if (cb(h->key.mv_data, h->key.mv_size, arg) != 0)
      break;
    else
      visited++;
    rc = move_name_head(h, MDB_NEXT);
  }
  close_heads(store, heads);
  return db__error(rc, "listing streams");
}
