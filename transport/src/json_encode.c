/*
 * The JSON mapping, driven by protobuf-c's descriptors (see json.h): output.
 *
 * Output is written straight into the caller's buffer: each value reserves
 * its worst case, then writes through a pointer, so an api.Event costs a
 * handful of capacity checks and no allocation.
 */
#include "json.h"
#include "json_internal.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* tp_buf_reserve() with the common case, room enough, inline: a few calls per field. */
static inline int reserve(struct tp_buf *b, size_t extra) {
  return b->cap - b->len >= extra ? 0 : tp_buf_reserve(b, extra);
}

/*
 * Base64 two characters at a time: entry i holds the characters of the
 * 12-bit value i in memory order, so one 16-bit load and store each.
 */
#define B64_CHAR(v)                                                                                \
  ((v) < 26 ? 'A' + (v)                                                                            \
   : (v) < 52 ? 'a' + (v) - 26                                                                     \
   : (v) < 62 ? '0' + (v) - 52                                                                     \
   : (v) == 62 ? '+' : '/')
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define B64_PAIR(i) (uint16_t)(B64_CHAR((i) >> 6) | B64_CHAR((i) & 63) << 8)
#else
#define B64_PAIR(i) (uint16_t)(B64_CHAR((i) >> 6) << 8 | B64_CHAR((i) & 63))
#endif
#define B64_4(i) B64_PAIR(i), B64_PAIR(i + 1), B64_PAIR(i + 2), B64_PAIR(i + 3)
#define B64_16(i) B64_4(i), B64_4(i + 4), B64_4(i + 8), B64_4(i + 12)
#define B64_64(i) B64_16(i), B64_16(i + 16), B64_16(i + 32), B64_16(i + 48)
#define B64_256(i) B64_64(i), B64_64(i + 64), B64_64(i + 128), B64_64(i + 192)
#define B64_1024(i) B64_256(i), B64_256(i + 256), B64_256(i + 512), B64_256(i + 768)
static const uint16_t b64_pairs[4096] = {B64_1024(0), B64_1024(1024), B64_1024(2048),
                                         B64_1024(3072)};

static const char b64_alphabet[64] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static const char digit_pairs[201] = "00010203040506070809"
                                     "10111213141516171819"
                                     "20212223242526272829"
                                     "30313233343536373839"
                                     "40414243444546474849"
                                     "50515253545556575859"
                                     "60616263646566676869"
                                     "70717273747576777879"
                                     "80818283848586878889"
                                     "90919293949596979899";

const char tp_json__escapes[256] = {
    ['\0'] = 'u', [0x01] = 'u', [0x02] = 'u', [0x03] = 'u', [0x04] = 'u', [0x05] = 'u',
    [0x06] = 'u', [0x07] = 'u', ['\b'] = 'b', ['\t'] = 't', ['\n'] = 'n', [0x0b] = 'u',
    ['\f'] = 'f', ['\r'] = 'r', [0x0e] = 'u', [0x0f] = 'u', [0x10] = 'u', [0x11] = 'u',
    [0x12] = 'u', [0x13] = 'u', [0x14] = 'u', [0x15] = 'u', [0x16] = 'u', [0x17] = 'u',
    [0x18] = 'u', [0x19] = 'u', [0x1a] = 'u', [0x1b] = 'u', [0x1c] = 'u', [0x1d] = 'u',
    [0x1e] = 'u', [0x1f] = 'u', ['"'] = '"',  ['\\'] = '\\',
};

/* Writes value in decimal at p (room for 20 digits); returns the end. */
static char *put_u64(char *p, uint64_t value) {
  char tmp[20];
  char *t = tmp + sizeof(tmp);
  while (value >= 100) {
    const char *pair = digit_pairs + (value % 100) * 2;
    value /= 100;
    *--t = pair[1];
    *--t = pair[0];
  }
  if (value >= 10) {
    *--t = digit_pairs[value * 2 + 1];
    *--t = digit_pairs[value * 2];
  } else {
    *--t = (char)('0' + value);
  }
  size_t n = (size_t)(tmp + sizeof(tmp) - t);
  memcpy(p, t, n);
  return p + n;
}

static char *put_i64(char *p, int64_t value) {
  if (value < 0) {
    *p++ = '-';
    return put_u64(p, -(uint64_t)value);
  }
  return put_u64(p, (uint64_t)value);
}

static int append_uint(struct tp_buf *b, uint64_t value) {
  if (reserve(b, 20) != 0)
    return -ENOMEM;
  b->len = (size_t)((uint8_t *)put_u64((char *)b->data + b->len, value) - b->data);
  return 0;
}

static int append_int(struct tp_buf *b, int64_t value) {
  if (reserve(b, 20) != 0)
    return -ENOMEM;
  b->len = (size_t)((uint8_t *)put_i64((char *)b->data + b->len, value) - b->data);
  return 0;
}

