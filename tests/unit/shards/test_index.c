/*
 * The index (streams, stream_index, event_ids) derives from the log: a
 * missing index, one left open by another machine session, and one ahead
 * of its log are rebuilt; one left open in this session catches up. Each
 * case compares everything the public reads show with what they showed
 * before, and checks that appends go on from the right state. A format 1
 * folder (the index's databases inside the shard's one environment) is
 * upgraded in place; a format 2 folder's events are read as they were stored.
 */
#include "harness.h"
#include "records.h"

#include "evf/hash.h"
#include "evf/status.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>

#define SHARDS 2
#define STREAM_COUNT 6

static const char *const streams[STREAM_COUNT] = {"account-1", "account-2", "order-7",
                                                  "order-8",   "cart-3",    "cart-4"};
static const char *const client_ids[2] = {"0191e1c4-7d2a-7cc0-8f00-000000000001",
                                          "0191e1c4-7d2a-7cc0-8f00-000000000002"};

/* Appends of 1 to 3 events to each stream, twice over; the first also carries client ids. */
static void fill(struct harness_fixture *f, unsigned round) {
  for (unsigned i = 0; i < STREAM_COUNT; i++) {
    size_t n = 1 + (i + round) % 3;
    assert_int_equal(harness_fixture_append(f, streams[i], -1, n, NULL, NULL), 0);
  }
  if (round == 0)
    assert_int_equal(harness_fixture_append(f, "with-ids", 0, 2, client_ids, NULL), 0);
}

/* A growable text. */
struct text {
  char *data;
  size_t len;
};

static void text_add(struct text *t, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  t->data = realloc(t->data, t->len + (size_t)n + 1);
  assert_non_null(t->data);
  va_start(ap, fmt);
  vsnprintf(t->data + t->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  t->len += (size_t)n;
}

static void describe_events(struct text *t, const struct harness_events *e) {
  for (size_t i = 0; i < e->count; i++)
    text_add(t, " %s/%u@%llu:%s", e->events[i]->stream, e->events[i]->version,
             (unsigned long long)e->events[i]->position, e->events[i]->id);
  text_add(t, "\n");
}

static int name_cb(const char *name, size_t len, void *arg) {
  text_add(arg, " %.*s", (int)len, name);
  return 0;
}

static int position_cb(const uint8_t *event, size_t len, uint64_t position, void *arg) {
  (void)event;
  (void)len;
  text_add(arg, " by id @%llu", (unsigned long long)position);
  return 0;
}

/* Everything the reads show, as text: each stream, the global stream, lookups by id, counts. */
static char *describe(struct evf_store *s) {
  struct text t = {0};
  struct harness_events e;
  const char *names[STREAM_COUNT + 1];
  memcpy(names, streams, sizeof(streams));
  names[STREAM_COUNT] = "with-ids";
  for (unsigned i = 0; i <= STREAM_COUNT; i++) {
    assert_int_equal(harness_read_stream(s, names[i], 0, 0, &e), 0);
    text_add(&t, "%s:", names[i]);
    describe_events(&t, &e);
    for (size_t k = 0; k < e.count; k++)
      assert_int_equal(store_get_event(s, e.events[k]->id, strlen(e.events[k]->id), position_cb, &t), 0);
    harness_events_free(&e);
  }
  uint64_t checkpoint;
  assert_int_equal(harness_read_global(s, 0, 0, &e, &checkpoint), 0);
  text_add(&t, "global:");
  describe_events(&t, &e);
  harness_events_free(&e);
  int64_t events, stream_count;
  assert_int_equal(store_event_count(s, &events), 0);
  assert_int_equal(store_stream_count(s, &stream_count), 0);
  text_add(&t, "counts %lld %lld\nstreams:", (long long)events, (long long)stream_count);
  assert_int_equal(store_list_streams(s, 0, 0, name_cb, &t), 0);
  return t.data;
}

/* Fills the store once and closes it; returns what its reads showed (freed by the caller). */
static char *fill_and_close(struct harness_fixture *f) {
  fill(f, 0);
  char *before = describe(f->store);
  harness_fixture_close(f);
  return before;
}

static void shard_file(const struct harness_fixture *f, unsigned shard, const char *name, char *out,
                       size_t len) {
  snprintf(out, len, "%s/shard-%03u/%s", f->dir, shard, name);
}

/* Deletes a shard's index, which the next start rebuilds from the log. */
static void delete_index(const struct harness_fixture *f, unsigned shard) {
  char path[4300];
  shard_file(f, shard, "index/data.mdb", path, sizeof(path));
  assert_int_equal(unlink(path), 0);
}

/* Copies a file of every shard's folder to another name in it. */
static void copy_in_shards(const struct harness_fixture *f, const char *from, const char *to) {
  for (unsigned s = 0; s < SHARDS; s++) {
    char source[4300], target[4300], command[8700];
    shard_file(f, s, from, source, sizeof(source));
    shard_file(f, s, to, target, sizeof(target));
    snprintf(command, sizeof(command), "cp '%s' '%s'", source, target);
    assert_int_equal(system(command), 0);
  }
}

/* Writes a file of every shard's folder. */
static void write_in_shards(const struct harness_fixture *f, const char *name, const char *content,
                            size_t len) {
  for (unsigned s = 0; s < SHARDS; s++) {
    char path[4300];
    shard_file(f, s, name, path, sizeof(path));
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, len), (ssize_t)len);
    close(fd);
  }
}

