/* HTTP/2 connections: socket I/O, the nghttp2 session, output backpressure. */
#include "h2.h"

#include "buf.h"
#include "evf/log.h"
#include "server.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

struct tp_conn {
  uv_tcp_t tcp;
  struct tp_server *server;
  const struct tp_h2_protocol *protocol;
  nghttp2_session *session;
  struct tp_buf pending;        /* produced by nghttp2, not yet handed to uv_write */
  struct tp_buf writing;        /* handed to the one uv_write in flight */
  uv_write_t write_req;
  bool write_in_flight;
  bool write_queued;            /* in the server's queue of writes to start */
  struct tp_conn *write_next;
  bool receiving;               /* inside nghttp2_session_mem_recv: flush afterwards */
  bool reading;
  bool closing;
  bool failed;                  /* a send failed: closes at the prepare phase (close_later) */
  struct tp_h2_stream *streams; /* open request streams */
  /*
   * The stream whose request header block is being read: HTTP/2 sends a
   * block's frames back to back, so its headers need no lookup by id.
   */
  struct tp_h2_stream *in_headers;
  struct tp_h2_stream *deferred_head, *deferred_tail;
  size_t response_bytes;        /* held by the protocol for this connection */
  struct tp_conn *prev, *next;  /* in the server's list */
};

static void start_reading(struct tp_conn *conn);

static void adopt(struct tp_server *server, struct tp_conn *conn) {
  conn->next = server->conns;
  if (server->conns)
    server->conns->prev = conn;
  server->conns = conn;
  server->conn_count++;
  tp_metrics_connections(&server->metrics, (enum tp_metrics_transport)conn->protocol->transport, 1);
}

static void forget(struct tp_server *server, struct tp_conn *conn) {
  if (conn->prev)
    conn->prev->next = conn->next;
  else
    server->conns = conn->next;
  if (conn->next)
    conn->next->prev = conn->prev;
  server->conn_count--;
  tp_metrics_connections(&server->metrics, (enum tp_metrics_transport)conn->protocol->transport, -1);
  tp_server__conn_gone(server);
}

nghttp2_session *tp_conn_session(struct tp_conn *conn) { return conn->session; }
struct tp_server *tp_conn_server(struct tp_conn *conn) { return conn->server; }

static void unqueue_write(struct tp_conn *conn);

static void conn_closed_cb(uv_handle_t *handle) {
  struct tp_conn *conn = handle->data;
  unqueue_write(conn);
  tp_buf_free(&conn->pending);
  tp_buf_free(&conn->writing);
  forget(conn->server, conn);
  free(conn);
}

static void link_stream(struct tp_conn *conn, struct tp_h2_stream *s, int32_t id) {
  s->conn = conn;
  s->id = id;
  s->prev = NULL;
  s->next = conn->streams;
  if (conn->streams)
    conn->streams->prev = s;
  conn->streams = s;
}

void tp_conn_count_response(struct tp_conn *conn, ssize_t bytes) {
  conn->response_bytes += (size_t)bytes;
}

bool tp_conn_congested(const struct tp_conn *conn) {
  return conn->response_bytes + conn->pending.len + conn->writing.len > TP_CONN_RESPONSE_BUDGET;
}

void tp_conn_defer(struct tp_conn *conn, struct tp_h2_stream *s) {
  s->deferred = true;
  s->deferred_next = NULL;
  if (conn->deferred_tail)
    conn->deferred_tail->deferred_next = s;
  else
    conn->deferred_head = s;
  conn->deferred_tail = s;
}

static void forget_deferred(struct tp_conn *conn, struct tp_h2_stream *s) {
  struct tp_h2_stream **link = &conn->deferred_head, *prev = NULL;
  while (*link != s) {
    prev = *link;
    link = &(*link)->deferred_next;
  }
  *link = s->deferred_next;
  if (conn->deferred_tail == s)
    conn->deferred_tail = prev;
  s->deferred = false;
}

/* Hands deferred requests back to the protocol while there is room. */
static void resume_deferred(struct tp_conn *conn) {
  while (conn->deferred_head && tp_conn_usable(conn) && !tp_conn_congested(conn)) {
    struct tp_h2_stream *s = conn->deferred_head;
    forget_deferred(conn, s);
    conn->protocol->resume(s);
  }
}

