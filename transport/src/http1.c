/* HTTP/1.1 connections on libuv with http-parser. */
#include "http1.h"

#include "evf/log.h"
#include "h2.h"
#include "http2.h"
#include "server.h"

#include <errno.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Unparsed input or unwritten output beyond this stops reading from the peer. */
#define INPUT_HIGH (1u << 20)
#define OUTPUT_HIGH (1u << 20)

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/* How far the request being read has come; the timeouts of sweep_cb follow it. */
enum phase {
  PHASE_IDLE,                   /* between requests */
  PHASE_HEAD,                   /* its first bytes came, not all its head */
  PHASE_BODY,                   /* its head came, not all its body */
};

struct tp_h1_conn {
  uv_tcp_t tcp;
  struct tp_server *server;
  tp_http_router router;
  bool h2c;
  bool sniffed;                 /* the first bytes were checked for the HTTP/2 preface */
  http_parser parser;
  struct tp_buf input;          /* read, not yet parsed */
  size_t input_used;
  bool parsing;                 /* inside http_parser_execute */
  bool waiting;                 /* the parser is paused after a complete request */
  bool answering;               /* the current request is complete and not yet answered */
  enum phase phase;
  uint64_t since;               /* loop time (ms) the connection last moved: see sweep_cb */
  struct tp_http_exchange *current;
  /* The header field being received, in pieces; only short ones matter here. */
  char header_name[32];
  size_t header_name_len;       /* the whole name's length, even past the room kept */
  char header_value[32];
  size_t header_value_len;      /* likewise */
  bool in_header_value;
  bool expect_continue;
  bool too_large;
  bool out_of_memory;           /* a parser callback could not allocate */
  struct tp_buf out;            /* responses not yet handed to uv_write */
  struct tp_buf writing;
  uv_write_t write_req;
  bool write_in_flight;
  bool reading;
  bool eof;                     /* the peer sends no more (it may still read) */
  bool close_after_write;
  bool closing;
  bool streaming;               /* the current exchange streams its response (chunked) */
  struct tp_h1_conn *prev, *next;
};

static void process_input(struct tp_h1_conn *c);
static void start_reading(struct tp_h1_conn *c);
static void sweep_cb(uv_timer_t *timer);

static void moved(struct tp_h1_conn *c) { c->since = uv_now(c->tcp.loop); }

/* ---- the server's list ---- */

static void adopt(struct tp_server *server, struct tp_h1_conn *c) {
  c->next = server->http_conns;
  if (server->http_conns)
    server->http_conns->prev = c;
  server->http_conns = c;
  if (server->http_conn_count++ == 0)
    uv_timer_start(&server->http_sweep, sweep_cb, server->http_sweep_ms, server->http_sweep_ms);
  tp_metrics_connections(&server->metrics, TP_METRICS_HTTP, 1);
}

static void forget(struct tp_server *server, struct tp_h1_conn *c) {
  if (c->prev)
    c->prev->next = c->next;
  else
    server->http_conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  if (--server->http_conn_count == 0)
    uv_timer_stop(&server->http_sweep);
  tp_metrics_connections(&server->metrics, TP_METRICS_HTTP, -1);
  tp_server__conn_gone(server);
}

/* ---- closing and writing ---- */

static void closed_cb(uv_handle_t *handle) {
  struct tp_h1_conn *c = handle->data;
  forget(c->server, c);
  tp_buf_free(&c->input);
  tp_buf_free(&c->out);
  tp_buf_free(&c->writing);
  free(c);
}

static void close_conn(struct tp_h1_conn *c) {
  if (c->closing)
    return;
  c->closing = true;
  if (c->current) {
    tp_http_exchange_release(c->current); /* a pending append finds no one to answer */
    c->current = NULL;
  }
  c->streaming = false;
  uv_close((uv_handle_t *)&c->tcp, closed_cb);
}

static void write_cb(uv_write_t *req, int status);

static void flush(struct tp_h1_conn *c) {
  if (c->closing || c->write_in_flight)
    return;
  if (c->out.len == 0) {
    /* Close only once nothing is left to answer: a pending append answers later. */
    if (c->close_after_write && !c->answering)
      close_conn(c);
    return;
  }
  struct tp_buf tmp = c->writing;
  c->writing = c->out;
  c->out = tmp;
  c->out.len = 0;
  uv_buf_t buf = uv_buf_init((char *)c->writing.data, (unsigned)c->writing.len);
  c->write_req.data = c;
  if (uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &buf, 1, write_cb) != 0) {
    close_conn(c);
    return;
  }
  c->write_in_flight = true;
}

