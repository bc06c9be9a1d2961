#ifndef LOADGEN_REQUEST_H
#define LOADGEN_REQUEST_H

/*
 * Request templates: each request the load generator sends is encoded once
 * (gRPC messages with protobuf-c, HTTP/1.1 requests as text), then copied
 * into every in-flight slot and patched in place before each send:
 *
 * - the stream name ends in `width` decimal digits (its index, zero-padded),
 *   overwritten without changing any length;
 * - one number may vary in length (a GetGlobalStream offset, an
 *   AppendToStream expected version, an HTTP offset): it is the template's
 *   tail. A gRPC template ends with that field (protobuf allows fields in
 *   any order), so setting it rewrites the last bytes and the 5-byte
 *   message length; an HTTP template keeps the bytes after the number and
 *   moves them (a few dozen bytes).
 *
 * - a timestamp (subscribe): the first 8 bytes of the first event's data
 *   take a little-endian uint64, so a subscriber can tell when the event
 *   was sent.
 *
 * A template owns its memory. Any thread; no shared state.
 */

#include <stddef.h>
#include <stdint.h>

struct lg_tmpl {
  uint8_t *data;
  size_t len;                   /* bytes to send */
  size_t cap;
  size_t name_at;               /* first index digit of the stream name; SIZE_MAX: none */
  size_t tail_at;               /* where the variable number goes; SIZE_MAX: none */
  size_t stamp_at;              /* where the 8-byte timestamp goes; 0: none (byte 0 is a header's) */
  uint8_t tail_tag;             /* gRPC: the number's field tag; 0: an HTTP template */
  uint8_t *rest;                /* HTTP: the bytes after the number */
  size_t rest_len;
  size_t *ids_at;               /* each event's client id: where its last 12 hex digits are */
  unsigned id_count;            /* 0: the events carry no ids */
};

/*
 * Constructors. name is the stream name with its last width characters
 * being the index digits (any placeholder); authority is "host:port". Each
 * returns 0 or -ENOMEM / -EINVAL (an encoding that would not fit), leaving
 * t empty on failure.
 */

/** gRPC AppendToStream: events of size payload bytes each, type "BenchEvent", no ids; tail: version. */
int lg_req_grpc_append(struct lg_tmpl *t, const char *name, unsigned width, unsigned events,
                       const uint8_t *payload, size_t size);

/**
 * The same with a client id on every event: nonce's 8 hex digits, then
 * digits lg_tmpl_set_ids patches.
 */
int lg_req_grpc_append_with_ids(struct lg_tmpl *t, const char *name, unsigned width,
                                unsigned events, const uint8_t *payload, size_t size,
                                uint32_t nonce);

/** gRPC GetStream from version 0 with limit. */
int lg_req_grpc_get_stream(struct lg_tmpl *t, const char *name, unsigned width, uint32_t limit);

/** gRPC GetGlobalStream with limit; tail: offset. */
int lg_req_grpc_get_global(struct lg_tmpl *t, uint32_t limit);

/** gRPC SubscribeToAllRequest, no filters; tail: offset. */
int lg_req_grpc_subscribe_all(struct lg_tmpl *t);

/** gRPC EventCountRequest. */
int lg_req_grpc_event_count(struct lg_tmpl *t);

/** HTTP POST /api/v1/stream/{name} with version -1 and the events as JSON. */
int lg_req_http_append(struct lg_tmpl *t, const char *authority, const char *name, unsigned width,
                       unsigned events, const uint8_t *payload, size_t size);

/** HTTP GET /api/v1/stream/{name}?version=0&limit=N. */
int lg_req_http_get_stream(struct lg_tmpl *t, const char *authority, const char *name,
                           unsigned width, uint32_t limit);

/** HTTP GET /api/v1/stream/all?limit=N&offset=X; tail: offset. */
int lg_req_http_get_global(struct lg_tmpl *t, const char *authority, uint32_t limit);

/** A copy of src in dst (dst's previous contents are not freed). Returns 0 or -ENOMEM. */
int lg_tmpl_copy(struct lg_tmpl *dst, const struct lg_tmpl *src);

/** Frees t's memory. */
void lg_tmpl_free(struct lg_tmpl *t);

/** Numbers the events' client ids first, first + 1, ... (48 bits each, in hex). */
void lg_tmpl_set_ids(struct lg_tmpl *t, uint64_t first);

/** Writes index as the stream name's width digits. */
void lg_tmpl_set_name(struct lg_tmpl *t, unsigned width, uint64_t index);

/** Sets the tail number (a gRPC int32 field takes the two's complement, as protobuf does). */
void lg_tmpl_set_tail(struct lg_tmpl *t, uint64_t value);

/**
 * Makes the first 8 bytes of the first copy of payload (size bytes, at
 * least 8) in t its timestamp. Returns 0, or -EINVAL when t does not hold
 * payload.
 */
int lg_tmpl_find_stamp(struct lg_tmpl *t, const uint8_t *payload, size_t size);

/** Writes value as the timestamp (little-endian). */
void lg_tmpl_set_stamp(struct lg_tmpl *t, uint64_t value);

/** The timestamp at the start of an event's data (little-endian, data_len >= 8). */
uint64_t lg_stamp_get(const uint8_t *data);

#endif
