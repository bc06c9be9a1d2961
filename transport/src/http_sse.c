/*
 * Subscriptions over HTTP/1.1 as Server-Sent Events (text/event-stream):
 * a subscription of the shard's hub (subs.h) whose sink writes SSE fields
 * into the exchange's streamed response.
 *
 *   an event:     id: <position, or version for one stream>  data: <the event's JSON>
 *   caught up:    event: caught_up   data: {"position":N} or {"version":V}
 *   a checkpoint: event: checkpoint  id: <position>  data: {"position":N}
 *   a heartbeat:  ": heartbeat" (a comment), every SSE_HEARTBEAT_MS
 *   a failure:    event: failed      data: {"error":"...","code":"INTERNAL"}, then the end
 *
 * Not "event: error": EventSource hands that name to onerror, which also
 * reports a lost connection.
 *
 * Events carry no event: field, so a browser's EventSource hands them to
 * onmessage; its Last-Event-ID on reconnect resumes after the id.
 */
#include "api.pb-c.h"
#include "http.h"
#include "json.h"
#include "server.h"
#include "subs.h"
#include "unpack.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sse {
  struct tp_sub sub;               /* first: the hub hands it back */
  struct tp_http_exchange *ex;
  struct tp_sse_request request;   /* owns the filter's names */
  char stream[STORE_MAX_STREAM_NAME + 1];
  struct tp_buf text;              /* the event being written */
};

static struct sse *sse_of(struct tp_sub *sub) { return (struct sse *)sub; }

/* Writes one SSE message; -ENOTCONN once the connection is gone (the hub stops the subscription). */
static int write_text(struct sse *s, const void *text, size_t len) {
  struct tp_http_exchange *ex = s->ex;
  if (ex->conn == NULL)
    return -ENOTCONN;
  return ex->sink->stream_write(ex, text, len) == 0 ? 0 : -ENOMEM;
}

static int sink_event(struct tp_sub *sub, const uint8_t *event, size_t len, uint64_t position,
                      uint32_t version) {
  struct sse *s = sse_of(sub);
  Api__Event *e;
  int rc = tp_unpack_event(event, len, &e);
  if (rc != 0)
    return rc;
  char id[48];
  int n = snprintf(id, sizeof(id), "id: %" PRIu64 "\ndata: ",
                   sub->one_stream ? (uint64_t)version : position);
  s->text.len = 0;
  rc = tp_buf_append(&s->text, id, (size_t)n);
  if (rc == 0)
    rc = tp_json_encode(&e->base, &s->text);
  if (rc == 0)
    rc = tp_buf_append(&s->text, "\n\n", 2);
  api__event__free_unpacked(e, NULL);
  return rc == 0 ? write_text(s, s->text.data, s->text.len) : rc;
}

static int sink_caught_up(struct tp_sub *sub, uint64_t position, uint32_t version) {
  char text[96];
  int n = sub->one_stream
              ? snprintf(text, sizeof(text), "event: caught_up\ndata: {\"version\":%" PRIu32 "}\n\n",
                         version)
              : snprintf(text, sizeof(text), "event: caught_up\ndata: {\"position\":%" PRIu64 "}\n\n",
                         position);
  return write_text(sse_of(sub), text, (size_t)n);
}

static int sink_checkpoint(struct tp_sub *sub, uint64_t position) {
  char text[128];
  int n = snprintf(text, sizeof(text),
                   "event: checkpoint\nid: %" PRIu64 "\ndata: {\"position\":%" PRIu64 "}\n\n",
                   position, position);
  return write_text(sse_of(sub), text, (size_t)n);
}

static int sink_heartbeat(struct tp_sub *sub) {
  static const char beat[] = ": heartbeat\n\n";
  return write_text(sse_of(sub), beat, sizeof(beat) - 1);
}

static size_t sink_unsent(struct tp_sub *sub) {
  struct tp_http_exchange *ex = sse_of(sub)->ex;
  return ex->conn ? ex->sink->stream_unsent(ex) : 0;
}

static void sink_flush(struct tp_sub *sub) {
  struct tp_http_exchange *ex = sse_of(sub)->ex;
  if (ex->conn)
    ex->sink->stream_flush(ex);
}

