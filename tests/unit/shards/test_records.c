/* Keys and records of the LMDB databases: layout, byte order, round trips. */
#include "records.h"

#include "evf/event_fields.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void integers_are_big_endian(void **state) {
  (void)state;
  uint8_t b[8];
  record_put_u64(b, 0x0102030405060708u);
  const uint8_t want[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  assert_memory_equal(b, want, 8);
  assert_int_equal(record_get_u64(b), 0x0102030405060708u);
  record_put_u32(b, 0xA1B2C3D4u);
  assert_int_equal(b[0], 0xA1);
  assert_int_equal(b[3], 0xD4);
  assert_int_equal(record_get_u32(b), 0xA1B2C3D4u);
}

static void position_keys_sort_numerically(void **state) {
  (void)state;
  uint8_t a[RECORD_POSITION_LEN], b[RECORD_POSITION_LEN];
  record_position_key(a, 255);
  record_position_key(b, 256);
  assert_true(memcmp(a, b, sizeof(a)) < 0);
  record_position_key(a, 1);
  record_position_key(b, UINT64_MAX);
  assert_true(memcmp(a, b, sizeof(a)) < 0);
}

static void index_keys_group_by_stream_then_version(void **state) {
  (void)state;
  uint8_t a[RECORD_INDEX_KEY_LEN], b[RECORD_INDEX_KEY_LEN], c[RECORD_INDEX_KEY_LEN];
  record_index_key(a, 1, UINT32_MAX);
  record_index_key(b, 2, 0);
  record_index_key(c, 2, 1);
  assert_true(memcmp(a, b, sizeof(a)) < 0);
  assert_true(memcmp(b, c, sizeof(b)) < 0);
  assert_int_equal(record_get_u64(c), 2);
  assert_int_equal(record_get_u32(c + 8), 1);
}

static void assert_run_equal(const struct record_run *a, const struct record_run *b) {
  assert_int_equal(a->first_version, b->first_version);
  assert_int_equal(a->first_position, b->first_position);
  assert_int_equal(a->count, b->count);
}

static bool run_decodes(uint64_t stream_id, uint32_t version, const uint8_t *value, size_t len,
                        struct record_run *run) {
  uint8_t key[RECORD_INDEX_KEY_LEN];
  uint64_t of_stream = 0;
  record_index_key(key, stream_id, version);
  MDB_val k = {sizeof(key), key}, v = {len, (void *)value};
  return record_index_key_stream(&k, &of_stream) && of_stream == stream_id &&
         record_run_decode(&k, &v, run);
}

/* A run of one is stored as the position alone; a longer one adds its length. */
static void runs_round_trip_in_their_shortest_value(void **state) {
  (void)state;
  uint8_t value[RECORD_RUN_MAX];
  struct record_run run;
  struct record_run one = {.first_version = 7, .first_position = 1234, .count = 1};
  assert_int_equal(record_run_encode(value, &one), RECORD_POSITION_LEN);
  assert_true(run_decodes(3, 7, value, RECORD_POSITION_LEN, &run));
  assert_run_equal(&run, &one);
  struct record_run many = {.first_version = 7, .first_position = 1234, .count = 1000};
  assert_int_equal(record_run_encode(value, &many), RECORD_RUN_MAX);
  assert_true(run_decodes(3, 7, value, RECORD_RUN_MAX, &run));
  assert_run_equal(&run, &many);
  assert_true(record_run_holds(&run, 7));
  assert_true(record_run_holds(&run, 1006));
  assert_false(record_run_holds(&run, 6));
  assert_false(record_run_holds(&run, 1007));
}