void tp_conn_consume(struct tp_h2_stream *s, size_t len) {
  if (s->conn == NULL || len == 0)
    return;
  s->unconsumed -= len;
  nghttp2_session_consume_stream(s->conn->session, s->id, len);
}

/* Detaches a stream from its connection and hands it to the protocol to free. */
static void close_stream(struct tp_conn *conn, struct tp_h2_stream *s) {
  if (s->deferred)
    forget_deferred(conn, s);
  s->unconsumed = 0;
  if (s->prev)
    s->prev->next = s->next;
  else
    conn->streams = s->next;
  if (s->next)
    s->next->prev = s->prev;
  s->conn = NULL;
  s->prev = s->next = NULL;
  if (conn->in_headers == s)
    conn->in_headers = NULL;
  conn->protocol->close(s, conn);
}

void tp_conn_close(struct tp_conn *conn) {
  if (conn->closing)
    return;
  conn->closing = true;
  /* Streams still open learn that the connection is gone; pending work detaches. */
  while (conn->streams)
    close_stream(conn, conn->streams);
  nghttp2_session_del(conn->session);
  conn->session = NULL;
  uv_close((uv_handle_t *)&conn->tcp, conn_closed_cb);
}

static bool finished(struct tp_conn *conn) {
  return !nghttp2_session_want_read(conn->session) && !nghttp2_session_want_write(conn->session) &&
         conn->pending.len == 0 && !conn->write_in_flight;
}

static void write_cb(uv_write_t *req, int status);
static void wrote(struct tp_conn *conn);

/*
 * A turn's replies nearly always fit the socket's buffer: written at once,
 * they skip libuv's write request, whose completion costs a pass through
 * the loop's pending queue and an epoll_ctl (libuv re-arms the watcher
 * after every queued write). What the socket does not take goes through
 * uv_write.
 */
static void start_write(struct tp_conn *conn) {
  uv_buf_t buf = uv_buf_init((char *)conn->pending.data, (unsigned)conn->pending.len);
  int n = uv_try_write((uv_stream_t *)&conn->tcp, &buf, 1);
  if (n == UV_EAGAIN)
    n = 0;
  if (n < 0) {
    tp_conn_close(conn);
    return;
  }
  if ((size_t)n == conn->pending.len) {
    conn->pending.len = 0;
    wrote(conn);
    return;
  }
  struct tp_buf tmp = conn->writing;
  conn->writing = conn->pending;
  conn->pending = tmp;
  conn->pending.len = 0;
  buf = uv_buf_init((char *)conn->writing.data + n, (unsigned)(conn->writing.len - (size_t)n));
  conn->write_req.data = conn;
  if (uv_write(&conn->write_req, (uv_stream_t *)&conn->tcp, &buf, 1, write_cb) != 0) {
    tp_conn_close(conn);
    return;
  }
  conn->write_in_flight = true;
}

/*
 * Writes start from the loop's prepare phase, just before it polls: the
 * replies a loop turn produces for a connection (one per append a shard
 * answered, window updates) leave in one write instead of one write for
 * the first and another for the rest once that write completed.
 */
static void start_queued_writes(uv_prepare_t *writer) {
  struct tp_server *server = writer->data;
  struct tp_conn *conn;
  while ((conn = server->h2_write_queue) != NULL) {
    server->h2_write_queue = conn->write_next;
    conn->write_queued = false;
    if (conn->failed)
      tp_conn_close(conn);
    else if (!conn->closing && conn->pending.len > 0 && !conn->write_in_flight)
      start_write(conn);
  }
  uv_prepare_stop(writer);
}

static void queue_write(struct tp_conn *conn) {
  struct tp_server *server = conn->server;
  assert(server->handles_open); /* they close once the server has no connection */
  if (conn->write_queued)
    return;
  conn->write_queued = true;
  conn->write_next = server->h2_write_queue;
  server->h2_write_queue = conn;
  uv_prepare_start(&server->h2_writer, start_queued_writes);
}

/* Before the connection's memory goes: the queue must not point at it. */
static void unqueue_write(struct tp_conn *conn) {
  struct tp_conn **link = &conn->server->h2_write_queue;
  while (conn->write_queued && *link != NULL) {
    if (*link == conn) {
      *link = conn->write_next;
      conn->write_queued = false;
    } else {
      link = &(*link)->write_next;
    }
  }
}

