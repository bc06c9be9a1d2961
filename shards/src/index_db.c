/*
 * The index environment of a shard (DATA/shard-NNN/index/): streams,
 * stream_index and event_ids. Everything in it derives from the log (the
 * events of DATA/shard-NNN/), so it is committed without a sync, after the
 * log's commit: a batch's synced pages are the log's alone.
 *
 * Recovery rests on two facts. A process that dies leaves every completed
 * write in the page cache, so after a crash of the server (kill -9, OOM)
 * the index is consistent as of its last commit and lags the log by at
 * most a batch: it catches up from `indexed_through`. After a crash of
 * the machine the unsynced index may be torn: it is rebuilt from the log.
 * The OPEN file tells the two apart: it holds the boot id of the machine
 * session that has the index open, and is removed once a clean close has
 * synced the index.
 */
#include "internal.h"

#include "evf/event_fields.h"
#include "evf/hash.h"
#include "evf/log.h"
#include "evf/status.h"
#include "evf/uuid.h"
#include "records.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/*
 * Of the index's own layout, another one is rebuilt. 3: event_ids' values
 * are positions alone. 4: stream_index holds runs of versions, not events.
 */
#define INDEX_FORMAT 4
#define CATCH_UP_CHUNK 2000     /* events per index transaction while catching up */
#define CATCH_UP_STREAMS 65536  /* streams whose length a catch-up keeps at hand */
#define BOOT_ID_PATH "/proc/sys/kernel/random/boot_id"
#define BOOT_ID_MAX 64

struct index_paths {
  const char *dir;
  char open_mark[4220];
  char data[4220];
  char lock[4220];
};

static void index_paths(struct index_paths *p, const char *dir) {
  p->dir = dir;
  snprintf(p->open_mark, sizeof(p->open_mark), "%s/OPEN", p->dir);
  snprintf(p->data, sizeof(p->data), "%s/data.mdb", p->dir);
  snprintf(p->lock, sizeof(p->lock), "%s/lock.mdb", p->dir);
}

/* Reads a small text file whole; "" when absent or unreadable. */
static void read_small_file(const char *path, char *out, size_t len) {
  out[0] = '\0';
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return;
  size_t n = fread(out, 1, len - 1, f);
  fclose(f);
  out[n] = '\0';
  out[strcspn(out, "\n")] = '\0';
}

/*
 * Whether the index on disk can be trusted: closed cleanly (no OPEN file),
 * or left open by a process of this very machine session, whose writes the
 * page cache still holds. Without a boot id nothing left open is trusted.
 */
static bool index_trusted(const struct index_paths *p, const char *boot_id) {
  char left_by[BOOT_ID_MAX];
  if (access(p->open_mark, F_OK) != 0)
    return errno == ENOENT;
  read_small_file(p->open_mark, left_by, sizeof(left_by));
  return boot_id[0] != '\0' && strcmp(left_by, boot_id) == 0;
}

static int fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  int rc = fsync(fd) == 0 ? 0 : -errno;
  close(fd);
  return rc;
}

/* Writes OPEN durably before the index takes any write of this session. */
static int mark_open(const struct index_paths *p, const char *boot_id) {
  int fd = open(p->open_mark, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return -errno;
  size_t len = strlen(boot_id);
  ssize_t written = write(fd, boot_id, len);
  int rc = written < 0 || fsync(fd) != 0 ? -errno : (size_t)written < len ? -EIO : 0;
  close(fd);
  return rc != 0 ? rc : fsync_dir(p->dir);
}

static int remove_file(const char *path) {
  return unlink(path) == 0 || errno == ENOENT ? 0 : -errno;
}

static int open_index_dbis(struct shard_db *db) {
  MDB_txn *txn;
  int rc = mdb_txn_begin(db->index_env, NULL, 0, &txn);
  if (rc != 0)
    return rc;
  /* Creating a database writes the main one's pages: the room comes first. */
  struct index_growth growth = index_room__puts(4);
  if ((rc = index_room__reserve(db, NULL, &growth)) != 0 ||
      (rc = mdb_dbi_open(txn, "streams", MDB_CREATE, &db->streams)) != 0 ||
      (rc = mdb_dbi_open(txn, "stream_index", MDB_CREATE, &db->stream_index)) != 0 ||
      (rc = mdb_set_compare(txn, db->stream_index, record_key_compare)) != 0 ||
      (rc = mdb_dbi_open(txn, "event_ids", MDB_CREATE, &db->event_ids)) != 0 ||
      (rc = mdb_set_compare(txn, db->event_ids, record_key_compare)) != 0 ||
      (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &db->index_meta)) != 0) {
    mdb_txn_abort(txn);
    return rc;
  }
  return mdb_txn_commit(txn);
}

