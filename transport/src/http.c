/* HTTP exchanges: lifetime, and the error body shared by every route. */
#include "http.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evf/clock.h"
#include "evf/utf8.h"
#include "server.h"

struct tp_http_exchange *tp_http_exchange_create(struct tp_server *server,
                                                 const struct tp_http_sink *sink, void *conn) {
  struct tp_http_exchange *ex = calloc(1, sizeof(*ex));
  if (ex == NULL)
    return NULL;
  ex->server = server;
  ex->sink = sink;
  ex->conn = conn;
  ex->started_ns = evf_monotonic_ns();
  ex->route = TP_METRICS_ROUTE_UNKNOWN;
  return ex;
}

static void maybe_free(struct tp_http_exchange *ex) {
  if (ex->conn != NULL || ex->held)
    return;
  if (ex->free_state)
    ex->free_state(ex->state);
  free(ex->state);
  tp_buf_free(&ex->target);
  tp_buf_free(&ex->body);
  free(ex);
}

void tp_http_exchange_release(struct tp_http_exchange *ex) {
  ex->conn = NULL;
  maybe_free(ex);
}

void tp_http_hold(struct tp_http_exchange *ex) { ex->held = true; }

void tp_http_unhold(struct tp_http_exchange *ex) {
  ex->held = false;
  maybe_free(ex);
}

bool tp_http_open(const struct tp_http_exchange *ex) {
  return ex->conn != NULL && !ex->answered && (ex->sink->usable == NULL || ex->sink->usable(ex));
}

void tp_http_respond(struct tp_http_exchange *ex, int status, const struct tp_http_header *headers,
                     size_t header_count, struct tp_buf *body) {
  if (!tp_http_open(ex))
    return;
  ex->answered = true;
  tp_metrics_http_request(&ex->server->metrics, (enum tp_metrics_route)ex->route, status,
                          evf_monotonic_ns() - ex->started_ns);
  struct tp_buf empty = {0};
  ex->sink->respond(ex, status, headers, header_count, body ? body : &empty);
  tp_buf_free(&empty);
}

int tp_http_stream_start(struct tp_http_exchange *ex, const struct tp_http_header *headers,
                         size_t header_count) {
  if (!tp_http_open(ex))
    return -ENOTSUP;
  if (ex->sink->stream_start == NULL)
    return -ENOTSUP;
  int rc = ex->sink->stream_start(ex, headers, header_count);
  if (rc == 0) {
    ex->answered = true;
    tp_metrics_http_request(&ex->server->metrics, (enum tp_metrics_route)ex->route, 200,
                            evf_monotonic_ns() - ex->started_ns);
  }
  return rc;
}

/*
 * A JSON string: escapes quotes, backslashes and control characters, and
 * writes each byte that begins no well-formed UTF-8 character as U+FFFD (a
 * message may quote what the client sent).
 */
static int append_json_string(struct tp_buf *b, const char *s) {
  size_t len = strlen(s);
  int rc = tp_buf_append(b, "\"", 1);
  for (size_t i = 0; rc == 0 && i < len;) {
    unsigned char c = (unsigned char)s[i];
    size_t n = evf_utf8_char_len(s + i, len - i);
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      rc = tp_buf_append(b, esc, 2);
    } else if (c < 0x20) {
      snprintf(esc, sizeof(esc), "\\u%04x", c);
      rc = tp_buf_append(b, esc, 6);
    } else if (n == 0) {
      rc = tp_buf_append(b, "\\ufffd", 6);
    } else {
      rc = tp_buf_append(b, s + i, n);
    }
    i += n ? n : 1;
  }
  return rc ? rc : tp_buf_append(b, "\"", 1);
}

int tp_http_error_json(struct tp_buf *out, const char *code_name, const char *message) {
  size_t before = out->len;
  int rc = tp_buf_append(out, "{\"error\":", 9);
  if (rc == 0)
    rc = append_json_string(out, message);
  if (rc == 0)
    rc = tp_buf_append(out, ",\"code\":", 8);
  if (rc == 0)
    rc = append_json_string(out, code_name);
  if (rc == 0)
    rc = tp_buf_append(out, "}", 1);
  if (rc != 0)
    out->len = before; /* no half JSON */
  return rc;
}

void tp_http_error(struct tp_http_exchange *ex, int status, const char *code_name,
                   const char *fmt, ...) {
  char message[512];
  va_list args;
  va_start(args, fmt);
  int n = vsnprintf(message, sizeof(message), fmt, args);
  va_end(args);
  if (n >= (int)sizeof(message))
    message[evf_utf8_cut(message, sizeof(message) - 1)] = '\0'; /* cut between characters */
  struct tp_buf body = {0};
  tp_http_error_json(&body, code_name, message);
  static const struct tp_http_header json[] = {{"content-type", "application/json"}};
  tp_http_respond(ex, status, json, 1, &body);
  tp_buf_free(&body);
}

const char *tp_http_reason(int status) {
  switch (status) {
  case 200: return "OK";
  case 400: return "Bad Request";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 408: return "Request Timeout";
  case 409: return "Conflict";
  case 413: return "Payload Too Large";
  case 414: return "URI Too Long";
  case 431: return "Request Header Fields Too Large";
  case 500: return "Internal Server Error";
  case 501: return "Not Implemented";
  case 503: return "Service Unavailable";
  case 505: return "HTTP Version Not Supported";
  case 507: return "Insufficient Storage";
  }
  return "Unknown";
}
