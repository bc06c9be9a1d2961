#include "evf/pbwire.h"

#include <limits.h>

static bool read_key(struct evf_pb_reader *r, struct evf_pb_field *f) {
  size_t left = (size_t)(r->end - r->p), max = left < 5 ? left : 5;
  if ((r->p[0] & 0xF8) == 0)
    return false; /* field number 0 */
  f->wire = (enum evf_pb_wire)(r->p[0] & 7);
  uint32_t number = (r->p[0] & 0x7F) >> 3;
  for (size_t i = 0; i < max; i++) {
    if (i > 0)
      number |= (uint32_t)(r->p[i] & 0x7F) << (7 * i - 3);
    if ((r->p[i] & 0x80) == 0) {
      r->p += i + 1;
      f->number = number;
      return true;
    }
  }
  return false;
}

static bool read_length(struct evf_pb_reader *r, size_t *len) {
  size_t left = (size_t)(r->end - r->p), max = left < 5 ? left : 5;
  uint64_t value = 0;
  for (size_t i = 0; i < max; i++) {
    value |= (uint64_t)(r->p[i] & 0x7F) << (7 * i);
    if ((r->p[i] & 0x80) == 0) {
      r->p += i + 1;
      if (value > INT_MAX || value > (uint64_t)(r->end - r->p))
        return false;
      *len = (size_t)value;
      return true;
    }
  }
  return false;
}

static bool varint_length(const struct evf_pb_reader *r, size_t *len) {
  size_t left = (size_t)(r->end - r->p), max = left < 10 ? left : 10;
  for (size_t i = 0; i < max; i++) {
    if ((r->p[i] & 0x80) == 0) {
      *len = i + 1;
      return true;
    }
  }
  return false;
}

/*
 * Most fields have a number under 16, so a one-byte key, and are strings
 * or bytes under 16 KiB or small varints: read here without the loops,
 * with the same checks. false: not such a field (nothing is consumed).
 */
static bool read_short_field(struct evf_pb_reader *r, struct evf_pb_field *f) {
  const uint8_t *p = r->p;
  size_t left = (size_t)(r->end - p), len, head;
  if (left < 2 || p[0] >= 0x80 || p[0] < 8)
    return false;
  if ((p[0] & 7) == EVF_PB_VARINT && p[1] < 0x80) {
    len = 1, head = 1;
  } else if ((p[0] & 7) != EVF_PB_LEN) {
    return false;
  } else if (p[1] < 0x80) {
    len = p[1], head = 2;
  } else if (left >= 3 && p[2] < 0x80) {
    len = (size_t)(p[1] & 0x7F) | (size_t)p[2] << 7, head = 3;
  } else {
    return false;
  }
  if (len > left - head)
    return false;
  f->number = p[0] >> 3;
  f->wire = (enum evf_pb_wire)(p[0] & 7);
  f->len = len;
  f->data = p + head;
  r->p = p + head + len;
  return true;
}

bool evf_pb_read_field(struct evf_pb_reader *r, struct evf_pb_field *f) {
  if (read_short_field(r, f))
    return true;
  if (!read_key(r, f))
    return false;
  switch (f->wire) {
  case EVF_PB_VARINT:
    if (!varint_length(r, &f->len))
      return false;
    break;
  case EVF_PB_64BIT:
  case EVF_PB_32BIT:
    f->len = f->wire == EVF_PB_64BIT ? 8 : 4;
    if ((size_t)(r->end - r->p) < f->len)
      return false;
    break;
  case EVF_PB_LEN:
    if (!read_length(r, &f->len))
      return false;
    break;
  default:
    return false; /* groups and undefined wire types */
  }
  f->data = r->p;
  r->p += f->len;
  return true;
}

uint64_t evf_pb_varint(const struct evf_pb_field *f) {
  uint64_t value = 0;
  for (size_t i = 0; i < f->len; i++)
    value |= (uint64_t)(f->data[i] & 0x7F) << (7 * i);
  return value;
}

uint32_t evf_pb_varint32(const struct evf_pb_field *f) {
  uint32_t value = 0;
  for (size_t i = 0; i < f->len && i < 5; i++)
    value |= (uint32_t)(f->data[i] & (i < 4 ? 0x7F : 0xFF)) << (7 * i);
  return value;
}

size_t evf_pb_put_varint(uint8_t *out, uint64_t value) {
  size_t n = 0;
  while (value >= 0x80) {
    out[n++] = (uint8_t)(value | 0x80);
    value >>= 7;
  }
  out[n++] = (uint8_t)value;
  return n;
}
