/* gRPC client connections: libuv TCP + nghttp2 client session. */
#include "grpc_conn.h"

#include "dial.h"
#include "evf/clock.h"

#include <errno.h>
#include <inttypes.h>
#include <nghttp2/nghttp2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READ_BUFFER (256 * 1024)
#define OUTPUT_HIGH (1u << 20)        /* stop pulling frames from nghttp2 above this */
#define STREAM_WINDOW (16 << 20)      /* read pages are large: never wait for WINDOW_UPDATE */
#define CONNECTION_WINDOW (1 << 30)

struct lg_grpc_conn {
  uv_loop_t *loop;
  uv_tcp_t tcp;
  struct lg_dial dial;
  uv_check_t flusher;
  uv_write_t write_req;
  nghttp2_session *session;
  struct lg_buf pending;        /* produced by nghttp2, not yet handed to uv_write */
  struct lg_buf writing;        /* handed to the one uv_write in flight */
  struct lg_conn_events ev;
  struct lg_call *head, *tail;  /* calls in flight, oldest first */
  struct lg_grpc_stream *streams; /* streaming calls open */
  size_t inflight;
  uint64_t timeout_ns;
  uint64_t last_progress_ns;    /* last byte received, or the first call after an idle time */
  unsigned handles_open;
  unsigned in_nghttp2;          /* inside mem_recv/mem_send: teardown waits */
  bool write_in_flight;
  bool flush_scheduled;
  bool connected;
  bool failed;                  /* failed or closed: nothing more is sent */
  bool torn_down;
  bool released;                /* the owner closed it */
  char fail_reason[160];
  char authority[262];
  char grpc_timeout[24];
  uint8_t rbuf[READ_BUFFER];
};

#define NV(name, value, vlen)                                                                   \
  {(uint8_t *)(name), (uint8_t *)(value), sizeof(name) - 1, (vlen),                             \
   NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE}
#define NVS(name, value) NV(name, value, sizeof(value) - 1)

#define H2_STREAMING 1        /* h2_kind of a struct lg_grpc_stream */

static void teardown(struct lg_grpc_conn *c);
static void end_stream(struct lg_grpc_conn *c, struct lg_grpc_stream *s);

/* ---- the list of calls in flight ---- */

static void link_call(struct lg_grpc_conn *c, struct lg_call *call) {
  call->next = NULL;
  call->prev = c->tail;
  if (c->tail)
    c->tail->next = call;
  else
    c->head = call;
  c->tail = call;
  c->inflight++;
}

static void unlink_call(struct lg_grpc_conn *c, struct lg_call *call) {
  if (call->prev)
    call->prev->next = call->next;
  else
    c->head = call->next;
  if (call->next)
    call->next->prev = call->prev;
  else
    c->tail = call->prev;
  call->prev = call->next = NULL;
  c->inflight--;
}

/* ---- failure and teardown ---- */