/* Empties the index, to be rebuilt from the log. */
static int clear_index(struct shard_db *db) {
  MDB_txn *txn;
  int rc = mdb_txn_begin(db->index_env, NULL, 0, &txn);
  if (rc != 0)
    return rc;
  struct index_growth growth = index_room__puts(1);
  if ((rc = index_room__reserve(db, txn, &growth)) != 0 ||
      (rc = mdb_drop(txn, db->streams, 0)) != 0 ||
      (rc = mdb_drop(txn, db->stream_index, 0)) != 0 ||
      (rc = mdb_drop(txn, db->event_ids, 0)) != 0 || (rc = mdb_drop(txn, db->index_meta, 0)) != 0 ||
      (rc = db__meta_put_u64(txn, db->index_meta, "format", INDEX_FORMAT)) != 0) {
    mdb_txn_abort(txn);
    return rc;
  }
  return mdb_txn_commit(txn);
}

/* An index of another layout, or one ahead of its log (a log restored from a copy), is rebuilt. */
static int index_usable(struct shard_db *db, bool *usable) {
  MDB_txn *log, *index;
  uint64_t format = 0, through = 0, last = 0;
  bool has_format, has_through;
  int rc = mdb_txn_begin(db->index_env, NULL, MDB_RDONLY, &index);
  if (rc != 0)
    return rc;
  if ((rc = db__meta_get_u64(index, db->index_meta, "format", &format, &has_format)) == 0)
    rc = db__meta_get_u64(index, db->index_meta, "indexed_through", &through, &has_through);
  mdb_txn_abort(index);
  if (rc != 0 || (rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &log)) != 0)
    return rc;
  rc = db__log_last_position(log, db, &last);
  mdb_txn_abort(log);
  *usable = has_format && format == INDEX_FORMAT && through <= last;
  return rc;
}

int index_db__run_at(MDB_cursor *cursor, MDB_cursor_op op, uint64_t stream_id,
                     struct record_run *run) {
  MDB_val k, v;
  uint64_t of_stream;
  int rc = mdb_cursor_get(cursor, &k, &v, op);
  if (rc != 0)
    return rc;
  if (!record_index_key_stream(&k, &of_stream))
    return MDB_CORRUPTED;
  if (of_stream != stream_id)
    return MDB_NOTFOUND; /* another stream's entry is not decoded: its damage is its own */
  return record_run_decode(&k, &v, run) ? 0 : MDB_CORRUPTED;
}

int index_db__stream_length(MDB_txn *txn, struct shard_db *db, uint64_t stream_id,
                            uint32_t *length) {
  MDB_cursor *cursor;
  uint8_t key[RECORD_INDEX_KEY_LEN];
  record_index_key(key, stream_id + 1, 0);
  MDB_val k = {sizeof(key), key}, v;
  int rc = mdb_cursor_open(txn, db->stream_index, &cursor);
  if (rc != 0)
    return rc;
  /* The entry before the next stream's first is this stream's last run, if it has one. */
  rc = mdb_cursor_get(cursor, &k, &v, MDB_SET_RANGE);
  struct record_run run;
  rc = index_db__run_at(cursor, rc == 0 ? MDB_PREV : MDB_LAST, stream_id, &run);
  mdb_cursor_close(cursor);
  *length = rc == 0 ? run.first_version + run.count : 0;
  return rc == MDB_NOTFOUND ? 0 : rc;
}

/*
 * One catch-up: the index transaction of its current step, a cursor per
 * database it inserts into, and the streams it met so far (their length as
 * indexed), so that an event costs no search of streams or stream_index.
 * The run it is indexing is put once it ends: the events of a run (an
 * append's, or several appends' of a stream one after the other) come one
 * after the other in the log.
 */
struct indexer {
  struct shard_db *db;
  MDB_txn *txn;
  MDB_cursor *stream_index, *event_ids;
  struct stream_cache *streams;  /* NULL if it could not be allocated: each event searches */
  uint64_t next_stream_id;
  struct record_run run; /* of run_stream; count 0 when there is none */
  uint64_t run_stream;
};

