/* One shard's environments: opening the log, its meta records, error mapping. */
#include "internal.h"

#include "evf/hash.h"
#include "evf/log.h"
#include "evf/status.h"
#include "records.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_READERS 1024

/* The codes a caller can act on; 0 for the others. */
static int expected_status(int mdb_rc) {
  switch (mdb_rc) {
  case MDB_MAP_FULL:
  case ENOSPC:
  case EDQUOT:
    return EVF_EFULL;
  case MDB_TXN_FULL:
    return EVF_ETOOBIG;
  case ENOMEM:
    return -ENOMEM;
  }
  return 0;
}

int db__status(int mdb_rc) {
  int status = expected_status(mdb_rc);
  if (mdb_rc == MDB_SUCCESS || status != 0)
    return status;
  return mdb_rc > 0 ? -mdb_rc : EVF_EINTERNAL;
}

const char *db__strerror(int mdb_rc) {
  /* LMDB's own text ("Located page was wrong type") would mislead. */
  return mdb_rc == MDB_CORRUPTED ? "stored data that does not read back (damaged)"
                                 : mdb_strerror(mdb_rc);
}

int db__error(int mdb_rc, const char *what) {
  if (mdb_rc != MDB_SUCCESS && expected_status(mdb_rc) == 0)
    evf_error("%s: %s", what, db__strerror(mdb_rc));
  return db__status(mdb_rc);
}

int db__meta_get_u64(MDB_txn *txn, MDB_dbi meta, const char *key, uint64_t *value, bool *found) {
  MDB_val k = {strlen(key), (void *)key}, v;
  int rc = mdb_get(txn, meta, &k, &v);
  *found = rc == 0;
  if (rc == MDB_NOTFOUND)
    return 0;
  if (rc != 0)
    return rc;
  if (v.mv_size != 8)
    return MDB_CORRUPTED;
  *value = record_get_u64(v.mv_data);
  return 0;
}

int db__meta_put_u64(MDB_txn *txn, MDB_dbi meta, const char *key, uint64_t value) {
  uint8_t buf[8];
  record_put_u64(buf, value);
  MDB_val k = {strlen(key), (void *)key}, v = {8, buf};
  return mdb_put(txn, meta, &k, &v, 0);
}

/*
 * Format 1 kept the index's databases in the shard's one environment, next
 * to the events: that environment is a format 2 log once they are dropped
 * (the index is then rebuilt from the log, in its own environment).
 */
static int drop_format_1_index(struct shard_db *db, MDB_txn *txn) {
  static const char *const dropped[] = {"streams", "stream_index", "event_ids"};
  int rc;
  for (unsigned i = 0; i < 3; i++) {
    MDB_dbi dbi;
    rc = mdb_dbi_open(txn, dropped[i], 0, &dbi);
    if (rc == 0)
      rc = mdb_drop(txn, dbi, 1);
    if (rc != 0 && rc != MDB_NOTFOUND)
      return rc;
  }
  MDB_val k = {strlen("next_stream_id"), "next_stream_id"};
  rc = mdb_del(txn, db->meta, &k, NULL);
  return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Brings an older shard's log to STORE_FORMAT in place; a format 2 log is a format 3 log. */
static int upgrade_log(struct shard_db *db, MDB_txn *txn, unsigned index) {
  uint64_t format = 0;
  bool found;
  int rc = db__meta_get_u64(txn, db->meta, "format", &format, &found);
  if (rc != 0 || !found || format < 1 || format >= STORE_FORMAT)
    return rc;
  if (format == 1 && (rc = drop_format_1_index(db, txn)) != 0)
    return rc;
  evf_info("shard %u: upgrading from format %llu to %d", index, (unsigned long long)format,
           STORE_FORMAT);
  return db__meta_put_u64(txn, db->meta, "format", STORE_FORMAT);
}

/* Records the shard's identity in a new log, or checks it in an old one. */
static int check_identity(struct shard_db *db, MDB_txn *txn, unsigned index, unsigned shard_count,
                          char *err, size_t err_len) {
  static const char *const keys[] = {"format", "shard", "shards", "hash"};
  const uint64_t want[] = {STORE_FORMAT, index, shard_count,
                           evf_hash_fnv1a64(EVF_STREAM_HASH_NAME, strlen(EVF_STREAM_HASH_NAME))};
  int upgraded = upgrade_log(db, txn, index);
  if (upgraded != 0)
    return db__error(upgraded, "upgrading the shard's log");
  for (unsigned i = 0; i < 4; i++) {
    uint64_t have;
    bool found;
    int rc = db__meta_get_u64(txn, db->meta, keys[i], &have, &found);
    if (rc == 0 && !found)
      rc = db__meta_put_u64(txn, db->meta, keys[i], want[i]);
    else if (rc == 0 && have != want[i]) {
      snprintf(err, err_len, "shard %u records %s %llu, expected %llu", index, keys[i],
               (unsigned long long)have, (unsigned long long)want[i]);
      return EVF_EFORMAT;
    }
    if (rc != 0)
      return db__error(rc, "reading shard meta");
  }
  return 0;
}

static int open_log_dbis(struct shard_db *db, unsigned index, unsigned shard_count, char *err,
                         size_t err_len) {
  MDB_txn *txn;
  int rc = mdb_txn_begin(db->env, NULL, 0, &txn);
  if (rc != 0)
    return db__error(rc, "mdb_txn_begin");
  if ((rc = mdb_dbi_open(txn, "events", MDB_CREATE, &db->events)) != 0 ||
      (rc = mdb_set_compare(txn, db->events, record_key_compare)) != 0 ||
      (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &db->meta)) != 0) {
    mdb_txn_abort(txn);
    return db__error(rc, "mdb_dbi_open");
  }
  if ((rc = check_identity(db, txn, index, shard_count, err, err_len)) != 0) {
    mdb_txn_abort(txn);
    return rc;
  }
  if ((rc = mdb_txn_commit(txn)) != 0)
    return db__error(rc, "mdb_txn_commit");
  return 0;
}

