/*
 * transport/src/json.h, input: messages decoded, round trips through the
 * wire encoding, every way input is refused, and every allocation failing
 * in turn (json_test_support.h).
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
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_decode_empty_object(void **state) {
  (void)state;
  Api__Event *e = (Api__Event *)decode(&api__event__descriptor, " { } ");
  assert_ptr_equal(e->id, protobuf_c_empty_string);
  assert_ptr_equal(e->causation_id, protobuf_c_empty_string);
  assert_int_equal(e->data.len, 0);
  assert_null(e->data.data);
  assert_int_equal(e->position, 0);
  assert_int_equal(protobuf_c_message_get_packed_size(&e->base), 0);
  protobuf_c_message_free_unpacked(&e->base, NULL);

  Api__AppendToStreamRequest *r =
      (Api__AppendToStreamRequest *)decode(&api__append_to_stream_request__descriptor, "{}");
  assert_int_equal(r->n_events, 0);
  assert_null(r->events);
  assert_string_equal(r->stream, "");
  protobuf_c_message_free_unpacked(&r->base, NULL);

  /* null is the default, and "" or [] leave the defaults in place too. */
  r = (Api__AppendToStreamRequest *)decode(&api__append_to_stream_request__descriptor,
                                           "{\"stream\":null,\"version\":null,\"events\":null}");
  assert_int_equal(protobuf_c_message_get_packed_size(&r->base), 0);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  r = (Api__AppendToStreamRequest *)decode(&api__append_to_stream_request__descriptor,
                                           "{\"stream\":\"\",\"version\":0,\"events\":[]}");
  assert_ptr_equal(r->stream, protobuf_c_empty_string);
  assert_null(r->events);
  protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void test_decode_append_request(void **state) {
  (void)state;
  Api__AppendToStreamRequest *r = (Api__AppendToStreamRequest *)decode(
      &api__append_to_stream_request__descriptor,
      "{\"stream\":\"orders-1\",\"version\":-1,\"events\":["
      "{\"type\":\"OrderPlaced\",\"data\":\"eyJ0b3RhbCI6NDJ9\",\"id\":\"x\"},"
      "{\"type\":\"\\u00e9\\ud83d\\ude00\",\"metadata\":\"bQ\",\"causation_id\":\"c\","
      "\"correlation_id\":\"d\",\"data\":null},{}]}");
  assert_string_equal(r->stream, "orders-1");
  assert_int_equal(r->version, -1);
  assert_int_equal(r->n_events, 3);
  assert_string_equal(r->events[0]->type, "OrderPlaced");
  assert_int_equal(r->events[0]->data.len, 12);
  assert_memory_equal(r->events[0]->data.data, "{\"total\":42}", 12);
  assert_string_equal(r->events[0]->id, "x");
  assert_string_equal(r->events[1]->type, "\xc3\xa9\xf0\x9f\x98\x80");
  assert_int_equal(r->events[1]->metadata.len, 1);
  assert_int_equal(r->events[1]->metadata.data[0], 'm');
  assert_string_equal(r->events[1]->causation_id, "c");
  assert_string_equal(r->events[1]->correlation_id, "d");
  assert_null(r->events[1]->data.data);
  assert_int_equal(protobuf_c_message_get_packed_size(&r->events[2]->base), 0);
  protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void test_round_trips(void **state) {
  (void)state;
  Api__Event e = sample_event();
  assert_round_trip(&e.base);
  e.added_at = INT64_MIN;
  e.position = UINT64_MAX;
  e.version = UINT32_MAX;
  assert_round_trip(&e.base);

  Api__Event events[2] = {sample_event(), API__EVENT__INIT};
  Api__Event *list[] = {&events[0], &events[1]};
  Api__GetGlobalStreamResponse page = API__GET_GLOBAL_STREAM_RESPONSE__INIT;
  page.n_events = 2;
  page.events = list;
  page.checkpoint = UINT64_MAX - 1;
  assert_round_trip(&page.base);

  uint8_t all[256];
  for (int i = 0; i < 256; i++)
    all[i] = (uint8_t)i;
  Api__EventData data[3] = {API__EVENT_DATA__INIT, API__EVENT_DATA__INIT, API__EVENT_DATA__INIT};
  data[0].type = "t\x01\"";
  data[0].data = (ProtobufCBinaryData){.len = 256, .data = all};
  data[1].metadata = (ProtobufCBinaryData){.len = 1, .data = all + 200};
  data[2].id = "0190f2a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6";
  Api__EventData *data_list[] = {&data[0], &data[1], &data[2]};
  Api__AppendToStreamRequest append = API__APPEND_TO_STREAM_REQUEST__INIT;
  append.stream = "s";
  append.version = INT32_MIN;
  append.n_events = 3;
  append.events = data_list;
  assert_round_trip(&append.base);

  char *ids[] = {"a", "", "c"};
  Api__AppendToStreamResponse appended = API__APPEND_TO_STREAM_RESPONSE__INIT;
  appended.n_events = 3;
  appended.events = ids;
  appended.first_position = 1;
  assert_round_trip(&appended.base);

  Grpc__Health__V1__HealthCheckResponse health = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  health.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
  assert_round_trip(&health.base);
  health.status = 77; /* unknown to this build: kept as a number */
  assert_round_trip(&health.base);
}

static void test_base64_variants(void **state) {
  (void)state;
  static const struct {
    const char *text;
    size_t len;
    const char *bytes;
  } cases[] = {
      {"+/+//g==", 4, "\xfb\xff\xbf\xfe"}, /* standard, padded */
      {"+/+//g", 4, "\xfb\xff\xbf\xfe"},   /* standard, unpadded */
      {"-_-__g==", 4, "\xfb\xff\xbf\xfe"}, /* URL-safe, padded */
      {"-_-__g", 4, "\xfb\xff\xbf\xfe"},   /* URL-safe, unpadded */
      {"8PE=", 2, "\xf0\xf1"},
      {"8PE", 2, "\xf0\xf1"},
      {"8PHy", 3, "\xf0\xf1\xf2"},
      {"8A==", 1, "\xf0"},
      {"8A", 1, "\xf0"},
      {"8B", 1, "\xf0"}, /* nonzero unused bits, tolerated as most decoders do */
      {"", 0, ""},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char text[64];
    snprintf(text, sizeof(text), "{\"data\":\"%s\"}", cases[i].text);
    Api__EventData *d = (Api__EventData *)decode(&api__event_data__descriptor, text);
    assert_int_equal(d->data.len, cases[i].len);
    if (cases[i].len > 0)
      assert_memory_equal(d->data.data, cases[i].bytes, cases[i].len);
    else
      assert_null(d->data.data);
    protobuf_c_message_free_unpacked(&d->base, NULL);
  }
  static const char *const invalid[] = {
      "Q",        "QUJDR",    "QQ=",     "Q===",     "====",     "=",    "QQ==QQ==", "QUJD=",
      "QU=D",     "QQ= =",    "QQ ==",   " QQ==",    "QQ==\\n", "QU!D", "QUJ.",     "\\u00e9QQ=",
      "QUJDRA=",  "QUJDRA===",
  };
  for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
    char text[64];
    snprintf(text, sizeof(text), "{\"data\":\"%s\"}", invalid[i]);
    assert_rejects(&api__event_data__descriptor, text, "field \"data\": invalid base64");
  }
  assert_rejects(&api__append_to_stream_request__descriptor,
                 "{\"events\":[{\"data\":\"QQ==\"},{\"metadata\":\"Q\"}]}",
                 "field \"events[1].metadata\": invalid base64");
  assert_rejects(&api__event_data__descriptor, "{\"data\":5}",
                 "field \"data\": expected a base64 string");
}

