/* gRPC calls on HTTP/2 streams: headers, framing, deadlines, responses. */
#include "grpc.h"

#include "evf/clock.h"
#include "evf/log.h"
#include "server.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tp_grpc_call {
  struct tp_h2_stream h2;        /* first: the connection's handle on the call */
  struct tp_server *server;
  const struct tp_grpc_method *method;
  char path[128];
  bool post;
  bool grpc_content_type;
  bool bad_timeout;
  char encoding[32];             /* grpc-encoding, empty for identity */
  int64_t timeout_ms;            /* -1: none */
  struct tp_buf body;
  struct tp_buf response;
  bool response_unprefixed;      /* no room was had for its prefix: it cannot be sent */
  size_t response_sent;
  bool response_counted;         /* response bytes are in the connection's budget */
  bool answered;
  bool held;
  uint64_t deadline_ms;          /* in the loop's time (uv_now) */
  uint64_t grpc_deadline_ms;     /* what grpc-timeout sets, in the same time; 0: none */
  bool awaiting_request;         /* deadline_ms bounds the request's arrival, not grpc-timeout */
  size_t deadline_slot;          /* 1 + its index in the server's deadline heap; 0: none */
  void *state;
  void (*free_state)(void *);
  uint64_t started_ns;           /* when its headers began: for the metrics */
  unsigned metrics_method;       /* tp_metrics_grpc_method() of its path */

  /* A streaming response: messages queued in out, sent from out_sent on. */
  bool streaming;                /* its headers are submitted */
  bool data_deferred;            /* nghttp2 waits for tp_grpc_flush() to resume */
  bool finishing;                /* send the trailers once out is sent */
  struct tp_buf out;
  size_t out_sent;
  size_t out_message_end;        /* where the message out_sent is in ends (out_sent if none) */
  char final_status[8];
  char final_message[512];       /* percent-encoded */
  void (*on_drain)(struct tp_grpc_call *);
  size_t low_water;

  /* Client streaming: request messages handed over up to body_used. */
  size_t body_used;
  bool paused;
  bool output_held;              /* its answers wait unsent past TP_GRPC_UNSENT_HIGH */
  bool request_ended;
  bool request_end_handled;
  bool handing_over;
};

/* ---- lifetime ---- */

static void stop_deadline(struct tp_grpc_call *call);

static void free_call(struct tp_grpc_call *call) {
  stop_deadline(call);
  if (call->free_state)
    call->free_state(call->state);
  free(call->state);
  tp_buf_free(&call->body);
  tp_buf_free(&call->response);
  tp_buf_free(&call->out);
  free(call);
}

/*
 * Frees once the stream is closed, no asynchronous work holds the call and
 * it is not handing over messages (that frees it as it returns).
 */
static void maybe_free(struct tp_grpc_call *call) {
  if (call->h2.conn != NULL || call->held || call->handing_over)
    return;
  free_call(call);
}

void tp_grpc_hold(struct tp_grpc_call *call) { call->held = true; }

void tp_grpc_release(struct tp_grpc_call *call) {
  call->held = false;
  maybe_free(call);
}

bool tp_grpc_open(const struct tp_grpc_call *call) {
  return call->h2.conn != NULL && tp_conn_usable(call->h2.conn) && !call->answered;
}

struct tp_server *tp_grpc_server(struct tp_grpc_call *call) { return call->server; }

void *tp_grpc_state(struct tp_grpc_call *call, size_t size, void (*free_state)(void *)) {
  if (call->state == NULL) {
    call->state = calloc(1, size);
    call->free_state = call->state != NULL ? free_state : NULL;
  }
  return call->state;
}

/* ---- answering ---- */

/* Counts the call once, as it is answered (or closed unanswered). */
static void count_call(struct tp_grpc_call *call, enum evf_grpc_status status) {
  tp_metrics_grpc_request(&call->server->metrics, call->metrics_method, status,
                          evf_monotonic_ns() - call->started_ns);
}

/*
 * Deadlines: one timer per server over a binary min-heap of its calls by
 * deadline, instead of a libuv timer per call (a handle to init, start,
 * stop and close, which deferred freeing the call by a loop turn). Calls
 * with the same timeout arrive in deadline order, so an insertion seldom
 * climbs. The timer is armed for the earliest when a call becomes it; an
 * earliest that leaves early only makes it fire for nothing and re-arm.
 */
static void heap_place(struct tp_server *server, size_t i, struct tp_grpc_call *call) {
  server->deadline_heap[i] = call;
  call->deadline_slot = i + 1;
}