/* A connection about to close: what it has to send is written now, not at the prepare phase. */
static void send_then_close(struct tp_conn *conn) {
  tp_conn_flush(conn);
  unqueue_write(conn);
  if (!conn->closing && conn->pending.len > 0 && !conn->write_in_flight)
    start_write(conn);
  tp_conn_close(conn);
}

void tp_h2_writer_init(struct tp_server *server) {
  uv_prepare_init(server->loop, &server->h2_writer);
  server->h2_writer.data = server;
}

void tp_h2_writer_close(struct tp_server *server) {
  uv_close((uv_handle_t *)&server->h2_writer, NULL);
}

/*
 * A send that fails closes the connection at the loop's prepare phase, not
 * at once: the send may come from a loop over subscriptions, several of
 * them on this connection's streams, which closing frees.
 */
static void close_later(struct tp_conn *conn) {
  conn->failed = true;
  if (conn->reading) {
    uv_read_stop((uv_stream_t *)&conn->tcp); /* no more requests from it meanwhile */
    conn->reading = false;
  }
  queue_write(conn);
}

bool tp_conn_usable(const struct tp_conn *conn) { return !conn->closing && !conn->failed; }

void tp_conn_fail(struct tp_conn *conn) {
  if (tp_conn_usable(conn))
    close_later(conn);
}

void tp_conn_flush(struct tp_conn *conn) {
  /* nghttp2 must not send from inside its own callbacks; read_cb flushes after. */
  if (!tp_conn_usable(conn) || conn->receiving)
    return;
  while (conn->pending.len < TP_CONN_OUTPUT_HIGH) {
    const uint8_t *data;
    ssize_t n = nghttp2_session_mem_send(conn->session, &data);
    if (n < 0) {
      evf_warn("http2 send failed: %s", nghttp2_strerror((int)n));
      close_later(conn);
      return;
    }
    if (n == 0)
      break;
    if (tp_buf_append(&conn->pending, data, (size_t)n) != 0) {
      close_later(conn);
      return;
    }
  }
  if (conn->pending.len > 0 && !conn->write_in_flight)
    queue_write(conn);
  else if (finished(conn))
    tp_conn_close(conn);
}

/* The output went out: produce more, and take requests again if the output had stopped them. */
static void wrote(struct tp_conn *conn) {
  tp_conn_flush(conn);
  resume_deferred(conn);
  tp_conn_flush(conn);
  if (tp_conn_usable(conn) && !conn->reading && conn->pending.len < TP_CONN_OUTPUT_HIGH)
    start_reading(conn);
}

static void write_cb(uv_write_t *req, int status) {
  struct tp_conn *conn = req->data;
  conn->write_in_flight = false;
  conn->writing.len = 0;
  if (status != 0) {
    tp_conn_close(conn);
    return;
  }
  wrote(conn);
}

static void alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  struct tp_conn *conn = handle->data;
  (void)suggested;
  *buf = tp_server__read_buffer(conn->server);
}

static void read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  struct tp_conn *conn = stream->data;
  if (nread < 0) {
    tp_conn_close(conn); /* EOF or error: the peer is gone */
    return;
  }
  if (nread == 0)
    return;
  conn->receiving = true;
  ssize_t used = nghttp2_session_mem_recv(conn->session, (const uint8_t *)buf->base, (size_t)nread);
  conn->receiving = false;
  if (used < 0) {
    evf_debug("http2 receive failed: %s", nghttp2_strerror((int)used));
    /* nghttp2 queued a GOAWAY for protocol errors: send it, then close. */
    send_then_close(conn);
    return;
  }
  tp_conn_flush(conn);
  /* Streams the peer reset may have freed response budget: deferred requests go on. */
  resume_deferred(conn);
  tp_conn_flush(conn);
  if (!conn->closing && (conn->write_in_flight || conn->write_queued) &&
      conn->pending.len >= TP_CONN_OUTPUT_HIGH) {
    uv_read_stop(stream); /* the peer reads slower than it asks: wait for it */
    conn->reading = false;
  }
}

static void start_reading(struct tp_conn *conn) {
  if (uv_read_start((uv_stream_t *)&conn->tcp, alloc_cb, read_cb) == 0)
    conn->reading = true;
}