static void test_unknown_fields(void **state) {
  (void)state;
  assert_rejects(&api__append_to_stream_request__descriptor, "{\"stream\":\"s\",\"vesion\":1}",
                 "unknown field \"vesion\"");
  assert_rejects(&api__append_to_stream_request__descriptor,
                 "{\"events\":[{\"type\":\"a\"},{\"type\":\"b\",\"dta\":\"x\"}]}",
                 "unknown field \"events[1].dta\"");
  /* proto3 JSON's camelCase names are not ours: a client mixing them up hears of it. */
  assert_rejects(&api__event__descriptor, "{\"addedAt\":1}", "unknown field \"addedAt\"");
  /* Reported even when its value is null. */
  assert_rejects(&api__event__descriptor, "{\"Type\":null}", "unknown field \"Type\"");
  /* The name is quoted so that the reason stays one clean line. */
  assert_rejects(&api__event__descriptor, "{\"a\\\"b\\n\\u00e9\":1}",
                 "unknown field \"a\\u0022b\\u000a\xc3\xa9\"");
  /* A long name is cut, on a character boundary. */
  char text[1200], reason[256];
  strcpy(text, "{\"");
  for (int i = 0; i < 300; i++)
    strcat(text, "\xc3\xa9");
  strcat(text, "\":1}");
  ProtobufCMessage *msg = NULL;
  assert_int_equal(
      decode_n(&api__event__descriptor, text, strlen(text), &msg, reason, sizeof(reason)),
      EVF_EINVAL);
  assert_true(strncmp(reason, "unknown field \"\xc3\xa9\xc3\xa9", 19) == 0);
  size_t len = strlen(reason);
  assert_true(len > 100 && len < 256);
  assert_memory_equal(reason + len - 3, "\xc3\xa9\"", 3);
  /* No room for a reason is fine too. */
  assert_int_equal(decode_n(&api__event__descriptor, "{\"x\":1}", 7, &msg, NULL, 0), EVF_EINVAL);
  char small[8];
  assert_int_equal(decode_n(&api__event__descriptor, "{\"x\":1}", 7, &msg, small, sizeof(small)),
                   EVF_EINVAL);
  assert_string_equal(small, "unknown");
  /* A cut through a character drops it whole. */
  char cut[17];
  assert_int_equal(decode_n(&api__event__descriptor, "{\"\xc3\xa9\":1}", 8, &msg, cut, sizeof(cut)),
                   EVF_EINVAL);
  assert_string_equal(cut, "unknown field \"");
  char whole[18];
  assert_int_equal(
      decode_n(&api__event__descriptor, "{\"\xc3\xa9\":1}", 8, &msg, whole, sizeof(whole)),
      EVF_EINVAL);
  assert_string_equal(whole, "unknown field \"\xc3\xa9");
}