static void write_cb(uv_write_t *req, int status) {
  struct tp_h1_conn *c = req->data;
  c->write_in_flight = false;
  c->writing.len = 0;
  if (status != 0) {
    close_conn(c);
    return;
  }
  if (c->phase == PHASE_IDLE)
    moved(c); /* a client reading its answers is not idle; a request's clock is its own */
  flush(c);
  if (c->streaming && c->current != NULL && c->current->on_drain)
    c->current->on_drain(c->current);
  process_input(c); /* output drained: pipelined requests may go on */
}

/* ---- responses ---- */

static int append_head(struct tp_buf *out, int status, const struct tp_http_header *headers,
                       size_t count, size_t body_len, bool close) {
  char line[256];
  int n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\ncontent-length: %zu\r\n%s", status,
                   tp_http_reason(status), body_len, close ? "connection: close\r\n" : "");
  int rc = tp_buf_append(out, line, (size_t)n);
  for (size_t i = 0; rc == 0 && i < count; i++) {
    n = snprintf(line, sizeof(line), "%s: %s\r\n", headers[i].name, headers[i].value);
    rc = tp_buf_append(out, line, (size_t)n);
  }
  return rc ? rc : tp_buf_append(out, "\r\n", 2);
}

static void respond(struct tp_http_exchange *ex, int status, const struct tp_http_header *headers,
                    size_t count, struct tp_buf *body) {
  struct tp_h1_conn *c = ex->conn;
  bool close = c->close_after_write || c->server->stopping;
  if (append_head(&c->out, status, headers, count, body->len, close) != 0 ||
      tp_buf_append(&c->out, body->data, body->len) != 0) {
    close_conn(c);
    return;
  }
  body->len = 0;
  if (close)
    c->close_after_write = true;
  if (c->current == ex) {
    c->current = NULL;
    c->answering = false;
    moved(c);
    tp_http_exchange_release(ex);
  }
  flush(c);
  if (!c->parsing && c->waiting)
    process_input(c);
}

/* ---- streamed responses: chunked, the connection's last ---- */

static int stream_start(struct tp_http_exchange *ex, const struct tp_http_header *headers,
                        size_t count) {
  struct tp_h1_conn *c = ex->conn;
  size_t before = c->out.len;
  static const char head[] = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n";
  int rc = tp_buf_append(&c->out, head, sizeof(head) - 1);
  for (size_t i = 0; rc == 0 && i < count; i++) {
    char line[256];
    int n = snprintf(line, sizeof(line), "%s: %s\r\n", headers[i].name, headers[i].value);
    rc = tp_buf_append(&c->out, line, (size_t)n);
  }
  if (rc == 0)
    rc = tp_buf_append(&c->out, "\r\n", 2);
  if (rc == 0)
    c->streaming = true;
  else
    c->out.len = before; /* no half head: the error response that follows must stand alone */
  return rc;
}

static int stream_write(struct tp_http_exchange *ex, const void *data, size_t len) {
  struct tp_h1_conn *c = ex->conn;
  size_t before = c->out.len;
  char size[24];
  int n = snprintf(size, sizeof(size), "%zx\r\n", len);
  int rc = tp_buf_append(&c->out, size, (size_t)n);
  if (rc == 0)
    rc = tp_buf_append(&c->out, data, len);
  if (rc == 0)
    rc = tp_buf_append(&c->out, "\r\n", 2);
  if (rc != 0)
    c->out.len = before; /* no half chunk: the last chunk may still follow */
  return rc;
}

static size_t stream_unsent(struct tp_http_exchange *ex) {
  struct tp_h1_conn *c = ex->conn;
  return c->out.len + c->writing.len;
}

static void stream_flush(struct tp_http_exchange *ex) { flush(ex->conn); }

/* The last chunk; the connection closes once it is written (it may have unread requests). */
static void stream_end(struct tp_http_exchange *ex) {
  struct tp_h1_conn *c = ex->conn;
  if (tp_buf_append(&c->out, "0\r\n\r\n", 5) != 0) {
    close_conn(c);
    return;
  }
  c->streaming = false;
  c->close_after_write = true;
  c->current = NULL;
  c->answering = false;
  moved(c);
  tp_http_exchange_release(ex);
  flush(c);
}

