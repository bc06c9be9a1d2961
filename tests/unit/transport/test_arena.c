/* The protobuf-c arena: aligned, disjoint allocations of any size; decoding through it. */
#include "api.pb-c.h"
#include "arena.h"

#include <setjmp.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void *alloc(struct tp_arena *a, size_t size) {
  return a->allocator.alloc(a->allocator.allocator_data, size);
}

static void allocations_are_aligned_and_disjoint(void **state) {
  (void)state;
  struct tp_arena a;
  tp_arena_init(&a, 100);
  enum { N = 500 };
  unsigned char *p[N];
  size_t sizes[N];
  for (size_t i = 0; i < N; i++) {
    sizes[i] = (i * 37) % 3000; /* 0 included; several larger than a block */
    p[i] = alloc(&a, sizes[i]);
    assert_non_null(p[i]);
    assert_int_equal((uintptr_t)p[i] % alignof(max_align_t), 0);
    memset(p[i], (int)(i & 0xFF), sizes[i]);
  }
  for (size_t i = 0; i < N; i++) {
    for (size_t k = 0; k < sizes[i]; k++)
      assert_int_equal(p[i][k], i & 0xFF); /* nothing overwrote it */
  }
  tp_arena_release(&a);
  assert_non_null(alloc(&a, 64)); /* usable again after a release */
  tp_arena_release(&a);
}

static void a_huge_request_is_refused_not_wrapped(void **state) {
  (void)state;
  struct tp_arena a;
  tp_arena_init(&a, 0);
  assert_null(alloc(&a, SIZE_MAX - 3));
  tp_arena_release(&a);
}

/* An append decoded through the arena equals the one decoded with malloc. */
static void decodes_like_the_default_allocator(void **state) {
  (void)state;
  Api__AppendToStreamRequest in = API__APPEND_TO_STREAM_REQUEST__INIT;
  Api__EventData events[300], *ptrs[300];
  static uint8_t payload[250];
  memset(payload, 'x', sizeof(payload));
  for (size_t i = 0; i < 300; i++) {
    api__event_data__init(&events[i]);
    events[i].type = "Deposited";
    events[i].data = (ProtobufCBinaryData){i % 250, payload};
    ptrs[i] = &events[i];
  }
  in.stream = "account-42";
  in.version = 7;
  in.n_events = 300;
  in.events = ptrs;
  size_t len = api__append_to_stream_request__get_packed_size(&in);
  uint8_t *wire = malloc(len);
  assert_non_null(wire);
  api__append_to_stream_request__pack(&in, wire);

  struct tp_arena a;
  tp_arena_init(&a, 2 * len);
  Api__AppendToStreamRequest *ours =
      api__append_to_stream_request__unpack(&a.allocator, len, wire);
  Api__AppendToStreamRequest *theirs = api__append_to_stream_request__unpack(NULL, len, wire);
  assert_non_null(ours);
  assert_non_null(theirs);
  assert_string_equal(ours->stream, theirs->stream);
  assert_int_equal(ours->version, theirs->version);
  assert_int_equal(ours->n_events, 300);
  for (size_t i = 0; i < 300; i++) {
    assert_string_equal(ours->events[i]->type, theirs->events[i]->type);
    assert_int_equal(ours->events[i]->data.len, theirs->events[i]->data.len);
    assert_memory_equal(ours->events[i]->data.data, theirs->events[i]->data.data,
                        theirs->events[i]->data.len);
  }
  /* A truncated message fails cleanly: the arena's partial work goes with the release. */
  assert_null(api__append_to_stream_request__unpack(&a.allocator, len - 1, wire));
  api__append_to_stream_request__free_unpacked(theirs, NULL);
  tp_arena_release(&a);
  free(wire);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(allocations_are_aligned_and_disjoint),
      cmocka_unit_test(a_huge_request_is_refused_not_wrapped),
      cmocka_unit_test(decodes_like_the_default_allocator),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
