/*
 * The JSON mapping, driven by protobuf-c's descriptors (see json.h).
 *
 * Output is written straight into the caller's buffer: each value reserves
 * its worst case, then writes through a pointer, so an api.Event costs a
 * handful of capacity checks and no allocation.
 *
 * Input is parsed by jansson, then walked against the descriptor. The
 * message is built the way protobuf-c's unpacker builds one (malloc for the
 * message, its strings, bytes, arrays and sub-messages; untouched proto3
 * strings left at protobuf_c_empty_string), and every pointer is in place
 * before anything is decoded into it, so protobuf_c_message_free_unpacked()
 * frees a half-built message as well as a finished one.
 *
 * jansson keeps integers in a long long, so it refuses a uint64 above
 * INT64_MAX. When a document fails on that alone, quote_big_integers()
 * rewrites each integer token out of the int64 range as a string marked by
 * a leading NUL ("\u0000<digits>", which jansson only lets through with
 * JSON_ALLOW_NUL), and the document is parsed again; the walk reads a
 * marked string as the integer it was.
 */
#include "json.h"

#include "evf/status.h"

#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* tp_buf_reserve() with the common case, room enough, inline: a few calls per field. */
static inline int reserve(struct tp_buf *b, size_t extra) {
  return b->cap - b->len >= extra ? 0 : tp_buf_reserve(b, extra);
}

/* The size of one element of a repeated field of this type. */
static size_t element_size(ProtobufCType type) {
  switch (type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
  case PROTOBUF_C_TYPE_FLOAT:
  case PROTOBUF_C_TYPE_ENUM:
    return 4;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
  case PROTOBUF_C_TYPE_DOUBLE:
    return 8;
  case PROTOBUF_C_TYPE_BOOL:
    return sizeof(protobuf_c_boolean);
  case PROTOBUF_C_TYPE_STRING:
    return sizeof(char *);
  case PROTOBUF_C_TYPE_BYTES:
    return sizeof(ProtobufCBinaryData);
  case PROTOBUF_C_TYPE_MESSAGE:
    return sizeof(ProtobufCMessage *);
  }
  return 0;
}

/* ---- output ---- */

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

/*
 * How a string byte is written: 0 as itself, 'u' as \u00XX, anything else
 * as a backslash and that letter. Bytes from 0x80 up are UTF-8 and pass.
 */