static const struct tp_http_sink h1_sink = {
    .respond = respond,
    .stream_start = stream_start,
    .stream_write = stream_write,
    .stream_unsent = stream_unsent,
    .stream_flush = stream_flush,
    .stream_end = stream_end,
};

/* A request the parser refused: answer it, then close. */
static void fail_request(struct tp_h1_conn *c, int status, const char *code,
                         const char *message) {
  c->close_after_write = true;
  if (c->current == NULL)
    c->current = tp_http_exchange_create(c->server, &h1_sink, c);
  if (c->current == NULL) {
    close_conn(c);
    return;
  }
  tp_http_error(c->current, status, code, "%s", message);
}

/* ---- http-parser callbacks ---- */

/* An allocation failed: the parser stops, and the request gets a 503, not a 400 that blames it. */
static int out_of_memory(struct tp_h1_conn *c) {
  c->out_of_memory = true;
  return -1;
}

static void header_reset(struct tp_h1_conn *c) {
  c->header_name_len = c->header_value_len = 0;
  c->in_header_value = false;
}

static int on_message_begin(http_parser *p) {
  struct tp_h1_conn *c = p->data;
  c->current = tp_http_exchange_create(c->server, &h1_sink, c);
  c->expect_continue = false;
  c->phase = PHASE_HEAD;
  moved(c);
  header_reset(c);
  return c->current ? 0 : out_of_memory(c);
}

static int on_url(http_parser *p, const char *at, size_t len) {
  struct tp_h1_conn *c = p->data;
  return tp_buf_append(&c->current->target, at, len) == 0 ? 0 : out_of_memory(c);
}

/* Keeps a piece of a name or value: as much as room allows, and counts the rest. */
static void header_piece(char *room, size_t room_size, size_t *len, const char *at, size_t n) {
  if (*len < room_size)
    memcpy(room + *len, at, n < room_size - *len ? n : room_size - *len);
  *len += n;
}

static bool header_name_is(const struct tp_h1_conn *c, const char *name) {
  size_t n = strlen(name);
  return c->header_name_len == n && strncasecmp(c->header_name, name, n) == 0;
}

/* The Last-Event-ID header's value (len bytes of header_value) into the exchange. */
static void take_last_event_id(struct tp_h1_conn *c, size_t len) {
  char *id = c->current->last_event_id;
  size_t room = sizeof(c->current->last_event_id);
  /* Too long for any id: cut short it might pass for another one, and "-" is none. */
  if (len >= room || len > sizeof(c->header_value))
    snprintf(id, room, "-");
  else
    snprintf(id, room, "%.*s", (int)len, c->header_value);
}

/* Acts on a whole header field: http-parser hands names and values over in pieces. */
static void header_done(struct tp_h1_conn *c) {
  size_t len = c->header_value_len;
  /* Trailing whitespace is not part of the value (RFC 9110, 5.5); a longer value is not kept. */
  while (len > 0 && len <= sizeof(c->header_value) &&
         (c->header_value[len - 1] == ' ' || c->header_value[len - 1] == '\t'))
    len--;
  if (header_name_is(c, "expect") && len == 12 &&
      strncasecmp(c->header_value, "100-continue", 12) == 0)
    c->expect_continue = true;
  if (header_name_is(c, "last-event-id"))
    take_last_event_id(c, len);
  header_reset(c);
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  struct tp_h1_conn *c = p->data;
  if (c->in_header_value)
    header_done(c); /* a new field begins: the previous one is whole */
  header_piece(c->header_name, sizeof(c->header_name), &c->header_name_len, at, len);
  return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len) {
  struct tp_h1_conn *c = p->data;
  c->in_header_value = true;
  header_piece(c->header_value, sizeof(c->header_value), &c->header_value_len, at, len);
  return 0;
}

static int on_headers_complete(http_parser *p) {
  struct tp_h1_conn *c = p->data;
  struct tp_http_exchange *ex = c->current;
  if (c->in_header_value)
    header_done(c);
  c->phase = PHASE_BODY;
  moved(c);
  snprintf(ex->method, sizeof(ex->method), "%s", http_method_str((enum http_method)p->method));
  if ((p->flags & F_CONTENTLENGTH) && p->content_length > c->server->config->max_message_size) {
    c->too_large = true;
    return -1;
  }
  if (c->expect_continue && tp_buf_append(&c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25) != 0)
    return out_of_memory(c);
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  struct tp_h1_conn *c = p->data;
  if (c->current->body.len + len > c->server->config->max_message_size) {
    c->too_large = true;
    return -1;
  }
  moved(c); /* a body that comes slowly still comes */
  return tp_buf_append(&c->current->body, at, len) == 0 ? 0 : out_of_memory(c);
}

