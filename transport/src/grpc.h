#ifndef TRANSPORT_GRPC_H
#define TRANSPORT_GRPC_H

/*
 * gRPC over HTTP/2 (the protocol spec's "PROTOCOL-HTTP2"). Request headers
 * are checked and grpc-timeout is enforced with a timer from the moment the
 * headers arrive. Messages are 5-byte length-prefixed, each bounded by
 * MAX_MESSAGE_SIZE.
 *
 * Unary and server-streaming methods get their one request message through
 * handler once the client half-closed. A unary method answers with
 * tp_grpc_reply() or tp_grpc_fail(), at once or later (after
 * tp_grpc_hold()). A streaming response sends messages with
 * tp_grpc_send() and ends with tp_grpc_finish() or tp_grpc_fail().
 *
 * Client-streaming methods (on_message set) get each request message as it
 * completes. The request body's HTTP/2 stream window comes back only while
 * the call takes messages, so tp_grpc_pause() is backpressure on the
 * client (while paused, at most a window of messages waits here), and so
 * is a client that does not read its answers: while more than
 * TP_GRPC_UNSENT_HIGH of them wait unsent, the call takes no messages.
 */

#include "buf.h"
#include "evf/status.h"
#include "h2.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct tp_grpc_call;

/** Unsent answers past which a client-streaming call takes no more messages (half: again). */
#define TP_GRPC_UNSENT_HIGH (1u << 20)
struct tp_server;

typedef void (*tp_grpc_handler)(struct tp_grpc_call *call, const uint8_t *message, size_t len);

struct tp_grpc_method {
  const char *path;        /* "/api.EventStore/AppendToStream" */
  tp_grpc_handler handler; /* unary and server-streaming: the request */
  /* Client-streaming: once accepted, each request message, then the client's half-close. */
  void (*on_open)(struct tp_grpc_call *call);
  tp_grpc_handler on_message;
  void (*on_request_end)(struct tp_grpc_call *call);
};

extern const struct tp_h2_protocol tp_grpc_protocol;

/** Prepares the server's deadline timer (armed while calls have deadlines). Loop's thread. */
void tp_grpc_server_init(struct tp_server *server);

/**
 * Closes the deadline timer, once, after the server's last connection: calls
 * still held by pending work stay listed, and no longer need a deadline.
 */
void tp_grpc_server_close(struct tp_server *server);

/** The per-shard server the call arrived on. */
struct tp_server *tp_grpc_server(struct tp_grpc_call *call);

/**
 * The response message buffer, emptied: append the encoded message to it,
 * then tp_grpc_reply(). (Its first 5 bytes are the gRPC prefix: the message
 * starts at TP_GRPC_PREFIX.)
 */
struct tp_buf *tp_grpc_response(struct tp_grpc_call *call);
#define TP_GRPC_PREFIX 5

/** Sends the response message and status OK. */
void tp_grpc_reply(struct tp_grpc_call *call);

/** Fails the call with a status and a message (printf format). */
void tp_grpc_fail(struct tp_grpc_call *call, enum evf_grpc_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/** Keeps the call alive for asynchronous work; tp_grpc_release() when done. */
void tp_grpc_hold(struct tp_grpc_call *call);
void tp_grpc_release(struct tp_grpc_call *call);

/** Whether the call can still be answered (not answered, not cancelled, connection usable). */
bool tp_grpc_open(const struct tp_grpc_call *call);

/* ---- streaming ---- */

/**
 * Queues one response message: head then body, either may be empty (the
 * response headers go first). Nothing is written until tp_grpc_flush().
 * Returns 0, or -ENOMEM after failing the call.
 */
int tp_grpc_send(struct tp_grpc_call *call, const void *head, size_t head_len, const void *body,
                 size_t body_len);

/** Writes what was queued, as the peer's flow control allows. */
void tp_grpc_flush(struct tp_grpc_call *call);

/** Response bytes queued and not yet taken by HTTP/2 (its flow control holds them). */
size_t tp_grpc_unsent(const struct tp_grpc_call *call);

/**
 * Calls on_drain whenever HTTP/2 takes queued bytes and at most low_water
 * remain. It runs inside nghttp2: it may only schedule work, not send.
 */
void tp_grpc_on_drain(struct tp_grpc_call *call, void (*on_drain)(struct tp_grpc_call *),
                      size_t low_water);

/** Ends a streaming call with status OK once the queued messages are sent. */
void tp_grpc_finish(struct tp_grpc_call *call);

/** Ends a streaming call with a status and message once the queued messages are sent. */
void tp_grpc_finish_with(struct tp_grpc_call *call, enum evf_grpc_status status,
                         const char *message);

/** Client streaming: stop or go on handing over request messages. */
void tp_grpc_pause(struct tp_grpc_call *call);
void tp_grpc_resume(struct tp_grpc_call *call);

/** The per-call storage for a handler's asynchronous state, freed with the call. */
void *tp_grpc_state(struct tp_grpc_call *call, size_t size, void (*free_state)(void *));

/* rpc.c: the method table. */
const struct tp_grpc_method *tp_rpc_find(const char *path, size_t len);

#endif
