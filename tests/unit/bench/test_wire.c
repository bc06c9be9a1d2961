/*
 * Tests for bench/loadgen/wire.h and request.h: the response scanners must
 * give the same counts however the body is split into chunks (every split
 * point is tried), and patched request templates must decode (protobuf-c)
 * to the request they stand for.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "api.pb-c.h"
#include "request.h"
#include "wire.h"

#include "evf/pbwire.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A gRPC-framed message: flag 0, big-endian length, bytes. */
static uint8_t *frame(const ProtobufCMessage *msg, size_t *len) {
  size_t n = protobuf_c_message_get_packed_size(msg);
  uint8_t *out = malloc(5 + n);
  out[0] = 0;
  out[1] = (uint8_t)(n >> 24);
  out[2] = (uint8_t)(n >> 16);
  out[3] = (uint8_t)(n >> 8);
  out[4] = (uint8_t)n;
  protobuf_c_message_pack(msg, out + 5);
  *len = 5 + n;
  return out;
}

/* A global page of n events, positions from first, as the server encodes it. */
static uint8_t *global_page(unsigned n, uint64_t first, size_t *len) {
  Api__Event *events = calloc(n ? n : 1, sizeof(*events));
  Api__Event **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
  static uint8_t data[300];
  memset(data, 'x', sizeof(data));
  for (unsigned i = 0; i < n; i++) {
    api__event__init(&events[i]);
    events[i].id = "0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1011";
    events[i].stream = "account-42";
    events[i].version = i;
    events[i].type = "BenchEvent";
    events[i].data.data = data;
    events[i].data.len = 1 + i * 37 % sizeof(data); /* lengths with 1- and 2-byte varints */
    events[i].added_at = 1700000000000 + i;
    events[i].position = first + i;
    ptrs[i] = &events[i];
  }
  Api__GetGlobalStreamResponse resp;
  api__get_global_stream_response__init(&resp);
  resp.n_events = n;
  resp.events = ptrs;
  resp.checkpoint = n ? first + n - 1 : first;
  uint8_t *out = frame(&resp.base, len);
  free(events);
  free(ptrs);
  return out;
}

static void scan_split(const uint8_t *body, size_t len, size_t split, struct lg_pb_scan *s) {
  lg_pb_scan_init(s);
  lg_pb_scan_feed(s, body, split);
  lg_pb_scan_feed(s, body + split, len - split);
}

static void pb_scan_every_split(void **state) {
  (void)state;
  size_t len;
  uint8_t *body = global_page(7, 1000000, &len);
  for (size_t split = 0; split <= len; split++) {
    struct lg_pb_scan s;
    scan_split(body, len, split, &s);
    assert_true(lg_pb_scan_complete(&s));
    assert_int_equal(s.messages, 1);
    assert_int_equal(s.count, 7);
    assert_true(s.has_field2);
    assert_int_equal(s.field2, 1000006);
  }
  /* One byte at a time, and a large page. */
  free(body);
  body = global_page(1000, 1, &len);
  struct lg_pb_scan s;
  lg_pb_scan_init(&s);
  for (size_t i = 0; i < len; i++)
    lg_pb_scan_feed(&s, body + i, 1);
  assert_true(lg_pb_scan_complete(&s));
  assert_int_equal(s.count, 1000);
  assert_int_equal(s.field2, 1000);
  free(body);
}

