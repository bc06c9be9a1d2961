#ifndef TRANSPORT_HTTP1_H
#define TRANSPORT_HTTP1_H

/*
 * HTTP/1.1 connections (http-parser), with keep-alive and pipelining:
 * requests are answered in order, one at a time; while one is being
 * answered, or while output waits for a slow reader, the following bytes
 * wait (and reading stops once too many wait). A client's half-close ends
 * its requests, not their answers: the connection closes once they are
 * written. A request that does not arrive in time gets a 408, and a
 * connection idle too long is closed (HTTP_REQUEST_TIMEOUT_MS,
 * HTTP_IDLE_TIMEOUT_MS). A connection that opens with the HTTP/2 preface is
 * handed to nghttp2 (h2c with prior knowledge).
 */

#include "http.h"

#include <stdbool.h>
#include <uv.h>

struct tp_h1_conn;

/**
 * Accepts a connection; requests go to router; h2c goes to the HTTP/2 side
 * if h2c is set. Returns -ENOMEM when it had no memory to take it (it is
 * still pending), else 0.
 */
int tp_h1_accept(struct tp_server *server, uv_stream_t *listener, tp_http_router router, bool h2c);

/** Prepares the loop's timeouts of HTTP/1.1 connections (its sweep timer). Loop's thread. */
void tp_h1_server_init(struct tp_server *server);

/** Closes the sweep timer, once, after the server's last connection. Loop's thread. */
void tp_h1_server_close(struct tp_server *server);

/** Shutdown: closes idle connections now and the others after their current response. */
void tp_h1_drain_all(struct tp_server *server);

/** Closes every connection at once (shutdown grace period over). */
void tp_h1_close_all(struct tp_server *server);

#endif
