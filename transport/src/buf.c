#include "buf.h"

#include "evf/pbwire.h"

#include <errno.h>
#include <stdint.h>
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

/* Writes value as a varint at the buffer's end, which has room for EVF_PB_VARINT_MAX bytes. */
static void put_varint(struct tp_buf *b, uint64_t value) {
  b->len += evf_pb_put_varint(b->data + b->len, value);
}

/* Fields are written after one reservation: responses are made of many small ones. */
int tp_buf_put_varint_field(struct tp_buf *b, uint8_t tag, uint64_t value) {
  if (value == 0)
    return 0;
  int rc = tp_buf_reserve(b, 1 + EVF_PB_VARINT_MAX);
  if (rc != 0)
    return rc;
  b->data[b->len++] = tag;
  put_varint(b, value);
  return 0;
}

uint8_t *tp_buf_bytes_field_room(struct tp_buf *b, uint8_t tag, size_t len) {
  if (len > SIZE_MAX - 1 - EVF_PB_VARINT_MAX ||
      tp_buf_reserve(b, 1 + EVF_PB_VARINT_MAX + len) != 0)
    return NULL;
  b->data[b->len++] = tag;
  put_varint(b, len);
  uint8_t *room = b->data + b->len;
  b->len += len;
  return room;
}

int tp_buf_put_bytes_field(struct tp_buf *b, uint8_t tag, const void *data, size_t len) {
  uint8_t *room = tp_buf_bytes_field_room(b, tag, len);
  if (room == NULL)
    return -ENOMEM;
  if (len > 0)
    memcpy(room, data, len);
  return 0;
}

size_t tp_pb_field_size(size_t len) { return 1 + evf_pb_varint_size(len) + len; }

void tp_buf_free(struct tp_buf *b) {
  free(b->data);
  *b = (struct tp_buf){0};
}
