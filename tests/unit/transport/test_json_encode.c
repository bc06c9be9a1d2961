/*
 * transport/src/json.h, output: exact JSON for the API's messages and for
 * every kind of field (t.Scalars), escapes, base64, and every allocation
 * failing in turn (json_test_support.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "json_test_support.h"

#include "api.pb-c.h"
#include "evf/status.h"
#include "health.pb-c.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_scalars_descriptor_is_sorted(void **state) {
  (void)state;
  for (unsigned i = 1; i < 16; i++)
    assert_true(strcmp(scalars_fields[scalars_by_name[i - 1]].name,
                       scalars_fields[scalars_by_name[i]].name) < 0);
  for (unsigned i = 0; i < 16; i++)
    assert_ptr_equal(protobuf_c_message_descriptor_get_field(&scalars_descriptor, i + 1),
                     &scalars_fields[i]);
}

static void test_encode_event(void **state) {
  (void)state;
  Api__Event e = sample_event();
  assert_encodes(&e.base, SAMPLE_EVENT_JSON);
}

static void test_encode_defaults(void **state) {
  (void)state;
  Api__Event e = API__EVENT__INIT;
  assert_encodes(&e.base, "{\"version\":0,\"added_at\":0,\"position\":0}");
  Api__EventCountResponse count = API__EVENT_COUNT_RESPONSE__INIT;
  assert_encodes(&count.base, "{\"count\":0}");
  Api__ListStreamsReponse streams = API__LIST_STREAMS_REPONSE__INIT;
  assert_encodes(&streams.base, "{\"streams\":[]}");
  Api__GetGlobalStreamResponse page = API__GET_GLOBAL_STREAM_RESPONSE__INIT;
  assert_encodes(&page.base, "{\"events\":[],\"checkpoint\":0}");
  Api__AppendToStreamRequest append = API__APPEND_TO_STREAM_REQUEST__INIT;
  assert_encodes(&append.base, "{\"version\":0,\"events\":[]}");
  Api__VersionRequest empty = API__VERSION_REQUEST__INIT;
  assert_encodes(&empty.base, "{}");
}

static void test_encode_messages(void **state) {
  (void)state;
  Api__Event events[2] = {sample_event(), API__EVENT__INIT};
  events[1].stream = "s";
  events[1].version = 7;
  events[1].type = "T";
  events[1].position = 1;
  Api__Event *list[] = {&events[0], &events[1]};
  Api__GetGlobalStreamResponse page = API__GET_GLOBAL_STREAM_RESPONSE__INIT;
  page.n_events = 2;
  page.events = list;
  page.checkpoint = 42;
  assert_encodes(&page.base, "{\"events\":[" SAMPLE_EVENT_JSON ",{\"stream\":\"s\",\"version\":7,"
                             "\"type\":\"T\",\"added_at\":0,\"position\":1}],\"checkpoint\":42}");

  char *ids[] = {"a", "", "c"};
  Api__AppendToStreamResponse appended = API__APPEND_TO_STREAM_RESPONSE__INIT;
  appended.n_events = 3;
  appended.events = ids;
  appended.first_version = 4294967295u;
  appended.first_position = UINT64_MAX;
  assert_encodes(&appended.base, "{\"events\":[\"a\",\"\",\"c\"],\"first_version\":4294967295,"
                                 "\"first_position\":18446744073709551615}");

  Api__EventCountResponse count = API__EVENT_COUNT_RESPONSE__INIT;
  count.count = INT64_MIN;
  assert_encodes(&count.base, "{\"count\":-9223372036854775808}");
  count.count = INT64_MAX;
  assert_encodes(&count.base, "{\"count\":9223372036854775807}");

  Api__AppendToStreamRequest append = API__APPEND_TO_STREAM_REQUEST__INIT;
  append.version = INT32_MIN;
  assert_encodes(&append.base, "{\"version\":-2147483648,\"events\":[]}");
  append.version = -1;
  assert_encodes(&append.base, "{\"version\":-1,\"events\":[]}");

  Grpc__Health__V1__HealthCheckResponse health = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  assert_encodes(&health.base, "{\"status\":\"UNKNOWN\"}");
  health.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
  assert_encodes(&health.base, "{\"status\":\"NOT_SERVING\"}");
}

static void test_encode_escapes(void **state) {
  (void)state;
  Api__VersionResponse v = API__VERSION_RESPONSE__INIT;
  v.version = "q\"b\\s/\b\f\n\r\t\x01\x1f\x7f \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
  assert_encodes(&v.base, "{\"version\":\"q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u0001\\u001f\x7f "
                          "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}");
  /* Each character to escape at each place of a string, among bytes either side of the range. */
  static const char special[] = {'"', '\\', 0x01, 0x1f};
  static const char fill[] = {' ', '!', '#', '[', ']', '\x7f', '\xc3', '\xa9'};
  static const char *const escaped[] = {"\\\"", "\\\\", "\\u0001", "\\u001f"};
  for (size_t k = 0; k < sizeof(special); k++) {
    for (size_t at = 0; at < 20; at++) {
      char text[24], want[64];
      for (size_t i = 0; i < 20; i++)
        text[i] = fill[(i + k) % sizeof(fill)];
      text[20] = '\0';
      snprintf(want, sizeof(want), "{\"version\":\"%.*s%s%s\"}", (int)at, text, escaped[k],
               text + at + 1);
      text[at] = special[k];
      v.version = text;
      assert_encodes(&v.base, want);
    }
  }
  /* Escapes at both ends and back to back, which grow the output past its first reservation. */
  char many[600];
  memset(many, '\n', sizeof(many) - 1);
  many[sizeof(many) - 1] = '\0';
  v.version = many;
  char *text = encode(&v.base);
  assert_int_equal(strlen(text), strlen("{\"version\":\"\"}") + 2 * 599);
  free(text);
  assert_round_trip(&v.base);
}

