/*
 * The room a mapped index reserves on disk ahead of each write transaction
 * (index_room.c): appends of every shape at once, on several shards, and
 * a batch shaped for LMDB's worst splits; no transaction goes past the
 * bound its room was reserved for.
 *
 * Not run under ThreadSanitizer: shards read each other's mapped indexes
 * (client ids are looked for everywhere), and LMDB orders its readers
 * after its writer's commits in its own uninstrumented code, which
 * ThreadSanitizer cannot see.
 */
#include "harness.h"
#include "internal.h"

#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cmocka.h>

#define SHARDS 4
#define WRITERS 4
#define APPENDS 150
#define STREAMS 40

struct writer {
  struct evf_store *store;
  unsigned port;
  int status; /* of the first append that failed, or 0 */
};

/* Appends of 1 to 128 events to STREAMS streams of its own, a third with client ids. */
static void *writer_main(void *arg) {
  struct writer *w = arg;
  struct harness_client c;
  harness_client_init(&c, w->store, w->port);
  uint64_t rng = 0x9e3779b97f4a7c15u * (w->port + 1);
  char ids_text[128][EVF_UUID_TEXT_LEN + 1];
  const char *ids[128];
  for (uint32_t k = 0; k < APPENDS && w->status == 0; k++) {
    rng = rng * 6364136223846793005u + 1442695040888963407u;
    size_t n = 1 + (rng >> 33) % 128;
    char stream[32];
    snprintf(stream, sizeof(stream), "grow-%u-%u", w->port, (unsigned)((rng >> 20) % STREAMS));
    bool with_ids = (rng >> 40) % 3 == 0;
    for (size_t i = 0; with_ids && i < n; i++) {
      snprintf(ids_text[i], sizeof(ids_text[i]), "%08x-0000-4000-8000-%012" PRIx32, w->port,
               k * 128 + (uint32_t)i);
      ids[i] = ids_text[i];
    }
    struct harness_request req;
    harness_request(&req, stream, -1, n, "Grown", "{\"x\":1}", with_ids ? ids : NULL);
    w->status = harness_append(&c, &req.request, NULL);
  }
  harness_client_deinit(&c);
  return NULL;
}

/*
 * Where LMDB writes the index with pwrite (overlayfs in the image build,
 * XFS), nothing is reserved: the test does not apply.
 */
static void skip_unless_mapped(struct evf_store *store, char *dir) {
  if (store->shards[0].db.index_mapped)
    return;
  store_close(store);
  harness_remove_dir(dir);
  skip();
}

/* Bytes of the file allocated on disk. */
static uint64_t allocated(const char *path) {
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  return (uint64_t)st.st_blocks * 512;
}

/*
 * Batches of several appends, client ids, new streams: no index transaction
 * goes past its bound, and the room reserved ahead stays small.
 */
static void the_index_never_outgrows_its_reserved_room(void **state) {
  (void)state;
  char *dir = harness_make_dir();
  struct harness_options o = {.shards = SHARDS, .external_ports = WRITERS, .page_size = 1000};
  struct evf_store *store = harness_open(dir, &o);
  skip_unless_mapped(store, dir);
  struct writer writers[WRITERS];
  pthread_t threads[WRITERS];
  for (unsigned i = 0; i < WRITERS; i++) {
    writers[i] = (struct writer){.store = store, .port = i};
    assert_int_equal(pthread_create(&threads[i], NULL, writer_main, &writers[i]), 0);
  }
  for (unsigned i = 0; i < WRITERS; i++) {
    assert_int_equal(pthread_join(threads[i], NULL), 0);
    assert_int_equal(writers[i].status, 0);
  }
  for (unsigned s = 0; s < SHARDS; s++) {
    const struct shard_db *db = &store->shards[s].db;
    assert_int_equal(atomic_load(&db->index_overruns), 0);
    MDB_envinfo info;
    assert_int_equal(mdb_env_info(db->index_env, &info), 0);
    char path[512];
    snprintf(path, sizeof(path), "%s/shard-%03u/index/data.mdb", dir, s);
    uint64_t used = ((uint64_t)info.me_last_pgno + 1) * 4096;
    assert_true(allocated(path) <= used + (32u << 20)); /* 16 MiB of margin, and the bound */
  }
  store_close(store);
  harness_remove_dir(dir);
}

