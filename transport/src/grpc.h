#ifndef TRANSPORT_GRPC_H
#define TRANSPORT_GRPC_H

/*
 * gRPC over HTTP/2 (the protocol spec's "PROTOCOL-HTTP2"), unary calls:
 * request headers are checked, the body is collected as one 5-byte
 * length-prefixed message (bounded by MAX_MESSAGE_SIZE), and the method's
 * handler answers with tp_grpc_reply() or tp_grpc_fail(), at once or later
 * (after tp_grpc_hold()). grpc-timeout is enforced with a timer from the
 * moment the headers arrive.
 */

#include "buf.h"
#include "evf/status.h"
#include "h2.h"

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct tp_grpc_call;
struct tp_server;

typedef void (*tp_grpc_handler)(struct tp_grpc_call *call, const uint8_t *message, size_t len);

struct tp_grpc_method {
  const char *path;        /* "/api.EventStore/AppendToStream" */
  tp_grpc_handler handler;
};

extern const struct tp_h2_protocol tp_grpc_protocol;

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

/** Whether the call can still be answered (not answered, not cancelled, connection alive). */
bool tp_grpc_open(const struct tp_grpc_call *call);

/** Per-call storage for a handler's asynchronous state, freed with the call. */
void *tp_grpc_state(struct tp_grpc_call *call, size_t size, void (*free_state)(void *));

/* rpc.c: the method table. */
const struct tp_grpc_method *tp_rpc_find(const char *path, size_t len);

#endif