static void damaged_runs_are_refused(void **state) {
  (void)state;
  uint8_t value[RECORD_RUN_MAX];
  struct record_run run;
  record_put_u64(value, 10);
  record_put_u32(value + RECORD_POSITION_LEN, 2);
  assert_false(run_decodes(1, 0, value, 10, &run));
  /* the stream's length, first version + count, must fit in 32 bits */
  assert_false(run_decodes(1, UINT32_MAX - 1, value, RECORD_RUN_MAX, &run));
  assert_true(run_decodes(1, UINT32_MAX - 2, value, RECORD_RUN_MAX, &run));
  for (uint32_t count = 0; count < 2; count++) { /* the longer value for a run under two */
    record_put_u32(value + RECORD_POSITION_LEN, count);
    assert_false(run_decodes(1, 0, value, RECORD_RUN_MAX, &run));
  }
  record_put_u64(value, UINT64_MAX); /* positions overflow */
  record_put_u32(value + RECORD_POSITION_LEN, 2);
  assert_false(run_decodes(1, 0, value, RECORD_RUN_MAX, &run));
  MDB_val short_key = {8, value}, v = {RECORD_POSITION_LEN, value};
  uint64_t stream_id;
  assert_false(record_index_key_stream(&short_key, &stream_id));
  assert_false(record_run_decode(&short_key, &v, &run));
}

/* LMDB's own order for these keys: memcmp over the common length, then the shorter first. */
static int lmdb_default_order(const MDB_val *a, const MDB_val *b) {
  size_t common = a->mv_size < b->mv_size ? a->mv_size : b->mv_size;
  int diff = memcmp(a->mv_data, b->mv_data, common);
  if (diff != 0)
    return diff < 0 ? -1 : 1;
  return (a->mv_size > b->mv_size) - (a->mv_size < b->mv_size);
}

static int sign_of(int v) { return (v > 0) - (v < 0); }

/* Keys of every size up to 20 bytes, sharing prefixes, differing in one byte or in length. */
static void key_comparison_keeps_lmdb_order(void **state) {
  (void)state;
  uint8_t x[20], y[20];
  srand(11);
  for (int round = 0; round < 200000; round++) {
    size_t xs = (size_t)rand() % 21, ys = rand() % 4 == 0 ? (size_t)rand() % 21 : xs;
    for (size_t i = 0; i < sizeof(x); i++)
      x[i] = y[i] = (uint8_t)(rand() % 3 == 0 ? rand() : 0x80);
    if (rand() % 2 == 0)
      y[rand() % 20] = (uint8_t)rand();
    MDB_val a = {xs, x}, b = {ys, y};
    assert_int_equal(record_key_compare(&a, &b), lmdb_default_order(&a, &b));
    assert_int_equal(record_key_compare(&b, &a), lmdb_default_order(&b, &a));
    assert_int_equal(sign_of(record_key_compare(&a, &a)), 0);
  }
}

static void stream_record_round_trips(void **state) {
  (void)state;
  struct stream_record in = {.stream_id = 42, .next_version = 7, .created_at = -5}, out;
  uint8_t buf[RECORD_STREAM_LEN];
  record_stream_encode(buf, &in);
  assert_true(record_stream_decode(buf, sizeof(buf), &out));
  assert_int_equal(out.stream_id, 42);
  assert_int_equal(out.next_version, 0); /* not stored: stream_index has it */
  assert_int_equal(out.created_at, -5);
  assert_false(record_stream_decode(buf, sizeof(buf) - 1, &out));
}

static void position_values_round_trip(void **state) {
  (void)state;
  uint8_t buf[RECORD_POSITION_LEN + 1];
  uint64_t out;
  record_position_key(buf, (uint64_t)1 << 40);
  assert_true(record_position_decode(buf, RECORD_POSITION_LEN, &out));
  assert_int_equal(out, (uint64_t)1 << 40);
  assert_false(record_position_decode(buf, RECORD_POSITION_LEN + 1, &out));
  assert_false(record_position_decode(buf, RECORD_POSITION_LEN - 1, &out));
}

/*
 * What the index is rebuilt from and subscriptions filter on: read back
 * from the stored bytes, whole, and refused cut short.
 */
static void assert_key_fields_read_back(const uint8_t *stored, size_t size, const Api__Event *e) {
  struct evf_event_fields k;
  assert_true(evf_event_fields_read(stored, size, &k));
  assert_int_equal(k.id_len, strlen(e->id));
  assert_memory_equal(k.id, e->id, k.id_len);
  assert_int_equal(k.stream_len, strlen(e->stream));
  assert_memory_equal(k.stream, e->stream, k.stream_len);
  assert_int_equal(k.type_len, strlen(e->type));
  assert_memory_equal(k.type, e->type, k.type_len);
  assert_int_equal(k.version, e->version);
  assert_int_equal(k.added_at, e->added_at);
  assert_int_equal(k.position, e->position);
  if (size > 0)
    assert_false(evf_event_fields_read(stored, size - 1, &k));
}

