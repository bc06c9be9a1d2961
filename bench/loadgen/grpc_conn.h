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
 * Enforces the timeouts; call it periodically (every 100 ms or so). Calls
 * older than the timeout are reset and end with LG_REPLY_TIMEOUT; a server
 * silent for the timeout while calls are in flight fails the connection
 * ("no answer for N s").
 */
void lg_grpc_conn_check(struct lg_grpc_conn *c, uint64_t now_ns);

/** Calls in flight. */
size_t lg_grpc_conn_inflight(const struct lg_grpc_conn *c);

/**
 * Closes the connection: calls in flight end with LG_REPLY_CLOSED (their
 * callbacks run, possibly before this returns), no event comes after, and
 * the memory is freed once libuv has closed the handles. Exactly once per
 * connection, failed or not.
 */
void lg_grpc_conn_close(struct lg_grpc_conn *c);

#endif