static void sift_up(struct tp_server *server, size_t i, struct tp_grpc_call *call) {
  while (i > 0) {
    struct tp_grpc_call *parent = server->deadline_heap[(i - 1) / 2];
    if (parent->deadline_ms <= call->deadline_ms)
      break;
    heap_place(server, i, parent);
    i = (i - 1) / 2;
  }
  heap_place(server, i, call);
}

static void sift_down(struct tp_server *server, size_t i, struct tp_grpc_call *call) {
  struct tp_grpc_call **heap = server->deadline_heap;
  for (size_t child; (child = 2 * i + 1) < server->deadline_count; i = child) {
    if (child + 1 < server->deadline_count && heap[child + 1]->deadline_ms < heap[child]->deadline_ms)
      child++;
    if (call->deadline_ms <= heap[child]->deadline_ms)
      break;
    heap_place(server, i, heap[child]);
  }
  heap_place(server, i, call);
}

static void stop_deadline(struct tp_grpc_call *call) {
  if (call->deadline_slot == 0)
    return;
  struct tp_server *server = call->server;
  size_t i = call->deadline_slot - 1;
  call->deadline_slot = 0;
  struct tp_grpc_call *last = server->deadline_heap[--server->deadline_count];
  if (i == server->deadline_count)
    return;
  if (i > 0 && last->deadline_ms < server->deadline_heap[(i - 1) / 2]->deadline_ms)
    sift_up(server, i, last);
  else
    sift_down(server, i, last);
}

static void deadlines_cb(uv_timer_t *timer);

/* What it received goes now (the rest, if it comes, is dropped); answering may free the call. */
static void request_too_slow(struct tp_grpc_call *call) {
  call->awaiting_request = false;
  tp_buf_free(&call->body);
  tp_grpc_fail(call, EVF_GRPC_DEADLINE_EXCEEDED,
               "the request stalled for HTTP_REQUEST_TIMEOUT_MS (%u ms) before it came whole",
               call->server->config->http_request_timeout_ms);
}

static void arm_deadlines(struct tp_server *server) {
  if (server->deadline_count == 0)
    return;
  uint64_t now = uv_now(server->loop), due = server->deadline_heap[0]->deadline_ms;
  uv_timer_start(&server->deadlines, deadlines_cb, due > now ? due - now : 0, 0);
}

static void deadlines_cb(uv_timer_t *timer) {
  struct tp_server *server = timer->data;
  uint64_t now = uv_now(server->loop);
  while (server->deadline_count > 0 && server->deadline_heap[0]->deadline_ms <= now) {
    struct tp_grpc_call *call = server->deadline_heap[0];
    stop_deadline(call);
    if (call->awaiting_request)
      request_too_slow(call);
    else
      tp_grpc_fail(call, EVF_GRPC_DEADLINE_EXCEEDED, "deadline of %lld ms exceeded",
                   (long long)call->timeout_ms);
  }
  arm_deadlines(server);
}

/* Returns false when out of memory. */
static bool start_deadline(struct tp_grpc_call *call, uint64_t deadline_ms) {
  struct tp_server *server = call->server;
  if (server->deadline_count == server->deadline_cap) {
    size_t cap = server->deadline_cap ? 2 * server->deadline_cap : 64;
    struct tp_grpc_call **heap = realloc(server->deadline_heap, cap * sizeof(*heap));
    if (heap == NULL)
      return false;
    server->deadline_heap = heap;
    server->deadline_cap = cap;
  }
  call->deadline_ms = deadline_ms;
  sift_up(server, server->deadline_count++, call);
  if (call->deadline_slot == 1)
    arm_deadlines(server);
  return true;
}

void tp_grpc_server_init(struct tp_server *server) {
  uv_timer_init(server->loop, &server->deadlines);
  server->deadlines.data = server;
}

void tp_grpc_server_close(struct tp_server *server) {
  uv_close((uv_handle_t *)&server->deadlines, NULL);
  for (size_t i = 0; i < server->deadline_count; i++)
    server->deadline_heap[i]->deadline_slot = 0; /* held calls: no deadline left to keep */
  free(server->deadline_heap);
  server->deadline_heap = NULL;
  server->deadline_count = server->deadline_cap = 0;
}

/*
 * Header names are lowercase literals, so nghttp2 need not copy (nor
 * lowercase) them; NV_LITERAL's value is a literal too.
 */
#define NV(name, value)                                                                     \
  { (uint8_t *)(name), (uint8_t *)(value), sizeof(name) - 1, strlen(value),                 \
    NGHTTP2_NV_FLAG_NO_COPY_NAME }
