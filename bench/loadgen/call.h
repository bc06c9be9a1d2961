#ifndef LOADGEN_CALL_H
#define LOADGEN_CALL_H

/*
 * One request in flight and what came back, shared by the gRPC (HTTP/2)
 * and HTTP/1.1 client connections. The caller owns a struct lg_call (the
 * load generator embeds one per in-flight slot), fills the request part,
 * submits it to a connection, and gets it back exactly once through cb, on
 * the connection's loop thread, with reply filled in. The request bytes
 * are borrowed until then.
 */

#include "wire.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum lg_reply_kind {
  LG_REPLY_GRPC,                /* status: the grpc-status trailer */
  LG_REPLY_HTTP,                /* status: the HTTP status (HTTP/1.1, or HTTP/2 without grpc-status) */
  LG_REPLY_TIMEOUT,             /* no answer within the timeout: the client gave up */
  LG_REPLY_RESET,               /* the server reset the HTTP/2 stream */
  LG_REPLY_CLOSED,              /* the connection went away first */
  LG_REPLY_BAD,                 /* an answer the client could not read */
};

struct lg_reply {
  enum lg_reply_kind kind;
  int status;
  uint64_t count;               /* entries of field 1 (gRPC), "position": keys (HTTP) */
  uint64_t checkpoint;          /* field 2 (gRPC), "checkpoint": (HTTP) */
  bool has_checkpoint;
  uint64_t number;              /* field 1 as a varint (gRPC: EventCountResponse.count) */
  bool has_number;
  uint64_t bytes;               /* response body bytes */
  char message[200];            /* grpc-message, decoded, or the start of an HTTP error body */
};

struct lg_call;
typedef void (*lg_call_cb)(struct lg_call *call);

struct lg_call {
  int h2_kind;                  /* the connection's: 0 (a gRPC connection tells it from a stream's) */

  /* Set by the caller before each submission. */
  const char *path;             /* gRPC method path ("/api.EventStore/GetStream"); static storage */
  size_t path_len;
  const uint8_t *body;          /* gRPC: the framed message; HTTP/1.1: the whole request */
  size_t len;
  lg_call_cb cb;

  /* Set by the connection; valid in cb. */
  struct lg_reply reply;

  /* The connection's own. */
  uint64_t submitted_ns;
  size_t sent;
  int32_t stream_id;
  int http_status;
  bool timed_out;
  bool status_seen;
  struct lg_pb_scan scan;
  struct lg_call *prev, *next;  /* the connection's calls in flight */
};

/* What a client connection tells its owner (on the connection's loop thread). */
struct lg_conn_events {
  /** The connection is up: calls may be submitted. */
  void (*connected)(void *data);
  /**
   * The connection failed (reason says why, e.g. "connection refused"); its
   * calls in flight end right after with LG_REPLY_CLOSED and submissions are
   * refused. The owner still closes it.
   */
  void (*failed)(void *data, const char *reason);
  void *data;
};

#endif