static void this_boot_id(char *out, size_t len) {
  FILE *file = fopen("/proc/sys/kernel/random/boot_id", "r");
  assert_non_null(file);
  assert_non_null(fgets(out, (int)len, file));
  fclose(file);
  out[strcspn(out, "\n")] = '\0';
}

static void put_u64(MDB_txn *txn, MDB_dbi dbi, const char *key, uint64_t value) {
  uint8_t buf[8];
  record_put_u64(buf, value);
  MDB_val k = {strlen(key), (void *)key}, v = {sizeof(buf), buf};
  assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
}

static MDB_env *open_env(const struct harness_fixture *f, unsigned shard, const char *sub) {
  char path[4300];
  MDB_env *env;
  shard_file(f, shard, sub, path, sizeof(path));
  assert_int_equal(mdb_env_create(&env), 0);
  assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
  assert_int_equal(mdb_env_set_mapsize(env, 64u << 20), 0);
  assert_int_equal(mdb_env_open(env, path, 0, 0644), 0);
  return env;
}

/* A write transaction on a shard's log ("") or index ("index"), the store closed. */
static MDB_txn *begin_edit(const struct harness_fixture *f, unsigned shard, const char *sub,
                           MDB_env **env) {
  MDB_txn *txn;
  *env = open_env(f, shard, sub);
  assert_int_equal(mdb_txn_begin(*env, NULL, 0, &txn), 0);
  return txn;
}