static void test_type_errors(void **state) {
  (void)state;
  const ProtobufCMessageDescriptor *append = &api__append_to_stream_request__descriptor;
  const char *int32_range = "expected an integer from -2147483648 to 2147483647";
  char reason[128];
  snprintf(reason, sizeof(reason), "field \"version\": %s", int32_range);
  assert_rejects(append, "{\"version\":\"1\"}", reason); /* strings only for 64-bit fields */
  assert_rejects(append, "{\"version\":1.5}", reason);
  assert_rejects(append, "{\"version\":1.0}", reason);
  assert_rejects(append, "{\"version\":1e2}", reason);
  assert_rejects(append, "{\"version\":true}", reason);
  assert_rejects(append, "{\"version\":[1]}", reason);
  assert_rejects(append, "{\"stream\":5}", "field \"stream\": expected a string");
  assert_rejects(append, "{\"stream\":[\"s\"]}", "field \"stream\": expected a string");
  assert_rejects(append, "{\"events\":{}}", "field \"events\": expected an array");
  assert_rejects(append, "{\"events\":[{},1]}", "field \"events[1]\": expected an object");
  assert_rejects(append, "{\"events\":[null]}", "field \"events[0]\": expected an object");
  assert_rejects(append, "{\"events\":[{},{},{\"type\":false}]}",
                 "field \"events[2].type\": expected a string");
  assert_rejects(&api__append_to_stream_response__descriptor, "{\"events\":[\"a\",null]}",
                 "field \"events[1]\": expected a string");
  assert_rejects(&api__get_global_stream_request__descriptor, "{\"offset\":\"12a\"}",
                 "field \"offset\": expected an integer from 0 to 18446744073709551615");
  assert_rejects(&api__get_global_stream_request__descriptor, "{\"offset\":\"\"}",
                 "field \"offset\": expected an integer from 0 to 18446744073709551615");
  assert_rejects(&api__get_global_stream_request__descriptor, "{\"offset\":\" 1\"}",
                 "field \"offset\": expected an integer from 0 to 18446744073709551615");
  assert_rejects(&api__get_global_stream_request__descriptor, "{\"offset\":\"+1\"}",
                 "field \"offset\": expected an integer from 0 to 18446744073709551615");
  /* The first error in document order is the one reported. */
  assert_rejects(append, "{\"version\":\"x\",\"stream\":1}", reason);
}