#define NV_LITERAL(name, value)                                                             \
  { (uint8_t *)(name), (uint8_t *)(value), sizeof(name) - 1, sizeof(value) - 1,             \
    NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE }

/*
 * A response nghttp2 would not take (out of memory) fails the connection:
 * its stream must not wait unanswered, its client until its deadline.
 */
static void submitted(struct tp_conn *conn, int rc) {
  if (rc != 0)
    tp_conn_fail(conn);
}

static ssize_t response_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                                size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                                void *user) {
  struct tp_grpc_call *call = source->ptr;
  (void)user;
  size_t left = call->response.len - call->response_sent;
  size_t n = left < length ? left : length;
  memcpy(buf, call->response.data + call->response_sent, n);
  call->response_sent += n;
  tp_conn_count_response(call->h2.conn, -(ssize_t)n);
  if (call->response_sent == call->response.len) {
    static const nghttp2_nv ok[] = {NV_LITERAL("grpc-status", "0")};
    *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    if (nghttp2_submit_trailer(session, stream_id, ok, 1) != 0)
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  }
  return (ssize_t)n;
}

struct tp_buf *tp_grpc_response(struct tp_grpc_call *call) {
  call->response.len = 0;
  /* Without room for the prefix what follows would start where the prefix goes: it fails. */
  call->response_unprefixed = tp_buf_reserve(&call->response, TP_GRPC_PREFIX) != 0;
  if (!call->response_unprefixed)
    call->response.len = TP_GRPC_PREFIX;
  return &call->response;
}

void tp_grpc_reply(struct tp_grpc_call *call) {
  if (!tp_grpc_open(call))
    return;
  if (call->response_unprefixed) {
    tp_grpc_fail(call, EVF_GRPC_RESOURCE_EXHAUSTED, "out of memory building the response");
    return;
  }
  size_t len = call->response.len - TP_GRPC_PREFIX;
  uint8_t *prefix = call->response.data;
  prefix[0] = 0; /* not compressed */
  prefix[1] = (uint8_t)(len >> 24);
  prefix[2] = (uint8_t)(len >> 16);
  prefix[3] = (uint8_t)(len >> 8);
  prefix[4] = (uint8_t)len;
  call->answered = true;
  count_call(call, EVF_GRPC_OK);
  stop_deadline(call);
  struct tp_conn *conn = call->h2.conn;
  call->response_counted = true;
  tp_conn_count_response(conn, (ssize_t)call->response.len);
  nghttp2_nv headers[] = {NV_LITERAL(":status", "200"),
                          NV_LITERAL("content-type", "application/grpc")};
  nghttp2_data_provider body = {.source.ptr = call, .read_callback = response_read_cb};
  submitted(conn, nghttp2_submit_response(tp_conn_session(conn), call->h2.id, headers, 2, &body));
  tp_conn_flush(conn);
}

/* grpc-message is percent-encoded: everything outside printable ASCII, and '%'. */
static void percent_encode(const char *in, char *out, size_t out_len) {
  static const char hex[] = "0123456789ABCDEF";
  size_t o = 0;
  for (const unsigned char *p = (const unsigned char *)in; *p && o + 4 < out_len; p++) {
    if (*p >= 0x20 && *p <= 0x7E && *p != '%') {
      out[o++] = (char)*p;
    } else {
      out[o++] = '%';
      out[o++] = hex[*p >> 4];
      out[o++] = hex[*p & 15];
    }
  }
  out[o] = '\0';
}

/*
 * A Trailers-Only response: the status in the one HEADERS frame, which ends
 * the stream. Only these carry grpc-accept-encoding: a client that sent a
 * compressed message learns here what it may send instead. Successful
 * responses leave it out: encoding it was 2.5% of the server's
 * instructions per unary append.
 */
static void send_status(struct tp_grpc_call *call, enum evf_grpc_status status,
                        const char *message) {
  char code[8], encoded[1024];
  snprintf(code, sizeof(code), "%d", (int)status);
  percent_encode(message, encoded, sizeof(encoded));
  call->answered = true;
  count_call(call, status);
  stop_deadline(call);
  struct tp_conn *conn = call->h2.conn;
  nghttp2_nv headers[] = {NV(":status", "200"), NV("content-type", "application/grpc"),
                          NV("grpc-accept-encoding", "identity"), NV("grpc-status", code),
                          NV("grpc-message", encoded)};
  submitted(conn, nghttp2_submit_response(tp_conn_session(conn), call->h2.id, headers, 5, NULL));
  tp_conn_flush(conn);
}