static void commit_edit(MDB_env *env, MDB_txn *txn) {
  assert_int_equal(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

/*
 * Puts an encoded event into the log of its stream's shard, as another
 * writer would, and deletes that shard's index, which the next start
 * rebuilds from the log. Returns the shard.
 */
static unsigned plant_in_log(struct harness_fixture *f, const Api__Event *event,
                             const uint8_t *bytes, size_t len) {
  unsigned shard = evf_stream_shard(event->stream, strlen(event->stream), SHARDS);
  MDB_env *env;
  MDB_txn *txn = begin_edit(f, shard, "", &env);
  MDB_dbi events;
  uint8_t key[RECORD_POSITION_LEN];
  record_position_key(key, event->position);
  MDB_val k = {sizeof(key), key}, v = {len, (void *)bytes};
  assert_int_equal(mdb_dbi_open(txn, "events", 0, &events), 0);
  assert_int_equal(mdb_put(txn, events, &k, &v, 0), 0);
  commit_edit(env, txn);
  delete_index(f, shard);
  return shard;
}

/* After recovery, appends are decided against the right state. */
static void appends_go_on(struct harness_fixture *f) {
  struct harness_result r;
  struct harness_events e;
  assert_int_equal(harness_read_stream(f->store, "account-1", 0, 0, &e), 0);
  uint32_t length = (uint32_t)e.count;
  harness_events_free(&e);
  assert_int_equal(harness_fixture_append(f, "account-1", 0, 1, NULL, &r), EVF_EVERSION);
  assert_int_equal(r.actual_version, length);
  assert_int_equal(harness_fixture_append(f, "account-1", (int32_t)length, 1, NULL, &r), 0);
  assert_int_equal(r.first_version, length);
  /* a retry of the append with client ids is recognized, not stored twice */
  assert_int_equal(harness_fixture_append(f, "with-ids", 0, 2, client_ids, &r), 0);
  assert_int_equal(r.first_version, 0);
  assert_int_equal(harness_fixture_append(f, "another", 0, 1, client_ids, &r), EVF_EEXIST);
  assert_int_equal(harness_fixture_append(f, "brand-new", 0, 1, NULL, &r), 0);
  assert_int_equal(harness_read_stream(f->store, "brand-new", 0, 0, &e), 0);
  assert_int_equal(e.count, 1);
  harness_events_free(&e);
}

/* Reopens the store: its reads show what `before` describes, and appends go on. Frees before. */
static void reopen_and_compare(struct harness_fixture *f, char *before) {
  harness_fixture_open(f);
  char *after = describe(f->store);
  assert_string_equal(after, before);
  appends_go_on(f);
  free(before);
  free(after);
}

static void a_missing_index_is_rebuilt_from_the_log(void **state) {
  struct harness_fixture *f = *state;
  fill(f, 0);
  fill(f, 1);
  char *before = describe(f->store);
  harness_fixture_close(f);
  for (unsigned s = 0; s < SHARDS; s++)
    delete_index(f, s);
  reopen_and_compare(f, before);
}

/*
 * An index that reads fine and is level with its log, but holds a stream
 * the log never had (as a torn index could): trusted, it would be kept.
 */
static void an_index_left_open_by_another_boot_is_rebuilt(void **state) {
  struct harness_fixture *f = *state;
  char *before = fill_and_close(f);
  for (unsigned shard = 0; shard < SHARDS; shard++) {
    MDB_env *env;
    MDB_txn *txn = begin_edit(f, shard, "index", &env);
    MDB_dbi dbi;
    uint8_t record[RECORD_STREAM_LEN] = {0};
    MDB_val k = {5, "ghost"}, v = {sizeof(record), record};
    assert_int_equal(mdb_dbi_open(txn, "streams", 0, &dbi), 0);
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    commit_edit(env, txn);
  }
  write_in_shards(f, "index/OPEN", "00000000-1111-2222-3333-444444444444", 36);
  reopen_and_compare(f, before);
}

/* A torn index without its OPEN mark (a crash while the first start created it). */
static void a_trusted_index_that_cannot_be_read_is_rebuilt(void **state) {
  struct harness_fixture *f = *state;
  char *before = fill_and_close(f);
  char garbage[65536];
  memset(garbage, 0xab, sizeof(garbage));
  write_in_shards(f, "index/data.mdb", garbage, sizeof(garbage));
  reopen_and_compare(f, before);
}

/* As after a kill -9: the index of an earlier commit, left open in this boot. */
static void an_index_left_open_in_this_boot_catches_up(void **state) {
  struct harness_fixture *f = *state;
  char boot_id[64];
  this_boot_id(boot_id, sizeof(boot_id));
  fill(f, 0);
  harness_fixture_close(f);
  copy_in_shards(f, "index/data.mdb", "index-saved.mdb");
  harness_fixture_open(f);
  fill(f, 1);
  assert_int_equal(harness_fixture_append(f, "created-later", 0, 3, NULL, NULL), 0);
  char *before = describe(f->store);
  harness_fixture_close(f);
  copy_in_shards(f, "index-saved.mdb", "index/data.mdb");
  write_in_shards(f, "index/OPEN", boot_id, strlen(boot_id));
  assert_non_null(strstr(before, "created-later/2@"));
  reopen_and_compare(f, before);
}

/* A log restored from an older copy, next to a newer index: the index follows the log. */
static void an_index_ahead_of_its_log_is_rebuilt(void **state) {
  struct harness_fixture *f = *state;
  char *before = fill_and_close(f);
  copy_in_shards(f, "data.mdb", "log-saved.mdb");
  harness_fixture_open(f);
  fill(f, 1);
  harness_fixture_close(f);
  copy_in_shards(f, "log-saved.mdb", "data.mdb");
  reopen_and_compare(f, before);
}

/* An index of format 2 (event_ids: position, stream id, version), closed cleanly: rebuilt. */
static void a_format_2_index_is_rebuilt(void **state) {
  struct harness_fixture *f = *state;
  char *before = fill_and_close(f);
  for (unsigned shard = 0; shard < SHARDS; shard++) {
    MDB_env *env;
    MDB_txn *txn = begin_edit(f, shard, "index", &env);
    MDB_dbi ids, meta;
    MDB_cursor *c;
    MDB_val k, v;
    assert_int_equal(mdb_dbi_open(txn, "event_ids", 0, &ids), 0);
    assert_int_equal(mdb_set_compare(txn, ids, record_key_compare), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    assert_int_equal(mdb_cursor_open(txn, ids, &c), 0);
    int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
      uint8_t old[20] = {0};
      assert_int_equal(v.mv_size, 8);
      memcpy(old, v.mv_data, 8);
      old[15] = 99; /* a stream id nothing has */
      MDB_val nv = {sizeof(old), old};
      assert_int_equal(mdb_cursor_put(c, &k, &nv, MDB_CURRENT), 0);
    }
    assert_int_equal(rc, MDB_NOTFOUND);
    mdb_cursor_close(c);
    put_u64(txn, meta, "format", 2);
    commit_edit(env, txn);
  }
  reopen_and_compare(f, before);
}

/* The entries of a shard's stream_index, the store closed. */
static size_t stream_index_entries(const struct harness_fixture *f, unsigned shard) {
  MDB_env *env;
  MDB_txn *txn = begin_edit(f, shard, "index", &env);
  MDB_dbi dbi;
  MDB_stat stat;
  assert_int_equal(mdb_dbi_open(txn, "stream_index", 0, &dbi), 0);
  assert_int_equal(mdb_stat(txn, dbi, &stat), 0);
  mdb_txn_abort(txn);
  mdb_env_close(env);
  return stat.ms_entries;
}

#define LONG_APPENDS 20
#define LONG_APPEND_SIZE 128 /* 2,560 events: two catch-up steps of at most 2,000 */

/*
 * A commit writes a stream_index entry per append. A rebuild indexes runs
 * as the log has them: one stream's appends, one after the other, are one
 * run, cut where a catch-up step ends; reads and appends cannot tell.
 */
static void a_rebuilt_index_holds_runs_across_appends_and_steps(void **state) {
  struct harness_fixture *f = *state;
  const char *name = "long";
  unsigned shard = evf_stream_shard(name, strlen(name), SHARDS);
  for (int32_t i = 0; i < LONG_APPENDS; i++)
    assert_int_equal(harness_fixture_append(f, name, i * LONG_APPEND_SIZE, LONG_APPEND_SIZE,
                                             NULL, NULL),
                     0);
  struct harness_events before, e;
  assert_int_equal(harness_read_stream(f->store, name, 1990, 20, &before), 0);
  assert_int_equal(before.count, 20);
  harness_fixture_close(f);
  assert_int_equal(stream_index_entries(f, shard), LONG_APPENDS);
  delete_index(f, shard);
  harness_fixture_open(f);
  assert_int_equal(harness_read_stream(f->store, name, 1990, 20, &e), 0);
  assert_int_equal(e.count, before.count);
  for (size_t k = 0; k < e.count; k++) {
    assert_int_equal(e.events[k]->version, 1990 + k);
    assert_int_equal(e.events[k]->position, before.events[k]->position);
    assert_string_equal(e.events[k]->id, before.events[k]->id);
  }
  harness_events_free(&e);
  harness_events_free(&before);
  uint32_t length = LONG_APPENDS * LONG_APPEND_SIZE;
  struct harness_result r;
  assert_int_equal(harness_fixture_append(f, name, (int32_t)length - 1, 1, NULL, &r),
                   EVF_EVERSION);
  assert_int_equal(r.actual_version, length);
  assert_int_equal(harness_fixture_append(f, name, (int32_t)length, 1, NULL, NULL), 0);
  harness_fixture_close(f);
  /* the two steps' runs, and the append after the rebuild */
  assert_int_equal(stream_index_entries(f, shard), 3);
  harness_fixture_open(f);
}

/* A stream as appended: its length and the position of each version. */
struct appended {
  char name[32];
  uint32_t length;
  uint64_t positions[32];
};

static void append_to(struct harness_fixture *f, struct appended *stream, size_t n) {
  struct harness_result r;
  assert_true(stream->length + n <= sizeof(stream->positions) / sizeof(stream->positions[0]));
  assert_int_equal(
      harness_fixture_append(f, stream->name, (int32_t)stream->length, n, NULL, &r), 0);
  for (size_t i = 0; i < n; i++)
    stream->positions[stream->length + i] = r.first_position + i;
  stream->length += (uint32_t)n;
}

/* Reads from every version, and past the end, with limits of 0 to 4: what was appended. */
static void assert_read_as_appended(struct harness_fixture *f, const struct appended *stream) {
  for (uint32_t from = 0; from <= stream->length + 1; from++) {
    for (uint32_t limit = 0; limit <= 4; limit++) {
      struct harness_events e;
      assert_int_equal(harness_read_stream(f->store, stream->name, from, limit, &e), 0);
      uint32_t left = from < stream->length ? stream->length - from : 0;
      assert_int_equal(e.count, limit == 0 || limit > left ? left : limit);
      for (size_t k = 0; k < e.count; k++) {
        assert_string_equal(e.events[k]->stream, stream->name);
        assert_int_equal(e.events[k]->version, from + k);
        assert_int_equal(e.events[k]->position, stream->positions[from + k]);
      }
      harness_events_free(&e);
    }
  }
  struct harness_result r;
  assert_int_equal(
      harness_fixture_append(f, stream->name, (int32_t)stream->length - 1, 1, NULL, &r),
      EVF_EVERSION);
  assert_int_equal(r.actual_version, stream->length);
}

/*
 * A rebuild joins into one run only a stream's next version at the next
 * position. Four streams of one shard (neighbours in stream_index) take
 * appends in turns, with another shard's events at the positions between;
 * then unary appends to two streams by turns (each event the next position
 * after the other stream's), and to one stream with the other shard's
 * events between. Every read is the same before and after the rebuild.
 */
static void a_rebuild_joins_only_a_stream_s_next_version_at_the_next_position(void **state) {
  struct harness_fixture *f = *state;
  enum { NEIGHBOURS = 4, OTHER = NEIGHBOURS, STREAMS };
  struct appended made[STREAMS] = {0};
  for (unsigned i = 0; i < NEIGHBOURS; i++)
    harness_name_in_shard("neighbour-", 0, SHARDS, i, made[i].name);
  harness_name_in_shard("other-", 1, SHARDS, 0, made[OTHER].name);
  static const unsigned turns[][2] = {{0, 3}, {1, 2}, {OTHER, 1}, {0, 2}, {2, 3}, {1, 1},
                                      {0, 1}, {OTHER, 2}, {0, 4}, {2, 1}, {3, 1}, {3, 5}};
  for (size_t i = 0; i < sizeof(turns) / sizeof(turns[0]); i++)
    append_to(f, &made[turns[i][0]], turns[i][1]);
  for (int i = 0; i < 4; i++) {
    append_to(f, &made[1], 1);
    append_to(f, &made[2], 1);
  }
  for (int i = 0; i < 4; i++) {
    append_to(f, &made[3], 1);
    append_to(f, &made[OTHER], 1);
  }
  for (unsigned i = 0; i < STREAMS; i++)
    assert_read_as_appended(f, &made[i]);
  harness_fixture_close(f);
  for (unsigned s = 0; s < SHARDS; s++)
    delete_index(f, s);
  harness_fixture_open(f);
  for (unsigned i = 0; i < STREAMS; i++)
    assert_read_as_appended(f, &made[i]);
}

/* Rewrites the length of a stream's first run in its shard's index, the store closed. */
static void set_first_run_length(const struct harness_fixture *f, const char *stream,
                                 uint32_t count) {
  unsigned shard = evf_stream_shard(stream, strlen(stream), SHARDS);
  MDB_env *env;
  MDB_txn *txn = begin_edit(f, shard, "index", &env);
  MDB_dbi streams_dbi, runs;
  MDB_val k = {strlen(stream), (void *)stream}, v;
  assert_int_equal(mdb_dbi_open(txn, "streams", 0, &streams_dbi), 0);
  assert_int_equal(mdb_get(txn, streams_dbi, &k, &v), 0);
  uint8_t key[RECORD_INDEX_KEY_LEN], value[RECORD_RUN_MAX];
  record_index_key(key, record_get_u64(v.mv_data), 0);
  k = (MDB_val){sizeof(key), key};
  assert_int_equal(mdb_dbi_open(txn, "stream_index", 0, &runs), 0);
  assert_int_equal(mdb_set_compare(txn, runs, record_key_compare), 0);
  assert_int_equal(mdb_get(txn, runs, &k, &v), 0);
  struct record_run run = {.first_version = 0, .first_position = record_get_u64(v.mv_data),
                           .count = count};
  v = (MDB_val){record_run_encode(value, &run), value};
  assert_int_equal(mdb_put(txn, runs, &k, &v, 0), 0);
  commit_edit(env, txn);
}

/*
 * A run longer than the events its stream has in the log (a damaged
 * index): its next position holds another stream's event of the other
 * shard, and this shard's log goes on with a later one. The read fails
 * rather than hand over that event as the stream's.
 */
static void a_run_past_its_events_in_the_log_fails_the_read(void **state) {
  struct harness_fixture *f = *state;
  char stream[32], later[32], other[32];
  harness_name_in_shard("runs-", 0, SHARDS, 0, stream);
  harness_name_in_shard("runs-", 0, SHARDS, 1, later);
  harness_name_in_shard("elsewhere-", 1, SHARDS, 0, other);
  assert_int_equal(harness_fixture_append(f, stream, 0, 3, NULL, NULL), 0);
  assert_int_equal(harness_fixture_append(f, other, 0, 2, NULL, NULL), 0);
  assert_int_equal(harness_fixture_append(f, later, 0, 1, NULL, NULL), 0);
  harness_fixture_close(f);
  set_first_run_length(f, stream, 4);
  harness_fixture_open(f);
  struct harness_events e;
  assert_int_equal(harness_read_stream(f->store, stream, 0, 0, &e), EVF_EINTERNAL);
  harness_events_free(&e); /* those handed over before the damage */
  assert_int_equal(harness_read_stream(f->store, stream, 0, 3, &e), 0);
  assert_int_equal(e.count, 3);
  harness_events_free(&e);
}

/* Reads the stream whole: the status, its events freed. */
static int read_whole_stream(struct harness_fixture *f, const char *stream) {
  struct harness_events e;
  int rc = harness_read_stream(f->store, stream, 0, 0, &e);
  harness_events_free(&e);
  return rc;
}

/* A run made shorter leaves a gap before the next: reads into or across it fail. */
static void a_gap_between_runs_fails_the_reads_that_meet_it(void **state) {
  struct harness_fixture *f = *state;
  assert_int_equal(harness_fixture_append(f, "gap", 0, 3, NULL, NULL), 0);
  assert_int_equal(harness_fixture_append(f, "gap", 3, 2, NULL, NULL), 0);
  harness_fixture_close(f);
  set_first_run_length(f, "gap", 2);
  harness_fixture_open(f);
  struct harness_events e;
  for (uint32_t from = 0; from <= 2; from++) {
    assert_int_equal(harness_read_stream(f->store, "gap", from, 0, &e), EVF_EINTERNAL);
    harness_events_free(&e);
  }
  assert_int_equal(harness_read_stream(f->store, "gap", 3, 0, &e), 0);
  assert_int_equal(e.count, 2);
  harness_events_free(&e);
}

/* A run past the last event of its shard's log, and one whose first event is gone. */
static void a_run_missing_events_in_the_log_fails_the_read(void **state) {
  struct harness_fixture *f = *state;
  char longer[32], cut[32];
  harness_name_in_shard("longer-", 0, SHARDS, 0, longer);
  harness_name_in_shard("cut-", 1, SHARDS, 0, cut);
  struct harness_result r;
  assert_int_equal(harness_fixture_append(f, cut, 0, 3, NULL, &r), 0);
  assert_int_equal(harness_fixture_append(f, longer, 0, 3, NULL, NULL), 0);
  harness_fixture_close(f);
  set_first_run_length(f, longer, 4);
  MDB_env *env;
  MDB_txn *txn = begin_edit(f, 1, "", &env);
  MDB_dbi events;
  uint8_t key[RECORD_POSITION_LEN];
  record_position_key(key, r.first_position);
  MDB_val k = {sizeof(key), key};
  assert_int_equal(mdb_dbi_open(txn, "events", 0, &events), 0);
  assert_int_equal(mdb_del(txn, events, &k, NULL), 0);
  commit_edit(env, txn);
  harness_fixture_open(f);
  assert_int_equal(read_whole_stream(f, longer), EVF_EINTERNAL);
  assert_int_equal(read_whole_stream(f, cut), EVF_EINTERNAL);
}

/* The next stream's damaged run is not this stream's: its reads and appends go on. */
static void a_damaged_neighbouring_run_leaves_the_stream_alone(void **state) {
  struct harness_fixture *f = *state;
  char stream[32], next[32];
  harness_name_in_shard("runs-", 0, SHARDS, 0, stream);
  harness_name_in_shard("runs-", 0, SHARDS, 1, next);
  assert_int_equal(harness_fixture_append(f, stream, 0, 3, NULL, NULL), 0);
  assert_int_equal(harness_fixture_append(f, next, 0, 3, NULL, NULL), 0);
  harness_fixture_close(f);
  MDB_env *env;
  MDB_txn *txn = begin_edit(f, 0, "index", &env);
  MDB_dbi streams_dbi, runs;
  MDB_val k = {strlen(next), (void *)next}, v;
  assert_int_equal(mdb_dbi_open(txn, "streams", 0, &streams_dbi), 0);
  assert_int_equal(mdb_get(txn, streams_dbi, &k, &v), 0);
  uint8_t key[RECORD_INDEX_KEY_LEN], damaged[5] = {0};
  record_index_key(key, record_get_u64(v.mv_data), 0);
  k = (MDB_val){sizeof(key), key};
  v = (MDB_val){sizeof(damaged), damaged};
  assert_int_equal(mdb_dbi_open(txn, "stream_index", 0, &runs), 0);
  assert_int_equal(mdb_set_compare(txn, runs, record_key_compare), 0);
  assert_int_equal(mdb_put(txn, runs, &k, &v, 0), 0);
  commit_edit(env, txn);
  harness_fixture_open(f);
  struct harness_events e;
  assert_int_equal(harness_read_stream(f->store, stream, 0, 0, &e), 0);
  assert_int_equal(e.count, 3);
  harness_events_free(&e);
  assert_int_equal(harness_read_stream(f->store, stream, 7, 0, &e), 0);
  assert_int_equal(e.count, 0);
  assert_int_equal(harness_fixture_append(f, stream, 3, 1, NULL, NULL), 0);
  assert_int_equal(read_whole_stream(f, next), EVF_EINTERNAL);
}

/* Writes format n into DATA/FORMAT, as an older server left it. */
static void set_folder_format(struct harness_fixture *f, unsigned n) {
  char format[4300], command[8700];
  snprintf(format, sizeof(format), "%s/FORMAT", f->dir);
  snprintf(command, sizeof(command),
           "sed -i 's/^format 3$/format %u/' '%s' && grep -qx 'format %u' '%s'", n, format, n,
           format);
  assert_int_equal(system(command), 0);
}

static void put_log_format(struct harness_fixture *f, unsigned shard, uint64_t format) {
  MDB_env *env;
  MDB_txn *txn = begin_edit(f, shard, "", &env);
  MDB_dbi meta;
  assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
  put_u64(txn, meta, "format", format);
  commit_edit(env, txn);
}

/* The folder and every shard's log say format 3, and no log keeps the format 1 index. */
static void assert_upgraded(struct harness_fixture *f) {
  char command[4400];
  snprintf(command, sizeof(command), "grep -qx 'format 3' '%s/FORMAT'", f->dir);
  assert_int_equal(system(command), 0);
  for (unsigned s = 0; s < SHARDS; s++) {
    MDB_env *env = open_env(f, s, "");
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "stream_index", 0, &dbi), MDB_NOTFOUND);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
    MDB_val k = {6, "format"}, v;
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    assert_int_equal(record_get_u64(v.mv_data), 3);
    mdb_txn_abort(txn);
    mdb_env_close(env);
  }
}