/* ---- nghttp2 callbacks: request events go to the protocol ---- */

static struct tp_h2_stream *request_stream(nghttp2_session *session, const nghttp2_frame *frame) {
  return nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
}

static bool is_request_headers(const nghttp2_frame *frame) {
  return frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST;
}

/* The stream a request header block belongs to; NULL if it was refused. */
static struct tp_h2_stream *headers_stream(const struct tp_conn *conn, const nghttp2_frame *frame) {
  struct tp_h2_stream *stream = conn->in_headers;
  return stream != NULL && stream->id == frame->hd.stream_id ? stream : NULL;
}

static int begin_headers_cb(nghttp2_session *session, const nghttp2_frame *frame, void *user) {
  struct tp_conn *conn = user;
  if (!is_request_headers(frame))
    return 0;
  struct tp_h2_stream *stream = conn->in_headers = conn->protocol->open(conn);
  if (stream == NULL)
    return nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                     NGHTTP2_REFUSED_STREAM);
  link_stream(conn, stream, frame->hd.stream_id);
  nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, stream);
  return 0;
}

static int header_cb(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user) {
  struct tp_conn *conn = user;
  (void)session;
  (void)flags;
  struct tp_h2_stream *stream = is_request_headers(frame) ? headers_stream(conn, frame) : NULL;
  if (stream == NULL)
    return 0;
  stream->header_bytes += namelen + valuelen + 32;
  if (stream->header_bytes > TP_H2_MAX_HEADER_LIST)
    stream->headers_too_large = true; /* the protocol answers at headers_end */
  else
    conn->protocol->header(stream, name, namelen, value, valuelen);
  return 0;
}

static int frame_recv_cb(nghttp2_session *session, const nghttp2_frame *frame, void *user) {
  struct tp_conn *conn = user;
  bool request_headers = is_request_headers(frame);
  struct tp_h2_stream *stream =
      request_headers ? headers_stream(conn, frame) : request_stream(session, frame);
  if (request_headers)
    conn->in_headers = NULL;
  if (stream == NULL)
    return 0;
  if (request_headers)
    conn->protocol->headers_end(stream);
  /* headers_end may have answered and reset the stream */
  if (stream->conn != NULL &&
      (frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
      (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
    conn->protocol->request_end(stream);
  return 0;
}

static int data_chunk_cb(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user) {
  struct tp_conn *conn = user;
  (void)flags;
  struct tp_h2_stream *stream = nghttp2_session_get_stream_user_data(session, stream_id);
  if (stream == NULL) {
    nghttp2_session_consume_connection(session, len);
  } else if (stream->manual_window) {
    /*
     * The connection's window comes back at once: a stream that holds back
     * its own window (backpressure on one call) must not stall the others.
     * The stream's counts before the protocol sees the bytes: it may give
     * them back at once.
     */
    nghttp2_session_consume_connection(session, len);
    stream->unconsumed += len;
    conn->protocol->data(stream, data, len);
  } else {
    conn->protocol->data(stream, data, len);
    nghttp2_session_consume(session, stream_id, len); /* both windows, in one call */
  }
  return 0;
}

static int stream_close_cb(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user) {
  struct tp_conn *conn = user;
  (void)error_code;
  struct tp_h2_stream *stream = nghttp2_session_get_stream_user_data(session, stream_id);
  if (stream != NULL) {
    nghttp2_session_set_stream_user_data(session, stream_id, NULL);
    close_stream(conn, stream);
  }
  return 0;
}

/*
 * A response complete while the client is still sending its request (a
 * BatchAppend ended at shutdown, an error answered before the body): ask it
 * to stop with RST_STREAM NO_ERROR, as RFC 9113 section 8.1 allows, so the
 * stream closes now instead of waiting for a request nobody will read.
 */
static int frame_sent_cb(nghttp2_session *session, const nghttp2_frame *frame, void *user) {
  (void)user;
  if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
      (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
      nghttp2_session_get_stream_remote_close(session, frame->hd.stream_id) == 0)
    nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
  return 0;
}

/* ---- setting up ---- */

static nghttp2_session_callbacks *make_callbacks(void) {
  nghttp2_session_callbacks *cbs;
  if (nghttp2_session_callbacks_new(&cbs) != 0)
    return NULL;
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, begin_headers_cb);
  nghttp2_session_callbacks_set_on_header_callback(cbs, header_cb);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, frame_recv_cb);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, data_chunk_cb);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, stream_close_cb);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, frame_sent_cb);
  return cbs;
}