/* ---- streaming responses ---- */

static size_t unsent(const struct tp_grpc_call *call) { return call->out.len - call->out_sent; }

/* The length in a message's prefix. */
static uint32_t declared_length_at(const uint8_t *prefix) {
  return (uint32_t)prefix[1] << 24 | (uint32_t)prefix[2] << 16 | (uint32_t)prefix[3] << 8 |
         prefix[4];
}

size_t tp_grpc_unsent(const struct tp_grpc_call *call) { return unsent(call); }

void tp_grpc_on_drain(struct tp_grpc_call *call, void (*on_drain)(struct tp_grpc_call *),
                      size_t low_water) {
  call->on_drain = on_drain;
  call->low_water = low_water;
}

static void submit_trailers(nghttp2_session *session, struct tp_grpc_call *call) {
  nghttp2_nv trailers[] = {NV("grpc-status", call->final_status),
                           NV("grpc-message", call->final_message)};
  submitted(call->h2.conn,
            nghttp2_submit_trailer(session, call->h2.id, trailers, call->final_message[0] ? 2 : 1));
}

/*
 * A client-streaming call held for its unsent answers takes messages again
 * once the connection's write completes: not from here, inside nghttp2's send.
 */
static void release_output_hold(struct tp_grpc_call *call) {
  call->output_held = false;
  if (!call->h2.deferred)
    tp_conn_defer(call->h2.conn, &call->h2);
}

/* n more bytes of out went to nghttp2: out_message_end follows out_sent over whole messages. */
static void mark_sent(struct tp_grpc_call *call, size_t n) {
  call->out_sent += n;
  while (call->out_message_end < call->out_sent) {
    const uint8_t *prefix = call->out.data + call->out_message_end;
    call->out_message_end += TP_GRPC_PREFIX + declared_length_at(prefix);
  }
  if (call->out_sent == call->out.len)
    call->out.len = call->out_sent = call->out_message_end = 0;
}

/* Takes queued bytes; once they are all sent and the call is finishing, the trailers. */
static ssize_t stream_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                              size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                              void *user) {
  struct tp_grpc_call *call = source->ptr;
  (void)stream_id;
  (void)user;
  size_t n = unsent(call) < length ? unsent(call) : length;
  if (n > 0) /* a call ending before any message has no buffer at all */
    memcpy(buf, call->out.data + call->out_sent, n);
  mark_sent(call, n);
  if (unsent(call) == 0 && call->finishing) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    submit_trailers(session, call);
  } else if (n == 0) {
    call->data_deferred = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  if (n > 0 && call->on_drain != NULL && unsent(call) <= call->low_water)
    call->on_drain(call);
  if (call->output_held && unsent(call) <= TP_GRPC_UNSENT_HIGH / 2)
    release_output_hold(call);
  return (ssize_t)n;
}

static void start_stream(struct tp_grpc_call *call) {
  call->streaming = true;
  nghttp2_nv headers[] = {NV_LITERAL(":status", "200"),
                          NV_LITERAL("content-type", "application/grpc")};
  nghttp2_data_provider body = {.source.ptr = call, .read_callback = stream_read_cb};
  struct tp_conn *conn = call->h2.conn;
  submitted(conn, nghttp2_submit_response(tp_conn_session(conn), call->h2.id, headers, 2, &body));
}

/* Moves queued bytes to the front when more than half the buffer is sent. */
static void compact_out(struct tp_grpc_call *call) {
  if (call->out_sent > call->out.cap / 2) {
    memmove(call->out.data, call->out.data + call->out_sent, unsent(call));
    call->out.len = unsent(call);
    call->out_message_end -= call->out_sent;
    call->out_sent = 0;
  }
}