static void test_ranges(void **state) {
  (void)state;
  const ProtobufCMessageDescriptor *append = &api__append_to_stream_request__descriptor;
  const char *int32_error = "field \"version\": expected an integer from -2147483648 to 2147483647";
  assert_rejects(append, "{\"version\":2147483648}", int32_error);
  assert_rejects(append, "{\"version\":-2147483649}", int32_error);
  assert_rejects(append, "{\"version\":9223372036854775807}", int32_error);
  Api__AppendToStreamRequest *r =
      (Api__AppendToStreamRequest *)decode(append, "{\"version\":-2147483648}");
  assert_int_equal(r->version, INT32_MIN);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  r = (Api__AppendToStreamRequest *)decode(append, "{\"version\":2147483647}");
  assert_int_equal(r->version, INT32_MAX);
  protobuf_c_message_free_unpacked(&r->base, NULL);

  const ProtobufCMessageDescriptor *event = &api__event__descriptor;
  const char *uint32_error = "field \"version\": expected an integer from 0 to 4294967295";
  assert_rejects(event, "{\"version\":-1}", uint32_error);
  assert_rejects(event, "{\"version\":4294967296}", uint32_error);
  Api__Event *e = (Api__Event *)decode(event, "{\"version\":4294967295,\"added_at\":-0}");
  assert_int_equal(e->version, UINT32_MAX);
  protobuf_c_message_free_unpacked(&e->base, NULL);

  const char *int64_error =
      "field \"added_at\": expected an integer from -9223372036854775808 to 9223372036854775807";
  assert_rejects(event, "{\"added_at\":9223372036854775808}", int64_error);
  assert_rejects(event, "{\"added_at\":-9223372036854775809}", int64_error);
  assert_rejects(event, "{\"added_at\":\"9223372036854775808\"}", int64_error);
  e = (Api__Event *)decode(event, "{\"added_at\":-9223372036854775808,\"position\":"
                                  "9007199254740993}");
  assert_int_equal(e->added_at, INT64_MIN);
  assert_int_equal(e->position, UINT64_C(9007199254740993)); /* not rounded through a double */
  protobuf_c_message_free_unpacked(&e->base, NULL);
  e = (Api__Event *)decode(event, "{\"added_at\":\"-9223372036854775808\"}");
  assert_int_equal(e->added_at, INT64_MIN);
  protobuf_c_message_free_unpacked(&e->base, NULL);
}

