/* What the JSON tests share: t.Scalars, helpers (json_test_support.h). */
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

void scalars_init(ProtobufCMessage *m) {
  *(struct scalars *)m = (struct scalars){.base = PROTOBUF_C_MESSAGE_INIT(&scalars_descriptor)};
}

#define FIELD(name, id, label, type, quantifier, desc, def, flags)                                 \
  {#name, id, PROTOBUF_C_LABEL_##label, PROTOBUF_C_TYPE_##type, quantifier,                        \
   offsetof(struct scalars, name), desc, def, flags, 0, NULL, NULL}
#define N(name) offsetof(struct scalars, n_##name)
#define ONEOF offsetof(struct scalars, o_case)
#define STATUS &grpc__health__v1__health_check_response__serving_status__descriptor

const ProtobufCFieldDescriptor scalars_fields[] = {
    FIELD(d, 1, NONE, DOUBLE, 0, NULL, NULL, 0),
    FIELD(f, 2, NONE, FLOAT, 0, NULL, NULL, 0),
    FIELD(b, 3, NONE, BOOL, 0, NULL, NULL, 0),
    FIELD(s32, 4, NONE, SINT32, 0, NULL, NULL, 0),
    FIELD(f64, 5, NONE, FIXED64, 0, NULL, NULL, 0),
    FIELD(ri, 6, REPEATED, INT32, N(ri), NULL, NULL, PROTOBUF_C_FIELD_FLAG_PACKED),
    FIELD(rb, 7, REPEATED, BOOL, N(rb), NULL, NULL, PROTOBUF_C_FIELD_FLAG_PACKED),
    FIELD(rby, 8, REPEATED, BYTES, N(rby), NULL, NULL, 0),
    FIELD(rd, 9, REPEATED, DOUBLE, N(rd), NULL, NULL, PROTOBUF_C_FIELD_FLAG_PACKED),
    FIELD(os, 10, NONE, STRING, ONEOF, NULL, &protobuf_c_empty_string, PROTOBUF_C_FIELD_FLAG_ONEOF),
    FIELD(oi, 11, NONE, INT64, ONEOF, NULL, NULL, PROTOBUF_C_FIELD_FLAG_ONEOF),
    FIELD(ou, 12, OPTIONAL, UINT32, offsetof(struct scalars, has_ou), NULL, NULL, 0),
    FIELD(status, 13, NONE, ENUM, 0, STATUS, NULL, 0),
    FIELD(om, 14, NONE, MESSAGE, ONEOF, &api__version_response__descriptor, NULL,
          PROTOBUF_C_FIELD_FLAG_ONEOF),
    FIELD(rs, 15, REPEATED, ENUM, N(rs), STATUS, NULL, PROTOBUF_C_FIELD_FLAG_PACKED),
    FIELD(rstr, 16, REPEATED, STRING, N(rstr), NULL, NULL, 0),
};

/* Indices into scalars_fields in strcmp order of the names. */
const unsigned scalars_by_name[] = {2, 0, 1, 4, 10, 13, 9, 11, 6, 7, 8, 5, 14, 15, 3, 12};
static const ProtobufCIntRange scalars_ranges[] = {{1, 0}, {0, 16}};

const ProtobufCMessageDescriptor scalars_descriptor = {
    PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,
    "t.Scalars",
    "Scalars",
    "T__Scalars",
    "t",
    sizeof(struct scalars),
    16,
    scalars_fields,
    scalars_by_name,
    1,
    scalars_ranges,
    scalars_init,
    NULL,
    NULL,
    NULL};

/* ---- helpers ---- */

/* The JSON of msg, NUL-terminated; the caller frees it. */
char *encode(const ProtobufCMessage *msg) {
  struct tp_buf b = {0};
  assert_int_equal(tp_json_encode(msg, &b), 0);
  assert_int_equal(tp_buf_append(&b, "", 1), 0);
  return (char *)b.data;
}

void assert_encodes(const ProtobufCMessage *msg, const char *expected) {
  char *text = encode(msg);
  assert_string_equal(text, expected);
  free(text);
}

