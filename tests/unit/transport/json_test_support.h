#ifndef TESTS_JSON_TEST_SUPPORT_H
#define TESTS_JSON_TEST_SUPPORT_H

/*
 * What the tests of transport/src/json.h share (test_json_encode.c,
 * test_json_decode.c): exact output for the API's messages, round trips
 * through the wire encoding, and every way input is refused.
 *
 * Input is handed over in a buffer of exactly its length with no NUL after
 * it, as the HTTP layer hands over a body, so ASan catches a read past it.
 *
 * Kinds of fields api.proto does not use yet (float, double, bool, sint32,
 * fixed64, enum, oneof, proto2 optional, repeated scalars) are exercised
 * through "t.Scalars", a descriptor written here by hand in the shape
 * protoc-c generates.
 *
 * Allocations fail on purpose (failing_alloc.h): the tests walk every
 * allocation of a decode and an encode and check each failure returns
 * -ENOMEM and leaks nothing (ASan's leak check runs at exit). jansson is
 * a shared library, but json_decode.c hands it an allocator of ours.
 */
#include "failing_alloc.h"
#include "json.h"

#include "api.pb-c.h"

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>


/* ---- t.Scalars ---- */

enum { O_NOT_SET = 0, O_OS = 10, O_OI = 11, O_OM = 14 };

struct scalars {
  ProtobufCMessage base;
  double d;
  float f;
  protobuf_c_boolean b;
  int32_t s32;
  uint64_t f64;
  size_t n_ri;
  int32_t *ri;
  size_t n_rb;
  protobuf_c_boolean *rb;
  size_t n_rby;
  ProtobufCBinaryData *rby;
  size_t n_rd;
  double *rd;
  protobuf_c_boolean has_ou;
  uint32_t ou;
  int status;
  size_t n_rs;
  int *rs;
  size_t n_rstr;
  char **rstr;
  uint32_t o_case;
  union {
    char *os;
    int64_t oi;
    Api__VersionResponse *om;
  };
};

extern const ProtobufCMessageDescriptor scalars_descriptor;
void scalars_init(ProtobufCMessage *m);
extern const ProtobufCFieldDescriptor scalars_fields[16];
/* Indices into scalars_fields in strcmp order of the names. */
extern const unsigned scalars_by_name[16];

/** The JSON of msg, NUL-terminated; the caller frees it. */
char *encode(const ProtobufCMessage *msg);
void assert_encodes(const ProtobufCMessage *msg, const char *expected);
/** Decodes len bytes of text from a buffer of exactly that size. */
int decode_n(const ProtobufCMessageDescriptor *desc, const char *text, size_t len,
             ProtobufCMessage **out, char *err, size_t err_len);
ProtobufCMessage *decode(const ProtobufCMessageDescriptor *desc, const char *text);
/** Decoding text fails with EVF_EINVAL and exactly this reason; out stays untouched. */
void assert_rejects(const ProtobufCMessageDescriptor *desc, const char *text, const char *reason);
/** As assert_rejects, for a document that is not JSON: the reason names jansson's complaint. */
void assert_malformed_n(const char *text, size_t len, const char *complaint);
void assert_malformed(const char *text, const char *complaint);
/** The wire encoding of msg; the caller frees it. */
uint8_t *pack(const ProtobufCMessage *msg, size_t *len);
/** msg -> JSON -> message: equal wire encodings, and the same JSON again. */
void assert_round_trip(const ProtobufCMessage *msg);
ProtobufCBinaryData bytes_of(const char *s);
Api__Event sample_event(void);

#define SAMPLE_EVENT_JSON                                                                          \
  "{\"id\":\"0190f2a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6\",\"stream\":\"orders-1\",\"version\":3,"        \
  "\"type\":\"OrderPlaced\",\"data\":\"eyJ0b3RhbCI6NDJ9\",\"metadata\":\"bQ==\","                  \
  "\"causation_id\":\"c1\",\"correlation_id\":\"c2\",\"added_at\":1704067200000,"                  \
  "\"position\":9007199254740993}"

#endif
