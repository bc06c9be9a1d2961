/*
 * The hand decoder of AppendToStreamRequest against what it replaces:
 * protobuf-c's unpack, after the scan that refuses a NUL in any occurrence
 * of a string field (tp_rpc__has_nul_in_strings, still used for the other
 * requests). On messages protobuf-c packed, on messages encoded
 * here with unknown fields, repeats and any field order, and on damaged
 * copies of those.
 */
#include "append_decode.h"
#include "rpc.h"

#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- an allocator that remembers every block, freed all at once ---- */

struct pool {
  struct block {
    void *p;
    size_t size;
  } *blocks;
  size_t count, cap;
  size_t fail_after; /* SIZE_MAX: never */
};

static void *pool_alloc(void *data, size_t size) {
  struct pool *pool = data;
  if (pool->count == pool->fail_after)
    return NULL;
  if (pool->count == pool->cap) {
    pool->cap = pool->cap ? 2 * pool->cap : 64;
    pool->blocks = realloc(pool->blocks, pool->cap * sizeof(*pool->blocks));
    assert_non_null(pool->blocks);
  }
  void *p = malloc(size ? size : 1);
  assert_non_null(p);
  pool->blocks[pool->count++] = (struct block){p, size};
  return p;
}

static void pool_free(void *data, void *p) {
  (void)data;
  (void)p;
}

static ProtobufCAllocator pool_allocator(struct pool *pool) {
  *pool = (struct pool){.fail_after = SIZE_MAX};
  return (ProtobufCAllocator){.alloc = pool_alloc, .free = pool_free, .allocator_data = pool};
}

static void pool_release(struct pool *pool) {
  for (size_t i = 0; i < pool->count; i++)
    free(pool->blocks[i].p);
  free(pool->blocks);
  *pool = (struct pool){0};
}

/* ---- random input ---- */

static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static size_t rnd_below(size_t n) { return (size_t)(rnd() % n); }

struct out {
  uint8_t data[8192];
  size_t len;
};

static void put_byte(struct out *o, uint8_t b) {
  assert_true(o->len < sizeof(o->data));
  o->data[o->len++] = b;
}

static void put_varint(struct out *o, uint64_t v) {
  while (v >= 0x80) {
    put_byte(o, (uint8_t)(v | 0x80));
    v >>= 7;
  }
  put_byte(o, (uint8_t)v);
}

static void put_key(struct out *o, uint32_t number, unsigned wire) {
  put_varint(o, (uint64_t)number << 3 | wire);
}

static void put_len_field(struct out *o, uint32_t number, const uint8_t *p, size_t len) {
  put_key(o, number, 2);
  put_varint(o, len);
  for (size_t i = 0; i < len; i++)
    put_byte(o, p[i]);
}

/* Text of up to 12 bytes; with_nul: it may hold a NUL. */
static size_t random_text(uint8_t *out, bool with_nul) {
  size_t len = rnd_below(13);
  for (size_t i = 0; i < len; i++)
    out[i] = (uint8_t)(with_nul && rnd_below(8) == 0 ? 0 : 'a' + rnd_below(26));
  return len;
}

/* A field of no meaning to the message, of any wire type. */
static void put_unknown(struct out *o) {
  uint32_t number = 7 + (uint32_t)rnd_below(100);
  switch (rnd_below(4)) {
  case 0:
    put_key(o, number, 0);
    put_varint(o, rnd());
    break;
  case 1:
    put_key(o, number, 1);
    for (int i = 0; i < 8; i++)
      put_byte(o, (uint8_t)rnd());
    break;
  case 2: {
    uint8_t text[16];
    put_len_field(o, number, text, random_text(text, true));
    break;
  }
  default:
    put_key(o, number, 5);
    for (int i = 0; i < 4; i++)
      put_byte(o, (uint8_t)rnd());
  }
}

static void put_event(struct out *o, bool with_nul) {
  struct out e = {0};
  size_t fields = rnd_below(9);
  for (size_t i = 0; i < fields; i++) {
    uint8_t text[16];
    if (rnd_below(6) == 0)
      put_unknown(&e);
    else
      put_len_field(&e, 1 + (uint32_t)rnd_below(6), text, random_text(text, with_nul));
  }
  put_len_field(o, 3, e.data, e.len);
}