static const char escapes[256] = {
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
    while (in < end && escapes[*in] == 0)
      in++;
    memcpy(b->data + b->len, run, (size_t)(in - run));
    b->len += (size_t)(in - run);
    if (in == end)
      break;
    /* An escape takes up to 6 bytes where the byte took 1; keep room for the rest and the quote. */
    if (reserve(b, 6 + (size_t)(end - in)) != 0)
      return -ENOMEM;
    char *p = (char *)b->data + b->len;
    char e = escapes[*in];
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
    size_t size = element_size(f->type);
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

/* ---- input ---- */

/* A value's place in the document, kept on the stack and spelled out only for an error. */
struct path {
  const struct path *up;
  const char *key; /* NULL: element index of the array above */
  size_t index;
};

struct decoder {
  char *err;
  size_t err_len;
  bool marked; /* parsed from quote_big_integers() output */
};

/* Appends text to out[*pos..cap) as it would read inside a JSON string, cut at cap. */
static void put_quoted(char *out, size_t cap, size_t *pos, const char *text, size_t len) {
  size_t i = 0;
  while (i < len && *pos + 7 < cap) {
    uint8_t c = (uint8_t)text[i];
    if (escapes[c] != 0) {
      *pos += (size_t)snprintf(out + *pos, cap - *pos, "\\u%04x", c);
      i++;
      continue;
    }
    /* Whole UTF-8 sequences only (jansson checked them), so a cut leaves valid text. */
    size_t n = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    if (n > len - i)
      break;
    memcpy(out + *pos, text + i, n);
    *pos += n;
    i += n;
  }
  out[*pos] = '\0';
}

static void put_path(char *out, size_t cap, size_t *pos, const struct path *p) {
  if (p->up != NULL)
    put_path(out, cap, pos, p->up);
  if (*pos + 24 >= cap)
    return;
  if (p->key == NULL) {
    *pos += (size_t)snprintf(out + *pos, cap - *pos, "[%zu]", p->index);
    return;
  }
  if (p->up != NULL)
    out[(*pos)++] = '.';
  put_quoted(out, cap, pos, p->key, strlen(p->key));
}

/* Formats the reason into err; one cut short loses the UTF-8 sequence it split. Returns EVF_EINVAL. */
__attribute__((format(printf, 2, 3))) static int set_err(const struct decoder *d, const char *fmt,
                                                         ...) {
  if (d->err_len == 0)
    return EVF_EINVAL;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(d->err, d->err_len, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n < d->err_len)
    return EVF_EINVAL;
  size_t end = d->err_len - 1, lead = end;
  while (lead > 0 && lead + 4 > end && ((uint8_t)d->err[lead - 1] & 0xc0) == 0x80)
    lead--;
  if (lead > 0 && (uint8_t)d->err[lead - 1] >= 0xc0) {
    uint8_t c = (uint8_t)d->err[lead - 1];
    size_t need = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    if (end - (lead - 1) < need)
      d->err[lead - 1] = '\0';
  }
  return EVF_EINVAL;
}

/* Sets err to: field "<path>": <reason>. Returns EVF_EINVAL. */
__attribute__((format(printf, 3, 4))) static int fail(const struct decoder *d,
                                                      const struct path *p, const char *fmt, ...) {
  char where[192];
  size_t pos = 0;
  where[0] = '\0';
  put_path(where, sizeof(where), &pos, p);
  char reason[192];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(reason, sizeof(reason), fmt, ap);
  va_end(ap);
  return set_err(d, "field \"%s\": %s", where, reason);
}

/* A string that stands for an integer too big for jansson (see the top of this file). */
static bool is_marked_integer(const struct decoder *d, const json_t *v) {
  return d->marked && json_is_string(v) && json_string_length(v) > 0 &&
         json_string_value(v)[0] == '\0';
}

/* A JSON string, not a marked integer; with the marks allowed, NUL is refused here. */
static bool get_text(const struct decoder *d, const json_t *v, const char **s, size_t *len) {
  if (!json_is_string(v))
    return false;
  *s = json_string_value(v);
  *len = json_string_length(v);
  return !d->marked || memchr(*s, '\0', *len) == NULL;
}

/* Parses -?[0-9]+ into a sign and a magnitude; false if not that or over 2^64-1. */
static bool parse_digits(const char *s, size_t len, bool *negative, uint64_t *magnitude) {
  size_t i = 0;
  *negative = len > 0 && s[0] == '-';
  if (*negative)
    i++;
  if (i == len)
    return false;
  uint64_t m = 0;
  for (; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return false;
    unsigned digit = (unsigned)(s[i] - '0');
    if (m > (UINT64_MAX - digit) / 10)
      return false;
    m = m * 10 + digit;
  }
  *magnitude = m;
  return true;
}

/*
 * An integer as a sign and magnitude: a JSON integer, a marked one, or, with
 * from_string (64-bit fields, as in proto3 JSON), a string of digits.
 */
static bool get_integer(const struct decoder *d, const json_t *v, bool from_string,
                        bool *negative, uint64_t *magnitude) {
  if (json_is_integer(v)) {
    json_int_t i = json_integer_value(v);
    *negative = i < 0;
    *magnitude = i < 0 ? -(uint64_t)i : (uint64_t)i;
    return true;
  }
  if (is_marked_integer(d, v))
    return parse_digits(json_string_value(v) + 1, json_string_length(v) - 1, negative, magnitude);
  const char *s;
  size_t len;
  return from_string && get_text(d, v, &s, &len) && parse_digits(s, len, negative, magnitude);
}

/* A signed integer in [-min_magnitude, max]; false if out of range or not an integer. */
static bool get_signed(const struct decoder *d, const json_t *v, bool from_string,
                       uint64_t min_magnitude, uint64_t max, int64_t *out) {
  bool negative;
  uint64_t m;
  if (!get_integer(d, v, from_string, &negative, &m))
    return false;
  if (negative ? m > min_magnitude : m > max)
    return false;
  /* -m without overflow, m up to 2^63 */
  *out = negative ? (int64_t)(0 - m) : (int64_t)m;
  return true;
}

static bool get_unsigned(const struct decoder *d, const json_t *v, bool from_string, uint64_t max,
                         uint64_t *out) {
  bool negative;
  uint64_t m;
  if (!get_integer(d, v, from_string, &negative, &m))
    return false;
  if ((negative && m != 0) || m > max)
    return false;
  *out = m;
  return true;
}

static bool get_real(const struct decoder *d, const json_t *v, double *out) {
  if (json_is_number(v)) {
    *out = json_number_value(v);
    return true;
  }
  if (is_marked_integer(d, v)) {
    *out = strtod(json_string_value(v) + 1, NULL);
    return isfinite(*out);
  }
  const char *s;
  size_t len;
  if (!get_text(d, v, &s, &len))
    return false;
  if (strcmp(s, "NaN") == 0)
    *out = NAN;
  else if (strcmp(s, "Infinity") == 0)
    *out = INFINITY;
  else if (strcmp(s, "-Infinity") == 0)
    *out = -INFINITY;
  else
    return false;
  return true;
}

/* Base64 values plus one, standard and URL-safe alphabets; 0 for other bytes. */
static const uint8_t b64_values[256] = {
    ['A'] = 1,  ['B'] = 2,  ['C'] = 3,  ['D'] = 4,  ['E'] = 5,  ['F'] = 6,  ['G'] = 7,
    ['H'] = 8,  ['I'] = 9,  ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14,
    ['O'] = 15, ['P'] = 16, ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21,
    ['V'] = 22, ['W'] = 23, ['X'] = 24, ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28,
    ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32, ['g'] = 33, ['h'] = 34, ['i'] = 35,
    ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41, ['p'] = 42,
    ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48, ['w'] = 49,
    ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
    ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63,
    ['/'] = 64, ['-'] = 63, ['_'] = 64,
};

/*
 * Decodes base64, standard or URL-safe, padded or not, into a new buffer
 * (NULL for no bytes). Returns 0, EVF_EINVAL, or -ENOMEM.
 */
static int base64_decode(const char *s, size_t len, ProtobufCBinaryData *out) {
  if (len % 4 == 0 && len > 0 && s[len - 1] == '=')
    len -= s[len - 2] == '=' ? 2 : 1;
  if (len % 4 == 1)
    return EVF_EINVAL;
  size_t size = len / 4 * 3 + (len % 4 == 0 ? 0 : len % 4 - 1);
  if (size == 0) {
    *out = (ProtobufCBinaryData){0};
    return 0;
  }
  uint8_t *data = malloc(size);
  if (data == NULL)
    return -ENOMEM;
  uint8_t *p = data;
  const uint8_t *in = (const uint8_t *)s;
  uint32_t bad = 0;
  size_t i = 0;
  for (; i + 4 <= len; i += 4) {
    uint32_t a = b64_values[in[i]], b = b64_values[in[i + 1]], c = b64_values[in[i + 2]],
             e = b64_values[in[i + 3]];
    bad |= (a - 1) | (b - 1) | (c - 1) | (e - 1);
    uint32_t v = (a - 1) << 18 | (b - 1) << 12 | (c - 1) << 6 | (e - 1);
    p[0] = (uint8_t)(v >> 16);
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)v;
    p += 3;
  }
  if (i < len) {
    uint32_t a = b64_values[in[i]], b = b64_values[in[i + 1]];
    uint32_t c = i + 2 < len ? b64_values[in[i + 2]] : 1;
    bad |= (a - 1) | (b - 1) | (c - 1);
    uint32_t v = (a - 1) << 18 | (b - 1) << 12 | (c - 1) << 6;
    *p++ = (uint8_t)(v >> 16);
    if (i + 2 < len)
      *p++ = (uint8_t)(v >> 8);
  }
  /* An invalid byte has value 0, so value - 1 wraps and sets high bits. */
  if (bad > 63) {
    free(data);
    return EVF_EINVAL;
  }
  *out = (ProtobufCBinaryData){.len = size, .data = data};
  return 0;
}