/* Puts the run being indexed, if any. */
static int put_run(struct indexer *ix) {
  if (ix->run.count == 0)
    return 0;
  uint8_t key[RECORD_INDEX_KEY_LEN], value[RECORD_RUN_MAX];
  record_index_key(key, ix->run_stream, ix->run.first_version);
  MDB_val k = {sizeof(key), key}, v = {record_run_encode(value, &ix->run), value};
  ix->run.count = 0;
  int rc = mdb_cursor_put(ix->stream_index, &k, &v, MDB_NOOVERWRITE);
  return rc == MDB_KEYEXIST ? MDB_CORRUPTED : rc;
}

/* Adds the event to the run being indexed, or puts that run and begins the event's own. */
static int add_to_run(struct indexer *ix, uint64_t stream_id, const struct evf_event_fields *e) {
  struct record_run *run = &ix->run;
  if (run->count > 0 && ix->run_stream == stream_id &&
      e->version == run->first_version + run->count &&
      e->position == run->first_position + run->count) {
    run->count++;
    return 0;
  }
  int rc = put_run(ix);
  ix->run = (struct record_run){
      .first_version = e->version, .first_position = e->position, .count = 1};
  ix->run_stream = stream_id;
  return rc;
}

int index_db__read_stream(MDB_txn *txn, struct shard_db *db, const char *name, size_t len,
                          struct stream_record *record) {
  MDB_val k = {len, (void *)name}, v;
  int rc = mdb_get(txn, db->streams, &k, &v);
  if (rc == 0 && !record_stream_decode(v.mv_data, v.mv_size, record))
    rc = MDB_CORRUPTED;
  if (rc == 0)
    rc = index_db__stream_length(txn, db, record->stream_id, &record->next_version);
  return rc;
}

/* The stream as indexed so far, or a new one (*created) for an event of version 0. */
static int stream_of(struct indexer *ix, const struct evf_event_fields *e, uint64_t hash,
                     struct stream_record *record, bool *created) {
  const struct stream_record *met =
      ix->streams ? stream_cache_find(ix->streams, e->stream, e->stream_len, hash) : NULL;
  *created = false;
  if (met != NULL) {
    *record = *met;
    return 0;
  }
  /* The index read must hold the run being indexed, which may be this stream's. */
  int rc = put_run(ix);
  if (rc == 0)
    rc = index_db__read_stream(ix->txn, ix->db, e->stream, e->stream_len, record);
  *created = rc == MDB_NOTFOUND;
  if (rc != MDB_NOTFOUND)
    return rc;
  /* A stream is created by its first append, whose time is its events' added_at. */
  *record = (struct stream_record){
      .stream_id = ix->next_stream_id++, .next_version = 0, .created_at = e->added_at};
  return 0;
}

/* Adds one event of the log to the index: what a commit writes, re-derived. */
static int index_event(struct indexer *ix, const struct evf_event_fields *e) {
  struct stream_record stream;
  struct evf_uuid id;
  bool created;
  uint64_t hash = evf_hash_fnv1a64(e->stream, e->stream_len);
  int rc = stream_of(ix, e, hash, &stream, &created);
  if (rc != 0)
    return rc;
  if (e->version != stream.next_version || evf_uuid_parse(e->id, e->id_len, &id) != 0)
    return MDB_CORRUPTED;
  uint8_t pos[RECORD_POSITION_LEN], stream_value[RECORD_STREAM_LEN];
  record_position_key(pos, e->position);
  record_stream_encode(stream_value, &stream);
  MDB_val idk = {sizeof(id.bytes), id.bytes}, iv = {sizeof(pos), pos};
  MDB_val sk = {e->stream_len, (void *)e->stream}, sv = {sizeof(stream_value), stream_value};
  if ((rc = add_to_run(ix, stream.stream_id, e)) != 0)
    return rc;
  if ((rc = mdb_cursor_put(ix->event_ids, &idk, &iv, MDB_NOOVERWRITE)) != 0)
    return rc == MDB_KEYEXIST ? MDB_CORRUPTED : rc;
  if (created && (rc = mdb_put(ix->txn, ix->db->streams, &sk, &sv, MDB_NOOVERWRITE)) != 0)
    return rc;
  stream.next_version = e->version + 1;
  /* Out of memory, the stream is searched for again next time. */
  if (ix->streams)
    (void)stream_cache_put(ix->streams, e->stream, e->stream_len, hash, &stream);
  return 0;
}

