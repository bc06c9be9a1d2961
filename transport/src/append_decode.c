#include "append_decode.h"

#include "evf/pbwire.h"

#include <stdbool.h>
#include <string.h>

static enum tp_append_decode copy_string(const struct evf_pb_field *f, ProtobufCAllocator *a,
                                         char **out) {
  if (f->wire != EVF_PB_LEN)
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

static enum tp_append_decode copy_bytes(const struct evf_pb_field *f, ProtobufCAllocator *a,
                                        ProtobufCBinaryData *out) {
  if (f->wire != EVF_PB_LEN)
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

static enum tp_append_decode event_field(const struct evf_pb_field *f, ProtobufCAllocator *a,
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

static enum tp_append_decode decode_event(const struct evf_pb_field *f, ProtobufCAllocator *a,
                                          Api__EventData **out) {
  if (f->wire != EVF_PB_LEN)
    return TP_APPEND_MALFORMED;
  Api__EventData *e = a->alloc(a->allocator_data, sizeof(*e));
  if (e == NULL)
    return TP_APPEND_NOMEM;
  api__event_data__init(e);
  struct evf_pb_reader r = {f->data, f->data + f->len};
  struct evf_pb_field inner;
  enum tp_append_decode rc = TP_APPEND_DECODED;
  while (rc == TP_APPEND_DECODED && r.p < r.end)
    rc = evf_pb_read_field(&r, &inner) ? event_field(&inner, a, e) : TP_APPEND_MALFORMED;
  *out = e;
  return rc;
}

static enum tp_append_decode request_field(const struct evf_pb_field *f, ProtobufCAllocator *a,
                                           Api__AppendToStreamRequest *req) {
  switch (f->number) {
  case 1: return copy_string(f, a, &req->stream);
  case 2:
    if (f->wire != EVF_PB_VARINT)
      return TP_APPEND_MALFORMED;
    req->version = (int32_t)evf_pb_varint32(f);
    return TP_APPEND_DECODED;
  case 3: return decode_event(f, a, &req->events[req->n_events++]);
  default: return TP_APPEND_DECODED;
  }
}

/* The events' count, for their array: the message's structure is checked on the way. */
static bool count_events(const uint8_t *msg, size_t len, size_t *events) {
  struct evf_pb_reader r = {msg, msg + len};
  struct evf_pb_field f;
  *events = 0;
  while (r.p < r.end) {
    if (!evf_pb_read_field(&r, &f))
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
  struct evf_pb_reader r = {msg, msg + len};
  struct evf_pb_field f;
  enum tp_append_decode rc = TP_APPEND_DECODED;
  while (rc == TP_APPEND_DECODED && r.p < r.end) {
    evf_pb_read_field(&r, &f); /* cannot fail: count_events read the same fields */
    rc = request_field(&f, allocator, req);
  }
  *out = req;
  return rc;
}
