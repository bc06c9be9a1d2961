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
  /*
   * A streamed response (HTTP/1.1 chunked; NULL where the connection cannot
   * stream): start it with its headers, write pieces, flush them, end it.
   * While it streams the connection takes no other request; unsent counts
   * the bytes written and not yet taken by the socket.
   */
  int (*stream_start)(struct tp_http_exchange *ex, const struct tp_http_header *headers,
                      size_t header_count);
  int (*stream_write)(struct tp_http_exchange *ex, const void *data, size_t len);
  size_t (*stream_unsent)(struct tp_http_exchange *ex);
  void (*stream_flush)(struct tp_http_exchange *ex);
  void (*stream_end)(struct tp_http_exchange *ex);
  /** Optional: false once the connection can send nothing more (it is about to close). */
  bool (*usable)(const struct tp_http_exchange *ex);
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
  char last_event_id[32];       /* the Last-Event-ID header (Server-Sent Events), or "" */
  /* Set by the router, for the request metrics. */
  int route;                    /* enum tp_metrics_route */
  /* Kept by the exchange. */
  bool answered;
  bool held;
  void *state;                  /* a router's asynchronous state */
  void (*free_state)(void *state);
  /* A streamed response: called after the connection wrote bytes (schedule, do not write). */
  void (*on_drain)(struct tp_http_exchange *ex);
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

/**
 * Starts a streamed 200 response (text/event-stream and the like); the
 * exchange counts as answered. Returns 0, or -ENOTSUP when the connection
 * cannot stream (the exchange is left unanswered), or -ENOMEM.
 */
int tp_http_stream_start(struct tp_http_exchange *ex, const struct tp_http_header *headers,
                         size_t header_count);

/** Appends {"error": message, "code": code_name}: an error's JSON. 0, or -ENOMEM (none of it). */
int tp_http_error_json(struct tp_buf *out, const char *code_name, const char *message);

/** Responds {"error": message, "code": grpc_code_name} with status (out of memory: no body). */
void tp_http_error(struct tp_http_exchange *ex, int status, const char *code_name,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/** The reason phrase of a status code ("Not Found"). */
const char *tp_http_reason(int status);

/* Server-Sent Events subscriptions (http_sse.c), after http_api.c parsed the request. */
struct tp_sse_request {
  bool one_stream;
  const char *stream;          /* one_stream */
  uint32_t version;            /* one_stream: the first version */
  uint64_t offset;             /* all: exclusive */
  char **types, **prefixes;    /* all: taken (freed with the subscription) */
  size_t n_types, n_prefixes;
  uint32_t checkpoint_interval;
};
void tp_http_sse_subscribe(struct tp_http_exchange *ex, struct tp_sse_request *request);

/* Routers (http_api.c). */
void tp_http_api_route(struct tp_http_exchange *ex);
void tp_http_metrics_route(struct tp_http_exchange *ex);

#endif