/* A request with its fields in any order, some repeated, some unknown. */
static void random_request(struct out *o, bool with_nul) {
  o->len = 0;
  size_t fields = rnd_below(10);
  for (size_t i = 0; i < fields; i++) {
    uint8_t text[16];
    switch (rnd_below(5)) {
    case 0:
      put_len_field(o, 1, text, random_text(text, with_nul));
      break;
    case 1:
      put_key(o, 2, 0);
      put_varint(o, rnd_below(2) ? (uint64_t)(int64_t) - (int64_t)rnd_below(5) : rnd_below(1000));
      break;
    case 2:
      put_unknown(o);
      break;
    default:
      put_event(o, with_nul);
    }
  }
}

/* ---- comparing the two decodings ---- */

static void assert_same_bytes(const ProtobufCBinaryData *want, const ProtobufCBinaryData *got) {
  assert_int_equal(got->len, want->len);
  if (want->len == 0)
    assert_null(got->data);
  else
    assert_memory_equal(got->data, want->data, want->len);
}

static void assert_same_request(const Api__AppendToStreamRequest *want,
                                const Api__AppendToStreamRequest *got) {
  assert_ptr_equal(got->base.descriptor, &api__append_to_stream_request__descriptor);
  assert_string_equal(got->stream, want->stream);
  assert_int_equal(got->version, want->version);
  assert_int_equal(got->n_events, want->n_events);
  for (size_t i = 0; i < want->n_events; i++) {
    const Api__EventData *w = want->events[i], *g = got->events[i];
    assert_ptr_equal(g->base.descriptor, &api__event_data__descriptor);
    assert_string_equal(g->type, w->type);
    assert_same_bytes(&w->data, &g->data);
    assert_same_bytes(&w->metadata, &g->metadata);
    assert_string_equal(g->causation_id, w->causation_id);
    assert_string_equal(g->correlation_id, w->correlation_id);
    assert_string_equal(g->id, w->id);
  }
}

/* Both decoders on one message: the same verdict, and the same values when it decodes. */
static enum tp_append_decode compare_on(const uint8_t *msg, size_t len) {
  struct pool ref_pool, our_pool;
  ProtobufCAllocator ref_alloc = pool_allocator(&ref_pool), our_alloc = pool_allocator(&our_pool);
  Api__AppendToStreamRequest *want = (Api__AppendToStreamRequest *)protobuf_c_message_unpack(
      &api__append_to_stream_request__descriptor, &ref_alloc, len, msg);
  Api__AppendToStreamRequest *got = NULL;
  enum tp_append_decode rc = tp_append_decode(msg, len, &our_alloc, &got);
  if (want == NULL)
    assert_int_not_equal(rc, TP_APPEND_DECODED);
  else if (tp_rpc__has_nul_in_strings(&api__append_to_stream_request__descriptor, msg, len))
    assert_int_equal(rc, TP_APPEND_NUL);
  else {
    assert_int_equal(rc, TP_APPEND_DECODED);
    assert_same_request(want, got);
  }
  pool_release(&ref_pool);
  pool_release(&our_pool);
  return rc;
}

/* ---- tests ---- */

static void messages_protobuf_c_packed_decode_the_same(void **state) {
  (void)state;
  for (int round = 0; round < 2000; round++) {
    Api__EventData events[4], *pointers[4];
    uint8_t texts[4][6][16];
    char strings[4][6][16];
    size_t n = rnd_below(5);
    for (size_t i = 0; i < n; i++) {
      api__event_data__init(&events[i]);
      char **fields[] = {&events[i].type, &events[i].causation_id, &events[i].correlation_id,
                         &events[i].id};
      for (int f = 0; f < 4; f++) {
        size_t len = random_text((uint8_t *)strings[i][f], false);
        strings[i][f][len] = '\0';
        *fields[f] = strings[i][f];
      }
      events[i].data = (ProtobufCBinaryData){random_text(texts[i][0], true), texts[i][0]};
      events[i].metadata = (ProtobufCBinaryData){random_text(texts[i][1], true), texts[i][1]};
      pointers[i] = &events[i];
    }
    char stream[16];
    stream[random_text((uint8_t *)stream, false)] = '\0';
    Api__AppendToStreamRequest req = API__APPEND_TO_STREAM_REQUEST__INIT;
    req.stream = stream;
    req.version = (int32_t)rnd_below(3) - 1;
    req.n_events = n;
    req.events = pointers;
    uint8_t packed[4096];
    size_t len = api__append_to_stream_request__pack(&req, packed);
    assert_int_equal(compare_on(packed, len), TP_APPEND_DECODED);
  }
}

