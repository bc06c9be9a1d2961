/*
 * The wire rules are protobuf-c 1.4's (protobuf-c.c, protobuf_c_message_unpack):
 * a field key of at most 5 bytes whose first byte holds a non-zero field
 * number, varints of at most 10 bytes, length prefixes of at most 5 bytes
 * and at most INT_MAX, wire types 0, 1, 2 and 5 only, a known field only
 * with its own wire type, and the last occurrence of a singular field wins.
 */
#include "append_decode.h"

#include <limits.h>
#include <stdbool.h>
#include <string.h>

enum wire_type { WIRE_VARINT = 0, WIRE_64BIT = 1, WIRE_LEN = 2, WIRE_32BIT = 5 };

struct field {
  uint32_t number;
  enum wire_type wire;
  const uint8_t *data;      /* the value: a varint's bytes, or a length-prefixed payload */
  size_t len;
};

struct reader {
  const uint8_t *p, *end;
};

static bool read_key(struct reader *r, uint32_t *number, enum wire_type *wire) {
  size_t left = (size_t)(r->end - r->p), max = left < 5 ? left : 5;
  if (max == 0 || (r->p[0] & 0xF8) == 0)
    return false;
  *wire = (enum wire_type)(r->p[0] & 7);
  uint32_t value = (r->p[0] & 0x7F) >> 3;
  unsigned shift = 4;
  for (size_t i = 0; i < max; i++) {
    if (i > 0) {
      value |= (uint32_t)(r->p[i] & 0x7F) << shift;
      shift += 7;
    }
    if ((r->p[i] & 0x80) == 0) {
      r->p += i + 1;
      *number = value;
      return true;
    }
  }
  return false;
}

/* The length of a length-prefixed payload: a prefix of at most 5 bytes. */
static bool read_length(struct reader *r, size_t *len) {
  size_t left = (size_t)(r->end - r->p), max = left < 5 ? left : 5;
  uint64_t value = 0;
  for (size_t i = 0; i < max; i++) {
    value |= (uint64_t)(r->p[i] & 0x7F) << (7 * i);
    if ((r->p[i] & 0x80) == 0) {
      r->p += i + 1;
      if (value > INT_MAX || value > (uint64_t)(r->end - r->p))
        return false;
      *len = (size_t)value;
      return true;
    }
  }
  return false;
}

static bool read_field(struct reader *r, struct field *f) {
  if (!read_key(r, &f->number, &f->wire))
    return false;
  size_t left = (size_t)(r->end - r->p);
  f->data = r->p;
  switch (f->wire) {
  case WIRE_VARINT: {
    size_t max = left < 10 ? left : 10, i = 0;
    while (i < max && (r->p[i] & 0x80) != 0)
      i++;
    if (i == max)
      return false;
    f->len = i + 1;
    break;
  }
  case WIRE_64BIT:
  case WIRE_32BIT:
    f->len = f->wire == WIRE_64BIT ? 8 : 4;
    if (left < f->len)
      return false;
    break;
  case WIRE_LEN:
    if (!read_length(r, &f->len))
      return false;
    f->data = r->p;
    break;
  default:
    return false;
  }
  r->p = f->data + f->len;
  return true;
}

/* An int32 field: the low 32 bits of the varint's first 5 bytes, as protobuf-c takes them. */
static int32_t varint_int32(const struct field *f) {
  uint32_t value = 0;
  for (size_t i = 0; i < f->len && i < 5; i++)
    value |= (uint32_t)(f->data[i] & (i < 4 ? 0x7F : 0xFF)) << (7 * i);
  return (int32_t)value;
}

static enum tp_append_decode copy_string(const struct field *f, ProtobufCAllocator *a,
                                         char **out) {
  if (f->wire != WIRE_LEN)
    return TP_APPEND_MALFORMED;
  if (memchr(f->data, 0, f->len) != NULL)
    return TP_APPEND_NUL;
  char *s = a->alloc(a->allocator_data, f->len + 1);
  if (s == NULL)
    return TP_APPEND_NOMEM;
  memcpy(s, f->data, f->len);
  s[f->len] = '\0';
  *out = s;
  return TP_APPEND_DECODED;
}