/* Turns each shard back into the format 1 layout: index databases beside the events. */
static void make_format_1(struct harness_fixture *f) {
  for (unsigned s = 0; s < SHARDS; s++) {
    MDB_env *env;
    MDB_txn *txn = begin_edit(f, s, "", &env);
    MDB_dbi meta, dbi;
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    put_u64(txn, meta, "format", 1);
    put_u64(txn, meta, "next_stream_id", 99);
    static const char *const old[] = {"streams", "stream_index", "event_ids"};
    for (unsigned i = 0; i < 3; i++) {
      assert_int_equal(mdb_dbi_open(txn, old[i], MDB_CREATE, &dbi), 0);
      put_u64(txn, dbi, "stale", 1);
    }
    commit_edit(env, txn);
    delete_index(f, s);
  }
  set_folder_format(f, 1);
}

static void a_format_1_folder_is_upgraded_in_place(void **state) {
  struct harness_fixture *f = *state;
  fill(f, 0);
  fill(f, 1);
  char *before = describe(f->store);
  harness_fixture_close(f);
  make_format_1(f);
  reopen_and_compare(f, before);
  harness_fixture_close(f);
  assert_upgraded(f);
  harness_fixture_open(f); /* the teardown closes it */
}

/* A stored event's bytes, copied. */
struct copied_event {
  uint8_t bytes[512];
  size_t len;
};

