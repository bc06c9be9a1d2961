/* HTTP/1.1 client connections: one keep-alive request at a time. */
#define _GNU_SOURCE /* memmem, strncasecmp */
#include "http_conn.h"

#include "dial.h"
#include "evf/clock.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define READ_BUFFER (256 * 1024)

enum response_state { RESP_HEAD, RESP_BODY, RESP_DONE };

struct lg_http_conn {
  uv_loop_t *loop;
  uv_tcp_t tcp;
  struct lg_dial dial;
  uv_write_t write_req;
  struct lg_conn_events ev;
  struct lg_call *call;         /* the request in flight */
  uint64_t timeout_ns;
  unsigned handles_open;
  bool connected;
  bool write_done;
  bool failed;
  bool torn_down;
  bool released;
  bool close_after;             /* the response said Connection: close */
  enum response_state state;
  uint64_t body_left;
  struct lg_json_scan scan;
  size_t rlen;                  /* bytes in rbuf not consumed yet */
  char fail_reason[160];
  char authority[262];
  uint8_t rbuf[READ_BUFFER];
};

static void teardown(struct lg_http_conn *c);

static void fail(struct lg_http_conn *c, const char *fmt, ...) {
  if (!c->failed) {
    c->failed = true;
    va_list args;
    va_start(args, fmt);
    vsnprintf(c->fail_reason, sizeof(c->fail_reason), fmt, args);
    va_end(args);
    if (!c->released && c->ev.failed)
      c->ev.failed(c->ev.data, c->fail_reason);
  }
  teardown(c);
}

static void maybe_free(struct lg_http_conn *c) {
  if (c->released && c->torn_down && c->handles_open == 0)
    free(c);
}

static void handle_closed_cb(uv_handle_t *h) {
  struct lg_http_conn *c = h->data;
  c->handles_open--;
  maybe_free(c);
}

static void teardown(struct lg_http_conn *c) {
  if (c->torn_down)
    return;
  c->torn_down = true;
  c->failed = true;
  struct lg_call *call = c->call;
  c->call = NULL;
  uv_close((uv_handle_t *)&c->tcp, handle_closed_cb);
  lg_dial_close(&c->dial, handle_closed_cb);
  if (call != NULL) {
    call->reply.kind = call->timed_out ? LG_REPLY_TIMEOUT : LG_REPLY_CLOSED;
    snprintf(call->reply.message, sizeof(call->reply.message), "%s",
             c->fail_reason[0] ? c->fail_reason : "connection closed");
    call->cb(call);
  }
}

void lg_http_conn_close(struct lg_http_conn *c) {
  c->released = true;
  if (!c->failed)
    snprintf(c->fail_reason, sizeof(c->fail_reason), "connection closed by the client");
  teardown(c);
  maybe_free(c);
}

size_t lg_http_conn_inflight(const struct lg_http_conn *c) { return c->call != NULL; }

/* The request was written and its response read: hand it back. */
static void finish(struct lg_http_conn *c) {
  if (c->call == NULL || !c->write_done || c->state != RESP_DONE)
    return;
  struct lg_call *call = c->call;
  c->call = NULL;
  c->state = RESP_HEAD;
  call->reply.kind = LG_REPLY_HTTP;
  call->reply.count = c->scan.count;
  call->reply.checkpoint = c->scan.checkpoint;
  call->reply.has_checkpoint = c->scan.has_checkpoint;
  call->cb(call);
  if (c->close_after && !c->failed)
    fail(c, "the server closed the connection (Connection: close)");
}

static void consume(struct lg_http_conn *c, size_t n) {
  memmove(c->rbuf, c->rbuf + n, c->rlen - n);
  c->rlen -= n;
}

/* Parses a complete response head of len bytes (ending with the blank line). */
static int parse_head(struct lg_http_conn *c, const char *head, size_t len) {
  struct lg_reply *r = &c->call->reply;
  if (len < 12 || strncmp(head, "HTTP/1.", 7) != 0 || head[8] != ' ')
    return -1;
  r->status = (head[9] - '0') * 100 + (head[10] - '0') * 10 + (head[11] - '0');
  if (r->status < 100 || r->status > 599)
    return -1;
  bool has_length = false;
  c->close_after = false;
  const char *end = head + len, *line = memchr(head, '\n', len);
  while (line != NULL && ++line < end) {
    const char *eol = memchr(line, '\n', (size_t)(end - line));
    size_t n = eol ? (size_t)(eol - line) : (size_t)(end - line);
    if (n >= 15 && strncasecmp(line, "content-length:", 15) == 0) {
      c->body_left = strtoull(line + 15, NULL, 10);
      has_length = true;
    } else if (n >= 11 && strncasecmp(line, "connection:", 11) == 0) {
      c->close_after = memmem(line, n, "close", 5) != NULL;
    } else if (n >= 18 && strncasecmp(line, "transfer-encoding:", 18) == 0) {
      return -2;
    }
    line = eol;
  }
  return has_length ? 0 : -2;
}