static int decode_object(const struct decoder *d, const ProtobufCMessageDescriptor *desc,
                         const json_t *obj, ProtobufCMessage *msg, const struct path *up);

#define RANGE_ERROR(min, max) "expected an integer from " min " to " max

/*
 * Decodes v into the storage of one value of f at p (an element, in an
 * array: alone says whether an empty string may stay the shared default).
 */
static int decode_value(const struct decoder *d, const ProtobufCFieldDescriptor *f,
                        const json_t *v, void *p, bool alone, const struct path *where) {
  int64_t i;
  uint64_t u;
  double r;
  const char *s;
  size_t len;
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
    if (!get_signed(d, v, false, UINT64_C(1) << 31, INT32_MAX, &i))
      return fail(d, where, RANGE_ERROR("-2147483648", "2147483647"));
    *(int32_t *)p = (int32_t)i;
    return 0;
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    if (!get_unsigned(d, v, false, UINT32_MAX, &u))
      return fail(d, where, RANGE_ERROR("0", "4294967295"));
    *(uint32_t *)p = (uint32_t)u;
    return 0;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
    if (!get_signed(d, v, true, UINT64_C(1) << 63, INT64_MAX, &i))
      return fail(d, where, RANGE_ERROR("-9223372036854775808", "9223372036854775807"));
    *(int64_t *)p = i;
    return 0;
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    if (!get_unsigned(d, v, true, UINT64_MAX, &u))
      return fail(d, where, RANGE_ERROR("0", "18446744073709551615"));
    *(uint64_t *)p = u;
    return 0;
  case PROTOBUF_C_TYPE_BOOL:
    if (!json_is_boolean(v))
      return fail(d, where, "expected true or false");
    *(protobuf_c_boolean *)p = json_is_true(v);
    return 0;
  case PROTOBUF_C_TYPE_FLOAT:
    if (!get_real(d, v, &r))
      return fail(d, where, "expected a number, \"NaN\", \"Infinity\" or \"-Infinity\"");
    if (isfinite(r) && fabs(r) > FLT_MAX)
      return fail(d, where, "out of the range of a float");
    *(float *)p = (float)r;
    return 0;
  case PROTOBUF_C_TYPE_DOUBLE:
    if (!get_real(d, v, &r))
      return fail(d, where, "expected a number, \"NaN\", \"Infinity\" or \"-Infinity\"");
    *(double *)p = r;
    return 0;
  case PROTOBUF_C_TYPE_ENUM:
    if (get_text(d, v, &s, &len)) {
      const ProtobufCEnumValue *e = protobuf_c_enum_descriptor_get_value_by_name(f->descriptor, s);
      if (e == NULL) {
        char name[96];
        size_t pos = 0;
        put_quoted(name, sizeof(name), &pos, s, len);
        return fail(d, where, "unknown value \"%s\"", name);
      }
      *(int *)p = e->value;
      return 0;
    }
    if (!get_signed(d, v, false, UINT64_C(1) << 31, INT32_MAX, &i))
      return fail(d, where, "expected a name or an integer from -2147483648 to 2147483647");
    *(int *)p = (int)i;
    return 0;
  case PROTOBUF_C_TYPE_STRING: {
    if (!get_text(d, v, &s, &len))
      return fail(d, where, "expected a string");
    if (len == 0 && alone)
      return 0;
    char *copy = malloc(len + 1);
    if (copy == NULL)
      return -ENOMEM;
    memcpy(copy, s, len + 1);
    *(char **)p = copy;
    return 0;
  }
  case PROTOBUF_C_TYPE_BYTES: {
    if (!get_text(d, v, &s, &len))
      return fail(d, where, "expected a base64 string");
    int rc = base64_decode(s, len, p);
    return rc == EVF_EINVAL ? fail(d, where, "invalid base64") : rc;
  }
  case PROTOBUF_C_TYPE_MESSAGE: {
    if (!json_is_object(v))
      return fail(d, where, "expected an object");
    const ProtobufCMessageDescriptor *desc = f->descriptor;
    ProtobufCMessage *sub = malloc(desc->sizeof_message);
    if (sub == NULL)
      return -ENOMEM;
    protobuf_c_message_init(desc, sub);
    *(ProtobufCMessage **)p = sub;
    return decode_object(d, desc, v, sub, where);
  }
  }
  return fail(d, where, "unsupported field type");
}