/* The first failure is reported; teardown follows (now, or after nghttp2's callback). */
static void fail(struct lg_grpc_conn *c, const char *fmt, ...) {
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

static void maybe_free(struct lg_grpc_conn *c) {
  if (c->released && c->torn_down && c->handles_open == 0) {
    lg_buf_free(&c->pending);
    lg_buf_free(&c->writing);
    free(c);
  }
}

static void handle_closed_cb(uv_handle_t *h) {
  struct lg_grpc_conn *c = h->data;
  c->handles_open--;
  maybe_free(c);
}

/*
 * Ends every call in flight and closes the handles. Deferred while nghttp2
 * is running one of our callbacks: the session must outlive that.
 */
static void teardown(struct lg_grpc_conn *c) {
  if (c->torn_down || c->in_nghttp2)
    return;
  c->torn_down = true;
  c->failed = true;
  while (c->head) {
    struct lg_call *call = c->head;
    unlink_call(c, call);
    call->reply.kind = call->timed_out ? LG_REPLY_TIMEOUT : LG_REPLY_CLOSED;
    snprintf(call->reply.message, sizeof(call->reply.message), "%s",
             c->fail_reason[0] ? c->fail_reason : "connection closed");
    call->cb(call);
  }
  while (c->streams) {
    struct lg_grpc_stream *s = c->streams;
    s->reply.kind = LG_REPLY_CLOSED;
    snprintf(s->reply.message, sizeof(s->reply.message), "%s",
             c->fail_reason[0] ? c->fail_reason : "connection closed");
    end_stream(c, s);
  }
  if (c->session) {
    nghttp2_session_del(c->session);
    c->session = NULL;
  }
  uv_close((uv_handle_t *)&c->tcp, handle_closed_cb);
  lg_dial_close(&c->dial, handle_closed_cb);
  uv_close((uv_handle_t *)&c->flusher, handle_closed_cb);
}

void lg_grpc_conn_close(struct lg_grpc_conn *c) {
  c->released = true;
  if (!c->failed)
    snprintf(c->fail_reason, sizeof(c->fail_reason), "connection closed by the client");
  c->failed = true;
  teardown(c);
  maybe_free(c);
}

size_t lg_grpc_conn_inflight(const struct lg_grpc_conn *c) { return c->inflight; }

/* ---- output ---- */

static void flush(struct lg_grpc_conn *c);

static void write_cb(uv_write_t *req, int status) {
  struct lg_grpc_conn *c = req->data;
  c->write_in_flight = false;
  c->writing.len = 0;
  if (status != 0) {
    fail(c, "write failed: %s", uv_strerror(status));
    return;
  }
  flush(c);
}

static void start_write(struct lg_grpc_conn *c) {
  struct lg_buf tmp = c->writing;
  c->writing = c->pending;
  c->pending = tmp;
  c->pending.len = 0;
  uv_buf_t buf = uv_buf_init((char *)c->writing.data, (unsigned)c->writing.len);
  c->write_req.data = c;
  int rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &buf, 1, write_cb);
  if (rc != 0) {
    fail(c, "write failed: %s", uv_strerror(rc));
    return;
  }
  c->write_in_flight = true;
}

static void flush(struct lg_grpc_conn *c) {
  if (c->failed || !c->connected)
    return;
  c->in_nghttp2++;
  while (c->pending.len < OUTPUT_HIGH) {
    const uint8_t *data;
    ssize_t n = nghttp2_session_mem_send(c->session, &data);
    if (n < 0) {
      c->in_nghttp2--;
      fail(c, "HTTP/2: %s", nghttp2_strerror((int)n));
      return;
    }
    if (n == 0)
      break;
    if (lg_buf_append(&c->pending, data, (size_t)n) != 0) {
      c->in_nghttp2--;
      fail(c, "out of memory");
      return;
    }
  }
  c->in_nghttp2--;
  if (c->failed) { /* a callback failed or closed it meanwhile */
    teardown(c);
    return;
  }
  if (c->pending.len > 0 && !c->write_in_flight)
    start_write(c);
}

/* Once per loop iteration, after the I/O callbacks: one write for everything submitted. */
static void flusher_cb(uv_check_t *h) {
  struct lg_grpc_conn *c = h->data;
  c->flush_scheduled = false;
  uv_check_stop(&c->flusher);
  flush(c);
}

static void schedule_flush(struct lg_grpc_conn *c) {
  if (!c->flush_scheduled && !c->failed) {
    c->flush_scheduled = true;
    uv_check_start(&c->flusher, flusher_cb);
  }
}

/* ---- nghttp2 callbacks ---- */

