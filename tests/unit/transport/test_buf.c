/* The protobuf field writers of buf.h: the bytes protobuf-c packs, across buffer growth. */
#include "buf.h"

#include "api.pb-c.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* Writes the event's fields in number order, as protobuf-c does, with the buf.h writers. */
static void put_event(struct tp_buf *b, const Api__Event *e) {
  const char *strings[] = {e->id, e->stream};
  for (unsigned f = 0; f < 2; f++) {
    if (strings[f][0] != '\0')
      assert_int_equal(tp_buf_put_bytes_field(b, TP_PB_TAG(f + 1, TP_PB_BYTES), strings[f],
                                              strlen(strings[f])),
                       0);
  }
  assert_int_equal(tp_buf_put_varint_field(b, TP_PB_TAG(3, TP_PB_VARINT), e->version), 0);
  if (e->type[0] != '\0') {
    int rc = tp_buf_put_bytes_field(b, TP_PB_TAG(4, TP_PB_BYTES), e->type, strlen(e->type));
    assert_int_equal(rc, 0);
  }
  if (e->data.len > 0) {
    int rc = tp_buf_put_bytes_field(b, TP_PB_TAG(5, TP_PB_BYTES), e->data.data, e->data.len);
    assert_int_equal(rc, 0);
  }
  uint64_t added_at = (uint64_t)e->added_at;
  assert_int_equal(tp_buf_put_varint_field(b, TP_PB_TAG(9, TP_PB_VARINT), added_at), 0);
  assert_int_equal(tp_buf_put_varint_field(b, TP_PB_TAG(10, TP_PB_VARINT), e->position), 0);
}

static void fields_are_written_as_protobuf_c_packs_them(void **state) {
  (void)state;
  static uint8_t data[20000];
  for (size_t i = 0; i < sizeof(data); i++)
    data[i] = (uint8_t)(i * 13);
  static const char *const strings[] = {"", "s", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"};
  static const size_t data_lens[] = {0, 1, 127, 128, 16383, 16384, 20000};
  static const uint64_t numbers[] = {0, 1, 127, 128, 16383, 16384, UINT32_MAX, UINT64_MAX};
  struct tp_buf b = {0};
  srand(5);
  for (int round = 0; round < 3000; round++) {
    Api__Event e = API__EVENT__INIT;
    e.id = (char *)strings[rand() % 3];
    e.stream = (char *)strings[rand() % 3];
    e.version = (uint32_t)numbers[rand() % 7];
    e.type = (char *)strings[rand() % 3];
    e.data = (ProtobufCBinaryData){data_lens[rand() % 7], data};
    e.added_at = (int64_t)numbers[rand() % 8];
    e.position = numbers[rand() % 8];
    size_t at = b.len; /* appended after what the buffer holds: growth included */
    put_event(&b, &e);
    size_t size = protobuf_c_message_get_packed_size(&e.base);
    assert_int_equal(b.len - at, size);
    uint8_t *packed = malloc(size + 1);
    assert_non_null(packed);
    protobuf_c_message_pack(&e.base, packed);
    assert_memory_equal(b.data + at, packed, size);
    free(packed);
    if (b.len > (1u << 20))
      b.len = 0;
  }
  tp_buf_free(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(fields_are_written_as_protobuf_c_packs_them),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