/* Our encoder must give protobuf-c's bytes exactly, for every field being empty or not. */
static void assert_encoded_like_protobuf_c(const Api__Event *e) {
  struct record_event_text text;
  size_t size = record_event_size(e, &text);
  assert_int_equal(size, protobuf_c_message_get_packed_size(&e->base));
  uint8_t *ours = malloc(size + 1), *theirs = malloc(size + 1);
  assert_non_null(ours);
  assert_non_null(theirs);
  ours[size] = 0xEE; /* must stay: nothing written past the size */
  record_event_encode(e, &text, ours);
  protobuf_c_message_pack(&e->base, theirs);
  assert_memory_equal(ours, theirs, size);
  assert_int_equal(ours[size], 0xEE);
  assert_key_fields_read_back(ours, size, e);
  free(ours);
  free(theirs);
}

static void events_encode_like_protobuf_c(void **state) {
  (void)state;
  static uint8_t data[70000 + 3];
  for (size_t i = 0; i < sizeof(data); i++)
    data[i] = (uint8_t)(i * 7);
  static const char *const strings[] = {"", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "s",
                                        "account-42 \xc3\xa9"};
  static const size_t data_lens[] = {0, 1, 127, 128, 200, 16383, 16384, 70000};
  static const int64_t times[] = {0, 1, 1764115200000, -1, INT64_MIN};
  static const uint64_t positions[] = {0, 1, 127, 128, UINT64_MAX};
  srand(7);
  for (int round = 0; round < 2000; round++) {
    Api__Event e = API__EVENT__INIT;
    e.id = (char *)strings[rand() % 4];
    e.stream = (char *)strings[rand() % 4];
    e.version = round % 3 == 0 ? 0 : (uint32_t)rand() * 2654435761u;
    e.type = (char *)strings[rand() % 4];
    e.data = (ProtobufCBinaryData){data_lens[rand() % 8], data};
    e.metadata = (ProtobufCBinaryData){data_lens[rand() % 8], data + 3};
    e.causation_id = (char *)strings[rand() % 4];
    e.correlation_id = (char *)strings[rand() % 4];
    e.added_at = times[rand() % 5];
    e.position = positions[rand() % 5];
    assert_encoded_like_protobuf_c(&e);
  }
}

/*
 * Format 3: an event whose causation and correlation ids are its own id is
 * stored in the short form, without them; a reader gets it back whole. Any
 * other event is stored as protobuf-c encodes it, and handed on as stored.
 */
static void assert_stored_and_read_back(const Api__Event *whole) {
  struct record_event_text text;
  size_t stored_size = record_event_stored_size(whole, &text);
  size_t whole_size = protobuf_c_message_get_packed_size(&whole->base);
  uint8_t *stored = malloc(stored_size + 1), *restored = malloc(whole_size + 1);
  assert_true(stored && restored);
  stored[stored_size] = 0xEE; /* must stay: nothing written past the size */
  record_event_encode(whole, &text, stored);
  assert_int_equal(stored[stored_size], 0xEE);
  assert_key_fields_read_back(stored, stored_size, whole); /* what the index is rebuilt from */

  struct record_left_out left_out;
  bool short_form = whole->id[0] != '\0' && whole->added_at != 0 &&
                    strcmp(whole->causation_id, whole->id) == 0 &&
                    strcmp(whole->correlation_id, whole->id) == 0;
  assert_int_equal(record_event_left_out(stored, stored_size, &left_out), short_form);
  if (!short_form) {
    uint8_t *expected = malloc(whole_size);
    assert_non_null(expected);
    protobuf_c_message_pack(&whole->base, expected);
    assert_int_equal(stored_size, whole_size);
    assert_memory_equal(stored, expected, whole_size);
    free(expected);
  } else {
    assert_int_equal(stored_size, whole_size - 2 * (2 + strlen(whole->id)));
    assert_int_equal(record_event_restored_size(stored_size, &left_out), whole_size);
    restored[whole_size] = 0xEE;
    record_event_restore(stored, stored_size, &left_out, restored);
    assert_int_equal(restored[whole_size], 0xEE);
    Api__Event *back = api__event__unpack(NULL, whole_size, restored);
    assert_non_null(back);
    assert_string_equal(back->id, whole->id);
    assert_string_equal(back->stream, whole->stream);
    assert_int_equal(back->version, whole->version);
    assert_string_equal(back->type, whole->type);
    assert_int_equal(back->data.len, whole->data.len);
    assert_memory_equal(back->data.data, whole->data.data, whole->data.len);
    assert_int_equal(back->metadata.len, whole->metadata.len);
    assert_string_equal(back->causation_id, whole->id);
    assert_string_equal(back->correlation_id, whole->id);
    assert_int_equal(back->added_at, whole->added_at);
    assert_int_equal(back->position, whole->position);
    /* repacked, it is the whole event's canonical encoding */
    uint8_t *repacked = malloc(whole_size), *expected = malloc(whole_size);
    assert_true(repacked && expected);
    protobuf_c_message_pack(&back->base, repacked);
    protobuf_c_message_pack(&whole->base, expected);
    assert_memory_equal(repacked, expected, whole_size);
    free(repacked);
    free(expected);
    api__event__free_unpacked(back, NULL);
  }
  free(stored);
  free(restored);
}