static int hex_value(int ch) {
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

/* grpc-message is percent-encoded. */
static void percent_decode(const uint8_t *in, size_t len, char *out, size_t out_len) {
  size_t o = 0;
  for (size_t i = 0; i < len && o + 1 < out_len; i++) {
    int hi, lo;
    if (in[i] == '%' && i + 2 < len && (hi = hex_value(in[i + 1])) >= 0 &&
        (lo = hex_value(in[i + 2])) >= 0) {
      out[o++] = (char)(hi << 4 | lo);
      i += 2;
    } else {
      out[o++] = (char)in[i];
    }
  }
  out[o] = '\0';
}

static int parse_int(const uint8_t *v, size_t len) {
  int n = 0;
  if (len == 0 || len > 6)
    return -1;
  for (size_t i = 0; i < len; i++) {
    if (v[i] < '0' || v[i] > '9')
      return -1;
    n = n * 10 + (v[i] - '0');
  }
  return n;
}

static bool name_is(const uint8_t *name, size_t len, const char *want) {
  return len == strlen(want) && memcmp(name, want, len) == 0;
}

static int on_header_cb(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *user_data) {
  (void)flags;
  (void)user_data;
  struct lg_call *call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
  if (call == NULL)
    return 0;
  if (call->h2_kind == H2_STREAMING) {
    struct lg_grpc_stream *s = (struct lg_grpc_stream *)call;
    if (name_is(name, namelen, ":status")) {
      s->http_status = parse_int(value, valuelen);
    } else if (name_is(name, namelen, "grpc-status")) {
      s->reply.status = parse_int(value, valuelen);
      s->status_seen = s->reply.status >= 0;
    } else if (name_is(name, namelen, "grpc-message")) {
      percent_decode(value, valuelen, s->reply.message, sizeof(s->reply.message));
    }
    return 0;
  }
  if (name_is(name, namelen, ":status")) {
    call->http_status = parse_int(value, valuelen);
  } else if (name_is(name, namelen, "grpc-status")) {
    call->reply.status = parse_int(value, valuelen);
    call->status_seen = call->reply.status >= 0;
  } else if (name_is(name, namelen, "grpc-message")) {
    percent_decode(value, valuelen, call->reply.message, sizeof(call->reply.message));
  }
  return 0;
}

/* Cuts the response body into messages: whole ones straight from the frame, split ones via s->in. */
static void stream_input(struct lg_grpc_stream *s, const uint8_t *data, size_t len) {
  s->reply.bytes += len;
  if (s->bad)
    return;
  while (len > 0) {
    const uint8_t *p = data;
    size_t avail = len;
    if (s->in.len > 0) {
      /* Complete the buffered start: its prefix first, then the message. */
      if (s->in.len < 5) {
        size_t take = 5 - s->in.len < len ? 5 - s->in.len : len;
        if (lg_buf_append(&s->in, data, take) != 0) {
          s->bad = true;
          return;
        }
        data += take;
        len -= take;
        if (s->in.len < 5)
          return;
      }
      const uint8_t *q = s->in.data;
      size_t want = 5 + ((size_t)q[1] << 24 | (size_t)q[2] << 16 | (size_t)q[3] << 8 | q[4]);
      size_t take = want - s->in.len < len ? want - s->in.len : len;
      if (lg_buf_append(&s->in, data, take) != 0) {
        s->bad = true;
        return;
      }
      data += take;
      len -= take;
      if (s->in.len < want)
        return;
      if (s->in.data[0] != 0) {
        s->bad = true;
        return;
      }
      s->in.len = 0;
      s->message_cb(s, s->in.data + 5, want - 5);
      continue;
    }
    if (avail >= 5) {
      size_t mlen = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];
      if (p[0] != 0) {
        s->bad = true;
        return;
      }
      if (avail >= 5 + mlen) {
        data += 5 + mlen;
        len -= 5 + mlen;
        s->message_cb(s, p + 5, mlen);
        continue;
      }
    }
    if (lg_buf_append(&s->in, data, len < 5 ? len : 5) != 0) {
      s->bad = true;
      return;
    }
    size_t took = len < 5 ? len : 5;
    data += took;
    len -= took;
  }
}

static int on_data_chunk_recv_cb(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                                 const uint8_t *data, size_t len, void *user_data) {
  (void)flags;
  (void)user_data;
  struct lg_call *call = nghttp2_session_get_stream_user_data(session, stream_id);
  if (call != NULL && call->h2_kind == H2_STREAMING) {
    stream_input((struct lg_grpc_stream *)call, data, len);
  } else if (call != NULL) {
    call->reply.bytes += len;
    lg_pb_scan_feed(&call->scan, data, len);
  }
  return 0;
}

/* A stream that closed without a grpc-status: a reset, an HTTP error, or a bad answer. */
static void settle_without_status(struct lg_reply *r, uint32_t error_code, int http_status) {
  if (error_code != NGHTTP2_NO_ERROR) {
    r->kind = LG_REPLY_RESET;
    snprintf(r->message, sizeof(r->message), "stream reset by the server: %s",
             nghttp2_http2_strerror(error_code));
  } else if (http_status > 0 && http_status != 200) {
    r->kind = LG_REPLY_HTTP;
    r->status = http_status;
  } else {
    r->kind = LG_REPLY_BAD;
    snprintf(r->message, sizeof(r->message), "response without grpc-status");
  }
}

