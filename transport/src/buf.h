#ifndef TRANSPORT_BUF_H
#define TRANSPORT_BUF_H

/* A growable byte buffer, owned by one thread. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tp_buf {
  uint8_t *data;
  size_t len;
  size_t cap;
};

/** Makes room for extra more bytes. Returns 0 or -ENOMEM. */
int tp_buf_reserve(struct tp_buf *b, size_t extra);

/** Appends bytes. Returns 0 or -ENOMEM. */
int tp_buf_append(struct tp_buf *b, const void *data, size_t len);

/* Protobuf wire tags: field number << 3 | wire type. */
#define TP_PB_TAG(field, type) ((uint8_t)((field) << 3 | (type)))
#define TP_PB_VARINT 0
#define TP_PB_BYTES 2

/** Appends a varint field unless value is 0 (proto3 leaves defaults out). Returns 0 or -ENOMEM. */
int tp_buf_put_varint_field(struct tp_buf *b, uint8_t tag, uint64_t value);

/**
 * Appends a length-delimited field's key and length; returns where its len
 * bytes go, valid until the buffer next grows, or NULL when out of memory.
 */
uint8_t *tp_buf_bytes_field_room(struct tp_buf *b, uint8_t tag, size_t len);

/** Appends a length-delimited field. Returns 0 or -ENOMEM. */
int tp_buf_put_bytes_field(struct tp_buf *b, uint8_t tag, const void *data, size_t len);

/** The size of a length-delimited field (one-byte tag) of len bytes. */
size_t tp_pb_field_size(size_t len);

void tp_buf_free(struct tp_buf *b);

#endif