static void events_with_only_their_own_id_are_stored_short(void **state) {
  (void)state;
  static uint8_t data[300];
  static const char *const ids[] = {"", "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
                                    "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c"};
  static const size_t data_lens[] = {0, 1, 200, 300};
  static const int64_t times[] = {0, 1764115200000, -1, INT64_MIN};
  static const uint64_t positions[] = {0, 1, UINT64_MAX};
  srand(11);
  for (int round = 0; round < 2000; round++) {
    Api__Event e = API__EVENT__INIT;
    e.id = (char *)ids[rand() % 3];
    e.stream = round % 2 ? "account-42" : "";
    e.version = (uint32_t)(rand() % 3);
    e.type = round % 3 ? "Deposited" : "";
    e.data = (ProtobufCBinaryData){data_lens[rand() % 4], data};
    e.metadata = (ProtobufCBinaryData){data_lens[rand() % 4], data};
    /* As stored: never empty where the event has an id (they default to it). */
    e.causation_id = rand() % 2 || e.id[0] == '\0' ? e.id : (char *)ids[1 + rand() % 2];
    e.correlation_id = rand() % 2 || e.id[0] == '\0' ? e.id : (char *)ids[1 + rand() % 2];
    e.added_at = times[rand() % 4];
    e.position = positions[rand() % 3];
    assert_stored_and_read_back(&e);
  }
}

static void bytes_not_in_the_short_form_are_handed_on_as_stored(void **state) {
  (void)state;
  struct record_left_out left_out;
  const uint8_t whole[] = {0x0a, 0x01, 'x', 0x48, 0x01};      /* id first */
  const uint8_t cut_short[] = {0x48, 0x01, 0x0a, 0x24, '0'};  /* an id of 36 bytes, 1 there */
  const uint8_t no_id[] = {0x48, 0x01, 0x12, 0x01, 's'};      /* a stream, no id */
  const uint8_t endless[] = {0x48, 0x81};                     /* added_at never ends */
  const uint8_t only_added_at[] = {0x48, 0x01};               /* nothing after it */
  const uint8_t only_key[] = {0x48};
  /* added_at of 10 bytes, the most a varint takes, then of 11 */
  const uint8_t longest[] = {0x48, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
                             0x0a, 0x01, 'x'};
  const uint8_t too_long[] = {0x48, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                              0x01, 0x0a, 0x01, 'x'};
  assert_true(record_event_left_out(longest, sizeof(longest), &left_out));
  assert_int_equal(left_out.id_len, 1);
  assert_int_equal(left_out.id[0], 'x');
  assert_false(record_event_left_out(too_long, sizeof(too_long), &left_out));
  assert_false(record_event_left_out(only_key, sizeof(only_key), &left_out));
  assert_false(record_event_left_out(whole, sizeof(whole), &left_out));
  assert_false(record_event_left_out(cut_short, sizeof(cut_short), &left_out));
  assert_false(record_event_left_out(no_id, sizeof(no_id), &left_out));
  assert_false(record_event_left_out(endless, sizeof(endless), &left_out));
  assert_false(record_event_left_out(only_added_at, sizeof(only_added_at), &left_out));
  assert_false(record_event_left_out(NULL, 0, &left_out));
}