/* What a closed stream amounts to. */
static void settle_reply(struct lg_call *call, uint32_t error_code) {
  struct lg_reply *r = &call->reply;
  r->count = call->scan.count;
  r->checkpoint = call->scan.field2;
  r->has_checkpoint = call->scan.has_field2;
  r->number = call->scan.field1;
  r->has_number = call->scan.has_field1;
  if (call->timed_out) {
    r->kind = LG_REPLY_TIMEOUT;
    snprintf(r->message, sizeof(r->message), "no answer within the timeout");
  } else if (call->status_seen) {
    r->kind = LG_REPLY_GRPC;
    if (r->status == 0 && (!lg_pb_scan_complete(&call->scan) || call->scan.messages != 1)) {
      r->kind = LG_REPLY_BAD;
      snprintf(r->message, sizeof(r->message), "OK with %s", call->scan.messages != 1 && !call->scan.error
                                                                  ? "not exactly one message"
                                                                  : "an undecodable message");
    }
  } else {
    settle_without_status(r, error_code, call->http_status);
  }
}

/* Unlinks s, frees its buffers and tells its owner. */
static void end_stream(struct lg_grpc_conn *c, struct lg_grpc_stream *s) {
  if (s->prev)
    s->prev->next = s->next;
  else
    c->streams = s->next;
  if (s->next)
    s->next->prev = s->prev;
  s->prev = s->next = NULL;
  s->conn = NULL;
  lg_buf_free(&s->out);
  lg_buf_free(&s->in);
  s->closed_cb(s);
}

static void settle_stream(struct lg_grpc_conn *c, struct lg_grpc_stream *s, uint32_t error_code) {
  struct lg_reply *r = &s->reply;
  if (s->bad) {
    r->kind = LG_REPLY_BAD;
    snprintf(r->message, sizeof(r->message), "an undecodable or compressed message");
  } else if (s->status_seen) {
    r->kind = LG_REPLY_GRPC;
    if (r->status == 0 && s->in.len > 0) {
      r->kind = LG_REPLY_BAD;
      snprintf(r->message, sizeof(r->message), "OK after a partial message");
    }
  } else {
    settle_without_status(r, error_code, s->http_status);
  }
  end_stream(c, s);
}

static int on_stream_close_cb(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                              void *user_data) {
  struct lg_grpc_conn *c = user_data;
  struct lg_call *call = nghttp2_session_get_stream_user_data(session, stream_id);
  if (call == NULL || c->torn_down)
    return 0;
  nghttp2_session_set_stream_user_data(session, stream_id, NULL);
  if (call->h2_kind == H2_STREAMING) {
    settle_stream(c, (struct lg_grpc_stream *)call, error_code);
    return 0;
  }
  unlink_call(c, call);
  settle_reply(call, error_code);
  call->cb(call);
  return 0;
}

static int on_frame_recv_cb(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) {
  (void)session;
  struct lg_grpc_conn *c = user_data;
  if (frame->hd.type == NGHTTP2_GOAWAY)
    fail(c, "the server sent GOAWAY (%s): it is shutting down or refused the connection",
         nghttp2_http2_strerror(frame->goaway.error_code));
  return 0;
}

static ssize_t body_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                            size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                            void *user_data) {
  (void)session;
  (void)stream_id;
  (void)user_data;
  struct lg_call *call = source->ptr;
  size_t n = call->len - call->sent;
  if (n > length)
    n = length;
  memcpy(buf, call->body + call->sent, n);
  call->sent += n;
  if (call->sent == call->len)
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

/* The queued request bytes; deferred (resumed by the next send) while there are none. */
static ssize_t stream_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                              size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                              void *user_data) {
  (void)session;
  (void)stream_id;
  (void)user_data;
  struct lg_grpc_stream *s = source->ptr;
  size_t n = s->out.len - s->out_sent;
  if (n == 0) {
    if (s->half_closed) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
      return 0;
    }
    s->deferred = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  if (n > length)
    n = length;
  memcpy(buf, s->out.data + s->out_sent, n);
  s->out_sent += n;
  if (s->out_sent == s->out.len) {
    s->out.len = 0;
    s->out_sent = 0;
    if (s->half_closed)
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  }
  return (ssize_t)n;
}

