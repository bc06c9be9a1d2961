#ifndef TRANSPORT_RPC_H
#define TRANSPORT_RPC_H

/* What the method files share: rpc.c (unary methods) and rpc_stream.c (streaming ones). */

#include "api.pb-c.h"
#include "evf/status.h"
#include "evf/store.h"
#include "grpc.h"

/**
 * Whether a string field (at any depth) holds a NUL byte. protobuf-c keeps
 * strings NUL-terminated without their length, so a NUL would silently cut
 * a stream name or a type short: such requests are refused instead.
 * Malformed input returns false; unpacking then fails on it.
 */
bool tp_rpc__has_nul_in_strings(const ProtobufCMessageDescriptor *desc, const uint8_t *p,
                                size_t len);

/**
 * Decodes a request message, refusing NUL bytes in its strings. On failure
 * fails the call with INVALID_ARGUMENT (RESOURCE_EXHAUSTED when an
 * allocation failed) and returns NULL. allocator: NULL
 * (then free the message with protobuf_c_message_free_unpacked) or an
 * arena's (then release the arena instead).
 */
ProtobufCMessage *tp_rpc__unpack(struct tp_grpc_call *call, const ProtobufCMessageDescriptor *desc,
                                 const uint8_t *msg, size_t len, ProtobufCAllocator *allocator);

/** Appends an AppendToStreamResponse for a successful append. Returns 0 or -ENOMEM. */
int tp_rpc__encode_append_response(struct tp_buf *out, const struct store_append *append);

/**
 * Free room in which tp_rpc__encode_append_response() never allocates, for
 * an append of n events: with that much reserved it cannot fail.
 */
size_t tp_rpc__append_response_max(size_t n_events);

/** The status and message of a failed append (status: its error code). */
enum evf_grpc_status tp_rpc__append_failure(const struct store_append *append, int status,
                                            char *message, size_t size);

/** Counts an answered append in the metrics (r may be NULL when it could not be decoded). */
void tp_rpc__count_append(struct tp_grpc_call *call, const Api__AppendToStreamRequest *r,
                          int status);

/* rpc_stream.c */
void tp_rpc__subscribe_to_all(struct tp_grpc_call *call, const uint8_t *msg, size_t len);
void tp_rpc__subscribe_to_stream(struct tp_grpc_call *call, const uint8_t *msg, size_t len);
void tp_rpc__batch_append_open(struct tp_grpc_call *call);
void tp_rpc__batch_append_message(struct tp_grpc_call *call, const uint8_t *msg, size_t len);
void tp_rpc__batch_append_end(struct tp_grpc_call *call);
/** Server stopping: BatchAppend calls read no more, answer what they hold, end UNAVAILABLE. */
void tp_rpc__batch_append_shutdown(struct tp_server *server);

#endif