static int copy_cb(const uint8_t *event, size_t len, uint64_t position, void *arg) {
  (void)position;
  struct copied_event *out = arg;
  assert_true(len <= sizeof(out->bytes));
  memcpy(out->bytes, event, len);
  out->len = len;
  return 0;
}

/*
 * A format 2 log stores every event with its causation and correlation ids,
 * also where they equal its id: such events are read as stored, the folder
 * is renumbered, and appends go on.
 */
static void a_format_2_folder_is_renumbered_and_read_as_stored(void **state) {
  struct harness_fixture *f = *state;
  struct harness_result r;
  fill(f, 0);
  assert_int_equal(harness_fixture_append(f, "account-1", -1, 1, NULL, &r), 0);
  harness_fixture_close(f);

  /* An event as format 2 stored it, at a position after the others, in a stream of its own. */
  Api__Event event = API__EVENT__INIT;
  event.id = event.causation_id = event.correlation_id = "0191e1c4-7d2a-7cc0-8f00-0000000000f2";
  event.stream = "format-2";
  event.type = "Deposited";
  event.added_at = 1764115200000;
  event.position = r.first_position + 100;
  uint8_t packed[256];
  size_t packed_len = api__event__pack(&event, packed);
  plant_in_log(f, &event, packed, packed_len);
  for (unsigned s = 0; s < SHARDS; s++)
    put_log_format(f, s, 2);
  set_folder_format(f, 2);

  harness_fixture_open(f);
  struct copied_event got = {.len = 0};
  assert_int_equal(store_read_stream(f->store, "format-2", 8, 0, 0, copy_cb, &got), 0);
  assert_int_equal(got.len, packed_len);
  assert_memory_equal(got.bytes, packed, packed_len);
  got.len = 0;
  assert_int_equal(store_get_event(f->store, event.id, strlen(event.id), copy_cb, &got), 0);
  assert_int_equal(got.len, packed_len);
  appends_go_on(f);
  harness_fixture_close(f);
  assert_upgraded(f);
  harness_fixture_open(f); /* the teardown closes it */
}