static int make_session(struct lg_grpc_conn *c) {
  nghttp2_session_callbacks *cbs;
  int rc = nghttp2_session_callbacks_new(&cbs);
  if (rc != 0)
    return -ENOMEM;
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header_cb);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv_cb);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close_cb);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv_cb);
  /*
   * The load generator reads the status and counts of each response itself;
   * nghttp2's checks of HTTP semantics on every response header (about a
   * twelfth of its instructions per call) would only slow it down.
   */
  nghttp2_option *options;
  if (nghttp2_option_new(&options) != 0) {
    nghttp2_session_callbacks_del(cbs);
    return -ENOMEM;
  }
  nghttp2_option_set_no_http_messaging(options, 1);
  rc = nghttp2_session_client_new2(&c->session, cbs, c, options);
  nghttp2_option_del(options);
  nghttp2_session_callbacks_del(cbs);
  if (rc != 0)
    return -ENOMEM;
  nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
  };
  rc = nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, settings, 2);
  if (rc == 0)
    rc = nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, CONNECTION_WINDOW);
  return rc == 0 ? 0 : -ENOMEM;
}

/* ---- input ---- */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  struct lg_grpc_conn *c = h->data;
  *buf = uv_buf_init((char *)c->rbuf, sizeof(c->rbuf));
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  struct lg_grpc_conn *c = stream->data;
  if (nread == 0 || c->failed)
    return;
  if (nread < 0) {
    fail(c, nread == UV_EOF ? "the server closed the connection" : "read failed: %s",
         uv_strerror((int)nread));
    return;
  }
  c->last_progress_ns = evf_monotonic_ns();
  c->in_nghttp2++;
  ssize_t rv = nghttp2_session_mem_recv(c->session, (const uint8_t *)buf->base, (size_t)nread);
  c->in_nghttp2--;
  if (rv < 0)
    fail(c, "HTTP/2 protocol error: %s", nghttp2_strerror((int)rv));
  else if (c->failed)
    teardown(c); /* failed or closed from a callback */
  else
    schedule_flush(c); /* acknowledgements, window updates, the next requests */
}

/* ---- connecting ---- */

static void dialed(struct lg_dial *dial, const char *failure) {
  struct lg_grpc_conn *c = dial->data;
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
  c->last_progress_ns = evf_monotonic_ns();
  schedule_flush(c); /* the preface and SETTINGS */
  if (c->ev.connected)
    c->ev.connected(c->ev.data);
}

int lg_grpc_conn_create(uv_loop_t *loop, const struct sockaddr *addr, const char *authority,
                        uint64_t timeout_ns, const struct lg_conn_events *ev,
                        struct lg_grpc_conn **out) {
  struct lg_grpc_conn *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return -ENOMEM;
  c->loop = loop;
  c->ev = *ev;
  c->timeout_ns = timeout_ns;
  snprintf(c->authority, sizeof(c->authority), "%s", authority);
  uint64_t ms = timeout_ns / 1000000;
  if (ms == 0)
    ms = 1;
  if (ms < 100000000)
    snprintf(c->grpc_timeout, sizeof(c->grpc_timeout), "%" PRIu64 "m", ms);
  else
    snprintf(c->grpc_timeout, sizeof(c->grpc_timeout), "%" PRIu64 "S", ms / 1000);
  int rc = make_session(c);
  if (rc != 0) {
    if (c->session)
      nghttp2_session_del(c->session);
    free(c);
    return rc;
  }
  uv_tcp_init(loop, &c->tcp);
  uv_check_init(loop, &c->flusher);
  c->tcp.data = c->flusher.data = c;
  c->handles_open = 3;
  c->dial = (struct lg_dial){
      .authority = c->authority, .timeout_ns = timeout_ns, .done = dialed, .data = c};
  lg_dial_start(&c->dial, loop, &c->tcp, addr);
  *out = c;
  return 0;
}

/* ---- calls ---- */

