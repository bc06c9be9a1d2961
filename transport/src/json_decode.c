/*
 * The JSON mapping, driven by protobuf-c's descriptors (see json.h): input.
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
 *
 * jansson reports only some of its allocation failures as
 * json_error_out_of_memory: others read as malformed input ("string or '}'
 * expected near ..."), and its lexer ignores a failure to save a character.
 * Its allocations therefore go through jansson_alloc(), which notes a
 * failure for the parse running on its thread; any failure is -ENOMEM.
 */
#include "json.h"
#include "json_internal.h"

#include "evf/status.h"

#include <errno.h>
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Whether one of jansson's allocations failed since load() started on this thread. */
static _Thread_local bool jansson_alloc_failed;
static pthread_once_t jansson_alloc_once = PTHREAD_ONCE_INIT;

static void *jansson_alloc(size_t size) {
  void *p = malloc(size);
  if (p == NULL)
    jansson_alloc_failed = true;
  return p;
}

/* Once per process, before any document is parsed: jansson's functions are process-wide. */
static void set_jansson_alloc(void) { json_set_alloc_funcs(jansson_alloc, free); }

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
    if (tp_json__escapes[c] != 0) {
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
    size_t size = tp_json__element_size(f->type);
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

/*
 * json_loadb, or NULL with *nomem set when one of jansson's allocations
 * failed. A document is dropped even when jansson finished it: its lexer
 * goes on without a character it had no room to save, so a string or a
 * number may have lost one.
 */
static json_t *load(const char *text, size_t len, size_t flags, json_error_t *error,
                    bool *nomem) {
  jansson_alloc_failed = false;
  json_t *root = json_loadb(text, len, flags, error);
  *nomem = jansson_alloc_failed;
  if (*nomem && root != NULL) {
    json_decref(root);
    root = NULL;
  }
  return root;
}

/* Parses text; on failure sets err (or returns -ENOMEM) from the error of the text as given. */
static int parse(struct decoder *d, const char *text, size_t len, json_t **root) {
  json_error_t error;
  bool nomem;
  *root = load(text, len, JSON_REJECT_DUPLICATES, &error, &nomem);
  if (*root == NULL && !nomem && json_error_code(&error) == json_error_numeric_overflow) {
    struct tp_buf quoted = {0};
    int n = quote_big_integers(text, len, &quoted);
    if (n > 0) {
      json_error_t again;
      *root = load((const char *)quoted.data, quoted.len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL,
                   &again, &nomem);
      d->marked = true;
    }
    tp_buf_free(&quoted);
    if (n < 0)
      return n;
  }
  if (*root != NULL)
    return 0;
  if (nomem)
    return -ENOMEM;
  char reason[JSON_ERROR_TEXT_LENGTH];
  copy_reason(reason, sizeof(reason), error.text);
  return set_err(d, "malformed JSON: %s at line %d, column %d", reason, error.line, error.column);
}

int tp_json_decode(const ProtobufCMessageDescriptor *desc, const char *text, size_t len,
                   ProtobufCMessage **out, char *err, size_t err_len) {
  struct decoder d = {.err = err, .err_len = err != NULL ? err_len : 0};
  pthread_once(&jansson_alloc_once, set_jansson_alloc);
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