static void pb_scan_empty_and_append(void **state) {
  (void)state;
  size_t len;
  /* An empty page from offset 0: a zero-length message (proto3 leaves 0 out). */
  uint8_t *body = global_page(0, 0, &len);
  assert_int_equal(len, 5);
  struct lg_pb_scan s;
  scan_split(body, len, 2, &s);
  assert_true(lg_pb_scan_complete(&s));
  assert_int_equal(s.messages, 1);
  assert_int_equal(s.count, 0);
  assert_false(s.has_field2);
  free(body);
  /* AppendToStreamResponse: field 1 holds the ids; field 2 is first_version. */
  char *ids[3] = {"a", "b", "c"};
  Api__AppendToStreamResponse resp;
  api__append_to_stream_response__init(&resp);
  resp.n_events = 3;
  resp.events = ids;
  resp.first_version = 9;
  resp.first_position = 77;
  body = frame(&resp.base, &len);
  scan_split(body, len, len / 2, &s);
  assert_true(lg_pb_scan_complete(&s));
  assert_int_equal(s.count, 3);
  assert_int_equal(s.field2, 9);
  assert_false(s.has_field1);
  free(body);
  /* EventCountResponse: field 1 is a varint, kept apart from the entries counted. */
  Api__EventCountResponse count;
  api__event_count_response__init(&count);
  count.count = 1234567;
  body = frame(&count.base, &len);
  scan_split(body, len, 3, &s);
  assert_true(lg_pb_scan_complete(&s));
  assert_int_equal(s.count, 0);
  assert_true(s.has_field1);
  assert_int_equal(s.field1, 1234567);
  free(body);
}

static void pb_scan_refuses_bad_bodies(void **state) {
  (void)state;
  size_t len;
  uint8_t *body = global_page(3, 5, &len);
  struct lg_pb_scan s;
  /* Cut short anywhere: never complete. */
  for (size_t cut = 1; cut < len; cut++) {
    lg_pb_scan_init(&s);
    lg_pb_scan_feed(&s, body, cut);
    assert_false(lg_pb_scan_complete(&s));
  }
  /* Compressed flag. */
  body[0] = 1;
  lg_pb_scan_init(&s);
  lg_pb_scan_feed(&s, body, len);
  assert_true(s.error);
  assert_false(lg_pb_scan_complete(&s));
  /* A field longer than its message. */
  static const uint8_t overlong[] = {0, 0, 0, 0, 3, 0x0a, 0x05, 'a'};
  lg_pb_scan_init(&s);
  lg_pb_scan_feed(&s, overlong, sizeof(overlong));
  assert_true(s.error);
  /* A group (wire type 3) is not proto3. */
  static const uint8_t group[] = {0, 0, 0, 0, 2, 0x0b, 0x0c};
  lg_pb_scan_init(&s);
  lg_pb_scan_feed(&s, group, sizeof(group));
  assert_true(s.error);
  /* Two messages are counted as two. */
  body[0] = 0;
  uint8_t *two = malloc(2 * len);
  memcpy(two, body, len);
  memcpy(two + len, body, len);
  lg_pb_scan_init(&s);
  lg_pb_scan_feed(&s, two, 2 * len);
  assert_true(lg_pb_scan_complete(&s));
  assert_int_equal(s.messages, 2);
  free(two);
  free(body);
}

static const char json_page[] =
    "{\"events\":[{\"id\":\"0190a0b0-c0d0-7e0f-8a0b-0c0d0e0f1011\",\"stream\":\"s-1\","
    "\"version\":0,\"type\":\"BenchEvent\",\"data\":\"YWJj\",\"added_at\":1700000000000,"
    "\"position\":41},{\"id\":\"x\",\"stream\":\"\\\"position\\\":\",\"version\":1,"
    "\"type\":\"T\",\"position\":42},{\"id\":\"y\",\"version\":2,\"position\":43}],"
    "\"checkpoint\":18446744073709551615}";

/* Feeds text as an HTTP connection does: what is left unconsumed goes in front of the next chunk. */
static void json_split(const char *text, size_t split, struct lg_json_scan *s) {
  size_t len = strlen(text);
  memset(s, 0, sizeof(*s));
  size_t used = lg_json_scan(s, (const uint8_t *)text, split, split == len);
  assert_true(split - used <= LG_JSON_LOOKAHEAD);
  if (split < len)
    assert_int_equal(lg_json_scan(s, (const uint8_t *)text + used, len - used, true), len - used);
}

