/*
 * transport/src/unpack.h: a failed allocation is -ENOMEM and bytes that do
 * not decode are not, with malloc and with an arena. The n-th allocation
 * of our code fails (failing_alloc.h); protobuf-c allocates through
 * unpack.c's allocator, which is our code.
 */
#include "api.pb-c.h"
#include "arena.h"
#include "evf/status.h"
#include "failing_alloc.h"
#include "unpack.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static uint8_t stored[512];

/* An event in its wire encoding, as the store holds it, in stored; returns its length. */
static size_t stored_event(void) {
  static uint8_t data[100];
  memset(data, 'd', sizeof(data));
  Api__Event e = API__EVENT__INIT;
  e.id = "0190f2a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6";
  e.stream = "orders-1";
  e.version = 3;
  e.type = "OrderPlaced";
  e.data = (ProtobufCBinaryData){sizeof(data), data};
  e.metadata = (ProtobufCBinaryData){1, (uint8_t *)"m"};
  e.position = 9;
  size_t len = api__event__get_packed_size(&e);
  assert_true(len <= sizeof(stored));
  assert_int_equal(api__event__pack(&e, stored), len);
  return len;
}

static void assert_is_the_stored_event(const Api__Event *e) {
  assert_string_equal(e->id, "0190f2a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6");
  assert_string_equal(e->stream, "orders-1");
  assert_string_equal(e->type, "OrderPlaced");
  assert_int_equal(e->version, 3);
  assert_int_equal(e->data.len, 100);
  assert_int_equal(e->metadata.len, 1);
  assert_int_equal(e->position, 9);
}

static void decodes_a_stored_event(void **state) {
  (void)state;
  size_t len = stored_event();
  Api__Event *e = NULL;
  assert_int_equal(tp_unpack_event(stored, len, &e), 0);
  assert_is_the_stored_event(e);
  api__event__free_unpacked(e, NULL);
}

/* Each allocation of a decode fails in turn: -ENOMEM, out untouched, nothing leaked. */
static void every_failed_allocation_is_out_of_memory(void **state) {
  (void)state;
  size_t len = stored_event();
  long n = 0;
  for (;; n++) {
    Api__Event *e = (Api__Event *)&e;
    fail_allocation(n);
    int rc = tp_unpack_event(stored, len, &e);
    if (!stop_failing()) {
      assert_int_equal(rc, 0);
      assert_is_the_stored_event(e);
      api__event__free_unpacked(e, NULL);
      break;
    }
    assert_int_equal(rc, -ENOMEM);
    assert_ptr_equal(e, (Api__Event *)&e);
  }
  assert_true(n >= 5); /* the message, id, stream, type, data at least */
}

/* Damaged bytes: a length past the end, an unknown wire type, a cut field. */
static void bytes_that_do_not_decode_are_not_out_of_memory(void **state) {
  (void)state;
  static const uint8_t past_end[] = {0x0a, 0x05, 'a'};
  static const uint8_t wire_type_7[] = {0x0f};
  size_t len = stored_event();
  const struct {
    const uint8_t *p;
    size_t len;
  } damaged[] = {{past_end, sizeof(past_end)}, {wire_type_7, sizeof(wire_type_7)},
                 {stored, len - 1}};
  for (size_t i = 0; i < sizeof(damaged) / sizeof(damaged[0]); i++) {
    Api__Event *e = (Api__Event *)&e;
    assert_int_equal(tp_unpack_event(damaged[i].p, damaged[i].len, &e), EVF_EINTERNAL);
    assert_ptr_equal(e, (Api__Event *)&e);
    ProtobufCMessage *m = (ProtobufCMessage *)&m;
    assert_int_equal(tp_unpack(&api__event__descriptor, NULL, damaged[i].p, damaged[i].len, &m),
                     EVF_EINVAL);
    assert_ptr_equal(m, (ProtobufCMessage *)&m);
  }
}

/* Through an arena: a block it cannot allocate is -ENOMEM; otherwise the message is in it. */
static void an_arena_out_of_memory(void **state) {
  (void)state;
  size_t len = stored_event();
  struct tp_arena arena;
  tp_arena_init(&arena, 0);
  ProtobufCMessage *m = (ProtobufCMessage *)&m;
  fail_allocation(0);
  assert_int_equal(tp_unpack(&api__event__descriptor, &arena.allocator, stored, len, &m), -ENOMEM);
  assert_true(stop_failing());
  assert_ptr_equal(m, (ProtobufCMessage *)&m);
  tp_arena_release(&arena);
  assert_int_equal(tp_unpack(&api__event__descriptor, &arena.allocator, stored, len, &m), 0);
  assert_is_the_stored_event((const Api__Event *)m);
  tp_arena_release(&arena); /* the message with it: ASan's leak check would see a malloc'ed one */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(decodes_a_stored_event),
      cmocka_unit_test(every_failed_allocation_is_out_of_memory),
      cmocka_unit_test(bytes_that_do_not_decode_are_not_out_of_memory),
      cmocka_unit_test(an_arena_out_of_memory),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
