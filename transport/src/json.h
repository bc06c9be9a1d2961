#ifndef TRANSPORT_JSON_H
#define TRANSPORT_JSON_H

/*
 * The JSON mapping of the API's messages, driven by protobuf-c descriptors,
 * so a field added to api.proto appears in the HTTP API with no glue.
 * Field names are the proto's (causation_id, added_at, ...).
 *
 * Output: compact (no spaces), written straight into a buffer, no
 * intermediate tree. Fields in field-number order. Integers of every width
 * as JSON numbers (64-bit ones too, exact); bools true/false; float and
 * double in the shortest form that reads back the same, NaN and infinities
 * as "NaN", "Infinity", "-Infinity"; enums by name (by number for a value
 * the descriptor does not know); strings with '"', '\\' and control
 * characters escaped, other UTF-8 as is; bytes as standard base64 with
 * padding. Numbers, bools, enums and repeated fields are always present
 * ({"count":0}, {"events":[]}); empty strings and bytes and NULL messages
 * are omitted. A oneof member or a proto2 field is written when set.
 *
 * Input (jansson): an object whose keys are field names; an unknown key is
 * an error naming it, with its path ("events[2].dta"); duplicate keys are
 * refused; null means the field's default. Integers must be JSON integers
 * in the field's range (uint64 up to 18446744073709551615 included); 64-bit
 * fields also take a string of digits, as proto3 JSON does. float/double
 * take numbers and the three strings above; bools true/false; enums a name
 * or an int32; bytes standard or URL-safe base64, padded or not; strings
 * valid UTF-8 without NUL; messages objects; repeated fields arrays.
 * Nesting is limited by jansson (2048 levels).
 *
 * Both functions are reentrant: any thread, no shared state. The first
 * decode sets jansson's allocation functions (json_set_alloc_funcs) for the
 * process: nothing else may set them.
 */

#include "buf.h"

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

/**
 * Appends msg as a JSON object to out. Borrows msg. Returns 0, or -ENOMEM
 * with out->len as it was (the bytes past it are unspecified).
 */
int tp_json_encode(const ProtobufCMessage *msg, struct tp_buf *out);

/**
 * Parses the len bytes of JSON at text (no terminating NUL needed; text
 * may be NULL when len is 0) into a new message of type desc, stored in
 * *out; the caller owns it and frees it with
 * protobuf_c_message_free_unpacked(msg, NULL). Borrows text. Returns:
 *  - 0;
 *  - EVF_EINVAL for a document that is not valid JSON ("malformed JSON:
 *    <jansson's reason> at line L, column C"), not an object, or that does
 *    not fit desc (`unknown field "events[0].dta"`, `field "version":
 *    expected an integer from -2147483648 to 2147483647`): a one-line reason
 *    in err (UTF-8, no control characters), cut to err_len on a character
 *    boundary; err may be NULL when err_len is 0;
 *  - -ENOMEM when any allocation failed, jansson's included.
 * *out is untouched on failure.
 */
int tp_json_decode(const ProtobufCMessageDescriptor *desc, const char *text, size_t len,
                   ProtobufCMessage **out, char *err, size_t err_len);

#endif
