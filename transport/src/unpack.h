#ifndef TRANSPORT_UNPACK_H
#define TRANSPORT_UNPACK_H

/*
 * protobuf-c's unpack returns NULL for bytes that do not decode and for an
 * allocation that failed alike. These decode through an allocator that
 * notes a failure, so that a lack of memory is told apart: it is the
 * server's momentary state, not a fault of the request or of the data.
 */

#include "api.pb-c.h"

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

/**
 * Decodes the len bytes at data as a message of type desc into *out, its
 * memory from allocator: NULL for malloc (free the message with
 * protobuf_c_message_free_unpacked(msg, NULL)), or an arena's (release the
 * arena instead). Borrows data. Any thread. Returns:
 *  - 0;
 *  - -ENOMEM when an allocation failed;
 *  - EVF_EINVAL when the bytes are not an encoding of desc.
 * *out is untouched on failure.
 */
int tp_unpack(const ProtobufCMessageDescriptor *desc, ProtobufCAllocator *allocator,
              const uint8_t *data, size_t len, ProtobufCMessage **out);

/**
 * Decodes a stored event (the wire encoding a read of the store hands
 * over) into *out; free it with api__event__free_unpacked(e, NULL).
 * Returns 0, -ENOMEM, or EVF_EINTERNAL when the stored bytes do not decode
 * (damaged data). *out is untouched on failure.
 */
int tp_unpack_event(const uint8_t *data, size_t len, Api__Event **out);

#endif