/* Format 3: the log keeps no causation or correlation id equal to the event's id. */
static void stored_events_leave_out_their_own_id(void **state) {
  struct harness_fixture *f = *state;
  struct harness_result r[2];
  assert_int_equal(harness_fixture_append(f, "account-1", 0, 1, NULL, &r[0]), 0);
  /* other ids given, as the event's own id in other letter cases: left out too */
  static const char *const ids[] = {"0190A7E2-0000-7000-8000-0000000000CA"};
  struct harness_request given;
  harness_request(&given, "account-1", 1, 1, "T", "{}", ids);
  given.events[0].causation_id = "0190a7e2-0000-7000-8000-0000000000ca";
  given.events[0].correlation_id = "0190A7E2-0000-7000-8000-0000000000Ca";
  assert_int_equal(harness_append(&f->client, &given.request, &r[1]), 0);
  harness_fixture_close(f);
  unsigned shard = evf_stream_shard("account-1", strlen("account-1"), SHARDS);
  MDB_env *env = open_env(f, shard, "");
  MDB_txn *txn;
  MDB_dbi events;
  assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, "events", 0, &events), 0);
  for (size_t i = 0; i < 2; i++) {
    uint8_t key[RECORD_POSITION_LEN];
    record_position_key(key, r[i].first_position);
    MDB_val k = {sizeof(key), key}, v;
    assert_int_equal(mdb_get(txn, events, &k, &v), 0);
    Api__Event *stored = api__event__unpack(NULL, v.mv_size, v.mv_data);
    assert_non_null(stored);
    assert_string_equal(stored->causation_id, "");
    assert_string_equal(stored->correlation_id, "");
    api__event__free_unpacked(stored, NULL);
  }
  mdb_txn_abort(txn);
  mdb_env_close(env);

  harness_fixture_open(f);
  struct harness_events e;
  assert_int_equal(harness_read_stream(f->store, "account-1", 0, 0, &e), 0);
  assert_int_equal(e.count, 2);
  for (size_t i = 0; i < 2; i++) {
    assert_string_equal(e.events[i]->causation_id, e.events[i]->id);
    assert_string_equal(e.events[i]->correlation_id, e.events[i]->id);
  }
  assert_string_equal(e.events[1]->id, "0190a7e2-0000-7000-8000-0000000000ca");
  harness_events_free(&e);
}