static void json_scan_every_split(void **state) {
  (void)state;
  size_t len = strlen(json_page);
  for (size_t split = 0; split <= len; split++) {
    struct lg_json_scan s;
    json_split(json_page, split, &s);
    /* The escaped quotes inside a string value are not a key. */
    assert_int_equal(s.count, 3);
    assert_true(s.has_checkpoint);
    assert_int_equal(s.checkpoint, UINT64_MAX);
  }
  struct lg_json_scan s;
  json_split("{\"events\":[],\"checkpoint\":0}", 20, &s);
  assert_int_equal(s.count, 0);
  assert_true(s.has_checkpoint);
  assert_int_equal(s.checkpoint, 0);
  json_split("{\"events\":[]}", 5, &s);
  assert_false(s.has_checkpoint);
}

static void grpc_append_template_decodes(void **state) {
  (void)state;
  uint8_t payload[200];
  for (size_t i = 0; i < sizeof(payload); i++)
    payload[i] = (uint8_t)i;
  struct lg_tmpl proto, t;
  assert_int_equal(lg_req_grpc_append(&proto, "bench-7-000", 3, 4, payload, sizeof(payload)), 0);
  assert_int_equal(lg_tmpl_copy(&t, &proto), 0);
  lg_tmpl_free(&proto);
  static const int64_t versions[] = {-1, 0, 1, 127, 128, 300000, INT32_MAX};
  for (size_t k = 0; k < sizeof(versions) / sizeof(versions[0]); k++) {
    lg_tmpl_set_name(&t, 3, 42 + k);
    lg_tmpl_set_tail(&t, (uint64_t)versions[k]);
    uint32_t framed = (uint32_t)t.data[1] << 24 | t.data[2] << 16 | t.data[3] << 8 | t.data[4];
    assert_int_equal(t.data[0], 0);
    assert_int_equal(framed, t.len - 5);
    Api__AppendToStreamRequest *req = api__append_to_stream_request__unpack(NULL, t.len - 5, t.data + 5);
    assert_non_null(req);
    char want[32];
    snprintf(want, sizeof(want), "bench-7-%03zu", 42 + k);
    assert_string_equal(req->stream, want);
    assert_int_equal(req->version, versions[k]);
    assert_int_equal(req->n_events, 4);
    assert_string_equal(req->events[3]->type, "BenchEvent");
    assert_string_equal(req->events[3]->id, "");
    assert_int_equal(req->events[3]->data.len, sizeof(payload));
    assert_memory_equal(req->events[3]->data.data, payload, sizeof(payload));
    api__append_to_stream_request__free_unpacked(req, NULL);
  }
  lg_tmpl_free(&t);
}

static void grpc_read_templates_decode(void **state) {
  (void)state;
  struct lg_tmpl t;
  assert_int_equal(lg_req_grpc_get_global(&t, 1000), 0);
  static const uint64_t offsets[] = {0, 1, 1000, UINT64_MAX, 5};
  for (size_t k = 0; k < sizeof(offsets) / sizeof(offsets[0]); k++) {
    lg_tmpl_set_tail(&t, offsets[k]);
    Api__GetGlobalStreamRequest *req = api__get_global_stream_request__unpack(NULL, t.len - 5, t.data + 5);
    assert_non_null(req);
    assert_int_equal(req->offset, offsets[k]);
    assert_int_equal(req->limit, 1000);
    api__get_global_stream_request__free_unpacked(req, NULL);
  }
  lg_tmpl_free(&t);
  assert_int_equal(lg_req_grpc_get_stream(&t, "p-00", 2, 100), 0);
  lg_tmpl_set_name(&t, 2, 99);
  Api__GetStreamRequest *req = api__get_stream_request__unpack(NULL, t.len - 5, t.data + 5);
  assert_non_null(req);
  assert_string_equal(req->stream, "p-99");
  assert_int_equal(req->version, 0);
  assert_int_equal(req->limit, 100);
  api__get_stream_request__free_unpacked(req, NULL);
  lg_tmpl_free(&t);
}