static int decode_field(const struct decoder *d, const ProtobufCFieldDescriptor *f,
                        const json_t *v, ProtobufCMessage *msg, const struct path *where) {
  char *base = (char *)msg;
  if (f->label == PROTOBUF_C_LABEL_REPEATED) {
    if (!json_is_array(v))
      return fail(d, where, "expected an array");
    size_t n = json_array_size(v);
    if (n == 0)
      return 0;
    size_t size = element_size(f->type);
    /* Zeroed and counted up front: free_unpacked skips NULL elements. */
    char *array = calloc(n, size);
    if (array == NULL)
      return -ENOMEM;
    *(void **)(base + f->offset) = array;
    *(size_t *)(base + f->quantifier_offset) = n;
    for (size_t i = 0; i < n; i++) {
      struct path element = {where, NULL, i};
      int rc = decode_value(d, f, json_array_get(v, i), array + i * size, false, &element);
      if (rc != 0)
        return rc;
    }
    return 0;
  }
  if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
    uint32_t *which = (uint32_t *)(base + f->quantifier_offset);
    if (*which != 0) {
      const ProtobufCFieldDescriptor *other =
          protobuf_c_message_descriptor_get_field(msg->descriptor, *which);
      return fail(d, where, "only one of it and \"%s\" may be set", other ? other->name : "?");
    }
    /* Selected before the value is in place, so that an error frees what was stored. */
    *which = f->id;
    return decode_value(d, f, v, base + f->offset, false, where);
  }
  int rc = decode_value(d, f, v, base + f->offset, f->label == PROTOBUF_C_LABEL_NONE, where);
  if (rc == 0 && f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
      f->type != PROTOBUF_C_TYPE_MESSAGE)
    *(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
  return rc;
}

