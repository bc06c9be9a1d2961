/*
 * Tests for evf/hash.h. The stream hash is part of the on-disk format, so
 * the vectors and the shard assignments below are pinned literally: a change
 * that makes them fail is a format change, not a test to update.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "evf/hash.h"

#include <stdio.h>
#include <string.h>

struct vector {
  const char *data;
  size_t len;
  uint64_t hash;
};

static void fnv1a64_known_vectors(void **state) {
  (void)state;
  /* From the FNV reference test suite (draft-eastlake-fnv). */
  static const struct vector vectors[] = {
      {"", 0, 0xcbf29ce484222325u},
      {"a", 1, 0xaf63dc4c8601ec8cu},
      {"b", 1, 0xaf63df4c8601f1a5u},
      {"foo", 3, 0xdcb27518fed9d577u},
      {"foobar", 6, 0x85944171f73967e8u},
      {"\0", 1, 0xaf63bd4c8601b7dfu},
      {"chongo was here!\n", 17, 0x46810940eff5f915u},
  };
  for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++)
    assert_int_equal(evf_hash_fnv1a64(vectors[i].data, vectors[i].len), vectors[i].hash);
}

static void fnv1a64_uses_len_not_nul(void **state) {
  (void)state;
  /* Embedded NULs are hashed, and nothing after len is read. */
  assert_int_equal(evf_hash_fnv1a64("a\0", 2), 0x089be207b544f1e4u);
  assert_int_equal(evf_hash_fnv1a64("abc", 1), evf_hash_fnv1a64("a", 1));
}

static void fnv1a64_bytes_are_unsigned(void **state) {
  (void)state;
  /* A sign-extended 0xFF would XOR in 0xFFFF...FF and give another value. */
  assert_int_equal(evf_hash_fnv1a64("\xff", 1), 0xaf64724c8602eb6eu);
}

static void stream_hash_name(void **state) {
  (void)state;
  assert_string_equal(EVF_STREAM_HASH_NAME, "fnv1a-64");
}

static void stream_shard_pinned(void **state) {
  (void)state;
  static const unsigned counts[] = {1, 2, 3, 4, 7, 8, 16, 256};
  static const struct {
    const char *name;
    unsigned shard[8];
  } pinned[] = {
      {"account-1", {0, 0, 1, 2, 4, 6, 6, 86}},
      {"account-2", {0, 1, 0, 3, 1, 3, 3, 163}},
      {"order-42", {0, 0, 2, 0, 0, 4, 4, 212}},
      {"$all", {0, 0, 0, 2, 1, 6, 6, 134}},
      {"", {0, 1, 2, 1, 2, 5, 5, 37}},
  };
  for (size_t i = 0; i < sizeof(pinned) / sizeof(pinned[0]); i++) {
    const char *name = pinned[i].name;
    for (size_t k = 0; k < sizeof(counts) / sizeof(counts[0]); k++)
      assert_int_equal(evf_stream_shard(name, strlen(name), counts[k]), pinned[i].shard[k]);
  }
}

static void stream_shard_in_range_and_stable(void **state) {
  (void)state;
  char name[64];
  for (unsigned count = 1; count <= 64; count++) {
    for (int i = 0; i < 500; i++) {
      int n = snprintf(name, sizeof(name), "stream-%d", i);
      unsigned shard = evf_stream_shard(name, (size_t)n, count);
      assert_true(shard < count);
      assert_int_equal(evf_stream_shard(name, (size_t)n, count), shard);
      assert_int_equal(shard, evf_hash_fnv1a64(name, (size_t)n) % count);
    }
  }
}

static void stream_shard_distribution(void **state) {
  (void)state;
  enum { SHARDS = 4, NAMES = 10000 };
  unsigned per_shard[SHARDS] = {0};
  char name[32];
  for (int i = 0; i < NAMES; i++) {
    int n = snprintf(name, sizeof(name), "account-%d", i);
    unsigned shard = evf_stream_shard(name, (size_t)n, SHARDS);
    assert_true(shard < SHARDS);
    per_shard[shard]++;
  }
  for (int s = 0; s < SHARDS; s++)
    assert_in_range(per_shard[s], NAMES * 20 / 100, NAMES * 30 / 100);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(fnv1a64_known_vectors),
      cmocka_unit_test(fnv1a64_uses_len_not_nul),
      cmocka_unit_test(fnv1a64_bytes_are_unsigned),
      cmocka_unit_test(stream_hash_name),
      cmocka_unit_test(stream_shard_pinned),
      cmocka_unit_test(stream_shard_in_range_and_stable),
      cmocka_unit_test(stream_shard_distribution),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