static void http_templates(void **state) {
  (void)state;
  struct lg_tmpl t, c;
  assert_int_equal(lg_req_http_get_global(&t, "h:1", 1000), 0);
  assert_int_equal(lg_tmpl_copy(&c, &t), 0);
  lg_tmpl_set_tail(&c, 123456789);
  assert_int_equal(c.len, strlen("GET /api/v1/stream/all?limit=1000&offset=123456789 HTTP/1.1\r\nHost: h:1\r\n\r\n"));
  assert_memory_equal(c.data, "GET /api/v1/stream/all?limit=1000&offset=123456789 HTTP/1.1\r\nHost: h:1\r\n\r\n", c.len);
  lg_tmpl_set_tail(&c, 0);
  assert_memory_equal(c.data, "GET /api/v1/stream/all?limit=1000&offset=0 HTTP/1.1\r\nHost: h:1\r\n\r\n", c.len);
  lg_tmpl_free(&t);
  lg_tmpl_free(&c);
  /* Names are one percent-encoded path segment; the digits stay at the end. */
  assert_int_equal(lg_req_http_get_stream(&t, "h:1", "a/b c-000", 3, 100), 0);
  lg_tmpl_set_name(&t, 3, 7);
  const char *want = "GET /api/v1/stream/a%2Fb%20c-007?version=0&limit=100 HTTP/1.1\r\nHost: h:1\r\n\r\n";
  assert_int_equal(t.len, strlen(want));
  assert_memory_equal(t.data, want, t.len);
  lg_tmpl_free(&t);
  static const uint8_t data[] = {'a', 'b', 'c', 'd'};
  assert_int_equal(lg_req_http_append(&t, "h:1", "s-0", 1, 2, data, sizeof(data)), 0);
  lg_tmpl_set_name(&t, 1, 5);
  const char *body = "{\"version\":-1,\"events\":[{\"type\":\"BenchEvent\",\"data\":\"YWJjZA==\"},"
                     "{\"type\":\"BenchEvent\",\"data\":\"YWJjZA==\"}]}";
  char head[200];
  snprintf(head, sizeof(head), "POST /api/v1/stream/s-5 HTTP/1.1\r\nHost: h:1\r\nContent-Type: "
                               "application/json\r\nContent-Length: %zu\r\n\r\n", strlen(body));
  assert_int_equal(t.len, strlen(head) + strlen(body));
  assert_memory_equal(t.data, head, strlen(head));
  assert_memory_equal(t.data + strlen(head), body, strlen(body));
  lg_tmpl_free(&t);
}

static void small_encoders(void **state) {
  (void)state;
  /* The varints it encodes with (evf/pbwire.h). */
  uint8_t buf[EVF_PB_VARINT_MAX];
  assert_int_equal(evf_pb_put_varint(buf, 0), 1);
  assert_int_equal(evf_pb_put_varint(buf, 300), 2);
  assert_int_equal(buf[0], 0xac);
  assert_int_equal(buf[1], 0x02);
  assert_int_equal(evf_pb_put_varint(buf, UINT64_MAX), 10);
  for (unsigned bits = 0; bits < 64; bits++) {
    uint64_t v = (uint64_t)1 << bits;
    assert_int_equal(evf_pb_varint_size(v), evf_pb_put_varint(buf, v));
    assert_int_equal(evf_pb_varint_size(v - 1), evf_pb_put_varint(buf, v - 1));
  }
  uint8_t d[4];
  lg_digits_put(d, 4, 42);
  assert_memory_equal(d, "0042", 4);
  assert_int_equal(lg_digits_count(0), 1);
  assert_int_equal(lg_digits_count(999), 3);
  assert_int_equal(lg_digits_count(1000), 4);
  char b64[16];
  assert_int_equal(lg_base64_put((const uint8_t *)"a", 1, b64), 4);
  assert_memory_equal(b64, "YQ==", 4);
  assert_int_equal(lg_base64_put((const uint8_t *)"ab", 2, b64), 4);
  assert_memory_equal(b64, "YWI=", 4);
  assert_int_equal(lg_base64_put((const uint8_t *)"", 0, b64), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(pb_scan_every_split),
      cmocka_unit_test(pb_scan_empty_and_append),
      cmocka_unit_test(pb_scan_refuses_bad_bodies),
      cmocka_unit_test(json_scan_every_split),
      cmocka_unit_test(grpc_append_template_decodes),
      cmocka_unit_test(grpc_read_templates_decode),
      cmocka_unit_test(http_templates),
      cmocka_unit_test(small_encoders),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