static void fields_in_any_order_repeated_or_unknown_decode_the_same(void **state) {
  (void)state;
  struct out msg;
  for (int round = 0; round < 20000; round++) {
    random_request(&msg, round % 4 == 0);
    compare_on(msg.data, msg.len);
  }
}

/* One byte changed, a byte inserted or removed, or the message cut short. */
static void damage(struct out *msg) {
  size_t at = msg->len ? rnd_below(msg->len) : 0;
  static const uint8_t nasty[] = {0x00, 0x80, 0xFF, 0x7F, 0x08, 0x0A, 0x1A, 0x12, 0x03, 0x04};
  uint8_t b = rnd_below(2) ? nasty[rnd_below(sizeof(nasty))] : (uint8_t)rnd();
  switch (rnd_below(4)) {
  case 0:
    if (msg->len)
      msg->data[at] = b;
    break;
  case 1:
    memmove(msg->data + at + 1, msg->data + at, msg->len - at);
    msg->data[at] = b;
    msg->len++;
    break;
  case 2:
    if (msg->len) {
      memmove(msg->data + at, msg->data + at + 1, msg->len - at - 1);
      msg->len--;
    }
    break;
  default:
    msg->len = at;
  }
}

static void damaged_messages_get_the_reference_s_verdict(void **state) {
  (void)state;
  struct out msg;
  int refused = 0;
  for (int round = 0; round < 50000; round++) {
    random_request(&msg, round % 8 == 0);
    for (size_t k = 1 + rnd_below(3); k > 0; k--)
      damage(&msg);
    refused += compare_on(msg.data, msg.len) != TP_APPEND_DECODED;
  }
  /* The damage did reach the decoders' error paths, and not always. */
  assert_true(refused > 5000 && refused < 45000);
}