/*
 * Windows large enough for 4 MiB messages in flight on several streams;
 * what a client may push is bounded by them and by the stream limit.
 */
#define STREAM_WINDOW (4 << 20)
#define CONNECTION_WINDOW (16 << 20)
#define MAX_CONCURRENT_STREAMS 256

static int start_session(struct tp_conn *conn) {
  nghttp2_session_callbacks *cbs = make_callbacks();
  nghttp2_option *option = NULL;
  if (cbs == NULL || nghttp2_option_new(&option) != 0) {
    if (cbs)
      nghttp2_session_callbacks_del(cbs);
    return -1;
  }
  /* Stream window updates follow what protocols consumed (tp_conn_consume): backpressure. */
  nghttp2_option_set_no_auto_window_update(option, 1);
  int rc = nghttp2_session_server_new2(&conn->session, cbs, conn, option);
  nghttp2_option_del(option);
  nghttp2_session_callbacks_del(cbs);
  if (rc != 0)
    return rc;
  nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, MAX_CONCURRENT_STREAMS},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, TP_H2_MAX_HEADER_LIST},
  };
  rc = nghttp2_submit_settings(conn->session, NGHTTP2_FLAG_NONE, settings,
                               sizeof(settings) / sizeof(settings[0]));
  if (rc == 0)
    rc = nghttp2_session_set_local_window_size(conn->session, NGHTTP2_FLAG_NONE, 0,
                                               CONNECTION_WINDOW);
  return rc;
}

static struct tp_conn *create_conn(struct tp_server *server, const struct tp_h2_protocol *protocol) {
  struct tp_conn *conn = calloc(1, sizeof(*conn));
  if (conn == NULL)
    return NULL;
  conn->server = server;
  conn->protocol = protocol;
  uv_tcp_init(server->loop, &conn->tcp);
  conn->tcp.data = conn;
  adopt(server, conn);
  return conn;
}

/* Closes a connection whose session may not exist yet. */
static void abandon(struct tp_conn *conn) {
  conn->closing = true;
  if (conn->session)
    nghttp2_session_del(conn->session);
  conn->session = NULL;
  uv_close((uv_handle_t *)&conn->tcp, conn_closed_cb);
}

int tp_conn_accept(struct tp_server *server, uv_stream_t *listener,
                   const struct tp_h2_protocol *protocol) {
  struct tp_conn *conn = create_conn(server, protocol);
  if (conn == NULL)
    return -ENOMEM;
  if (uv_accept(listener, (uv_stream_t *)&conn->tcp) != 0 || start_session(conn) != 0) {
    abandon(conn);
    return 0;
  }
  uv_tcp_nodelay(&conn->tcp, 1);
  start_reading(conn);
  tp_conn_flush(conn);
  return 0;
}

void tp_conn_adopt(struct tp_server *server, int fd, const struct tp_h2_protocol *protocol,
                   const uint8_t *received, size_t len) {
  struct tp_conn *conn = create_conn(server, protocol);
  if (conn == NULL) {
    close(fd);
    return;
  }
  if (uv_tcp_open(&conn->tcp, fd) != 0) {
    close(fd);
    abandon(conn);
    return;
  }
  if (start_session(conn) != 0) {
    abandon(conn);
    return;
  }
  conn->receiving = true;
  ssize_t used = nghttp2_session_mem_recv(conn->session, received, len);
  conn->receiving = false;
  if (used < 0) {
    send_then_close(conn);
    return;
  }
  start_reading(conn);
  if (server->stopping)
    tp_conn_drain(conn); /* handed over during shutdown: it gets its GOAWAY too */
  else
    tp_conn_flush(conn);
}

void tp_conn_drain(struct tp_conn *conn) {
  if (conn->closing)
    return;
  nghttp2_submit_goaway(conn->session, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(conn->session), NGHTTP2_NO_ERROR,
                        NULL, 0);
  tp_conn_flush(conn);
}

struct tp_conn *tp_conn_next(struct tp_conn *conn) { return conn->next; }