static void test_uint64_max(void **state) {
  (void)state;
  const ProtobufCMessageDescriptor *global = &api__get_global_stream_request__descriptor;
  const char *uint64_error = "field \"offset\": expected an integer from 0 to 18446744073709551615";
  static const char *const accepted[] = {
      "{\"offset\":18446744073709551615}",
      "{\"offset\":\"18446744073709551615\"}",
      "{\"limit\":1,\"offset\":18446744073709551615}",
      "{\"offset\" :\n18446744073709551615 , \"limit\":2 }",
  };
  for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
    Api__GetGlobalStreamRequest *g = (Api__GetGlobalStreamRequest *)decode(global, accepted[i]);
    assert_int_equal(g->offset, UINT64_MAX);
    protobuf_c_message_free_unpacked(&g->base, NULL);
  }
  Api__GetGlobalStreamRequest *g =
      (Api__GetGlobalStreamRequest *)decode(global, "{\"offset\":9223372036854775808}");
  assert_int_equal(g->offset, UINT64_C(9223372036854775808));
  protobuf_c_message_free_unpacked(&g->base, NULL);
  g = (Api__GetGlobalStreamRequest *)decode(global, "{\"offset\":\"007\"}");
  assert_int_equal(g->offset, 7);
  protobuf_c_message_free_unpacked(&g->base, NULL);

  assert_rejects(global, "{\"offset\":18446744073709551616}", uint64_error);
  assert_rejects(global, "{\"offset\":\"18446744073709551616\"}", uint64_error);
  assert_rejects(global, "{\"offset\":-1}", uint64_error);
  assert_rejects(global, "{\"offset\":\"-1\"}", uint64_error);
  assert_rejects(global, "{\"offset\":-9223372036854775809}", uint64_error);
  assert_rejects(global, "{\"offset\":1.5}", uint64_error);
  char huge[160];
  snprintf(huge, sizeof(huge), "{\"offset\":1%0100d}", 0);
  assert_rejects(global, huge, uint64_error);
  assert_rejects(global, "{\"limit\":18446744073709551615}",
                 "field \"limit\": expected an integer from 0 to 4294967295");

  /* A big integer where a string belongs is a type error, not a string of digits. */
  assert_rejects(&api__event__descriptor, "{\"position\":1,\"stream\":18446744073709551615}",
                 "field \"stream\": expected a string");
  assert_rejects(&api__event__descriptor, "{\"data\":18446744073709551615}",
                 "field \"data\": expected a base64 string");
  /* Next to a big integer, NUL stays out of strings all the same. */
  assert_rejects(&api__event__descriptor,
                 "{\"position\":18446744073709551615,\"type\":\"a\\u0000b\"}",
                 "field \"type\": expected a string");
  /* And a broken document with a big integer is still broken, told in its own terms. */
  assert_malformed("{\"position\":18446744073709551615,", "too big integer");
  assert_malformed("{\"position\":18446744073709551615 \"type\":\"t\"}", "too big integer");
  assert_malformed("{18446744073709551615:1}", "too big integer");
  assert_malformed("{\"position\":1e999}", "real number overflow");
  assert_malformed("{\"position\":018446744073709551615}", "invalid token");
  /* Strings holding digits and escaped quotes do not confuse the rewrite. */
  Api__Event *e = (Api__Event *)decode(
      &api__event__descriptor,
      "{\"type\":\"\\\"99999999999999999999\\\\\",\"position\":18446744073709551615,"
      "\"stream\":\"-99999999999999999999\"}");
  assert_string_equal(e->type, "\"99999999999999999999\\");
  assert_string_equal(e->stream, "-99999999999999999999");
  assert_int_equal(e->position, UINT64_MAX);
  protobuf_c_message_free_unpacked(&e->base, NULL);
}

