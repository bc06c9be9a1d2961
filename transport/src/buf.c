#include "buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int tp_buf_reserve(struct tp_buf *b, size_t extra) {
  if (b->cap - b->len >= extra)
    return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap - b->len < extra)
    cap *= 2;
  uint8_t *data = realloc(b->data, cap);
  if (data == NULL)
    return -ENOMEM;
  b->data = data;
  b->cap = cap;
  return 0;
}

int tp_buf_append(struct tp_buf *b, const void *data, size_t len) {
  int rc = tp_buf_reserve(b, len);
  if (rc != 0)
    return rc;
  if (len > 0)
    memcpy(b->data + b->len, data, len);
  b->len += len;
  return 0;
}

size_t tp_varint_size(uint64_t value) {
  size_t n = 1;
  while (value >= 0x80) {
    value >>= 7;
    n++;
  }
  return n;
}

int tp_buf_append_varint(struct tp_buf *b, uint64_t value) {
  uint8_t bytes[10];
  size_t n = 0;
  while (value >= 0x80) {
    bytes[n++] = (uint8_t)(value | 0x80);
    value >>= 7;
  }
  bytes[n++] = (uint8_t)value;
  return tp_buf_append(b, bytes, n);
}

int tp_buf_put_varint_field(struct tp_buf *b, uint8_t tag, uint64_t value) {
  if (value == 0)
    return 0;
  int rc = tp_buf_append(b, &tag, 1);
  return rc ? rc : tp_buf_append_varint(b, value);
}

int tp_buf_put_bytes_field(struct tp_buf *b, uint8_t tag, const void *data, size_t len) {
  int rc = tp_buf_append(b, &tag, 1);
  if (rc == 0)
    rc = tp_buf_append_varint(b, len);
  return rc ? rc : tp_buf_append(b, data, len);
}

size_t tp_pb_field_size(size_t len) { return 1 + tp_varint_size(len) + len; }

void tp_buf_free(struct tp_buf *b) {
  free(b->data);
  *b = (struct tp_buf){0};
}