/* Indexes up to CATCH_UP_CHUNK events of the log after `through`. */
static int index_chunk(struct indexer *ix, MDB_txn *log, uint64_t *through, size_t *indexed) {
  MDB_cursor *cursor;
  uint8_t key[RECORD_POSITION_LEN];
  record_position_key(key, *through + 1);
  MDB_val k = {sizeof(key), key}, v;
  int rc = mdb_cursor_open(log, ix->db->events, &cursor);
  if (rc != 0)
    return rc;
  *indexed = 0;
  rc = mdb_cursor_get(cursor, &k, &v, MDB_SET_RANGE);
  while (rc == 0 && *indexed < CATCH_UP_CHUNK) {
    struct evf_event_fields e;
    if (k.mv_size != RECORD_POSITION_LEN || !evf_event_fields_read(v.mv_data, v.mv_size, &e) ||
        e.position != record_get_u64(k.mv_data))
      rc = MDB_CORRUPTED;
    else
      rc = index_event(ix, &e);
    if (rc != 0)
      break;
    *through = e.position;
    (*indexed)++;
    rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(cursor);
  return rc == 0 || rc == MDB_NOTFOUND ? put_run(ix) : rc;
}

/*
 * Disk room for the next chunk: the positions after `through` bound the
 * count of its events (positions go to every shard), so an index already
 * level with its log asks for next to nothing.
 */
static int reserve_chunk(struct indexer *ix, MDB_txn *log, uint64_t through) {
  uint64_t last;
  int rc = db__log_last_position(log, ix->db, &last);
  if (rc != 0)
    return rc;
  uint64_t events = last > through ? last - through : 0;
  if (events > CATCH_UP_CHUNK)
    events = CATCH_UP_CHUNK;
  /* stream_index (at most), event_ids and streams per event; two meta records */
  struct index_growth growth = index_room__puts(3 * events + 2);
  return index_room__reserve(ix->db, ix->txn, &growth);
}

static int open_cursors(struct indexer *ix) {
  int rc = mdb_cursor_open(ix->txn, ix->db->stream_index, &ix->stream_index);
  return rc != 0 ? rc : mdb_cursor_open(ix->txn, ix->db->event_ids, &ix->event_ids);
}

/* One index transaction of the catch-up; *indexed is 0 once the index holds the whole log. */
static int catch_up_step(struct indexer *ix, size_t *indexed) {
  struct shard_db *db = ix->db;
  MDB_txn *log;
  uint64_t through = 0;
  bool found;
  int rc = mdb_txn_begin(db->index_env, NULL, 0, &ix->txn);
  if (rc != 0)
    return rc;
  if ((rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &log)) != 0) {
    mdb_txn_abort(ix->txn);
    return rc;
  }
  ix->next_stream_id = 1;
  ix->run.count = 0;
  if ((rc = open_cursors(ix)) == 0 &&
      (rc = db__meta_get_u64(ix->txn, db->index_meta, "indexed_through", &through, &found)) == 0 &&
      (rc = db__meta_get_u64(ix->txn, db->index_meta, "next_stream_id", &ix->next_stream_id,
                             &found)) == 0 &&
      (rc = reserve_chunk(ix, log, through)) == 0 &&
      (rc = index_chunk(ix, log, &through, indexed)) == 0 && *indexed > 0 &&
      (rc = db__meta_put_u64(ix->txn, db->index_meta, "indexed_through", through)) == 0)
    rc = db__meta_put_u64(ix->txn, db->index_meta, "next_stream_id", ix->next_stream_id);
  mdb_txn_abort(log);
  if (rc != 0 || *indexed == 0) {
    mdb_txn_abort(ix->txn);
    return rc;
  }
  if ((rc = mdb_txn_commit(ix->txn)) == 0)
    index_room__check(db);
  return rc;
}

int index_db__catch_up(struct shard_db *db, uint64_t *events) {
  struct indexer ix = {.db = db, .streams = stream_cache_create(CATCH_UP_STREAMS)};
  size_t indexed;
  int rc;
  *events = 0;
  while ((rc = catch_up_step(&ix, &indexed)) == 0 && indexed > 0)
    *events += indexed;
  stream_cache_destroy(ix.streams);
  return rc;
}

/* Opens the environment and brings it level with the log. */
static int prepare_index(struct shard_db *db, const struct index_paths *p, bool trusted) {
  bool usable = false;
  uint64_t indexed;
  int rc = open_index_dbis(db);
  if (rc == 0 && trusted)
    rc = index_usable(db, &usable);
  if (rc == 0 && !usable)
    rc = clear_index(db);
  if (rc == 0)
    rc = index_db__catch_up(db, &indexed);
  if (rc == 0 && indexed > 0)
    evf_info("%s: %s %llu events of the log", p->dir, usable ? "indexed the last" : "rebuilt from",
             (unsigned long long)indexed);
  return rc;
}

