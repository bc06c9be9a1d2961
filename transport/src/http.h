#ifndef TRANSPORT_HTTP_H
#define TRANSPORT_HTTP_H

/*
 * One HTTP request and its response, the same for HTTP/1.1 (http1.c) and
 * HTTP/2 (http2.c). The connection fills in the request and hands the
 * exchange to a router (the JSON API, or the metrics endpoint), which
 * answers with tp_http_respond(), at once or later after tp_http_hold().
 *
 * Lifetime: the connection releases the exchange when it is done with it
 * (response sent, or connection gone); a router holding it for
 * asynchronous work releases it too; whoever is last frees it.
 */

#include "buf.h"

#include <stdbool.h>
#include <stdint.h>

struct tp_server;
struct tp_http_exchange;

struct tp_http_header {
  const char *name;
  const char *value;
};

/* The connection's side of an exchange. */
struct tp_http_sink {
  /** Sends the response. body's contents are taken (it is left empty). */
  void (*respond)(struct tp_http_exchange *ex, int status, const struct tp_http_header *headers,
                  size_t header_count, struct tp_buf *body);
};

typedef void (*tp_http_router)(struct tp_http_exchange *ex);

struct tp_http_exchange {
  /* Set by the connection. */
  const struct tp_http_sink *sink;
  void *conn;                   /* the connection's object; NULL once it let go */
  struct tp_server *server;
  char method[16];
  struct tp_buf target;         /* path and query, as sent */
  struct tp_buf body;
  uint64_t started_ns;
  /* Set by the router, for the request metrics. */
  int route;                    /* enum tp_metrics_route */
  /* Kept by the exchange. */
  bool answered;
  bool held;
  void *state;                  /* a router's asynchronous state */
  void (*free_state)(void *state);
};

/** A new exchange for a request arriving on conn. Returns NULL when out of memory. */
struct tp_http_exchange *tp_http_exchange_create(struct tp_server *server,
                                                 const struct tp_http_sink *sink, void *conn);

/** The connection lets go of the exchange (it may be freed now). */
void tp_http_exchange_release(struct tp_http_exchange *ex);

/** A router keeps the exchange for asynchronous work; tp_http_unhold() when done. */
void tp_http_hold(struct tp_http_exchange *ex);
void tp_http_unhold(struct tp_http_exchange *ex);

/** Whether a response can still be sent. */
bool tp_http_open(const struct tp_http_exchange *ex);

/** Responds once (later calls are ignored). body may be NULL. */
void tp_http_respond(struct tp_http_exchange *ex, int status, const struct tp_http_header *headers,
                     size_t header_count, struct tp_buf *body);

/** Responds {"error": message, "code": grpc_code_name} with status. */
void tp_http_error(struct tp_http_exchange *ex, int status, const char *code_name,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/** The reason phrase of a status code ("Not Found"). */
const char *tp_http_reason(int status);

/* Routers (http_api.c). */
void tp_http_api_route(struct tp_http_exchange *ex);
void tp_http_metrics_route(struct tp_http_exchange *ex);

#endif