int lg_grpc_conn_submit(struct lg_grpc_conn *c, struct lg_call *call) {
  if (c->failed || !c->connected)
    return -ENOTCONN;
  const nghttp2_nv headers[] = {
      NVS(":method", "POST"),
      NVS(":scheme", "http"),
      NV(":path", call->path, call->path_len),
      NV(":authority", c->authority, strlen(c->authority)),
      NVS("content-type", "application/grpc"),
      NVS("te", "trailers"),
      NV("grpc-timeout", c->grpc_timeout, strlen(c->grpc_timeout)),
  };
  memset(&call->reply, 0, sizeof(call->reply));
  lg_pb_scan_init(&call->scan);
  call->sent = 0;
  call->http_status = 0;
  call->timed_out = false;
  call->status_seen = false;
  nghttp2_data_provider body = {.source.ptr = call, .read_callback = body_read_cb};
  int32_t id = nghttp2_submit_request(c->session, NULL, headers, sizeof(headers) / sizeof(headers[0]),
                                      &body, call);
  if (id < 0)
    return id == NGHTTP2_ERR_NOMEM ? -ENOMEM : -ENOTCONN;
  uint64_t now = evf_monotonic_ns();
  if (c->inflight == 0)
    c->last_progress_ns = now;
  call->stream_id = id;
  call->submitted_ns = now;
  link_call(c, call);
  schedule_flush(c);
  return 0;
}

void lg_grpc_conn_check(struct lg_grpc_conn *c, uint64_t now) {
  if (c->failed || !c->connected || c->inflight == 0)
    return;
  if (now > c->last_progress_ns && now - c->last_progress_ns > c->timeout_ns) {
    fail(c, "the server at %s sent nothing for %.1f s with %zu calls in flight", c->authority,
         (double)(now - c->last_progress_ns) / 1e9, c->inflight);
    return;
  }
  for (struct lg_call *call = c->head;
       call && now > call->submitted_ns && now - call->submitted_ns > c->timeout_ns;
       call = call->next) {
    if (call->timed_out)
      continue;
    call->timed_out = true;
    nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, call->stream_id, NGHTTP2_CANCEL);
    schedule_flush(c);
  }
}

/* ---- streaming calls ---- */

int lg_grpc_stream_open(struct lg_grpc_conn *c, struct lg_grpc_stream *s) {
  if (c->failed || !c->connected)
    return -ENOTCONN;
  const nghttp2_nv headers[] = {
      NVS(":method", "POST"),
      NVS(":scheme", "http"),
      NV(":path", s->path, s->path_len),
      NV(":authority", c->authority, strlen(c->authority)),
      NVS("content-type", "application/grpc"),
      NVS("te", "trailers"),
  };
  s->h2_kind = H2_STREAMING;
  memset(&s->reply, 0, sizeof(s->reply));
  s->out = (struct lg_buf){0};
  s->in = (struct lg_buf){0};
  s->out_sent = 0;
  s->http_status = 0;
  s->status_seen = s->deferred = s->half_closed = s->bad = false;
  nghttp2_data_provider body = {.source.ptr = s, .read_callback = stream_read_cb};
  int32_t id = nghttp2_submit_request(c->session, NULL, headers, sizeof(headers) / sizeof(headers[0]),
                                      &body, s);
  if (id < 0)
    return id == NGHTTP2_ERR_NOMEM ? -ENOMEM : -ENOTCONN;
  s->stream_id = id;
  s->conn = c;
  s->prev = NULL;
  s->next = c->streams;
  if (c->streams)
    c->streams->prev = s;
  c->streams = s;
  schedule_flush(c);
  return 0;
}

static void stream_kick(struct lg_grpc_stream *s) {
  struct lg_grpc_conn *c = s->conn;
  if (s->deferred) {
    s->deferred = false;
    nghttp2_session_resume_data(c->session, s->stream_id);
  }
  schedule_flush(c);
}

int lg_grpc_stream_send(struct lg_grpc_stream *s, const uint8_t *msg, size_t len) {
  if (s->conn == NULL || s->conn->failed || s->half_closed)
    return -EPIPE;
  uint8_t prefix[5] = {0, (uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                       (uint8_t)len};
  size_t before = s->out.len;
  if (lg_buf_append(&s->out, prefix, 5) != 0 || lg_buf_append(&s->out, msg, len) != 0) {
    s->out.len = before;
    return -ENOMEM;
  }
  stream_kick(s);
  return 0;
}

void lg_grpc_stream_half_close(struct lg_grpc_stream *s) {
  if (s->conn == NULL || s->conn->failed || s->half_closed)
    return;
  s->half_closed = true;
  stream_kick(s);
}

void lg_grpc_stream_cancel(struct lg_grpc_stream *s) {
  if (s->conn == NULL || s->conn->failed)
    return;
  nghttp2_submit_rst_stream(s->conn->session, NGHTTP2_FLAG_NONE, s->stream_id, NGHTTP2_CANCEL);
  schedule_flush(s->conn);
}