static int on_message_complete(http_parser *p) {
  struct tp_h1_conn *c = p->data;
  if (!http_should_keep_alive(p))
    c->close_after_write = true;
  /* One request at a time: the parser waits until this one is answered. */
  http_parser_pause(p, 1);
  c->phase = PHASE_IDLE;
  c->answering = true;
  c->router(c->current);
  return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void parse_failed(struct tp_h1_conn *c) {
  enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
  if (c->out_of_memory) {
    fail_request(c, 503, "RESOURCE_EXHAUSTED", "out of memory");
  } else if (c->too_large) {
    char message[128];
    snprintf(message, sizeof(message), "the request body exceeds MAX_MESSAGE_SIZE (%llu bytes)",
             (unsigned long long)c->server->config->max_message_size);
    fail_request(c, 413, "RESOURCE_EXHAUSTED", message);
  } else if (err == HPE_HEADER_OVERFLOW) {
    fail_request(c, 431, "RESOURCE_EXHAUSTED", "the request line and headers exceed 80 KiB");
  } else {
    char message[160];
    snprintf(message, sizeof(message), "malformed HTTP/1.1 request: %s",
             http_errno_description(err));
    fail_request(c, 400, "INVALID_ARGUMENT", message);
  }
}

/* Parses what waits, unless a response or a slow reader holds it back. */
static void process_input(struct tp_h1_conn *c) {
  while (!c->closing && !c->close_after_write && c->input_used < c->input.len &&
         !c->answering && c->out.len + c->writing.len < OUTPUT_HIGH) {
    if (c->waiting) {
      c->waiting = false;
      http_parser_pause(&c->parser, 0);
    }
    c->parsing = true;
    size_t n = http_parser_execute(&c->parser, &settings, (const char *)c->input.data + c->input_used,
                                   c->input.len - c->input_used);
    c->parsing = false;
    c->input_used += n;
    enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);
    if (err == HPE_PAUSED)
      c->waiting = true;
    else if (err != HPE_OK)
      parse_failed(c);
  }
  if (c->input_used == c->input.len) {
    c->input.len = c->input_used = 0;
  } else if (c->input_used > 64 * 1024) {
    /* Keep only what waits, or a client always one request ahead grows the buffer forever. */
    memmove(c->input.data, c->input.data + c->input_used, c->input.len - c->input_used);
    c->input.len -= c->input_used;
    c->input_used = 0;
  }
  if (c->waiting && !c->answering && !c->closing && !c->close_after_write) {
    c->waiting = false;
    http_parser_pause(&c->parser, 0);
  }
  /* After the peer's half-close every whole request is answered: nothing more can come. */
  if (c->eof && !c->answering && c->input_used == c->input.len)
    c->close_after_write = true;
  if (!c->closing && !c->eof && !c->reading && c->input.len - c->input_used < INPUT_HIGH)
    start_reading(c);
  flush(c);
}

/* ---- reading ---- */

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  struct tp_h1_conn *c = handle->data;
  (void)suggested;
  *buf = tp_server__read_buffer(c->server);
}

/*
 * A connection that opens with the HTTP/2 preface becomes an HTTP/2 one
 * (h2c with prior knowledge). "PRI" tells it from every HTTP/1.1 method.
 * Returns true once the connection is handed over (or closed).
 */
static bool switch_to_h2(struct tp_h1_conn *c) {
  const char *data = (const char *)c->input.data;
  size_t len = c->input.len, n = len < sizeof(h2_preface) - 1 ? len : sizeof(h2_preface) - 1;
  if (memcmp(data, h2_preface, n) != 0)
    return false;
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0 || (fd = dup(fd)) < 0) {
    close_conn(c);
    return true;
  }
  tp_conn_adopt(c->server, fd, &tp_http2_protocol, c->input.data, len);
  close_conn(c);
  return true;
}

/*
 * A half-close ends the requests, not the answers: those already read are
 * answered (an append the store is writing too), then the connection closes.
 * A subscriber that half-closes has left: its stream would never end.
 */