/* The wire rules at their limits, and a wrong wire type on every known field. */
static void limits_get_the_reference_s_verdict(void **state) {
  (void)state;
  static const struct {
    uint8_t bytes[24];
    size_t len;
  } cases[] = {
      {{0x0A, 0x01, 's'}, 3},                                      /* stream "s" */
      {{0x8A, 0x80, 0x80, 0x80, 0x00, 0x01, 's'}, 7},              /* a 5-byte key for field 1 */
      {{0x8A, 0x80, 0x80, 0x80, 0x80, 0x00, 0x01, 's'}, 8},        /* a 6-byte key */
      {{0xFA, 0xFF, 0xFF, 0xFF, 0x0F, 0x00}, 6},                   /* the highest field number */
      {{0x80, 0x00}, 2},                                           /* field 0 in 2 bytes */
      {{0x00}, 1},                                                 /* field 0 */
      {{0x0A, 0x81, 0x80, 0x80, 0x80, 0x00, 's'}, 7},              /* a 5-byte prefix of 1 */
      {{0x0A, 0x81, 0x80, 0x80, 0x80, 0x80, 0x00, 's'}, 8},        /* a 6-byte prefix */
      {{0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x07}, 6},                   /* INT_MAX, not there */
      {{0x0A, 0x80, 0x80, 0x80, 0x80, 0x08}, 6},                   /* INT_MAX + 1 */
      {{0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F}, 6},                   /* 2^35 - 1 */
      {{0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}, 11}, /* version -1 */
      {{0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}, 12}, /* 11 */
      {{0x10, 0x80, 0x80, 0x80, 0x80, 0x10}, 6},                   /* version past 32 bits */
      {{0x10, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F}, 6},                   /* version UINT32_MAX */
      {{0x0B}, 1}, {{0x0C}, 1}, {{0x0E}, 1}, {{0x0F}, 1},          /* wire types 3, 4, 6, 7 */
      {{0x08, 0x01}, 2},                                           /* stream as a varint */
      {{0x15, 1, 2, 3, 4}, 5},                                     /* version as fixed32 */
      {{0x12, 0x00}, 2},                                           /* version as bytes */
      {{0x18, 0x01}, 2},                                           /* events as a varint */
      {{0x1A, 0x02, 0x08, 0x01}, 4},                               /* type as a varint */
      {{0x1A, 0x02, 0x10, 0x01}, 4},                               /* data as a varint */
      {{0x1A, 0x05, 0x1D, 1, 2, 3, 4}, 7},                         /* metadata as fixed32 */
      {{0x1A, 0x09, 0x21, 1, 2, 3, 4, 5, 6, 7, 8}, 11},            /* causation as fixed64 */
      {{0x1A, 0x02, 0x28, 0x01}, 4},                               /* correlation as a varint */
      {{0x1A, 0x02, 0x30, 0x01}, 4},                               /* id as a varint */
      {{0x1A, 0x01, 0x0A}, 3},                                     /* an event cut short */
      {{0x1A, 0x00, 0x1A, 0x00}, 4},                               /* two empty events */
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    compare_on(cases[i].bytes, cases[i].len);
}

static void a_nul_in_any_string_field_is_refused(void **state) {
  (void)state;
  static const uint8_t nul_text[] = {'a', 0, 'b'};
  for (uint32_t field = 1; field <= 6; field++) {
    struct out event = {0}, msg = {0};
    put_len_field(&event, field, nul_text, sizeof(nul_text));
    put_len_field(&msg, 3, event.data, event.len);
    struct pool pool;
    ProtobufCAllocator a = pool_allocator(&pool);
    Api__AppendToStreamRequest *req;
    bool bytes_field = field == 2 || field == 3; /* data and metadata may hold any byte */
    assert_int_equal(tp_append_decode(msg.data, msg.len, &a, &req),
                     bytes_field ? TP_APPEND_DECODED : TP_APPEND_NUL);
    pool_release(&pool);
  }
  struct out msg = {0};
  put_len_field(&msg, 1, nul_text, sizeof(nul_text));
  struct pool pool;
  ProtobufCAllocator a = pool_allocator(&pool);
  Api__AppendToStreamRequest *req;
  assert_int_equal(tp_append_decode(msg.data, msg.len, &a, &req), TP_APPEND_NUL);
  pool_release(&pool);
}

static void every_allocation_failure_is_reported(void **state) {
  (void)state;
  struct out msg = {0};
  uint8_t text[] = "abc";
  put_len_field(&msg, 1, text, 3);
  for (int i = 0; i < 2; i++) {
    struct out event = {0};
    put_len_field(&event, 1, text, 3);
    put_len_field(&event, 2, text, 3);
    put_len_field(&msg, 3, event.data, event.len);
  }
  size_t needed = 0;
  for (size_t fail_after = 0;; fail_after++) {
    struct pool pool;
    ProtobufCAllocator a = pool_allocator(&pool);
    pool.fail_after = fail_after;
    Api__AppendToStreamRequest *req;
    enum tp_append_decode rc = tp_append_decode(msg.data, msg.len, &a, &req);
    pool_release(&pool);
    if (rc == TP_APPEND_DECODED) {
      needed = fail_after;
      break;
    }
    assert_int_equal(rc, TP_APPEND_NOMEM);
  }
  /* request, events array, stream, and per event: itself, type, data */
  assert_int_equal(needed, 3 + 2 * 3);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(messages_protobuf_c_packed_decode_the_same),
      cmocka_unit_test(fields_in_any_order_repeated_or_unknown_decode_the_same),
      cmocka_unit_test(damaged_messages_get_the_reference_s_verdict),
      cmocka_unit_test(limits_get_the_reference_s_verdict),
      cmocka_unit_test(a_nul_in_any_string_field_is_refused),
      cmocka_unit_test(every_allocation_failure_is_reported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