/*
 * The shortest of %.15g to %.17g (%.6g to %.9g for a float) that reads back
 * as the same value, so 0.1 prints as 0.1; proto3 JSON's strings for the
 * values JSON cannot hold; -0.0 as a real, since jansson reads -0 as the
 * integer 0.
 */
static int append_real(struct tp_buf *b, double value, bool is_float) {
  if (value == 0 && signbit(value))
    return tp_buf_append(b, "-0.0", 4);
  if (isnan(value))
    return tp_buf_append(b, "\"NaN\"", 5);
  if (isinf(value))
    return value > 0 ? tp_buf_append(b, "\"Infinity\"", 10) : tp_buf_append(b, "\"-Infinity\"", 11);
  char text[32];
  int n = 0;
  for (int precision = is_float ? 6 : 15; precision <= 17; precision++) {
    n = snprintf(text, sizeof(text), "%.*g", precision, value);
    if (is_float ? strtof(text, NULL) == (float)value : strtod(text, NULL) == value)
      break;
  }
  return tp_buf_append(b, text, (size_t)n);
}

/*
 * Whether any of the 8 bytes at p is below 0x20, '"' or '\\' (the classic
 * "has a zero byte" test: exact for whether one exists, not for which).
 */
static inline bool needs_escape8(const uint8_t *p) {
  const uint64_t ones = UINT64_C(0x0101010101010101), high = UINT64_C(0x8080808080808080);
  uint64_t x;
  memcpy(&x, p, 8);
  uint64_t quote = x ^ (ones * '"'), backslash = x ^ (ones * '\\');
  uint64_t found = ((x - ones * 0x20) & ~x) | ((quote - ones) & ~quote) |
                   ((backslash - ones) & ~backslash);
  return (found & high) != 0;
}

/* Appends s as a JSON string; s is UTF-8 (the API's strings are checked on the way in). */
static int append_string(struct tp_buf *b, const char *s, size_t len) {
  if (reserve(b, len + 2) != 0)
    return -ENOMEM;
  b->data[b->len++] = '"';
  const uint8_t *in = (const uint8_t *)s, *end = in + len;
  while (in < end) {
    const uint8_t *run = in;
    while (end - in >= 8 && !needs_escape8(in))
      in += 8;
    while (in < end && tp_json__escapes[*in] == 0)
      in++;
    memcpy(b->data + b->len, run, (size_t)(in - run));
    b->len += (size_t)(in - run);
    if (in == end)
      break;
    /* An escape takes up to 6 bytes where the byte took 1; keep room for the rest and the quote. */
    if (reserve(b, 6 + (size_t)(end - in)) != 0)
      return -ENOMEM;
    char *p = (char *)b->data + b->len;
    char e = tp_json__escapes[*in];
    *p++ = '\\';
    *p++ = e;
    if (e == 'u') {
      *p++ = '0';
      *p++ = '0';
      *p++ = "0123456789abcdef"[*in >> 4];
      *p++ = "0123456789abcdef"[*in & 15];
    }
    b->len = (size_t)((uint8_t *)p - b->data);
    in++;
  }
  b->data[b->len++] = '"';
  return 0;
}

/* Appends data as a JSON string of standard base64 with padding, encoded in place. */
static int append_base64(struct tp_buf *b, const uint8_t *data, size_t len) {
  if (reserve(b, (len + 2) / 3 * 4 + 2) != 0)
    return -ENOMEM;
  char *p = (char *)b->data + b->len;
  *p++ = '"';
  size_t i = 0;
  /* 6 bytes to 8 characters per step, from one 8-byte load. */
  for (; i + 8 <= len; i += 6) {
    uint64_t v;
    memcpy(&v, data + i, 8);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    uint16_t chars[4] = {b64_pairs[v >> 52], b64_pairs[(v >> 40) & 4095],
                         b64_pairs[(v >> 28) & 4095], b64_pairs[(v >> 16) & 4095]};
    memcpy(p, chars, 8);
    p += 8;
  }
  for (; i + 3 <= len; i += 3) {
    uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
    memcpy(p, &b64_pairs[v >> 12], 2);
    memcpy(p + 2, &b64_pairs[v & 4095], 2);
    p += 4;
  }
  if (i < len) {
    uint32_t v = (uint32_t)data[i] << 16 | (i + 1 < len ? (uint32_t)data[i + 1] << 8 : 0);
    p[0] = b64_alphabet[v >> 18];
    p[1] = b64_alphabet[(v >> 12) & 63];
    p[2] = i + 1 < len ? b64_alphabet[(v >> 6) & 63] : '=';
    p[3] = '=';
    p += 4;
  }
  *p++ = '"';
  b->len = (size_t)((uint8_t *)p - b->data);
  return 0;
}