/* An event the index cannot follow (version 7 of a stream that has none) stops the start. */
static void a_log_the_index_cannot_follow_is_refused(void **state) {
  struct harness_fixture *f = *state;
  struct harness_result r;
  assert_int_equal(harness_fixture_append(f, "s", 0, 1, NULL, &r), 0);
  harness_fixture_close(f);
  Api__Event event = API__EVENT__INIT;
  event.id = "0191e1c4-7d2a-7cc0-8f00-00000000000f";
  event.stream = "no-such-start";
  event.version = 7;
  event.type = "Deposited";
  event.position = r.first_position + 100;
  uint8_t value[256];
  plant_in_log(f, &event, value, api__event__pack(&event, value));
  struct evf_store *s = NULL;
  assert_int_equal(harness_try_open(f->dir, NULL, &s), EVF_EFORMAT);
  assert_null(s);
}

/* A clean close leaves no OPEN mark: the next start trusts the index as it is. */
static void a_clean_close_removes_the_open_mark(void **state) {
  struct harness_fixture *f = *state;
  char path[4300];
  fill(f, 0);
  shard_file(f, 0, "index/OPEN", path, sizeof(path));
  assert_int_equal(access(path, F_OK), 0);
  harness_fixture_close(f);
  assert_int_equal(access(path, F_OK), -1);
  assert_int_equal(errno, ENOENT);
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, harness_fixture_setup, harness_fixture_teardown)
  const struct CMUnitTest tests[] = {
      T(a_missing_index_is_rebuilt_from_the_log),
      T(an_index_left_open_by_another_boot_is_rebuilt),
      T(a_trusted_index_that_cannot_be_read_is_rebuilt),
      T(an_index_left_open_in_this_boot_catches_up),
      T(an_index_ahead_of_its_log_is_rebuilt),
      T(a_format_1_folder_is_upgraded_in_place),
      T(a_format_2_folder_is_renumbered_and_read_as_stored),
      T(stored_events_leave_out_their_own_id),
      T(a_log_the_index_cannot_follow_is_refused),
      T(a_clean_close_removes_the_open_mark),
      T(a_format_2_index_is_rebuilt),
      T(a_rebuilt_index_holds_runs_across_appends_and_steps),
      T(a_rebuild_joins_only_a_stream_s_next_version_at_the_next_position),
      T(a_run_past_its_events_in_the_log_fails_the_read),
      T(a_run_missing_events_in_the_log_fails_the_read),
      T(a_gap_between_runs_fails_the_reads_that_meet_it),
      T(a_damaged_neighbouring_run_leaves_the_stream_alone),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