static void test_malformed(void **state) {
  (void)state;
  assert_malformed("", "'[' or '{' expected near end of file at line 1, column 0");
  ProtobufCMessage *msg = NULL;
  char err[256];
  assert_int_equal(tp_json_decode(&api__event__descriptor, NULL, 0, &msg, err, sizeof(err)),
                   EVF_EINVAL);
  assert_string_equal(err, "malformed JSON: '[' or '{' expected near end of file at line 1, "
                           "column 0");
  assert_malformed("{\"stream\":\"a\"", "");
  assert_malformed("{\"stream\":\"a", "");
  assert_malformed("{} x", "");
  assert_malformed("{\"type\":\"a\",\"type\":\"b\"}", "duplicate object key");
  assert_malformed("{\"type\":\"\\u0000\"}", "\\u0000 is not allowed");
  assert_malformed("{\"type\":'a'}", "");
  assert_malformed("{\"type\":\"a\"}\n\n  ,", "line 3");
  /* Invalid UTF-8: a bare continuation byte, an overlong form, a surrogate, a cut sequence. */
  assert_malformed("{\"type\":\"\x80\"}", "");
  assert_malformed("{\"type\":\"\xc0\xaf\"}", "");
  assert_malformed("{\"type\":\"\xed\xa0\x80\"}", "");
  assert_malformed("{\"type\":\"\xe2\x82\"}", "");
  assert_malformed("{\"ty\xffpe\":1}", "");
  assert_malformed("{\"type\":\"\\ud800\"}", "");
  assert_malformed_n("{\"type\":\"a\0b\"}", 14, "");
  /* jansson quotes the bad token; a control character in it is not passed on. */
  assert_malformed("{\"type\":\x01}", "invalid token near ' '");

  /* Deep nesting fails in jansson, before anything recurses on our side. */
  size_t depth = 100000;
  char *bomb = malloc(2 * depth + 16);
  assert_non_null(bomb);
  memset(bomb, '[', depth);
  assert_malformed_n(bomb, depth, "maximum parsing depth reached");
  strcpy(bomb, "{\"events\":");
  memset(bomb + 10, '[', depth);
  memset(bomb + 10 + depth, ']', depth);
  strcpy(bomb + 10 + 2 * depth, "}");
  assert_malformed(bomb, "maximum parsing depth reached");
  free(bomb);

  assert_rejects(&api__event__descriptor, "[]", "expected a JSON object");
  assert_rejects(&api__event__descriptor, "[{}]", "expected a JSON object");
  assert_malformed("\"x\"", "");
  assert_malformed("5", "");
}

