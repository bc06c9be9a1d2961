/* Request templates, encoded once and patched in place. */
#define _GNU_SOURCE /* memmem */
#include "request.h"

#include "api.pb-c.h"
#include "wire.h"

#include "evf/pbwire.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GRPC_PREFIX 5
#define TAIL_ROOM (1 + EVF_PB_VARINT_MAX)  /* a tag byte and the longest varint */
#define HTTP_DIGITS 20                 /* the longest uint64 */

static const char event_type[] = "BenchEvent";

void lg_tmpl_free(struct lg_tmpl *t) {
  free(t->data);
  free(t->rest);
  free(t->ids_at);
  *t = (struct lg_tmpl){.name_at = SIZE_MAX, .tail_at = SIZE_MAX};
}

static void tmpl_empty(struct lg_tmpl *t) {
  *t = (struct lg_tmpl){.name_at = SIZE_MAX, .tail_at = SIZE_MAX};
}

int lg_tmpl_copy(struct lg_tmpl *dst, const struct lg_tmpl *src) {
  *dst = *src;
  dst->data = malloc(src->cap);
  dst->rest = src->rest_len ? malloc(src->rest_len) : NULL;
  dst->ids_at = src->id_count ? malloc(src->id_count * sizeof(*src->ids_at)) : NULL;
  if (dst->data == NULL || (src->rest_len && dst->rest == NULL) ||
      (src->id_count && dst->ids_at == NULL)) {
    free(dst->data);
    free(dst->rest);
    free(dst->ids_at);
    tmpl_empty(dst);
    return -ENOMEM;
  }
  memcpy(dst->data, src->data, src->cap);
  if (src->rest_len)
    memcpy(dst->rest, src->rest, src->rest_len);
  if (src->id_count)
    memcpy(dst->ids_at, src->ids_at, src->id_count * sizeof(*src->ids_at));
  return 0;
}

void lg_tmpl_set_name(struct lg_tmpl *t, unsigned width, uint64_t index) {
  lg_digits_put(t->data + t->name_at, width, index);
}

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

void lg_tmpl_set_tail(struct lg_tmpl *t, uint64_t value) {
  if (t->tail_tag) {
    t->data[t->tail_at] = t->tail_tag;
    t->len = t->tail_at + 1 + evf_pb_put_varint(t->data + t->tail_at + 1, value);
    put_be32(t->data + 1, (uint32_t)(t->len - GRPC_PREFIX));
    return;
  }
  char digits[HTTP_DIGITS + 1];
  int n = snprintf(digits, sizeof(digits), "%" PRIu64, value);
  memcpy(t->data + t->tail_at, digits, (size_t)n);
  memcpy(t->data + t->tail_at + (size_t)n, t->rest, t->rest_len);
  t->len = t->tail_at + (size_t)n + t->rest_len;
}

/* Where the width index digits of name are in the packed bytes (the name's first occurrence). */
static size_t find_name(const uint8_t *data, size_t len, const char *name, unsigned width) {
  size_t nlen = strlen(name);
  const uint8_t *at = memmem(data, len, name, nlen);
  return at ? (size_t)(at - data) + nlen - width : SIZE_MAX;
}

/* Frames a packed message: flag 0, length, bytes, and room for a tail field. */
static int grpc_template(struct lg_tmpl *t, const ProtobufCMessage *msg, const char *name,
                         unsigned width, uint8_t tail_tag) {
  tmpl_empty(t);
  size_t packed = protobuf_c_message_get_packed_size(msg);
  if (packed + TAIL_ROOM > UINT32_MAX)
    return -EINVAL;
  t->cap = GRPC_PREFIX + packed + (tail_tag ? TAIL_ROOM : 0);
  if ((t->data = malloc(t->cap)) == NULL)
    return -ENOMEM;
  t->data[0] = 0;
  protobuf_c_message_pack(msg, t->data + GRPC_PREFIX);
  t->len = GRPC_PREFIX + packed;
  put_be32(t->data + 1, (uint32_t)packed);
  if (name != NULL && (t->name_at = find_name(t->data, t->len, name, width)) == SIZE_MAX) {
    lg_tmpl_free(t);
    return -EINVAL;
  }
  if (tail_tag) {
    t->tail_at = t->len;
    t->tail_tag = tail_tag;
    lg_tmpl_set_tail(t, 0);
  }
  return 0;
}

#define ID_DIGITS 12 /* the id's last group, which lg_tmpl_set_ids numbers */

