#ifndef TRANSPORT_JSON_INTERNAL_H
#define TRANSPORT_JSON_INTERNAL_H

/* What json_encode.c and json_decode.c share. */

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

/* The size of one element of a repeated field of this type. */
static inline size_t tp_json__element_size(ProtobufCType type) {
  switch (type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
  case PROTOBUF_C_TYPE_FLOAT:
  case PROTOBUF_C_TYPE_ENUM:
    return 4;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
  case PROTOBUF_C_TYPE_DOUBLE:
    return 8;
  case PROTOBUF_C_TYPE_BOOL:
    return sizeof(protobuf_c_boolean);
  case PROTOBUF_C_TYPE_STRING:
    return sizeof(char *);
  case PROTOBUF_C_TYPE_BYTES:
    return sizeof(ProtobufCBinaryData);
  case PROTOBUF_C_TYPE_MESSAGE:
    return sizeof(ProtobufCMessage *);
  }
  return 0;
}


/*
 * How a string byte is written: 0 as itself, 'u' as \u00XX, anything else
 * as a backslash and that letter. Bytes from 0x80 up are UTF-8 and pass.
 * (json_encode.c; the decoder quotes names in its errors the same way.)
 */
extern const char tp_json__escapes[256];

#endif