/* Removes the index's files: it is rebuilt from the log. */
static int discard_index(const struct index_paths *p, char *err, size_t err_len) {
  int rc;
  if ((rc = remove_file(p->data)) != 0 || (rc = remove_file(p->lock)) != 0)
    snprintf(err, err_len, "cannot remove the index in %s: %s", p->dir, strerror(-rc));
  return rc;
}

/* LMDB's codes stay inside shards/; a damaged log is a format error here. */
static int index_error(int mdb_rc) {
  return mdb_rc == MDB_CORRUPTED ? EVF_EFORMAT : db__status(mdb_rc);
}

/* Opens the environment, marks it open in this boot, and brings it level with the log. */
static int open_index(struct shard_db *db, const struct index_paths *p, size_t map_size,
                      const char *boot_id, bool trusted, char *err, size_t err_len) {
  /* Never synced per commit, whatever SYNC says: recovery rebuilds what a machine crash tore. */
  db->index_mapped = index_room__can_reserve(p->dir, p->data);
  db->index_reserved = 0;
  unsigned flags = MDB_NOSYNC | (db->index_mapped ? MDB_WRITEMAP : 0);
  int rc = db__open_env(&db->index_env, p->dir, map_size, flags, err, err_len);
  if (rc != 0)
    return rc;
  if ((rc = mark_open(p, boot_id)) != 0) {
    snprintf(err, err_len, "cannot write %s: %s", p->open_mark, strerror(-rc));
  } else if ((rc = prepare_index(db, p, trusted)) != 0) {
    snprintf(err, err_len, "cannot bring the index in %s level with the log: %s", p->dir,
             rc == MDB_CORRUPTED ? "the log is damaged" : mdb_strerror(rc));
    rc = index_error(rc);
  }
  if (rc != 0)
    mdb_env_close(db->index_env);
  return rc;
}

int index_db__open(struct shard_db *db, const char *shard_path, size_t map_size, char *err,
                   size_t err_len) {
  struct index_paths p;
  char dir[4200], boot_id[BOOT_ID_MAX];
  snprintf(dir, sizeof(dir), "%s/index", shard_path);
  index_paths(&p, dir);
  read_small_file(BOOT_ID_PATH, boot_id, sizeof(boot_id));
  bool trusted = index_trusted(&p, boot_id);
  if (trusted && open_index(db, &p, map_size, boot_id, true, err, err_len) == 0)
    return 0;
  /*
   * Untrusted, or trusted and found unreadable or out of step with the log
   * (a file torn before its OPEN mark was durable, a copy from elsewhere):
   * only a rebuild from the log that fails stops the start.
   */
  if (trusted)
    evf_warn("%s: %s; rebuilding it from the log", p.dir, err);
  err[0] = '\0';
  int rc = discard_index(&p, err, err_len);
  return rc != 0 ? rc : open_index(db, &p, map_size, boot_id, false, err, err_len);
}

void index_db__close(struct shard_db *db) {
  const char *dir = NULL;
  struct index_paths p;
  mdb_env_get_path(db->index_env, &dir);
  index_paths(&p, dir);
  /* Only a synced index may lose its OPEN mark. */
  int rc = mdb_env_sync(db->index_env, 1);
  if (rc == 0 && (rc = remove_file(p.open_mark)) == 0)
    rc = fsync_dir(dir);
  if (rc != 0) {
    /*
     * A failed sync may leave pages the page cache no longer holds: an
     * empty mark matches no boot, so the next start rebuilds the index.
     */
    evf_warn("closing the index in %s: %s; it will be rebuilt at the next start", dir,
             rc > 0 ? mdb_strerror(rc) : strerror(-rc));
    if (mark_open(&p, "") != 0)
      remove_file(p.data);
  }
  mdb_env_close(db->index_env);
}

int index_db__next_stream_id(struct shard_db *db, uint64_t *id) {
  MDB_txn *txn;
  bool found;
  uint64_t value = 1;
  int rc = mdb_txn_begin(db->index_env, NULL, MDB_RDONLY, &txn);
  if (rc != 0)
    return db__error(rc, "mdb_txn_begin");
  rc = db__meta_get_u64(txn, db->index_meta, "next_stream_id", &value, &found);
  mdb_txn_abort(txn);
  if (rc != 0)
    return db__error(rc, "reading next_stream_id");
  *id = found ? value : 1;
  return 0;
}