static void test_encode_base64(void **state) {
  (void)state;
  static const char *const expected[] = {"", "8A==", "8PE=", "8PHy", "8PHy8w==", "8PHy8/Q="};
  const uint8_t bytes[] = {0xf0, 0xf1, 0xf2, 0xf3, 0xf4};
  for (size_t n = 0; n <= 5; n++) {
    Api__EventData d = API__EVENT_DATA__INIT;
    d.data = (ProtobufCBinaryData){.len = n, .data = (uint8_t *)bytes};
    char want[64];
    if (n == 0)
      snprintf(want, sizeof(want), "{}");
    else
      snprintf(want, sizeof(want), "{\"data\":\"%s\"}", expected[n]);
    assert_encodes(&d.base, want);
  }
  /* Every length through the 6-byte steps and the tails, against a plain encoder. */
  uint8_t many[80];
  for (size_t i = 0; i < sizeof(many); i++)
    many[i] = (uint8_t)(i * 37 + 11);
  for (size_t n = 1; n <= sizeof(many); n++) {
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char want[160] = "{\"data\":\"";
    size_t w = strlen(want);
    for (size_t i = 0; i < n; i += 3) {
      uint32_t v = (uint32_t)many[i] << 16 | (i + 1 < n ? (uint32_t)many[i + 1] << 8 : 0) |
                   (i + 2 < n ? many[i + 2] : 0);
      want[w++] = alphabet[v >> 18];
      want[w++] = alphabet[(v >> 12) & 63];
      want[w++] = i + 1 < n ? alphabet[(v >> 6) & 63] : '=';
      want[w++] = i + 2 < n ? alphabet[v & 63] : '=';
    }
    strcpy(want + w, "\"}");
    Api__EventData d = API__EVENT_DATA__INIT;
    d.data = (ProtobufCBinaryData){.len = n, .data = many};
    assert_encodes(&d.base, want);
    assert_round_trip(&d.base);
  }
  const uint8_t high[] = {0xfb, 0xff, 0xbf, 0xfe};
  Api__EventData d = API__EVENT_DATA__INIT;
  d.metadata = (ProtobufCBinaryData){.len = 4, .data = (uint8_t *)high};
  assert_encodes(&d.base, "{\"metadata\":\"+/+//g==\"}");
}

static void test_encode_appends(void **state) {
  (void)state;
  struct tp_buf b = {0};
  assert_int_equal(tp_buf_append(&b, "[", 1), 0);
  Api__EventCountResponse count = API__EVENT_COUNT_RESPONSE__INIT;
  count.count = 5;
  assert_int_equal(tp_json_encode(&count.base, &b), 0);
  assert_int_equal(tp_buf_append(&b, ",", 1), 0);
  assert_int_equal(tp_json_encode(&count.base, &b), 0);
  assert_int_equal(tp_buf_append(&b, "]", 2), 0);
  assert_string_equal((char *)b.data, "[{\"count\":5},{\"count\":5}]");
  tp_buf_free(&b);
}

