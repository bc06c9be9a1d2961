#ifndef LOADGEN_GRPC_CONN_H
#define LOADGEN_GRPC_CONN_H

/*
 * A gRPC client connection: one TCP connection (libuv) carrying an nghttp2
 * client session (h2c, prior knowledge), with many unary calls in flight.
 * It belongs to the loop it was created on; every function is called on
 * that loop's thread, and every callback comes on it.
 *
 * Output is batched: submitted calls are encoded by nghttp2 once per loop
 * iteration (a uv_check handle), so the responses handled in one iteration
 * and the requests they trigger go out in one write.
 *
 * Responses are not decoded: the call's reply gets the grpc-status trailer
 * (or the HTTP status), the decoded grpc-message, and from the body only
 * what lg_pb_scan counts (entries of field 1, field 2).
 */

#include "call.h"

#include <stdint.h>
#include <uv.h>

struct lg_grpc_conn;
struct lg_grpc_stream;

/** A whole gRPC message of a streaming call (without its 5-byte prefix), borrowed for the call. */
typedef void (*lg_grpc_message_cb)(struct lg_grpc_stream *s, const uint8_t *msg, size_t len);
/** A streaming call ended; s->reply says how (as a unary call's, count and checkpoint unset). */
typedef void (*lg_grpc_closed_cb)(struct lg_grpc_stream *s);

/*
 * A streaming call (client, server or bidirectional streaming): requests
 * are queued with lg_grpc_stream_send and go out as DATA frames on the open
 * HTTP/2 stream (a data provider deferred while nothing is queued), each
 * response message comes whole through message_cb. No grpc-timeout: the
 * call lasts as long as the caller wants; the connection's timeouts do not
 * apply to it. The caller owns the struct; it must stay put until closed_cb.
 */
struct lg_grpc_stream {
  int h2_kind;                  /* the connection's */

  /* Set by the caller before lg_grpc_stream_open. */
  const char *path;             /* static storage */
  size_t path_len;
  lg_grpc_message_cb message_cb;
  lg_grpc_closed_cb closed_cb;
  void *data;                   /* the caller's */

  /* Set by the connection; valid in closed_cb. */
  struct lg_reply reply;

  /* The connection's own. */
  struct lg_grpc_conn *conn;
  struct lg_buf out;            /* queued request bytes, framed */
  size_t out_sent;
  struct lg_buf in;             /* the start of a response message not complete yet */
  int32_t stream_id;
  int http_status;
  bool status_seen;
  bool deferred;
  bool half_closed;
  bool bad;
  struct lg_grpc_stream *prev, *next;
};

/**
 * Starts connecting to addr (copied); authority ("host:port") and ev are
 * copied. timeout_ns bounds the connect, each call (sent as grpc-timeout
 * too) and any silence of the server while calls are in flight. The
 * outcome comes through ev (connected or failed). Returns 0 and the
 * connection in *out, or a negative libuv/errno code (*out untouched).
 */
int lg_grpc_conn_create(uv_loop_t *loop, const struct sockaddr *addr, const char *authority,
                        uint64_t timeout_ns, const struct lg_conn_events *ev,
                        struct lg_grpc_conn **out);

/**
 * Submits a unary call: call->path, path_len, body (the framed request) and
 * cb must be set; the body is borrowed until cb. Returns 0, -ENOTCONN
 * (not connected, failed or closed) or -ENOMEM; on failure cb is not called.
 */
int lg_grpc_conn_submit(struct lg_grpc_conn *c, struct lg_call *call);

/**
 * Opens a streaming call (s->path, path_len, message_cb, closed_cb set).
 * Returns 0 (closed_cb comes exactly once afterwards), -ENOTCONN or -ENOMEM.
 */
int lg_grpc_stream_open(struct lg_grpc_conn *c, struct lg_grpc_stream *s);

/**
 * Queues one request message (msg: the protobuf encoding, copied; the
 * 5-byte prefix is added here). Returns 0, -EPIPE (half-closed or ended)
 * or -ENOMEM.
 */
int lg_grpc_stream_send(struct lg_grpc_stream *s, const uint8_t *msg, size_t len);

/** Half-closes the call once what is queued has gone: the server ends it when done. */
void lg_grpc_stream_half_close(struct lg_grpc_stream *s);

/** Cancels the call (RST_STREAM CANCEL); closed_cb follows. */
void lg_grpc_stream_cancel(struct lg_grpc_stream *s);

/**
 * Enforces the timeouts; call it periodically (every 100 ms or so). Calls
 * older than the timeout are reset and end with LG_REPLY_TIMEOUT; a server
 * silent for the timeout while calls are in flight fails the connection
 * ("no answer for N s").
 */
void lg_grpc_conn_check(struct lg_grpc_conn *c, uint64_t now_ns);

/** Calls in flight. */
size_t lg_grpc_conn_inflight(const struct lg_grpc_conn *c);

/**
 * Closes the connection: calls in flight and streaming calls end with LG_REPLY_CLOSED (their
 * callbacks run, possibly before this returns), no event comes after, and
 * the memory is freed once libuv has closed the handles. Exactly once per
 * connection, failed or not.
 */
void lg_grpc_conn_close(struct lg_grpc_conn *c);

#endif
