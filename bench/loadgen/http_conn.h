#ifndef LOADGEN_HTTP_CONN_H
#define LOADGEN_HTTP_CONN_H

/*
 * An HTTP/1.1 client connection (libuv TCP, keep-alive) with one request
 * in flight at a time, for the HTTP/JSON API. It belongs to the loop it was
 * created on; every function is called on that thread, every callback
 * comes on it.
 *
 * Responses must carry Content-Length (the server always sends it). The
 * body is not parsed: for a 200 the reply counts "position": keys and takes
 * the "checkpoint": value (lg_json_scan); for any other status the reply
 * keeps the start of the body as its message.
 */

#include "call.h"

#include <stdint.h>
#include <uv.h>

struct lg_http_conn;

/**
 * Starts connecting to addr (copied); authority and ev are copied.
 * timeout_ns bounds the connect and each request: a request unanswered for
 * that long fails the connection (HTTP/1.1 cannot cancel one request).
 * Returns 0 and the connection in *out, or a negative errno code.
 */
int lg_http_conn_create(uv_loop_t *loop, const struct sockaddr *addr, const char *authority,
                        uint64_t timeout_ns, const struct lg_conn_events *ev,
                        struct lg_http_conn **out);

/**
 * Sends a request: call->body and len are the whole request (borrowed
 * until cb), cb is set. Returns 0, -EBUSY (a request is in flight),
 * -ENOTCONN (not connected, failed or closed) or a libuv write error.
 */
int lg_http_conn_submit(struct lg_http_conn *c, struct lg_call *call);

/** Enforces the timeout; call it periodically. */
void lg_http_conn_check(struct lg_http_conn *c, uint64_t now_ns);

/** Requests in flight (0 or 1). */
size_t lg_http_conn_inflight(const struct lg_http_conn *c);

/** Closes and later frees the connection, as lg_grpc_conn_close does. Exactly once. */
void lg_http_conn_close(struct lg_http_conn *c);

#endif