static void test_encode_scalars(void **state) {
  (void)state;
  struct scalars s;
  scalars_init(&s.base);
  assert_encodes(&s.base, "{\"d\":0,\"f\":0,\"b\":false,\"s32\":0,\"f64\":0,\"ri\":[],\"rb\":[],"
                          "\"rby\":[],\"rd\":[],\"status\":\"UNKNOWN\",\"rs\":[],\"rstr\":[]}");
  int32_t ri[] = {1, -2, INT32_MAX};
  protobuf_c_boolean rb[] = {1, 0};
  ProtobufCBinaryData rby[] = {{0, NULL}, bytes_of("ab")};
  double rd[] = {NAN, INFINITY, -INFINITY, -0.0, 5e-324, 1.7976931348623157e308, 123456789012};
  int rs[] = {1, 3, 99};
  char *rstr[] = {"", "x"};
  s.d = 0.1;
  s.f = 0.1f;
  s.b = 1;
  s.s32 = -7;
  s.f64 = UINT64_MAX;
  s.n_ri = 3, s.ri = ri;
  s.n_rb = 2, s.rb = rb;
  s.n_rby = 2, s.rby = rby;
  s.n_rd = 7, s.rd = rd;
  s.has_ou = 1;
  s.ou = 0;
  s.status = 2;
  s.n_rs = 3, s.rs = rs;
  s.n_rstr = 2, s.rstr = rstr;
  s.o_case = O_OS;
  s.os = "";
  assert_encodes(&s.base,
                 "{\"d\":0.1,\"f\":0.1,\"b\":true,\"s32\":-7,\"f64\":18446744073709551615,"
                 "\"ri\":[1,-2,2147483647],\"rb\":[true,false],\"rby\":[\"\",\"YWI=\"],"
                 "\"rd\":[\"NaN\",\"Infinity\",\"-Infinity\",-0.0,4.94065645841247e-324,"
                 "1.7976931348623157e+308,123456789012],"
                 "\"os\":\"\",\"ou\":0,\"status\":\"NOT_SERVING\","
                 "\"rs\":[\"SERVING\",\"SERVICE_UNKNOWN\",99],\"rstr\":[\"\",\"x\"]}");
  s.o_case = O_OI;
  s.oi = -5;
  s.has_ou = 0;
  s.n_rd = 0;
  s.d = 1.0 / 3;
  s.f = 16777217.0f;
  char *text = encode(&s.base);
  assert_non_null(strstr(text, "\"d\":0.3333333333333333,\"f\":16777216,"));
  assert_non_null(strstr(text, "\"rd\":[],\"oi\":-5,\"status\""));
  free(text);
  Api__VersionResponse v = API__VERSION_RESPONSE__INIT;
  s.o_case = O_OM;
  s.om = &v;
  text = encode(&s.base);
  assert_non_null(strstr(text, "\"rd\":[],\"status\":\"NOT_SERVING\",\"om\":{},\"rs\""));
  free(text);
  s.om = NULL; /* selected but unset */
  text = encode(&s.base);
  assert_non_null(strstr(text, "\"om\":null"));
  free(text);
}

static void test_encode_out_of_memory(void **state) {
  (void)state;
  Api__Event events[3] = {sample_event(), sample_event(), sample_event()};
  char text[700];
  memset(text, '"', sizeof(text) - 1);
  text[sizeof(text) - 1] = '\0';
  events[1].type = text;
  Api__Event *list[] = {&events[0], &events[1], &events[2]};
  Api__GetGlobalStreamResponse page = API__GET_GLOBAL_STREAM_RESPONSE__INIT;
  page.n_events = 3;
  page.events = list;
  char *expected = encode(&page.base);
  long n = 0;
  for (;; n++) {
    struct tp_buf b = {0};
    assert_int_equal(tp_buf_append(&b, "x", 1), 0);
    fail_allocation(n);
    int rc = tp_json_encode(&page.base, &b);
    if (!stop_failing()) {
      assert_int_equal(rc, 0);
      assert_int_equal(b.len, 1 + strlen(expected));
      assert_memory_equal(b.data + 1, expected, b.len - 1);
      tp_buf_free(&b);
      break;
    }
    assert_int_equal(rc, -ENOMEM);
    assert_int_equal(b.len, 1);
    assert_int_equal(b.data[0], 'x');
    tp_buf_free(&b);
  }
  assert_true(n > 2);
  free(expected);
}

/* ---- input ---- */

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_scalars_descriptor_is_sorted),
      cmocka_unit_test(test_encode_event),
      cmocka_unit_test(test_encode_defaults),
      cmocka_unit_test(test_encode_messages),
      cmocka_unit_test(test_encode_escapes),
      cmocka_unit_test(test_encode_base64),
      cmocka_unit_test(test_encode_appends),
      cmocka_unit_test(test_encode_scalars),
      cmocka_unit_test(test_encode_out_of_memory),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