int tp_grpc_send(struct tp_grpc_call *call, const void *head, size_t head_len, const void *body,
                 size_t body_len) {
  if (!tp_grpc_open(call))
    return 0;
  if (!call->streaming)
    start_stream(call);
  compact_out(call);
  size_t len = head_len + body_len;
  uint8_t prefix[TP_GRPC_PREFIX] = {0, (uint8_t)(len >> 24), (uint8_t)(len >> 16),
                                    (uint8_t)(len >> 8), (uint8_t)len};
  if (tp_buf_append(&call->out, prefix, sizeof(prefix)) != 0 ||
      tp_buf_append(&call->out, head, head_len) != 0 ||
      tp_buf_append(&call->out, body, body_len) != 0) {
    tp_grpc_fail(call, EVF_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return -ENOMEM;
  }
  return 0;
}

void tp_grpc_flush(struct tp_grpc_call *call) {
  if (call->h2.conn == NULL || !call->streaming)
    return;
  if (call->data_deferred) {
    call->data_deferred = false;
    nghttp2_session_resume_data(tp_conn_session(call->h2.conn), call->h2.id);
  }
  tp_conn_flush(call->h2.conn);
}

/* Ends a started stream with a status in the trailers, after what is queued or dropping it. */
static void end_stream(struct tp_grpc_call *call, enum evf_grpc_status status, const char *message,
                       bool drop_queued) {
  call->answered = true;
  count_call(call, status);
  stop_deadline(call);
  call->finishing = true;
  snprintf(call->final_status, sizeof(call->final_status), "%d", (int)status);
  percent_encode(message, call->final_message, sizeof(call->final_message));
  if (drop_queued) /* but not the rest of a message partly sent: the trailers follow whole ones */
    call->out.len = call->out_message_end;
  tp_grpc_flush(call);
}

void tp_grpc_finish_with(struct tp_grpc_call *call, enum evf_grpc_status status,
                         const char *message) {
  if (!tp_grpc_open(call))
    return;
  if (!call->streaming)
    start_stream(call);
  end_stream(call, status, message, false);
}

void tp_grpc_finish(struct tp_grpc_call *call) { tp_grpc_finish_with(call, EVF_GRPC_OK, ""); }

void tp_grpc_fail(struct tp_grpc_call *call, enum evf_grpc_status status, const char *fmt, ...) {
  if (!tp_grpc_open(call))
    return;
  char message[512];
  va_list args;
  va_start(args, fmt);
  vsnprintf(message, sizeof(message), fmt, args);
  va_end(args);
  if (status == EVF_GRPC_INTERNAL)
    evf_error("%s: internal error: %s", call->path, message);
  if (call->streaming)
    end_stream(call, status, message, true);
  else
    send_status(call, status, message);
}

/* Not a gRPC request at all: a plain HTTP status (which clients see as UNKNOWN). */
static void send_http_status(struct tp_grpc_call *call, const char *status) {
  call->answered = true;
  count_call(call, EVF_GRPC_UNKNOWN);
  struct tp_conn *conn = call->h2.conn;
  nghttp2_nv headers[] = {NV(":status", status)};
  submitted(conn, nghttp2_submit_response(tp_conn_session(conn), call->h2.id, headers, 1, NULL));
  tp_conn_flush(conn);
}

/* ---- the request ---- */

static struct tp_h2_stream *call_open(struct tp_conn *conn) {
  struct tp_grpc_call *call = calloc(1, sizeof(*call));
  if (call == NULL)
    return NULL;
  call->server = tp_conn_server(conn);
  call->timeout_ms = -1;
  call->started_ns = evf_monotonic_ns();
  call->metrics_method = TP_METRICS_GRPC_UNKNOWN;
  return &call->h2;
}

static bool header_is(const uint8_t *name, size_t len, const char *want) {
  return len == strlen(want) && memcmp(name, want, len) == 0;
}

/* grpc-timeout: 1 to 8 digits and a unit (H, M, S, m, u, n); rounded up to ms. */
static int parse_timeout(const uint8_t *v, size_t len, int64_t *ms) {
  if (len < 2 || len > 9)
    return -1;
  int64_t n = 0;
  for (size_t i = 0; i + 1 < len; i++) {
    if (v[i] < '0' || v[i] > '9')
      return -1;
    n = n * 10 + (v[i] - '0');
  }
  switch (v[len - 1]) {
  case 'H': *ms = n * 3600000; break;
  case 'M': *ms = n * 60000; break;
  case 'S': *ms = n * 1000; break;
  case 'm': *ms = n; break;
  case 'u': *ms = (n + 999) / 1000; break;
  case 'n': *ms = (n + 999999) / 1000000; break;
  default: return -1;
  }
  return 0;
}

static bool grpc_content_type(const uint8_t *v, size_t len) {
  static const char prefix[] = "application/grpc";
  size_t n = sizeof(prefix) - 1;
  return len >= n && memcmp(v, prefix, n) == 0 && (len == n || v[n] == '+' || v[n] == ';');
}

/* A header value as a C string, cut to out's size (nghttp2 lets no NUL into a value). */
static void copy_value(char *out, size_t size, const uint8_t *value, size_t len) {
  size_t n = len < size - 1 ? len : size - 1;
  memcpy(out, value, n);
  out[n] = '\0';
}

static void call_header(struct tp_h2_stream *stream, const uint8_t *name, size_t namelen,
                        const uint8_t *value, size_t valuelen) {
  struct tp_grpc_call *call = (struct tp_grpc_call *)stream;
  if (header_is(name, namelen, ":method")) {
    call->post = valuelen == 4 && memcmp(value, "POST", 4) == 0;
  } else if (header_is(name, namelen, ":path")) {
    call->method = tp_rpc_find((const char *)value, valuelen);
    call->metrics_method = tp_metrics_grpc_method((const char *)value, valuelen);
    copy_value(call->path, sizeof(call->path), value, valuelen);
  } else if (header_is(name, namelen, "content-type")) {
    call->grpc_content_type = grpc_content_type(value, valuelen);
  } else if (header_is(name, namelen, "grpc-encoding")) {
    if (!(valuelen == 8 && memcmp(value, "identity", 8) == 0))
      copy_value(call->encoding, sizeof(call->encoding), value, valuelen);
  } else if (header_is(name, namelen, "grpc-timeout")) {
    call->bad_timeout = parse_timeout(value, valuelen, &call->timeout_ms) != 0;
  }
}

/*
 * The call's deadline: its grpc-timeout, or sooner, until a request that is
 * one message has come whole, HTTP_REQUEST_TIMEOUT_MS from the last of it
 * that came: a client that sends part of one and stops must not hold the
 * buffer it is read into. A client-streaming call's requests come at the
 * client's pace.
 */
static bool start_deadlines(struct tp_grpc_call *call) {
  uint64_t now = uv_now(call->server->loop);
  if (call->timeout_ms > 0)
    call->grpc_deadline_ms = now + (uint64_t)call->timeout_ms;
  uint64_t arrival = now + call->server->config->http_request_timeout_ms;
  if (call->method->on_message == NULL &&
      (call->grpc_deadline_ms == 0 || arrival < call->grpc_deadline_ms)) {
    call->awaiting_request = true;
    return start_deadline(call, arrival);
  }
  return call->grpc_deadline_ms == 0 || start_deadline(call, call->grpc_deadline_ms);
}

/* A call in the heap takes another deadline: back into the slot it frees, so nothing allocates. */
static void move_deadline(struct tp_grpc_call *call, uint64_t deadline_ms) {
  stop_deadline(call);
  (void)start_deadline(call, deadline_ms);
}

/*
 * Some of the request came: its bound counts from now, as HTTP/1.1's body
 * may stall no longer than HTTP_REQUEST_TIMEOUT_MS (a large message that
 * keeps coming is not cut). Nothing moves within one loop turn: a request
 * read with its headers costs nothing here.
 */
static void request_moving(struct tp_grpc_call *call) {
  if (!call->awaiting_request)
    return;
  uint64_t arrival = uv_now(call->server->loop) + call->server->config->http_request_timeout_ms;
  if (arrival == call->deadline_ms)
    return;
  if (call->grpc_deadline_ms != 0 && call->grpc_deadline_ms <= arrival) {
    call->awaiting_request = false;
    move_deadline(call, call->grpc_deadline_ms);
  } else {
    move_deadline(call, arrival);
  }
}

/* The request came whole: the call's deadline is its grpc-timeout's again. */
static void request_arrived(struct tp_grpc_call *call) {
  if (!call->awaiting_request)
    return;
  call->awaiting_request = false;
  if (call->grpc_deadline_ms != 0)
    move_deadline(call, call->grpc_deadline_ms);
  else
    stop_deadline(call);
}

static void call_headers_end(struct tp_h2_stream *stream) {
  struct tp_grpc_call *call = (struct tp_grpc_call *)stream;
  if (stream->headers_too_large) {
    tp_grpc_fail(call, EVF_GRPC_RESOURCE_EXHAUSTED, "request headers exceed %d bytes",
                 TP_H2_MAX_HEADER_LIST);
  } else if (!call->post) {
    send_http_status(call, "405");
  } else if (!call->grpc_content_type) {
    send_http_status(call, "415");
  } else if (call->method == NULL) {
    tp_grpc_fail(call, EVF_GRPC_UNIMPLEMENTED, "unknown method %s", call->path);
  } else if (call->encoding[0] != '\0') {
    tp_grpc_fail(call, EVF_GRPC_UNIMPLEMENTED,
                 "grpc-encoding %s is not supported; send uncompressed messages (identity)",
                 call->encoding);
  } else if (call->bad_timeout) {
    tp_grpc_fail(call, EVF_GRPC_INVALID_ARGUMENT, "malformed grpc-timeout header");
  } else if (call->timeout_ms == 0) {
    tp_grpc_fail(call, EVF_GRPC_DEADLINE_EXCEEDED, "deadline exceeded before the call started");
  } else {
    if (!start_deadlines(call)) {
      tp_grpc_fail(call, EVF_GRPC_RESOURCE_EXHAUSTED, "out of memory");
      return;
    }
    /* A client-streaming call's window is given back as its messages are handed over. */
    stream->manual_window = call->method->on_message != NULL;
    if (call->method->on_open != NULL)
      call->method->on_open(call);
  }
}

static uint32_t declared_length(const struct tp_buf *body) {
  return declared_length_at(body->data);
}

/* Checks the message prefix as soon as it is in; returns false after failing the call. */
static bool check_prefix(struct tp_grpc_call *call, const struct tp_buf *message) {
  uint64_t max = call->server->config->max_message_size;
  if (message->data[0] == 1) {
    tp_grpc_fail(call, EVF_GRPC_UNIMPLEMENTED,
                 "compressed messages are not supported; send them uncompressed");
    return false;
  }
  if (message->data[0] != 0) {
    tp_grpc_fail(call, EVF_GRPC_INVALID_ARGUMENT, "bad message prefix flag %u", message->data[0]);
    return false;
  }
  if (declared_length(message) > max) {
    tp_grpc_fail(call, EVF_GRPC_RESOURCE_EXHAUSTED,
                 "request message of %u bytes exceeds MAX_MESSAGE_SIZE (%llu bytes)",
                 declared_length(message), (unsigned long long)max);
    return false;
  }
  return true;
}

/* ---- client streaming ---- */

static bool taking_messages(const struct tp_grpc_call *call) {
  return !call->paused && !call->output_held && tp_grpc_open(call);
}

/*
 * Hands over the complete messages received while the call takes them;
 * then the half-close. The stream's window comes back for what arrived
 * while it took them, a message still arriving included (one larger than
 * the window could not arrive otherwise); a call that does not take them
 * holds back the client with what it has.
 */
static void hand_over_messages(struct tp_grpc_call *call) {
  if (call->handing_over)
    return; /* a handler resumed the call: the loop below goes on, and it keeps the call */
  call->handing_over = true;
  while (taking_messages(call) && call->body.len - call->body_used >= TP_GRPC_PREFIX) {
    if (unsent(call) > TP_GRPC_UNSENT_HIGH) {
      call->output_held = true;
      break;
    }
    struct tp_buf view = {.data = call->body.data + call->body_used,
                          .len = call->body.len - call->body_used};
    if (!check_prefix(call, &view))
      break;
    size_t len = declared_length(&view);
    if (view.len < TP_GRPC_PREFIX + len)
      break;
    call->body_used += TP_GRPC_PREFIX + len;
    call->method->on_message(call, view.data + TP_GRPC_PREFIX, len);
  }
  if (call->body_used == call->body.len) {
    call->body.len = call->body_used = 0;
  } else if (call->body_used > call->body.cap / 2) {
    memmove(call->body.data, call->body.data + call->body_used, call->body.len - call->body_used);
    call->body.len -= call->body_used;
    call->body_used = 0;
  }
  if (taking_messages(call))
    tp_conn_consume(&call->h2, call->h2.unconsumed);
  /* Window updates, and answers the handlers gave at once, which no completion will send. */
  if (call->streaming)
    tp_grpc_flush(call);
  else if (call->h2.conn != NULL)
    tp_conn_flush(call->h2.conn);
  if (call->request_ended && taking_messages(call) && !call->request_end_handled) {
    if (call->body.len > 0) {
      tp_grpc_fail(call, EVF_GRPC_INVALID_ARGUMENT, "the request ends inside a message");
    } else {
      call->request_end_handled = true;
      call->method->on_request_end(call);
    }
  }
  call->handing_over = false;
  /*
   * Resumed from the connection's write (not inside nghttp2's receive), an
   * answer above is sent at once and may have closed the stream.
   */
  maybe_free(call);
}

static void client_stream_data(struct tp_grpc_call *call, const uint8_t *data, size_t len) {
  if (call->answered) {
    tp_conn_consume(&call->h2, call->h2.unconsumed); /* dropped, as for unary calls */
    return;
  }
  if (tp_buf_append(&call->body, data, len) != 0) {
    tp_grpc_fail(call, EVF_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  hand_over_messages(call);
}

void tp_grpc_pause(struct tp_grpc_call *call) { call->paused = true; }

void tp_grpc_resume(struct tp_grpc_call *call) {
  if (!call->paused)
    return;
  call->paused = false;
  hand_over_messages(call); /* may free the call */
}

/*
 * A unary request's buffer takes its whole message at once, as its prefix
 * declares it, once an eighth of it has come: doubling as DATA frames came
 * copied each message about once more (6% of the instructions of an append
 * of 1000 events). Not before: a peer that declares a message makes the
 * server hold at most eight times what it sent. Out of memory, the buffer
 * grows as bytes come, as before.
 */
#define RESERVE_AFTER_PART 8

static void reserve_message(struct tp_grpc_call *call, size_t arriving) {
  struct tp_buf *body = &call->body;
  size_t whole = TP_GRPC_PREFIX + (size_t)declared_length(body);
  if (whole > body->cap && body->len + arriving >= whole / RESERVE_AFTER_PART)
    (void)tp_buf_reserve(body, whole - body->len);
}

/*
 * After an early answer (an error before the request ended) the rest of the
 * body is read and dropped: a RST_STREAM would make some clients report it
 * instead of the status, and flow control still bounds what arrives.
 */
static void call_data(struct tp_h2_stream *stream, const uint8_t *data, size_t len) {
  struct tp_grpc_call *call = (struct tp_grpc_call *)stream;
  if (stream->manual_window) {
    client_stream_data(call, data, len);
    return;
  }
  if (call->answered)
    return;
  bool had_prefix = call->body.len >= TP_GRPC_PREFIX;
  uint64_t limit = call->server->config->max_message_size + TP_GRPC_PREFIX;
  if (call->body.len + len > limit) {
    tp_grpc_fail(call, EVF_GRPC_RESOURCE_EXHAUSTED,
                 "request exceeds MAX_MESSAGE_SIZE (%llu bytes)",
                 (unsigned long long)call->server->config->max_message_size);
    return;
  }
  if (had_prefix)
    reserve_message(call, len);
  if (tp_buf_append(&call->body, data, len) != 0) {
    tp_grpc_fail(call, EVF_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  request_moving(call);
  if (!had_prefix && call->body.len >= TP_GRPC_PREFIX)
    check_prefix(call, &call->body);
}

/* A unary call carries exactly one message: check it, then run the method. */
static void handle_request(struct tp_grpc_call *call) {
  if (call->answered)
    return;
  if (call->body.len < TP_GRPC_PREFIX) {
    tp_grpc_fail(call, EVF_GRPC_INVALID_ARGUMENT,
                 call->body.len == 0 ? "the request has no message"
                                     : "the request ends inside a message prefix");
    return;
  }
  size_t declared = declared_length(&call->body), got = call->body.len - TP_GRPC_PREFIX;
  if (got < declared) {
    tp_grpc_fail(call, EVF_GRPC_INVALID_ARGUMENT,
                 "the request ends inside its message: %zu of %zu bytes", got, declared);
    return;
  }
  if (got > declared) {
    tp_grpc_fail(call, EVF_GRPC_INVALID_ARGUMENT,
                 "a unary request carries exactly one message");
    return;
  }
  call->method->handler(call, call->body.data + TP_GRPC_PREFIX, declared);
}

static void call_close(struct tp_h2_stream *stream, struct tp_conn *conn) {
  struct tp_grpc_call *call = (struct tp_grpc_call *)stream;
  if (!call->answered)
    count_call(call, EVF_GRPC_CANCELLED); /* reset by the client, or the connection is gone */
  if (call->response_counted)
    tp_conn_count_response(conn, -(ssize_t)(call->response.len - call->response_sent));
  maybe_free(call);
}

/* Handles a complete request now, or later when the connection has room for responses. */
static void call_request_end(struct tp_h2_stream *stream) {
  struct tp_grpc_call *call = (struct tp_grpc_call *)stream;
  if (call->answered)
    return;
  request_arrived(call);
  if (stream->manual_window) {
    call->request_ended = true;
    hand_over_messages(call);
    return;
  }
  if (tp_conn_congested(call->h2.conn))
    tp_conn_defer(call->h2.conn, stream);
  else
    handle_request(call);
}

/* A deferred unary request, or a client-streaming call that takes messages again. */
static void resume_stream(struct tp_h2_stream *stream) {
  struct tp_grpc_call *call = (struct tp_grpc_call *)stream;
  if (stream->manual_window)
    hand_over_messages(call);
  else
    handle_request(call);
}

const struct tp_h2_protocol tp_grpc_protocol = {
    .transport = TP_METRICS_GRPC,
    .open = call_open,
    .header = call_header,
    .headers_end = call_headers_end,
    .data = call_data,
    .request_end = call_request_end,
    .close = call_close,
    .resume = resume_stream,
};