static enum tp_append_decode copy_bytes(const struct field *f, ProtobufCAllocator *a,
                                        ProtobufCBinaryData *out) {
  if (f->wire != WIRE_LEN)
    return TP_APPEND_MALFORMED;
  out->len = f->len;
  out->data = NULL;
  if (f->len == 0)
    return TP_APPEND_DECODED;
  if ((out->data = a->alloc(a->allocator_data, f->len)) == NULL)
    return TP_APPEND_NOMEM;
  memcpy(out->data, f->data, f->len);
  return TP_APPEND_DECODED;
}

static enum tp_append_decode event_field(const struct field *f, ProtobufCAllocator *a,
                                         Api__EventData *e) {
  switch (f->number) {
  case 1: return copy_string(f, a, &e->type);
  case 2: return copy_bytes(f, a, &e->data);
  case 3: return copy_bytes(f, a, &e->metadata);
  case 4: return copy_string(f, a, &e->causation_id);
  case 5: return copy_string(f, a, &e->correlation_id);
  case 6: return copy_string(f, a, &e->id);
  default: return TP_APPEND_DECODED; /* unknown: skipped */
  }
}

static enum tp_append_decode decode_event(const struct field *f, ProtobufCAllocator *a,
                                          Api__EventData **out) {
  if (f->wire != WIRE_LEN)
    return TP_APPEND_MALFORMED;
  Api__EventData *e = a->alloc(a->allocator_data, sizeof(*e));
  if (e == NULL)
    return TP_APPEND_NOMEM;
  api__event_data__init(e);
  struct reader r = {f->data, f->data + f->len};
  struct field inner;
  enum tp_append_decode rc = TP_APPEND_DECODED;
  while (rc == TP_APPEND_DECODED && r.p < r.end)
    rc = read_field(&r, &inner) ? event_field(&inner, a, e) : TP_APPEND_MALFORMED;
  *out = e;
  return rc;
}

static enum tp_append_decode request_field(const struct field *f, ProtobufCAllocator *a,
                                           Api__AppendToStreamRequest *req) {
  switch (f->number) {
  case 1: return copy_string(f, a, &req->stream);
  case 2:
    if (f->wire != WIRE_VARINT)
      return TP_APPEND_MALFORMED;
    req->version = varint_int32(f);
    return TP_APPEND_DECODED;
  case 3: return decode_event(f, a, &req->events[req->n_events++]);
  default: return TP_APPEND_DECODED;
  }
}

/* The events' count, for their array: the message's structure is checked on the way. */
static bool count_events(const uint8_t *msg, size_t len, size_t *events) {
  struct reader r = {msg, msg + len};
  struct field f;
  *events = 0;
  while (r.p < r.end) {
    if (!read_field(&r, &f))
      return false;
    *events += f.number == 3;
  }
  return true;
}

enum tp_append_decode tp_append_decode(const uint8_t *msg, size_t len,
                                       ProtobufCAllocator *allocator,
                                       Api__AppendToStreamRequest **out) {
  size_t events;
  if (!count_events(msg, len, &events))
    return TP_APPEND_MALFORMED;
  Api__AppendToStreamRequest *req = allocator->alloc(allocator->allocator_data, sizeof(*req));
  if (req == NULL)
    return TP_APPEND_NOMEM;
  api__append_to_stream_request__init(req);
  if (events > 0) {
    req->events = allocator->alloc(allocator->allocator_data, events * sizeof(*req->events));
    if (req->events == NULL)
      return TP_APPEND_NOMEM;
  }
  struct reader r = {msg, msg + len};
  struct field f;
  enum tp_append_decode rc = TP_APPEND_DECODED;
  while (rc == TP_APPEND_DECODED && r.p < r.end) {
    read_field(&r, &f); /* cannot fail: count_events read the same fields */
    rc = request_field(&f, allocator, req);
  }
  *out = req;
  return rc;
}