static int encode_message(const ProtobufCMessage *msg, struct tp_buf *b);

/* Appends one value of field f (an element, for a repeated field) stored at p. */
static int encode_value(const ProtobufCFieldDescriptor *f, const void *p, struct tp_buf *b) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
    return append_int(b, *(const int32_t *)p);
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    return append_uint(b, *(const uint32_t *)p);
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
    return append_int(b, *(const int64_t *)p);
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    return append_uint(b, *(const uint64_t *)p);
  case PROTOBUF_C_TYPE_BOOL:
    return *(const protobuf_c_boolean *)p ? tp_buf_append(b, "true", 4)
                                          : tp_buf_append(b, "false", 5);
  case PROTOBUF_C_TYPE_FLOAT:
    return append_real(b, *(const float *)p, true);
  case PROTOBUF_C_TYPE_DOUBLE:
    return append_real(b, *(const double *)p, false);
  case PROTOBUF_C_TYPE_ENUM: {
    int value = *(const int *)p;
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(f->descriptor, value);
    /* A value this build does not know is kept as its number (proto3 enums are open). */
    return v ? append_string(b, v->name, strlen(v->name)) : append_int(b, value);
  }
  case PROTOBUF_C_TYPE_STRING: {
    const char *s = *(const char *const *)p;
    return s ? append_string(b, s, strlen(s)) : append_string(b, "", 0);
  }
  case PROTOBUF_C_TYPE_BYTES: {
    const ProtobufCBinaryData *bd = p;
    return append_base64(b, bd->data, bd->len);
  }
  case PROTOBUF_C_TYPE_MESSAGE: {
    const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)p;
    return sub ? encode_message(sub, b) : tp_buf_append(b, "null", 4);
  }
  }
  return 0;
}

/* Whether a field that is not repeated is written (see json.h for the rules). */
static bool is_present(const ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f) {
  const char *base = (const char *)msg;
  if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
    return *(const uint32_t *)(base + f->quantifier_offset) == f->id;
  switch (f->type) {
  case PROTOBUF_C_TYPE_STRING: {
    const char *s = *(const char *const *)(base + f->offset);
    return s != NULL && (s[0] != '\0' || f->label != PROTOBUF_C_LABEL_NONE);
  }
  case PROTOBUF_C_TYPE_MESSAGE:
    return *(const void *const *)(base + f->offset) != NULL;
  case PROTOBUF_C_TYPE_BYTES:
    if (f->label == PROTOBUF_C_LABEL_NONE)
      return ((const ProtobufCBinaryData *)(base + f->offset))->len > 0;
    break;
  default:
    if (f->label == PROTOBUF_C_LABEL_NONE)
      return true;
    break;
  }
  /* proto2 */
  return f->label == PROTOBUF_C_LABEL_REQUIRED ||
         *(const protobuf_c_boolean *)(base + f->quantifier_offset);
}

static int encode_message(const ProtobufCMessage *msg, struct tp_buf *b) {
  const ProtobufCMessageDescriptor *desc = msg->descriptor;
  const char *base = (const char *)msg;
  bool first = true;
  if (reserve(b, 2) != 0)
    return -ENOMEM;
  b->data[b->len++] = '{';
  for (unsigned i = 0; i < desc->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &desc->fields[i];
    bool repeated = f->label == PROTOBUF_C_LABEL_REPEATED;
    if (!repeated && !is_present(msg, f))
      continue;
    /* ,"name":[ */
    size_t name_len = strlen(f->name);
    if (reserve(b, name_len + 5) != 0)
      return -ENOMEM;
    char *p = (char *)b->data + b->len;
    if (!first)
      *p++ = ',';
    first = false;
    *p++ = '"';
    memcpy(p, f->name, name_len);
    p += name_len;
    *p++ = '"';
    *p++ = ':';
    b->len = (size_t)((uint8_t *)p - b->data);
    int rc;
    if (!repeated) {
      rc = encode_value(f, base + f->offset, b);
      if (rc != 0)
        return rc;
      continue;
    }
    size_t n = *(const size_t *)(base + f->quantifier_offset);
    const char *array = *(const char *const *)(base + f->offset);
    size_t size = tp_json__element_size(f->type);
    b->data[b->len++] = '[';
    for (size_t j = 0; j < n; j++) {
      if (j > 0 && (rc = tp_buf_append(b, ",", 1)) != 0)
        return rc;
      if ((rc = encode_value(f, array + j * size, b)) != 0)
        return rc;
    }
    if ((rc = tp_buf_append(b, "]", 1)) != 0)
      return rc;
  }
  return tp_buf_append(b, "}", 1);
}

int tp_json_encode(const ProtobufCMessage *msg, struct tp_buf *out) {
  size_t len = out->len;
  int rc = encode_message(msg, out);
  if (rc != 0)
    out->len = len;
  return rc;
}