static void test_decode_scalars(void **state) {
  (void)state;
  struct scalars *s = (struct scalars *)decode(
      &scalars_descriptor,
      "{\"d\":-2.5e-3,\"f\":3,\"b\":true,\"s32\":-2147483648,\"f64\":\"18446744073709551615\","
      "\"ri\":[1,-1,2147483647],\"rb\":[false,true],\"rby\":[\"\",\"YWI\",\"YWI=\"],"
      "\"rd\":[\"NaN\",\"Infinity\",\"-Infinity\",1,18446744073709551616,-0.0],"
      "\"os\":\"\",\"ou\":0,\"status\":\"SERVING\",\"rs\":[\"NOT_SERVING\",5,-1],"
      "\"rstr\":[\"\",\"x\"]}");
  assert_true(s->d == -2.5e-3);
  assert_true(s->f == 3.0f);
  assert_true(s->b);
  assert_int_equal(s->s32, INT32_MIN);
  assert_int_equal(s->f64, UINT64_MAX);
  assert_int_equal(s->n_ri, 3);
  assert_int_equal(s->ri[1], -1);
  assert_int_equal(s->n_rb, 2);
  assert_false(s->rb[0]);
  assert_true(s->rb[1]);
  assert_int_equal(s->n_rby, 3);
  assert_int_equal(s->rby[0].len, 0);
  assert_memory_equal(s->rby[1].data, "ab", 2);
  assert_memory_equal(s->rby[2].data, "ab", 2);
  assert_int_equal(s->n_rd, 6);
  assert_true(isnan(s->rd[0]));
  assert_true(s->rd[1] == INFINITY && s->rd[2] == -INFINITY && s->rd[3] == 1);
  assert_true(s->rd[4] == 18446744073709551616.0);
  assert_true(s->rd[5] == 0 && signbit(s->rd[5]));
  assert_int_equal(s->o_case, O_OS);
  assert_string_equal(s->os, "");
  assert_true(s->has_ou);
  assert_int_equal(s->ou, 0);
  assert_int_equal(s->status, 1);
  assert_int_equal(s->n_rs, 3);
  assert_int_equal(s->rs[0], 2);
  assert_int_equal(s->rs[1], 5);
  assert_int_equal(s->rs[2], -1);
  assert_int_equal(s->n_rstr, 2);
  assert_string_equal(s->rstr[0], "");
  protobuf_c_message_free_unpacked(&s->base, NULL);

  s = (struct scalars *)decode(&scalars_descriptor, "{\"om\":{\"version\":\"1.0\"},\"os\":null}");
  assert_int_equal(s->o_case, O_OM);
  assert_string_equal(s->om->version, "1.0");
  assert_false(s->has_ou);
  protobuf_c_message_free_unpacked(&s->base, NULL);
  s = (struct scalars *)decode(&scalars_descriptor, "{\"oi\":\"-5\",\"f\":1e38}");
  assert_int_equal(s->o_case, O_OI);
  assert_int_equal(s->oi, -5);
  protobuf_c_message_free_unpacked(&s->base, NULL);

  const ProtobufCMessageDescriptor *t = &scalars_descriptor;
  assert_rejects(t, "{\"d\":\"1.5\"}",
                 "field \"d\": expected a number, \"NaN\", \"Infinity\" or \"-Infinity\"");
  assert_rejects(t, "{\"d\":\"nan\"}",
                 "field \"d\": expected a number, \"NaN\", \"Infinity\" or \"-Infinity\"");
  assert_rejects(t, "{\"d\":true}",
                 "field \"d\": expected a number, \"NaN\", \"Infinity\" or \"-Infinity\"");
  assert_rejects(t, "{\"f\":1e39}", "field \"f\": out of the range of a float");
  assert_rejects(t, "{\"f\":-1e39}", "field \"f\": out of the range of a float");
  assert_rejects(t, "{\"b\":1}", "field \"b\": expected true or false");
  assert_rejects(t, "{\"b\":\"true\"}", "field \"b\": expected true or false");
  assert_rejects(t, "{\"rb\":[true,0]}", "field \"rb[1]\": expected true or false");
  assert_rejects(t, "{\"s32\":2147483648}",
                 "field \"s32\": expected an integer from -2147483648 to 2147483647");
  assert_rejects(t, "{\"f64\":-1}",
                 "field \"f64\": expected an integer from 0 to 18446744073709551615");
  assert_rejects(t, "{\"status\":\"serving\"}", "field \"status\": unknown value \"serving\"");
  assert_rejects(t, "{\"rs\":[\"SERVING\",\"X\\\"\"]}",
                 "field \"rs[1]\": unknown value \"X\\u0022\"");
  assert_rejects(t, "{\"status\":2147483648}",
                 "field \"status\": expected a name or an integer from -2147483648 to 2147483647");
  assert_rejects(t, "{\"status\":true}",
                 "field \"status\": expected a name or an integer from -2147483648 to 2147483647");
  assert_rejects(t, "{\"os\":\"a\",\"oi\":1}",
                 "field \"oi\": only one of it and \"os\" may be set");
  assert_rejects(t, "{\"om\":{},\"os\":\"a\"}",
                 "field \"os\": only one of it and \"om\" may be set");
  assert_rejects(t, "{\"om\":{\"version\":1}}", "field \"om.version\": expected a string");
  assert_rejects(t, "{\"om\":{\"v\":1}}", "unknown field \"om.v\"");
  assert_rejects(t, "{\"om\":[]}", "field \"om\": expected an object");
  assert_rejects(t, "{\"ou\":-1}", "field \"ou\": expected an integer from 0 to 4294967295");
  assert_rejects(t, "{\"rstr\":[\"a\",\"b\",3]}", "field \"rstr[2]\": expected a string");
  assert_rejects(t, "{\"rby\":[\"YQ\",\"Y\"]}", "field \"rby[1]\": invalid base64");

  /* Round trip through JSON alone: t.Scalars has no wire encoding here. */
  const char *text =
      "{\"d\":0.1,\"f\":0.1,\"b\":true,\"s32\":-7,\"f64\":18446744073709551615,"
      "\"ri\":[1,-2,2147483647],\"rb\":[true,false],\"rby\":[\"\",\"YWI=\"],"
      "\"rd\":[\"NaN\",\"Infinity\",\"-Infinity\",-0.0,5e-324,1.7976931348623157e+308],"
      "\"om\":{\"version\":\"v\"},\"status\":\"NOT_SERVING\",\"rs\":[\"SERVING\",99],"
      "\"rstr\":[\"\",\"x\"]}";
  s = (struct scalars *)decode(&scalars_descriptor, text);
  char *again = encode(&s->base);
  assert_string_equal(again,
                      "{\"d\":0.1,\"f\":0.1,\"b\":true,\"s32\":-7,\"f64\":18446744073709551615,"
                      "\"ri\":[1,-2,2147483647],\"rb\":[true,false],\"rby\":[\"\",\"YWI=\"],"
                      "\"rd\":[\"NaN\",\"Infinity\",\"-Infinity\",-0.0,4.94065645841247e-324,"
                      "1.7976931348623157e+308],\"status\":\"NOT_SERVING\","
                      "\"om\":{\"version\":\"v\"},\"rs\":[\"SERVING\",99],\"rstr\":[\"\",\"x\"]}");
  free(again);
  protobuf_c_message_free_unpacked(&s->base, NULL);
}