/* Why a subscription failed, as an HTTP error's JSON; best effort, the stream ends anyway. */
static void write_error(struct sse *s, int status) {
  char message[128];
  snprintf(message, sizeof(message), "the subscription ended: %s", evf_strerror(status));
  s->text.len = 0;
  static const char head[] = "event: failed\ndata: ";
  int rc = tp_buf_append(&s->text, head, sizeof(head) - 1);
  if (rc == 0)
    rc = tp_http_error_json(&s->text, evf_grpc_status_name(evf_err_grpc_status(status)), message);
  if (rc == 0)
    rc = tp_buf_append(&s->text, "\n\n", 2);
  if (rc == 0)
    write_text(s, s->text.data, s->text.len);
}

/*
 * Shutdown or failure: the last chunk; the client reconnects with its
 * Last-Event-ID. A failure says why first (event: failed).
 */
static void sink_end(struct tp_sub *sub, int status) {
  struct sse *s = sse_of(sub);
  struct tp_http_exchange *ex = s->ex;
  if (ex->conn == NULL)
    return;
  if (status != EVF_ESHUTDOWN)
    write_error(s, status);
  ex->sink->stream_end(ex);
}

static const struct tp_sub_sink sse_sink = {
    .event = sink_event,
    .caught_up = sink_caught_up,
    .checkpoint = sink_checkpoint,
    .unsent = sink_unsent,
    .flush = sink_flush,
    .end = sink_end,
    .heartbeat = sink_heartbeat,
};

static void free_names(char **names, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(names[i]);
  free(names);
}

static void free_sse(void *state) {
  struct sse *s = state;
  tp_sub_stop(&s->sub);
  free_names(s->request.types, s->request.n_types);
  free_names(s->request.prefixes, s->request.n_prefixes);
  tp_buf_free(&s->text);
}

static void drained(struct tp_http_exchange *ex) { tp_sub_drained(&((struct sse *)ex->state)->sub); }

static const struct tp_http_header sse_headers[] = {
    {"content-type", "text/event-stream"},
    {"cache-control", "no-cache"},
    {"x-accel-buffering", "no"}, /* nginx: pass events through at once */
};

void tp_http_sse_subscribe(struct tp_http_exchange *ex, struct tp_sse_request *request) {
  struct sse *s = calloc(1, sizeof(*s));
  if (s == NULL) {
    free_names(request->types, request->n_types);
    free_names(request->prefixes, request->n_prefixes);
    tp_http_error(ex, 503, "RESOURCE_EXHAUSTED", "out of memory");
    return;
  }
  s->request = *request; /* the names are ours now */
  ex->state = s;
  ex->free_state = free_sse;
  s->ex = ex;
  int rc = tp_http_stream_start(ex, sse_headers, sizeof(sse_headers) / sizeof(sse_headers[0]));
  if (rc == -ENOTSUP) {
    tp_http_error(ex, 501, "UNIMPLEMENTED",
                  "subscriptions are served over HTTP/1.1 (Server-Sent Events) or gRPC");
    return;
  }
  if (rc != 0) {
    tp_http_error(ex, 503, "RESOURCE_EXHAUSTED", "out of memory");
    return;
  }
  ex->on_drain = drained;
  ex->sink->stream_flush(ex); /* the headers, before any event */
  struct tp_sub *sub = &s->sub;
  sub->sink = &sse_sink;
  sub->transport = TP_METRICS_HTTP;
  sub->one_stream = request->one_stream;
  if (sub->one_stream) {
    snprintf(s->stream, sizeof(s->stream), "%s", request->stream);
    sub->stream = s->stream;
    sub->next_version = request->version;
  } else {
    sub->position = request->offset;
    sub->filter = (struct tp_sub_filter){.types = s->request.types,
                                         .n_types = s->request.n_types,
                                         .prefixes = s->request.prefixes,
                                         .n_prefixes = s->request.n_prefixes};
    sub->checkpoint_every = request->checkpoint_interval;
  }
  tp_sub_start(&ex->server->hub, sub); /* may end it at once (shutdown): ex is gone then */
}