/* Another writer's encoding: fields in another order, fields unknown here. */
static void event_keys_are_read_from_any_encoding(void **state) {
  (void)state;
  static const uint8_t stored[] = {
      0x50, 0x07,                         /* position = 7 */
      0x7A, 0x02, 'x', 'y',               /* field 15, length-delimited: unknown */
      0x12, 0x01, 's',                    /* stream = "s" */
      0x65, 1, 2, 3, 4,                   /* field 12, 32-bit: unknown */
      0x18, 0x05,                         /* version = 5 */
      0x0A, 0x03, 'a', 'b', 'c',          /* id = "abc" */
      0x12, 0x02, 's', '2',               /* stream again: the last wins */
  };
  struct evf_event_fields k;
  assert_true(evf_event_fields_read(stored, sizeof(stored), &k));
  assert_int_equal(k.position, 7);
  assert_int_equal(k.version, 5);
  assert_int_equal(k.stream_len, 2);
  assert_memory_equal(k.stream, "s2", 2);
  assert_int_equal(k.id_len, 3);
}

/* Damaged events: refused exactly where protobuf-c's unpack refuses them. */
static void damaged_events_are_refused_as_protobuf_c_refuses_them(void **state) {
  (void)state;
  static const struct {
    uint8_t bytes[16];
    size_t len;
  } cases[] = {
      {{0x12, 0x01, 's', 0x00, 0x00, 0x50, 0x07}, 7},        /* zeroes: field number 0 */
      {{0x10, 0x05}, 2},                                     /* stream as a varint */
      {{0x20, 0x05}, 2},                                     /* type as a varint */
      {{0x28, 0x05}, 2},                                     /* data as a varint */
      {{0x45, 1, 2, 3, 4}, 5},                               /* correlation id as fixed32 */
      {{0x0B}, 1},                                           /* a group */
      {{0x92, 0x80, 0x80, 0x80, 0x80, 0x01, 0x00}, 7},       /* a 6-byte key */
      {{0x92, 0x80, 0x80, 0x80, 0x01, 0x00}, 6},             /* a 5-byte key: field 2^25 + 2 */
      {{0x12, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, 7},       /* a 6-byte length prefix */
      {{0x12, 0x80, 0x80, 0x80, 0x80, 0x00}, 6},             /* a 5-byte length prefix of 0 */
      {{0x50, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}, 11}, /* 10-byte varint */
      {{0x50, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}, 12}, /* 11 */
      {{0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F}, 6},             /* version past 32 bits */
      {{0x7D, 1, 2, 3}, 4},                                  /* an unknown fixed32, cut short */
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct evf_event_fields k;
    Api__Event *e = api__event__unpack(NULL, cases[i].len, cases[i].bytes);
    bool ours = evf_event_fields_read(cases[i].bytes, cases[i].len, &k);
    assert_int_equal(ours, e != NULL);
    if (e != NULL) {
      assert_int_equal(k.version, e->version);
      assert_int_equal(k.position, e->position);
      assert_int_equal(k.stream_len, strlen(e->stream));
    }
    api__event__free_unpacked(e, NULL);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(integers_are_big_endian),
      cmocka_unit_test(position_keys_sort_numerically),
      cmocka_unit_test(index_keys_group_by_stream_then_version),
      cmocka_unit_test(runs_round_trip_in_their_shortest_value),
      cmocka_unit_test(damaged_runs_are_refused),
      cmocka_unit_test(key_comparison_keeps_lmdb_order),
      cmocka_unit_test(stream_record_round_trips),
      cmocka_unit_test(position_values_round_trip),
      cmocka_unit_test(events_encode_like_protobuf_c),
      cmocka_unit_test(events_with_only_their_own_id_are_stored_short),
      cmocka_unit_test(bytes_not_in_the_short_form_are_handed_on_as_stored),
      cmocka_unit_test(event_keys_are_read_from_any_encoding),
      cmocka_unit_test(damaged_events_are_refused_as_protobuf_c_refuses_them),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