static void end_of_input(struct tp_h1_conn *c) {
  uv_read_stop((uv_stream_t *)&c->tcp);
  c->reading = false;
  c->eof = true;
  if (c->streaming)
    close_conn(c);
  else
    process_input(c);
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  struct tp_h1_conn *c = stream->data;
  if (nread == UV_EOF) {
    end_of_input(c);
    return;
  }
  if (nread < 0) {
    close_conn(c);
    return;
  }
  if (nread == 0)
    return;
  if (tp_buf_append(&c->input, buf->base, (size_t)nread) != 0) {
    close_conn(c);
    return;
  }
  if (!c->sniffed && c->h2c) {
    if (c->input.len < 3 && memcmp(c->input.data, h2_preface, c->input.len) == 0)
      return; /* too short to tell yet */
    c->sniffed = true;
    if (switch_to_h2(c))
      return;
  }
  if (c->input.len - c->input_used >= INPUT_HIGH) {
    uv_read_stop(stream); /* the peer sends faster than we answer */
    c->reading = false;
  }
  process_input(c);
}

static void start_reading(struct tp_h1_conn *c) {
  if (uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb) == 0)
    c->reading = true;
}

int tp_h1_accept(struct tp_server *server, uv_stream_t *listener, tp_http_router router,
                  bool h2c) {
  struct tp_h1_conn *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return -ENOMEM;
  c->server = server;
  c->router = router;
  c->h2c = h2c;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  uv_tcp_init(listener->loop, &c->tcp);
  c->tcp.data = c;
  adopt(server, c);
  if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0) {
    close_conn(c);
    return 0;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  moved(c);
  start_reading(c);
  return 0;
}

/* ---- timeouts ---- */

static void request_timed_out(struct tp_h1_conn *c, unsigned ms) {
  char message[128];
  if (c->phase == PHASE_HEAD)
    snprintf(message, sizeof(message), "the request's head did not arrive whole within %u ms", ms);
  else
    snprintf(message, sizeof(message), "the request's body stalled for %u ms", ms);
  fail_request(c, 408, "DEADLINE_EXCEEDED", message);
}

/*
 * A client may take HTTP_REQUEST_TIMEOUT_MS to send a request's head, and
 * let its body stall as long; it may wait HTTP_IDLE_TIMEOUT_MS before its
 * next request, or while it does not read an answer (the close too waits
 * for that). A connection that owes its client an answer (an append in
 * the store, a subscription's stream) waits for no client: no timeout.
 */
static void check_timeouts(struct tp_h1_conn *c, uint64_t now) {
  const struct evf_config *config = c->server->config;
  if (c->closing || c->answering)
    return;
  uint64_t waited = now - c->since;
  if (c->phase != PHASE_IDLE && !c->close_after_write) {
    if (waited >= config->http_request_timeout_ms)
      request_timed_out(c, config->http_request_timeout_ms);
  } else if (waited >= config->http_idle_timeout_ms) {
    close_conn(c);
  }
}

/*
 * One timer per loop, not one per request: while the loop has HTTP/1.1
 * connections it looks at each now and then, and the request path only
 * notes the loop's time when a connection moves.
 */
static void sweep_cb(uv_timer_t *timer) {
  struct tp_server *server = timer->data;
  uint64_t now = uv_now(timer->loop);
  struct tp_h1_conn *next;
  for (struct tp_h1_conn *c = server->http_conns; c; c = next) {
    next = c->next; /* a closed connection is freed later, in its close callback */
    check_timeouts(c, now);
  }
}

void tp_h1_server_init(struct tp_server *server) {
  const struct evf_config *config = server->config;
  unsigned shortest = config->http_request_timeout_ms < config->http_idle_timeout_ms
                          ? config->http_request_timeout_ms
                          : config->http_idle_timeout_ms;
  /* A timeout is noticed within a quarter of itself, or a second. */
  server->http_sweep_ms = shortest / 4 < 1000 ? shortest / 4 : 1000;
  uv_timer_init(server->loop, &server->http_sweep);
  server->http_sweep.data = server;
}

void tp_h1_server_close(struct tp_server *server) {
  uv_close((uv_handle_t *)&server->http_sweep, NULL);
}

void tp_h1_drain_all(struct tp_server *server) {
  struct tp_h1_conn *next;
  for (struct tp_h1_conn *c = server->http_conns; c; c = next) {
    next = c->next;
    /* Idle connections close once their output is out; a request in progress
     * is answered (the response closes the connection: server->stopping). */
    if (c->current == NULL) {
      c->close_after_write = true;
      flush(c);
    }
  }
}

void tp_h1_close_all(struct tp_server *server) {
  struct tp_h1_conn *next;
  for (struct tp_h1_conn *c = server->http_conns; c; c = next) {
    next = c->next;
    close_conn(c);
  }
}
