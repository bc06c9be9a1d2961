#ifndef TRANSPORT_H2_H
#define TRANSPORT_H2_H

/*
 * An HTTP/2 server connection: a libuv TCP stream feeding an nghttp2 server
 * session. It owns the socket, the session and the output; a protocol
 * (gRPC, later the JSON API) receives each request stream's events through
 * struct tp_h2_protocol and answers through the tp_conn_* functions.
 *
 * Output: what nghttp2 produces during a loop turn is queued, and the
 * server's writer (a uv_prepare handle) starts the writes just before the
 * loop polls, so that a turn's replies to a connection leave in one write.
 *
 * Backpressure: output is written one uv_write at a time; while more than
 * TP_CONN_OUTPUT_HIGH bytes wait to be written (queued or in flight), the
 * connection stops reading (so stops taking new requests) and stops
 * pulling frames from nghttp2, whose flow control bounds the rest.
 */

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#define TP_CONN_OUTPUT_HIGH (1u << 20)

struct tp_conn;
struct tp_server;

/*
 * The part of a protocol's stream object that the connection manages:
 * embed it first. conn is NULL once the stream is closed (the peer reset
 * it, it completed, or the connection went away): nothing may be sent on it.
 */
struct tp_h2_stream {
  struct tp_conn *conn;
  int32_t id;
  struct tp_h2_stream *prev, *next;
  struct tp_h2_stream *deferred_next; /* in the connection's queue of deferred requests */
  bool deferred;
  size_t header_bytes;          /* as counted for SETTINGS_MAX_HEADER_LIST_SIZE */
  bool headers_too_large;       /* past TP_H2_MAX_HEADER_LIST: the rest was dropped */
  /*
   * Request body bytes are given back to the peer's stream window by the
   * protocol (tp_conn_consume), not as they arrive: set it by headers_end.
   * The connection's window always comes back as they arrive.
   */
  bool manual_window;
  size_t unconsumed;            /* received and not yet given back to the stream window */
};

/* The most request header bytes (name + value + 32 each, RFC 9113), as for HTTP/1.1. */
#define TP_H2_MAX_HEADER_LIST (80 * 1024)

/* What a protocol does with request streams. */
struct tp_h2_protocol {
  int transport;                /* enum tp_metrics_transport: how its connections are counted */
  /** A new request stream: returns its object, or NULL to refuse it. */
  struct tp_h2_stream *(*open)(struct tp_conn *conn);
  /** One request header (pseudo-headers included). */
  void (*header)(struct tp_h2_stream *stream, const uint8_t *name, size_t namelen,
                 const uint8_t *value, size_t valuelen);
  /** All headers are in. */
  void (*headers_end)(struct tp_h2_stream *stream);
  /** A chunk of the request body. */
  void (*data)(struct tp_h2_stream *stream, const uint8_t *data, size_t len);
  /** The client finished its request (END_STREAM). */
  void (*request_end)(struct tp_h2_stream *stream);
  /**
   * Called once per stream, after stream->conn is cleared (conn is where it
   * was): the protocol frees the stream now or when its pending work ends.
   */
  void (*close)(struct tp_h2_stream *stream, struct tp_conn *conn);
  /** A request deferred with tp_conn_defer() may now be handled. */
  void (*resume)(struct tp_h2_stream *stream);
};

/** Prepares the server's writer, which starts the connections' writes once per loop turn. Loop's thread. */
void tp_h2_writer_init(struct tp_server *server);

/** Closes the writer, once, after the server's last connection. Loop's thread. */
void tp_h2_writer_close(struct tp_server *server);

/**
 * Accepts a connection from the server's listener. Loop's thread. Returns
 * -ENOMEM when it had no memory to take it (it is still pending), else 0.
 */
int tp_conn_accept(struct tp_server *server, uv_stream_t *listener,
                    const struct tp_h2_protocol *protocol);

/**
 * Takes over a socket that already received bytes (an HTTP/1.1 listener
 * that saw the HTTP/2 preface): the bytes are fed to the new session first.
 */
void tp_conn_adopt(struct tp_server *server, int fd, const struct tp_h2_protocol *protocol,
                   const uint8_t *received, size_t len);

nghttp2_session *tp_conn_session(struct tp_conn *conn);
struct tp_server *tp_conn_server(struct tp_conn *conn);

/*
 * Response memory. A protocol counts the response bytes it holds for a
 * connection (added when a response is built, removed as nghttp2 takes
 * them); while they and the unwritten output pass TP_CONN_RESPONSE_BUDGET,
 * the connection is congested: the protocol defers new requests, which the
 * connection resumes in order as the peer reads. So a slow reader costs at
 * most about the budget plus one response.
 */
#define TP_CONN_RESPONSE_BUDGET (8u << 20)
void tp_conn_count_response(struct tp_conn *conn, ssize_t bytes);
bool tp_conn_congested(const struct tp_conn *conn);
void tp_conn_defer(struct tp_conn *conn, struct tp_h2_stream *stream);

/** Gives len request body bytes of a manual_window stream back to the peer's stream window. */
void tp_conn_consume(struct tp_h2_stream *stream, size_t len);

/**
 * Writes what nghttp2 has to send (call after submitting frames). A send
 * that fails closes the connection at the loop's prepare phase, not at
 * once: its streams keep it until then, and tp_conn_usable() is false.
 */
void tp_conn_flush(struct tp_conn *conn);

/** False once the connection closes or a send on it failed: nothing more goes to or from it. */
bool tp_conn_usable(const struct tp_conn *conn);

/**
 * For a frame nghttp2 would not take (out of memory): the connection fails
 * as a failed send makes it, rather than leave a stream unanswered.
 */
void tp_conn_fail(struct tp_conn *conn);

/** Sends GOAWAY and closes once the last stream ends. */
void tp_conn_drain(struct tp_conn *conn);

/** Closes at once (shutdown grace period over). */
void tp_conn_close(struct tp_conn *conn);

/** The next connection in the server's list (struct tp_server.conns). */
struct tp_conn *tp_conn_next(struct tp_conn *conn);

#endif