/* One append of n events with the given ids (text). */
static void append_ids(struct harness_client *c, const char *stream, size_t n,
                       char (*ids)[EVF_UUID_TEXT_LEN + 1]) {
  Api__AppendToStreamRequest r;
  api__append_to_stream_request__init(&r);
  Api__EventData *events = calloc(n, sizeof(*events));
  Api__EventData **ptrs = calloc(n, sizeof(*ptrs));
  assert_true(events != NULL && ptrs != NULL);
  r.stream = (char *)stream;
  r.version = -1;
  r.n_events = n;
  r.events = ptrs;
  for (size_t i = 0; i < n; i++) {
    api__event_data__init(&events[i]);
    events[i].type = "T";
    events[i].data.data = (uint8_t *)"{}";
    events[i].data.len = 2;
    events[i].id = ids[i];
    ptrs[i] = &events[i];
  }
  int rc = harness_append(c, &r, NULL);
  free(events);
  free(ptrs);
  assert_int_equal(rc, 0);
}

/* The id whose first 8 bytes are hi and last 8 bytes lo (big-endian). */
static void id_text(char out[EVF_UUID_TEXT_LEN + 1], uint64_t hi, uint64_t lo) {
  snprintf(out, EVF_UUID_TEXT_LEN + 1,
           "%08" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%04" PRIx64 "-%012" PRIx64, hi >> 32,
           (hi >> 16) & 0xffff, hi & 0xffff, lo >> 48, lo & 0xffffffffffffu);
}

/*
 * LMDB splits a full page whose last slot takes the new key at its end:
 * the old page keeps all but its last node. Client ids put in falling
 * pairs into the gap at a leaf's end split it again every second put, a
 * page per two ids, far more than their bytes: the bound must still hold
 * (from a review, which found a bound that did not).
 */
static void client_ids_in_falling_pairs_stay_within_the_bound(void **state) {
  (void)state;
  char *dir = harness_make_dir();
  struct harness_options o = {.shards = 1, .external_ports = 1, .page_size = 1000};
  struct evf_store *store = harness_open(dir, &o);
  skip_unless_mapped(store, dir);
  struct harness_client c;
  harness_client_init(&c, store, 0);
  enum { BASE = 300, N = 2000 };
  char(*ids)[EVF_UUID_TEXT_LEN + 1] = calloc(N, sizeof(*ids));
  assert_non_null(ids);
  /* Rising: event_ids' first leaf holds keys 1..119 (120 records of 34 bytes fill 4080). */
  for (size_t i = 0; i < BASE; i++)
    id_text(ids[i], i + 1, 0);
  append_ids(&c, "base", BASE, ids);
  /* Into the gap between keys 119 and 120, at the first leaf's end: pairs from the top down. */
  size_t k = 0;
  for (uint64_t j = N / 2; j >= 1; j--) {
    id_text(ids[k++], 119, 2 * j - 1);
    id_text(ids[k++], 119, 2 * j);
  }
  const struct shard_db *db = &store->shards[0].db;
  MDB_envinfo before, after;
  assert_int_equal(mdb_env_info(db->index_env, &before), 0);
  append_ids(&c, "pairs", N, ids);
  assert_int_equal(mdb_env_info(db->index_env, &after), 0);
  free(ids);
  harness_client_deinit(&c);
  assert_true(after.me_last_pgno - before.me_last_pgno > N / 4); /* the splits happened */
  assert_int_equal(atomic_load(&db->index_overruns), 0);
  store_close(store);
  harness_remove_dir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(the_index_never_outgrows_its_reserved_room),
      cmocka_unit_test(client_ids_in_falling_pairs_stay_within_the_bound),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
