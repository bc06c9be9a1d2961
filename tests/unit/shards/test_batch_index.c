/* What a batch being prepared has decided: streams found, and gone after a clear. */
#include "batch_index.h"

#include "evf/hash.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define NAME_LEN 32

static uint64_t hash_of(const char *name) { return evf_hash_fnv1a64(name, strlen(name)); }

static struct batch_stream *find(struct batch_index *index, const char *name) {
  return batch_index_find_stream(index, name, strlen(name), hash_of(name));
}

static void add(struct batch_index *index, const char *name, uint32_t next_version) {
  struct stream_record record = {.stream_id = 1, .next_version = next_version};
  assert_non_null(
      batch_index_add_stream(index, name, strlen(name), hash_of(name), &record, false));
}

/* n names "stream-0".."stream-(n-1)" that outlive the index (it borrows them). */
static char (*names_of(size_t n))[NAME_LEN] {
  char(*names)[NAME_LEN] = calloc(n, NAME_LEN);
  assert_non_null(names);
  for (size_t i = 0; i < n; i++)
    snprintf(names[i], NAME_LEN, "stream-%zu", i);
  return names;
}

static void streams_added_are_found(void **state) {
  (void)state;
  struct batch_index *index = batch_index_create();
  assert_non_null(index);
  add(index, "account-1", 4);
  assert_non_null(find(index, "account-1"));
  assert_int_equal(find(index, "account-1")->record.next_version, 4);
  assert_null(find(index, "account-2"));
  batch_index_destroy(index);
}

/* Batches of every size in turn, through the tables' growth: each clear forgets the batch whole. */
static void a_clear_forgets_every_entry_of_batches_of_any_size(void **state) {
  (void)state;
  static const size_t sizes[] = {1, 40, 3000, 5, 0, 700, 1};
  char(*names)[NAME_LEN] = names_of(3000);
  struct batch_index *index = batch_index_create();
  assert_non_null(index);
  for (size_t round = 0; round < sizeof(sizes) / sizeof(sizes[0]); round++) {
    size_t n = sizes[round];
    for (size_t i = 0; i < n; i++)
      add(index, names[i], (uint32_t)(round * 10000 + i));
    for (size_t i = 0; i < n; i++) {
      struct batch_stream *s = find(index, names[i]);
      assert_non_null(s);
      assert_int_equal(s->record.next_version, round * 10000 + i);
    }
    batch_index_clear(index);
    for (size_t i = 0; i < 3000; i++)
      assert_null(find(index, names[i]));
  }
  batch_index_destroy(index);
  free(names);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(streams_added_are_found),
      cmocka_unit_test(a_clear_forgets_every_entry_of_batches_of_any_size),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
