#ifndef TRANSPORT_JSON_H
#define TRANSPORT_JSON_H

/*
 * The JSON mapping of the API's messages, driven by protobuf-c descriptors,
 * so a field added to api.proto appears in the HTTP API with no glue.
 * Field names are the proto's (causation_id, added_at, ...).
 *
 * Output: written straight into a buffer, no intermediate tree. bytes as
 * standard base64 with padding; 64-bit integers as JSON numbers; numbers,
 * bools and repeated fields always present ({"count": 0}, {"events": []});
 * empty strings and bytes omitted; enums by name.
 *
 * Input (jansson): an object whose keys are field names; an unknown key is
 * an error naming it; bytes in standard or URL-safe base64, padded or not;
 * integers must be JSON integers in the field's range; strings valid UTF-8.
 */

#include "buf.h"

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

/** Appends msg as a JSON object. Returns 0 or -ENOMEM. */
int tp_json_encode(const ProtobufCMessage *msg, struct tp_buf *out);

/**
 * Parses JSON text into a new message of type desc (free it with
 * protobuf_c_message_free_unpacked(msg, NULL)). Returns 0, EVF_EINVAL with a
 * one-line reason in err (naming the field), or -ENOMEM.
 */
int tp_json_decode(const ProtobufCMessageDescriptor *desc, const char *text, size_t len,
                   ProtobufCMessage **out, char *err, size_t err_len);

#endif
