#ifndef TRANSPORT_APPEND_DECODE_H
#define TRANSPORT_APPEND_DECODE_H

/*
 * api.AppendToStreamRequest decoded by hand: every append comes through
 * here. protobuf-c's reflective unpack, and the scan for NUL bytes in
 * strings that it needs before it (it keeps strings NUL-terminated without
 * their length), took about 1,400 instructions per event.
 *
 * It accepts what protobuf_c_message_unpack accepts and fills the same
 * structs with the same values, from the given allocator (test_append_decode
 * compares the two on generated and damaged messages). Unknown fields are
 * skipped, not kept. A string field holding a NUL byte is refused.
 */

#include "api.pb-c.h"

#include <stddef.h>
#include <stdint.h>

enum tp_append_decode {
  TP_APPEND_DECODED,
  TP_APPEND_MALFORMED,   /* not a valid encoding of the message */
  TP_APPEND_NUL,         /* a string field holds a NUL byte */
  TP_APPEND_NOMEM,
};

/** Decodes msg into *out, allocated from allocator (an arena: nothing is freed on failure). */
enum tp_append_decode tp_append_decode(const uint8_t *msg, size_t len,
                                       ProtobufCAllocator *allocator,
                                       Api__AppendToStreamRequest **out);

#endif