/* Reads what rbuf holds of the response to the call in flight. */
static void process(struct lg_http_conn *c) {
  while (!c->failed) {
    if (c->call == NULL || c->state == RESP_DONE) {
      if (c->rlen > 0 && c->call == NULL)
        fail(c, "the server sent %zu bytes nobody asked for", c->rlen);
      return;
    }
    if (c->state == RESP_HEAD) {
      const uint8_t *blank = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
      if (blank == NULL) {
        if (c->rlen == sizeof(c->rbuf))
          fail(c, "response head over %zu bytes", sizeof(c->rbuf));
        return;
      }
      size_t head_len = (size_t)(blank - c->rbuf) + 4;
      int rc = parse_head(c, (const char *)c->rbuf, head_len);
      if (rc != 0) {
        fail(c, rc == -1 ? "malformed HTTP response" : "HTTP response without Content-Length");
        return;
      }
      consume(c, head_len);
      memset(&c->scan, 0, sizeof(c->scan));
      c->call->reply.bytes = c->body_left;
      c->state = RESP_BODY;
    }
    size_t avail = c->rlen < c->body_left ? c->rlen : (size_t)c->body_left;
    bool final = avail == c->body_left;
    size_t used = avail;
    if (c->call->reply.status == 200) {
      used = lg_json_scan(&c->scan, c->rbuf, avail, final);
    } else {
      struct lg_reply *r = &c->call->reply;
      size_t have = strlen(r->message), room = sizeof(r->message) - 1 - have;
      size_t k = avail < room ? avail : room;
      memcpy(r->message + have, c->rbuf, k);
      r->message[have + k] = '\0';
    }
    consume(c, used);
    c->body_left -= used;
    if (c->body_left > 0)
      return;
    c->state = RESP_DONE;
    finish(c);
  }
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  struct lg_http_conn *c = h->data;
  *buf = uv_buf_init((char *)c->rbuf + c->rlen, (unsigned)(sizeof(c->rbuf) - c->rlen));
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  (void)buf;
  struct lg_http_conn *c = stream->data;
  if (nread == 0 || c->failed)
    return;
  if (nread < 0) {
    fail(c, nread == UV_EOF ? "the server closed the connection" : "read failed: %s",
         uv_strerror((int)nread));
    return;
  }
  c->rlen += (size_t)nread;
  process(c);
}

static void write_cb(uv_write_t *req, int status) {
  struct lg_http_conn *c = req->data;
  if (c->failed)
    return;
  if (status != 0) {
    fail(c, "write failed: %s", uv_strerror(status));
    return;
  }
  c->write_done = true;
  finish(c);
}

int lg_http_conn_submit(struct lg_http_conn *c, struct lg_call *call) {
  if (c->failed || !c->connected)
    return -ENOTCONN;
  if (c->call != NULL)
    return -EBUSY;
  memset(&call->reply, 0, sizeof(call->reply));
  call->timed_out = false;
  call->submitted_ns = evf_monotonic_ns();
  uv_buf_t buf = uv_buf_init((char *)call->body, (unsigned)call->len);
  c->write_req.data = c;
  int rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &buf, 1, write_cb);
  if (rc != 0)
    return rc;
  c->call = call;
  c->write_done = false;
  c->state = RESP_HEAD;
  return 0;
}

void lg_http_conn_check(struct lg_http_conn *c, uint64_t now) {
  struct lg_call *call = c->call;
  if (c->failed || call == NULL || now <= call->submitted_ns ||
      now - call->submitted_ns <= c->timeout_ns)
    return;
  call->timed_out = true;
  fail(c, "the server at %s did not answer a request for %.1f s", c->authority,
       (double)(now - call->submitted_ns) / 1e9);
}

static void dialed(struct lg_dial *dial, const char *failure) {
  struct lg_http_conn *c = dial->data;
  if (c->failed)
    return;
  if (failure != NULL) {
    fail(c, "%s", failure);
    return;
  }
  int rc = uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
  if (rc != 0) {
    fail(c, "cannot read from %s: %s", c->authority, uv_strerror(rc));
    return;
  }
  c->connected = true;
  if (c->ev.connected)
    c->ev.connected(c->ev.data);
}

int lg_http_conn_create(uv_loop_t *loop, const struct sockaddr *addr, const char *authority,
                        uint64_t timeout_ns, const struct lg_conn_events *ev,
                        struct lg_http_conn **out) {
  struct lg_http_conn *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return -ENOMEM;
  c->loop = loop;
  c->ev = *ev;
  c->timeout_ns = timeout_ns;
  snprintf(c->authority, sizeof(c->authority), "%s", authority);
  uv_tcp_init(loop, &c->tcp);
  c->tcp.data = c;
  c->handles_open = 2;
  c->dial = (struct lg_dial){
      .authority = c->authority, .timeout_ns = timeout_ns, .done = dialed, .data = c};
  lg_dial_start(&c->dial, loop, &c->tcp, addr);
  *out = c;
  return 0;
}