/* Decodes len bytes of text from a buffer of exactly that size. */
int decode_n(const ProtobufCMessageDescriptor *desc, const char *text, size_t len,
                    ProtobufCMessage **out, char *err, size_t err_len) {
  char *copy = __real_malloc(len > 0 ? len : 1);
  assert_non_null(copy);
  memcpy(copy, text, len);
  int rc = tp_json_decode(desc, copy, len, out, err, err_len);
  free(copy);
  return rc;
}

ProtobufCMessage *decode(const ProtobufCMessageDescriptor *desc, const char *text) {
  ProtobufCMessage *msg = NULL;
  char err[256] = "";
  int rc = decode_n(desc, text, strlen(text), &msg, err, sizeof(err));
  if (rc != 0)
    fail_msg("decode %s: %d (%s)", text, rc, err);
  assert_non_null(msg);
  assert_ptr_equal(msg->descriptor, desc);
  return msg;
}

/* Decoding text fails with EVF_EINVAL and exactly this reason; out stays untouched. */
void assert_rejects(const ProtobufCMessageDescriptor *desc, const char *text,
                           const char *reason) {
  ProtobufCMessage *msg = (ProtobufCMessage *)&msg;
  char err[256] = "";
  int rc = decode_n(desc, text, strlen(text), &msg, err, sizeof(err));
  if (rc != EVF_EINVAL)
    fail_msg("decode %s: %d, expected EVF_EINVAL", text, rc);
  assert_ptr_equal(msg, (ProtobufCMessage *)&msg);
  if (strcmp(err, reason) != 0)
    fail_msg("decode %s: reason \"%s\", expected \"%s\"", text, err, reason);
}

/* As assert_rejects, for a document that is not JSON: the reason names jansson's complaint. */
void assert_malformed_n(const char *text, size_t len, const char *complaint) {
  ProtobufCMessage *msg = NULL;
  char err[256] = "";
  assert_int_equal(decode_n(&api__event__descriptor, text, len, &msg, err, sizeof(err)),
                   EVF_EINVAL);
  assert_null(msg);
  if (strncmp(err, "malformed JSON: ", 16) != 0 || strstr(err, complaint) == NULL ||
      strstr(err, " at line ") == NULL)
    fail_msg("reason \"%s\", expected malformed JSON: ...%s...", err, complaint);
}

void assert_malformed(const char *text, const char *complaint) {
  assert_malformed_n(text, strlen(text), complaint);
}

/* The wire encoding of msg; the caller frees it. */
uint8_t *pack(const ProtobufCMessage *msg, size_t *len) {
  *len = protobuf_c_message_get_packed_size(msg);
  uint8_t *bytes = malloc(*len + 1);
  assert_non_null(bytes);
  assert_int_equal(protobuf_c_message_pack(msg, bytes), *len);
  return bytes;
}

/*
 * msg -> JSON -> message: the wire encodings are equal, and the second
 * message encodes to the same JSON.
 */
void assert_round_trip(const ProtobufCMessage *msg) {
  char *text = encode(msg);
  ProtobufCMessage *back = decode(msg->descriptor, text);
  size_t a_len, b_len;
  uint8_t *a = pack(msg, &a_len);
  uint8_t *b = pack(back, &b_len);
  assert_int_equal(a_len, b_len);
  assert_memory_equal(a, b, a_len);
  assert_encodes(back, text);
  free(a);
  free(b);
  free(text);
  protobuf_c_message_free_unpacked(back, NULL);
}

ProtobufCBinaryData bytes_of(const char *s) {
  return (ProtobufCBinaryData){.len = strlen(s), .data = (uint8_t *)s};
}

Api__Event sample_event(void) {
  Api__Event e = API__EVENT__INIT;
  e.id = "0190f2a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6";
  e.stream = "orders-1";
  e.version = 3;
  e.type = "OrderPlaced";
  e.data = bytes_of("{\"total\":42}");
  e.metadata = bytes_of("m");
  e.causation_id = "c1";
  e.correlation_id = "c2";
  e.added_at = INT64_C(1704067200000);
  e.position = UINT64_C(9007199254740993); /* 2^53 + 1: not a double */
  return e;
}
