/* The loop's cache of committed stream state: lookups, updates, the bound on its size. */
#include "stream_cache.h"

#include "evf/hash.h"

#include <errno.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* The link wraps malloc (tests/unit/shards/CMakeLists.txt): a test can make the next one fail. */
static bool fail_next_malloc;
void *__real_malloc(size_t size);
void *__wrap_malloc(size_t size);
void *__wrap_malloc(size_t size) {
  if (fail_next_malloc) {
    fail_next_malloc = false;
    return NULL;
  }
  return __real_malloc(size);
}

static struct stream_record record_of(uint64_t stream_id, uint32_t length) {
  return (struct stream_record){.stream_id = stream_id, .created_at = 1000 + (int64_t)stream_id,
                                .next_version = length};
}

static void put(struct stream_cache *cache, const char *name, uint64_t stream_id, uint32_t length) {
  struct stream_record r = record_of(stream_id, length);
  assert_int_equal(
      stream_cache_put(cache, name, strlen(name), evf_hash_fnv1a64(name, strlen(name)), &r), 0);
}

static const struct stream_record *find(const struct stream_cache *cache, const char *name) {
  return stream_cache_find(cache, name, strlen(name), evf_hash_fnv1a64(name, strlen(name)));
}

static void a_stream_put_is_found_with_its_record(void **state) {
  (void)state;
  struct stream_cache *cache = stream_cache_create(8);
  assert_non_null(cache);
  assert_null(find(cache, "account-1"));
  put(cache, "account-1", 7, 3);
  const struct stream_record *r = find(cache, "account-1");
  assert_non_null(r);
  assert_int_equal(r->stream_id, 7);
  assert_int_equal(r->created_at, 1007);
  assert_int_equal(r->next_version, 3);
  stream_cache_destroy(cache);
}

static void names_match_by_length_and_bytes(void **state) {
  (void)state;
  struct stream_cache *cache = stream_cache_create(8);
  put(cache, "account-1", 1, 1);
  assert_null(find(cache, "account-10"));
  assert_null(find(cache, "account-"));
  /* The caller's buffer need not outlive the call: the name is copied. */
  char name[] = "order-5";
  struct stream_record r = record_of(2, 9);
  uint64_t hash = evf_hash_fnv1a64(name, strlen(name));
  assert_int_equal(stream_cache_put(cache, name, strlen(name), hash, &r), 0);
  memset(name, 'x', strlen(name));
  assert_non_null(find(cache, "order-5"));
  assert_int_equal(find(cache, "order-5")->next_version, 9);
  stream_cache_destroy(cache);
}

static void a_second_put_replaces_the_record(void **state) {
  (void)state;
  struct stream_cache *cache = stream_cache_create(8);
  put(cache, "s", 4, 1);
  put(cache, "s", 4, 6);
  assert_int_equal(find(cache, "s")->next_version, 6);
  stream_cache_destroy(cache);
}

static void clear_forgets_every_stream(void **state) {
  (void)state;
  struct stream_cache *cache = stream_cache_create(8);
  put(cache, "a", 1, 1);
  put(cache, "b", 2, 2);
  stream_cache_clear(cache);
  assert_null(find(cache, "a"));
  assert_null(find(cache, "b"));
  put(cache, "b", 2, 5);
  assert_int_equal(find(cache, "b")->next_version, 5);
  stream_cache_destroy(cache);
}

/* Past its capacity the cache drops streams: never more than max, never a stale one. */
static void the_cache_holds_at_most_its_capacity(void **state) {
  (void)state;
  enum { MAX = 100 };
  struct stream_cache *cache = stream_cache_create(MAX);
  char name[32];
  for (unsigned i = 0; i < 1000; i++) {
    snprintf(name, sizeof(name), "stream-%u", i);
    put(cache, name, i + 1, i);
    unsigned held = 0;
    for (unsigned j = 0; j <= i; j++) {
      snprintf(name, sizeof(name), "stream-%u", j);
      const struct stream_record *r = find(cache, name);
      if (r != NULL) {
        assert_int_equal(r->stream_id, j + 1);
        assert_int_equal(r->next_version, j);
        held++;
      }
    }
    assert_true(held >= 1 && held <= MAX);
    snprintf(name, sizeof(name), "stream-%u", i);
    assert_non_null(find(cache, name)); /* the newest is always there */
  }
  /* Updating a stream it holds never empties it. */
  stream_cache_clear(cache);
  for (unsigned i = 0; i < MAX; i++) {
    snprintf(name, sizeof(name), "stream-%u", i);
    put(cache, name, i + 1, i);
  }
  put(cache, "stream-0", 1, 50);
  assert_non_null(find(cache, "stream-99"));
  assert_int_equal(find(cache, "stream-0")->next_version, 50);
  stream_cache_destroy(cache);
}

/*
 * A few streams appended to over and over while thousands of new ones pass
 * through, as the shard uses the cache: found before each append, put after
 * its commit. The streams in use are never dropped.
 */
static void streams_in_use_survive_new_ones_passing_through(void **state) {
  (void)state;
  enum { MAX = 100, HOT = 10 };
  struct stream_cache *cache = stream_cache_create(MAX);
  char name[32];
  for (unsigned i = 0; i < HOT; i++) {
    snprintf(name, sizeof(name), "hot-%u", i);
    put(cache, name, i + 1, 1);
  }
  for (unsigned i = 0; i < 5000; i++) {
    snprintf(name, sizeof(name), "cold-%u", i);
    put(cache, name, 1000 + i, 1);
    snprintf(name, sizeof(name), "hot-%u", i % HOT);
    const struct stream_record *r = find(cache, name);
    assert_non_null(r);
    assert_int_equal(r->next_version, 1 + i / HOT);
    put(cache, name, i % HOT + 1, 2 + i / HOT);
  }
  stream_cache_destroy(cache);
}

/*
 * Moving a stream from the old generation to the young one needs memory:
 * without it, the old entry is updated instead.
 */
static void an_update_that_finds_no_memory_leaves_no_stale_length(void **state) {
  (void)state;
  struct stream_cache *cache = stream_cache_create(4); /* two per generation */
  put(cache, "x", 1, 1);
  put(cache, "y", 2, 1);
  put(cache, "z", 3, 1); /* x and y are old now */
  struct stream_record r = record_of(1, 5);
  fail_next_malloc = true;
  assert_int_equal(stream_cache_put(cache, "x", 1, evf_hash_fnv1a64("x", 1), &r), -ENOMEM);
  assert_false(fail_next_malloc);
  const struct stream_record *found = find(cache, "x");
  assert_true(found == NULL || found->next_version == 5);
  stream_cache_destroy(cache);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(a_stream_put_is_found_with_its_record),
      cmocka_unit_test(names_match_by_length_and_bytes),
      cmocka_unit_test(a_second_put_replaces_the_record),
      cmocka_unit_test(clear_forgets_every_stream),
      cmocka_unit_test(the_cache_holds_at_most_its_capacity),
      cmocka_unit_test(streams_in_use_survive_new_ones_passing_through),
      cmocka_unit_test(an_update_that_finds_no_memory_leaves_no_stale_length),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
