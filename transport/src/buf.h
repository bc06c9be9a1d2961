#ifndef TRANSPORT_BUF_H
#define TRANSPORT_BUF_H

/* A growable byte buffer, owned by one thread. */

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

/** Appends a protobuf varint. Returns 0 or -ENOMEM. */
int tp_buf_append_varint(struct tp_buf *b, uint64_t value);

/** The size of a protobuf varint. */
size_t tp_varint_size(uint64_t value);

void tp_buf_free(struct tp_buf *b);

#endif