/* Where each event's id ends its template placeholder (UUID text), in order. */
static int find_ids(struct lg_tmpl *t, const char *placeholder, unsigned events) {
  if ((t->ids_at = malloc(events * sizeof(*t->ids_at))) == NULL)
    return -ENOMEM;
  size_t len = strlen(placeholder), from = 0;
  for (unsigned i = 0; i < events; i++) {
    const uint8_t *at = memmem(t->data + from, t->len - from, placeholder, len);
    if (at == NULL)
      return -EINVAL;
    from = (size_t)(at - t->data) + len;
    t->ids_at[i] = from - ID_DIGITS;
  }
  t->id_count = events;
  return 0;
}

/* An AppendToStream template; id: every event's id (a placeholder), or NULL for none. */
static int grpc_append(struct lg_tmpl *t, const char *name, unsigned width, unsigned events,
                       const uint8_t *payload, size_t size, const char *id) {
  Api__EventData *data = calloc(events ? events : 1, sizeof(*data));
  Api__EventData **ptrs = calloc(events ? events : 1, sizeof(*ptrs));
  int rc = -ENOMEM;
  if (data != NULL && ptrs != NULL) {
    for (unsigned i = 0; i < events; i++) {
      api__event_data__init(&data[i]);
      data[i].type = (char *)event_type;
      data[i].data.data = (uint8_t *)payload;
      data[i].data.len = size;
      if (id != NULL)
        data[i].id = (char *)id;
      ptrs[i] = &data[i];
    }
    Api__AppendToStreamRequest req;
    api__append_to_stream_request__init(&req);
    req.stream = (char *)name;
    req.version = 0; /* not packed (proto3 default): the tail carries it */
    req.n_events = events;
    req.events = ptrs;
    rc = grpc_template(t, &req.base, name, width, 2 << 3 | 0);
  }
  if (rc == 0 && id != NULL && (rc = find_ids(t, id, events)) != 0)
    lg_tmpl_free(t);
  free(data);
  free(ptrs);
  return rc;
}

int lg_req_grpc_append(struct lg_tmpl *t, const char *name, unsigned width, unsigned events,
                       const uint8_t *payload, size_t size) {
  return grpc_append(t, name, width, events, payload, size, NULL);
}

int lg_req_grpc_append_with_ids(struct lg_tmpl *t, const char *name, unsigned width,
                                unsigned events, const uint8_t *payload, size_t size,
                                uint32_t nonce) {
  char id[37];
  snprintf(id, sizeof(id), "%08" PRIx32 "-0000-4000-8000-000000000000", nonce);
  return grpc_append(t, name, width, events, payload, size, id);
}

void lg_tmpl_set_ids(struct lg_tmpl *t, uint64_t first) {
  static const char hex[] = "0123456789abcdef";
  for (unsigned i = 0; i < t->id_count; i++) {
    uint64_t n = first + i;
    uint8_t *at = t->data + t->ids_at[i];
    for (int d = ID_DIGITS - 1; d >= 0; d--, n >>= 4)
      at[d] = (uint8_t)hex[n & 15];
  }
}

int lg_req_grpc_get_stream(struct lg_tmpl *t, const char *name, unsigned width, uint32_t limit) {
  Api__GetStreamRequest req;
  api__get_stream_request__init(&req);
  req.stream = (char *)name;
  req.limit = limit;
  return grpc_template(t, &req.base, name, width, 0);
}

int lg_tmpl_find_stamp(struct lg_tmpl *t, const uint8_t *payload, size_t size) {
  const uint8_t *at = size >= 8 ? memmem(t->data, t->len, payload, size) : NULL;
  if (at == NULL)
    return -EINVAL;
  t->stamp_at = (size_t)(at - t->data);
  return 0;
}

void lg_tmpl_set_stamp(struct lg_tmpl *t, uint64_t value) {
  for (unsigned i = 0; i < 8; i++)
    t->data[t->stamp_at + i] = (uint8_t)(value >> (8 * i));
}

uint64_t lg_stamp_get(const uint8_t *data) {
  uint64_t v = 0;
  for (unsigned i = 0; i < 8; i++)
    v |= (uint64_t)data[i] << (8 * i);
  return v;
}

int lg_req_grpc_subscribe_all(struct lg_tmpl *t) {
  Api__SubscribeToAllRequest req;
  api__subscribe_to_all_request__init(&req); /* offset 0 is not packed: the tail carries it */
  return grpc_template(t, &req.base, NULL, 0, 1 << 3 | 0);
}

int lg_req_grpc_event_count(struct lg_tmpl *t) {
  Api__EventCountRequest req;
  api__event_count_request__init(&req);
  return grpc_template(t, &req.base, NULL, 0, 0);
}

int lg_req_grpc_get_global(struct lg_tmpl *t, uint32_t limit) {
  Api__GetGlobalStreamRequest req;
  api__get_global_stream_request__init(&req);
  req.limit = limit; /* offset 0 is not packed: the tail carries it */
  return grpc_template(t, &req.base, NULL, 0, 1 << 3 | 0);
}