/*
 * Every allocation of a decode fails in turn, jansson's included: -ENOMEM
 * each time, nothing leaked, out untouched. Of the allocations, ours are
 * our code's; jansson's come on top (how many depends on its version).
 */
static void assert_decode_survives_oom(const ProtobufCMessageDescriptor *desc, const char *text,
                                       long ours) {
  long n = 0;
  for (;; n++) {
    ProtobufCMessage *msg = (ProtobufCMessage *)&msg;
    char err[256] = "";
    fail_allocation(n);
    int rc = tp_json_decode(desc, text, strlen(text), &msg, err, sizeof(err));
    if (!stop_failing()) {
      assert_int_equal(rc, 0);
      protobuf_c_message_free_unpacked(msg, NULL);
      break;
    }
    if (rc != -ENOMEM)
      fail_msg("allocation %ld failed: %d (%s), expected -ENOMEM", n, rc, err);
    assert_ptr_equal(msg, (ProtobufCMessage *)&msg);
  }
  assert_in_range(n, ours + 1, LONG_MAX);
}

static void test_decode_out_of_memory(void **state) {
  (void)state;
  /*
   * "data" is longer than the 16 bytes jansson's lexer keeps at first: without room
   * to grow, it drops a character and finishes the document (as "eyJ0b3RhbCI6NDJ").
   */
  assert_decode_survives_oom(&api__append_to_stream_request__descriptor,
                             "{\"stream\":\"orders-1\",\"version\":-1,\"events\":["
                             "{\"type\":\"A\",\"data\":\"eyJ0b3RhbCI6NDJ9\",\"metadata\":\"bQ==\","
                             "\"causation_id\":\"c\",\"correlation_id\":\"d\",\"id\":\"x\"},"
                             "{\"type\":\"B\",\"data\":\"\"},{}]}",
                             /* the message, stream, the array, 3 events, 6 + 1 of their fields */
                             13);
  assert_decode_survives_oom(&api__event__descriptor,
                             "{\"type\":\"T\",\"position\":18446744073709551615}",
                             /* the quoted copy of the text, the message, type */
                             3);
  assert_decode_survives_oom(&scalars_descriptor,
                             "{\"ri\":[1,2],\"rby\":[\"YQ\",\"\"],\"rstr\":[\"\",\"x\"],"
                             "\"om\":{\"version\":\"v\"},\"rd\":[1]}",
                             /* the message, 4 arrays, "YQ", "", "x", om and its version */
                             10);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_decode_empty_object),
      cmocka_unit_test(test_decode_append_request),
      cmocka_unit_test(test_round_trips),
      cmocka_unit_test(test_base64_variants),
      cmocka_unit_test(test_unknown_fields),
      cmocka_unit_test(test_type_errors),
      cmocka_unit_test(test_ranges),
      cmocka_unit_test(test_uint64_max),
      cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_decode_scalars),
      cmocka_unit_test(test_decode_out_of_memory),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
