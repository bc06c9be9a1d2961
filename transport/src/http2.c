/* HTTP/2 streams as HTTP exchanges for the JSON API. */
#include "http2.h"

#include "http.h"
#include "server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct h2_exchange {
  struct tp_h2_stream h2;        /* first: the connection's handle */
  struct tp_http_exchange *ex;
  struct tp_buf response;
  size_t sent;
  bool too_large;
};

static void respond(struct tp_http_exchange *ex, int status, const struct tp_http_header *headers,
                    size_t count, struct tp_buf *body);
static bool usable(const struct tp_http_exchange *ex) {
  const struct h2_exchange *s = ex->conn;
  return s->h2.conn != NULL && tp_conn_usable(s->h2.conn);
}

static const struct tp_http_sink h2_sink = {.respond = respond, .usable = usable};

static struct tp_h2_stream *open_stream(struct tp_conn *conn) {
  struct h2_exchange *s = calloc(1, sizeof(*s));
  if (s == NULL)
    return NULL;
  s->ex = tp_http_exchange_create(tp_conn_server(conn), &h2_sink, s);
  if (s->ex == NULL) {
    free(s);
    return NULL;
  }
  return &s->h2;
}

static bool name_is(const uint8_t *name, size_t len, const char *want) {
  return len == strlen(want) && memcmp(name, want, len) == 0;
}

static void on_header(struct tp_h2_stream *stream, const uint8_t *name, size_t namelen,
                      const uint8_t *value, size_t valuelen) {
  struct h2_exchange *s = (struct h2_exchange *)stream;
  if (name_is(name, namelen, ":method"))
    snprintf(s->ex->method, sizeof(s->ex->method), "%.*s", (int)valuelen, (const char *)value);
  else if (name_is(name, namelen, ":path"))
    tp_buf_append(&s->ex->target, value, valuelen);
}

static void on_headers_end(struct tp_h2_stream *stream) {
  struct h2_exchange *s = (struct h2_exchange *)stream;
  if (stream->headers_too_large)
    tp_http_error(s->ex, 431, "RESOURCE_EXHAUSTED", "request headers exceed %d bytes",
                  TP_H2_MAX_HEADER_LIST);
}

static void on_data(struct tp_h2_stream *stream, const uint8_t *data, size_t len) {
  struct h2_exchange *s = (struct h2_exchange *)stream;
  if (s->too_large || s->ex->answered)
    return;
  if (s->ex->body.len + len > s->ex->server->config->max_message_size) {
    s->too_large = true;
    tp_http_error(s->ex, 413, "RESOURCE_EXHAUSTED",
                  "the request body exceeds MAX_MESSAGE_SIZE (%llu bytes)",
                  (unsigned long long)s->ex->server->config->max_message_size);
    return;
  }
  tp_buf_append(&s->ex->body, data, len);
}

static void handle(struct tp_h2_stream *stream) {
  struct h2_exchange *s = (struct h2_exchange *)stream;
  if (!s->ex->answered)
    tp_http_api_route(s->ex);
}

/* Complete requests wait while the connection holds too many response bytes. */
static void on_request_end(struct tp_h2_stream *stream) {
  if (tp_conn_congested(stream->conn))
    tp_conn_defer(stream->conn, stream);
  else
    handle(stream);
}

static void on_close(struct tp_h2_stream *stream, struct tp_conn *conn) {
  struct h2_exchange *s = (struct h2_exchange *)stream;
  tp_conn_count_response(conn, -(ssize_t)(s->response.len - s->sent));
  tp_http_exchange_release(s->ex);
  tp_buf_free(&s->response);
  free(s);
}

static ssize_t read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *user) {
  struct h2_exchange *s = source->ptr;
  (void)session;
  (void)stream_id;
  (void)user;
  size_t left = s->response.len - s->sent, n = left < length ? left : length;
  memcpy(buf, s->response.data + s->sent, n);
  s->sent += n;
  tp_conn_count_response(s->h2.conn, -(ssize_t)n);
  if (s->sent == s->response.len)
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

#define MAX_HEADERS 8

static void respond(struct tp_http_exchange *ex, int status, const struct tp_http_header *headers,
                    size_t count, struct tp_buf *body) {
  struct h2_exchange *s = ex->conn;
  struct tp_conn *conn = s->h2.conn;
  char status_text[8], length[24];
  snprintf(status_text, sizeof(status_text), "%d", status);
  snprintf(length, sizeof(length), "%zu", body->len);
  nghttp2_nv nv[MAX_HEADERS + 2];
  size_t n = 0;
  nv[n++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status_text, 7, strlen(status_text), 0};
  nv[n++] = (nghttp2_nv){(uint8_t *)"content-length", (uint8_t *)length, 14, strlen(length), 0};
  for (size_t i = 0; i < count && i < MAX_HEADERS; i++)
    nv[n++] = (nghttp2_nv){(uint8_t *)headers[i].name, (uint8_t *)headers[i].value,
                           strlen(headers[i].name), strlen(headers[i].value), 0};
  struct tp_buf tmp = s->response;
  s->response = *body;
  *body = tmp;
  body->len = 0;
  tp_conn_count_response(conn, (ssize_t)s->response.len);
  nghttp2_data_provider provider = {.source.ptr = s, .read_callback = read_body};
  /* One nghttp2 would not take (out of memory) must not leave the stream unanswered. */
  if (nghttp2_submit_response(tp_conn_session(conn), s->h2.id, nv, n,
                              s->response.len > 0 ? &provider : NULL) != 0)
    tp_conn_fail(conn);
  tp_conn_flush(conn);
}

const struct tp_h2_protocol tp_http2_protocol = {
    .transport = TP_METRICS_HTTP,
    .open = open_stream,
    .header = on_header,
    .headers_end = on_headers_end,
    .data = on_data,
    .request_end = on_request_end,
    .close = on_close,
    .resume = handle,
};