int db__open_env(MDB_env **env, const char *path, size_t map_size, unsigned flags, char *err,
                 size_t err_len) {
  if (mkdir(path, 0755) != 0 && errno != EEXIST) {
    snprintf(err, err_len, "cannot create %s: %s", path, strerror(errno));
    return -errno;
  }
  int rc;
  if ((rc = mdb_env_create(env)) != 0)
    return db__error(rc, "mdb_env_create");
  /* MDB_NOTLS: read transactions are not tied to threads (any thread reads). */
  flags |= MDB_NOTLS | MDB_NORDAHEAD;
  if ((rc = mdb_env_set_mapsize(*env, map_size)) != 0 ||
      (rc = mdb_env_set_maxdbs(*env, 8)) != 0 ||
      (rc = mdb_env_set_maxreaders(*env, MAX_READERS)) != 0 ||
      (rc = mdb_env_open(*env, path, flags, 0644)) != 0) {
    snprintf(err, err_len, "cannot open LMDB environment %s: %s", path, mdb_strerror(rc));
    mdb_env_close(*env);
    return rc > 0 ? -rc : EVF_EFORMAT;
  }
  int stale;
  mdb_reader_check(*env, &stale); /* readers left by a killed process */
  return 0;
}

int db__open(struct shard_db *db, const char *path, const struct store_options *options,
             unsigned index, unsigned shard_count, char *err, size_t err_len) {
  unsigned flags = options->sync_full ? 0 : MDB_NOSYNC;
  int rc = db__open_env(&db->env, path, options->map_size, flags, err, err_len);
  if (rc != 0)
    return rc;
  if ((rc = open_log_dbis(db, index, shard_count, err, err_len)) == 0 &&
      (rc = index_db__open(db, path, options->map_size, err, err_len)) == 0)
    return 0;
  if (err[0] == '\0')
    snprintf(err, err_len, "cannot open the databases of %s: %s", path, evf_strerror(rc));
  mdb_env_close(db->env);
  return rc;
}

void db__close(struct shard_db *db) {
  /* With SYNC=none the log is synced here: a clean stop never leaves the log behind its index. */
  int rc = mdb_env_sync(db->env, 1);
  if (rc != 0)
    evf_warn("syncing the log at close: %s", mdb_strerror(rc));
  index_db__close(db);
  mdb_env_close(db->env);
}

int db__indexed_event(MDB_txn *log, const struct shard_db *db, const MDB_val *position_key,
                      MDB_val *event) {
  if (position_key->mv_size != RECORD_POSITION_LEN)
    return MDB_CORRUPTED;
  int rc = mdb_get(log, db->events, (MDB_val *)position_key, event);
  return rc == MDB_NOTFOUND ? MDB_CORRUPTED : rc; /* an index entry without its event */
}

int db__log_last_position(MDB_txn *txn, struct shard_db *db, uint64_t *position) {
  MDB_cursor *cursor;
  MDB_val k, v;
  int rc = mdb_cursor_open(txn, db->events, &cursor);
  if (rc == 0) {
    rc = mdb_cursor_get(cursor, &k, &v, MDB_LAST);
    mdb_cursor_close(cursor);
  }
  if (rc == MDB_NOTFOUND) {
    *position = 0;
    return 0;
  }
  if (rc == 0 && k.mv_size != RECORD_POSITION_LEN)
    rc = MDB_CORRUPTED;
  if (rc == 0)
    *position = record_get_u64(k.mv_data);
  return rc;
}

int db__last_position(struct shard_db *db, uint64_t *position) {
  MDB_txn *txn;
  int rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn);
  if (rc != 0)
    return db__error(rc, "mdb_txn_begin");
  rc = db__log_last_position(txn, db, position);
  mdb_txn_abort(txn);
  return db__error(rc, "reading the last position");
}