static int decode_object(const struct decoder *d, const ProtobufCMessageDescriptor *desc,
                         const json_t *obj, ProtobufCMessage *msg, const struct path *up) {
  const char *key;
  json_t *v;
  /* jansson's iterator is not const-clean; the object is only read. */
  json_object_foreach((json_t *)obj, key, v) {
    struct path where = {up, key, 0};
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(desc, key);
    if (f == NULL) {
      char name[192];
      size_t pos = 0;
      name[0] = '\0';
      put_path(name, sizeof(name), &pos, &where);
      return set_err(d, "unknown field \"%s\"", name);
    }
    if (json_is_null(v))
      continue;
    int rc = decode_field(d, f, v, msg, &where);
    if (rc != 0)
      return rc;
  }
  return 0;
}

/*
 * Copies text with every integer token outside the int64 range turned into
 * "\u0000<token>". Only whole tokens of JSON's integer syntax are quoted; a
 * string or a number is a value in exactly the same places (an object key
 * aside, which jansson refuses with a NUL), so this never makes a broken
 * document whole. Returns the number of tokens quoted (out stays empty when
 * there are none), or -ENOMEM.
 */
static int quote_big_integers(const char *text, size_t len, struct tp_buf *out) {
  int quoted = 0;
  size_t copied = 0, i = 0;
  while (i < len) {
    char c = text[i];
    if (c == '"') {
      for (i++; i < len && text[i] != '"'; i++) {
        if (text[i] == '\\')
          i++;
      }
      i++;
      continue;
    }
    if (c != '-' && (c < '0' || c > '9')) {
      i++;
      continue;
    }
    size_t start = i;
    while (i < len && ((text[i] >= '0' && text[i] <= '9') || text[i] == '-' || text[i] == '+' ||
                       text[i] == '.' || text[i] == 'e' || text[i] == 'E'))
      i++;
    /* JSON's integers: -?(0|[1-9][0-9]*); only those too big for jansson are quoted. */
    size_t first = start + (c == '-'), end = first;
    while (end < i && text[end] >= '0' && text[end] <= '9')
      end++;
    if (end != i || first == i || text[first] == '0')
      continue;
    bool negative;
    uint64_t m;
    if (parse_digits(text + start, i - start, &negative, &m) &&
        (negative ? m <= UINT64_C(1) << 63 : m <= INT64_MAX))
      continue;
    if (tp_buf_append(out, text + copied, start - copied) != 0 ||
        tp_buf_append(out, "\"\\u0000", 7) != 0 ||
        tp_buf_append(out, text + start, i - start) != 0 || tp_buf_append(out, "\"", 1) != 0)
      return -ENOMEM;
    copied = i;
    quoted++;
  }
  if (quoted > 0 && tp_buf_append(out, text + copied, len - copied) != 0)
    return -ENOMEM;
  return quoted;
}