/* Appends s percent-encoded as one path segment (everything but unreserved characters). */
static int put_segment(struct lg_buf *b, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  int rc = 0;
  for (const unsigned char *p = (const unsigned char *)s; *p && rc == 0; p++) {
    if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
        *p == '-' || *p == '_' || *p == '.' || *p == '~') {
      rc = lg_buf_append(b, p, 1);
    } else {
      char esc[3] = {'%', hex[*p >> 4], hex[*p & 15]};
      rc = lg_buf_append(b, esc, 3);
    }
  }
  return rc;
}

static int put_str(struct lg_buf *b, const char *s) { return lg_buf_append(b, s, strlen(s)); }

/* Moves b into t; name_at/tail_at are set by the caller. */
static int http_template(struct lg_tmpl *t, struct lg_buf *b, int rc) {
  if (rc != 0) {
    lg_buf_free(b);
    tmpl_empty(t);
    return rc;
  }
  t->data = b->data;
  t->len = b->len;
  t->cap = b->cap;
  return 0;
}

int lg_req_http_get_stream(struct lg_tmpl *t, const char *authority, const char *name,
                           unsigned width, uint32_t limit) {
  tmpl_empty(t);
  struct lg_buf b = {0};
  char tail[64];
  snprintf(tail, sizeof(tail), "?version=0&limit=%" PRIu32 " HTTP/1.1\r\nHost: ", limit);
  int rc = put_str(&b, "GET /api/v1/stream/");
  rc = rc ? rc : put_segment(&b, name);
  size_t name_end = b.len;
  rc = rc ? rc : put_str(&b, tail);
  rc = rc ? rc : put_str(&b, authority);
  rc = rc ? rc : put_str(&b, "\r\n\r\n");
  t->name_at = name_end - width;
  return http_template(t, &b, rc);
}

int lg_req_http_get_global(struct lg_tmpl *t, const char *authority, uint32_t limit) {
  tmpl_empty(t);
  struct lg_buf b = {0}, rest = {0};
  char head[80];
  snprintf(head, sizeof(head), "GET /api/v1/stream/all?limit=%" PRIu32 "&offset=", limit);
  int rc = put_str(&b, head);
  rc = rc ? rc : put_str(&rest, " HTTP/1.1\r\nHost: ");
  rc = rc ? rc : put_str(&rest, authority);
  rc = rc ? rc : put_str(&rest, "\r\n\r\n");
  size_t tail_at = b.len;
  uint8_t room[HTTP_DIGITS] = {0};
  rc = rc ? rc : lg_buf_append(&b, room, sizeof(room));
  rc = rc ? rc : lg_buf_append(&b, rest.data, rest.len);
  if (rc != 0) {
    lg_buf_free(&rest);
    return http_template(t, &b, rc);
  }
  http_template(t, &b, 0);
  t->tail_at = tail_at;
  t->rest = rest.data;
  t->rest_len = rest.len;
  lg_tmpl_set_tail(t, 0);
  return 0;
}

int lg_req_http_append(struct lg_tmpl *t, const char *authority, const char *name, unsigned width,
                       unsigned events, const uint8_t *payload, size_t size) {
  tmpl_empty(t);
  struct lg_buf body = {0}, b = {0};
  char *b64 = malloc(4 * ((size + 2) / 3) + 1);
  int rc = b64 ? put_str(&body, "{\"version\":-1,\"events\":[") : -ENOMEM;
  size_t b64_len = b64 ? lg_base64_put(payload, size, b64) : 0;
  for (unsigned i = 0; i < events && rc == 0; i++) {
    rc = put_str(&body, i ? ",{\"type\":\"" : "{\"type\":\"");
    rc = rc ? rc : put_str(&body, event_type);
    rc = rc ? rc : put_str(&body, "\",\"data\":\"");
    rc = rc ? rc : lg_buf_append(&body, b64, b64_len);
    rc = rc ? rc : put_str(&body, "\"}");
  }
  rc = rc ? rc : put_str(&body, "]}");
  free(b64);
  char head[128];
  snprintf(head, sizeof(head), "\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
           body.len);
  rc = rc ? rc : put_str(&b, "POST /api/v1/stream/");
  rc = rc ? rc : put_segment(&b, name);
  size_t name_end = b.len;
  rc = rc ? rc : put_str(&b, " HTTP/1.1\r\nHost: ");
  rc = rc ? rc : put_str(&b, authority);
  rc = rc ? rc : put_str(&b, head);
  rc = rc ? rc : lg_buf_append(&b, body.data, body.len);
  lg_buf_free(&body);
  t->name_at = name_end - width;
  return http_template(t, &b, rc);
}