/*
 * Copies jansson's reason into out: control characters become spaces, and
 * a UTF-8 sequence cut by jansson's 160-byte limit is dropped.
 */
static void copy_reason(char *out, size_t cap, const char *text) {
  size_t i = 0, end = 0;
  while (text[i] != '\0') {
    uint8_t c = (uint8_t)text[i];
    size_t n = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    size_t k = 1;
    while (k < n && text[i + k] != '\0')
      k++;
    if (k < n || end + n >= cap)
      break;
    for (k = 0; k < n; k++)
      out[end++] = (uint8_t)text[i + k] < 0x20 ? ' ' : text[i + k];
    i += n;
  }
  out[end] = '\0';
}

/* Parses text; on failure sets err (or returns -ENOMEM) from the error of the text as given. */
static int parse(struct decoder *d, const char *text, size_t len, json_t **root) {
  json_error_t error;
  *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &error);
  if (*root == NULL && json_error_code(&error) == json_error_numeric_overflow) {
    struct tp_buf quoted = {0};
    int n = quote_big_integers(text, len, &quoted);
    if (n > 0) {
      json_error_t again;
      *root = json_loadb((const char *)quoted.data, quoted.len,
                         JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &again);
      d->marked = true;
      if (*root == NULL && json_error_code(&again) == json_error_out_of_memory)
        n = -ENOMEM;
    }
    tp_buf_free(&quoted);
    if (n < 0)
      return n;
  }
  if (*root != NULL)
    return 0;
  if (json_error_code(&error) == json_error_out_of_memory)
    return -ENOMEM;
  char reason[JSON_ERROR_TEXT_LENGTH];
  copy_reason(reason, sizeof(reason), error.text);
  return set_err(d, "malformed JSON: %s at line %d, column %d", reason, error.line, error.column);
}

int tp_json_decode(const ProtobufCMessageDescriptor *desc, const char *text, size_t len,
                   ProtobufCMessage **out, char *err, size_t err_len) {
  struct decoder d = {.err = err, .err_len = err != NULL ? err_len : 0};
  if (len == 0)
    text = ""; /* an empty body may come without a buffer; jansson refuses NULL */
  json_t *root;
  int rc = parse(&d, text, len, &root);
  if (rc != 0)
    return rc;
  if (!json_is_object(root)) {
    json_decref(root);
    return set_err(&d, "expected a JSON object");
  }
  ProtobufCMessage *msg = malloc(desc->sizeof_message);
  if (msg == NULL) {
    json_decref(root);
    return -ENOMEM;
  }
  protobuf_c_message_init(desc, msg);
  rc = decode_object(&d, desc, root, msg, NULL);
  json_decref(root);
  if (rc != 0) {
    protobuf_c_message_free_unpacked(msg, NULL);
    return rc;
  }
  *out = msg;
  return 0;
}
