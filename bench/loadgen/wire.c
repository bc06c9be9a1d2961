/* Bytes on the wire: buffers, varints, and the response scanners. */
#define _GNU_SOURCE /* memmem */
#include "wire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int lg_buf_append(struct lg_buf *b, const void *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n)
      cap *= 2;
    uint8_t *data = realloc(b->data, cap);
    if (data == NULL)
      return -ENOMEM;
    b->data = data;
    b->cap = cap;
  }
  if (n > 0)
    memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

void lg_buf_free(struct lg_buf *b) {
  free(b->data);
  *b = (struct lg_buf){0};
}

static int varint_get(const uint8_t **p, const uint8_t *end, uint64_t *out) {
  uint64_t v = 0;
  for (unsigned shift = 0; shift < 70 && *p < end; shift += 7) {
    uint8_t b = *(*p)++;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return 0;
    }
  }
  return -1;
}

int lg_pb_next(const uint8_t **p, const uint8_t *end, struct lg_pb_field *f) {
  uint64_t key;
  if (*p >= end)
    return 0;
  if (varint_get(p, end, &key) != 0 || key >> 3 == 0 || key >> 3 > UINT32_MAX)
    return -1;
  f->number = (uint32_t)(key >> 3);
  f->wire_type = (uint8_t)(key & 7);
  f->data = NULL;
  f->len = 0;
  f->value = 0;
  switch (f->wire_type) {
  case 0:
    return varint_get(p, end, &f->value) == 0 ? 1 : -1;
  case 1:
  case 5: {
    size_t n = f->wire_type == 1 ? 8 : 4;
    if ((size_t)(end - *p) < n)
      return -1;
    for (size_t i = 0; i < n; i++)
      f->value |= (uint64_t)(*p)[i] << (8 * i);
    *p += n;
    return 1;
  }
  case 2: {
    uint64_t n;
    if (varint_get(p, end, &n) != 0 || n > (uint64_t)(end - *p))
      return -1;
    f->data = *p;
    f->len = (size_t)n;
    *p += n;
    return 1;
  }
  default:
    return -1;
  }
}

void lg_digits_put(uint8_t *p, unsigned width, uint64_t v) {
  for (unsigned i = width; i > 0; i--) {
    p[i - 1] = (uint8_t)('0' + v % 10);
    v /= 10;
  }
}

unsigned lg_digits_count(uint64_t v) {
  unsigned n = 1;
  while (v >= 10) {
    v /= 10;
    n++;
  }
  return n;
}

size_t lg_base64_put(const uint8_t *in, size_t n, char *out) {
  static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t o = 0, i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[o++] = alphabet[v >> 18];
    out[o++] = alphabet[(v >> 12) & 63];
    out[o++] = alphabet[(v >> 6) & 63];
    out[o++] = alphabet[v & 63];
  }
  if (i < n) {
    uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
    out[o++] = alphabet[v >> 18];
    out[o++] = alphabet[(v >> 12) & 63];
    out[o++] = i + 1 < n ? alphabet[(v >> 6) & 63] : '=';
    out[o++] = '=';
  }
  return o;
}

/* ---- gRPC response scanner ---- */

enum { PB_PREFIX, PB_TAG, PB_LEN, PB_VALUE, PB_SKIP };

void lg_pb_scan_init(struct lg_pb_scan *s) { memset(s, 0, sizeof(*s)); }

/* A field ended: the next one, or the next message. */
static void pb_field_done(struct lg_pb_scan *s) { s->state = s->msg_left ? PB_TAG : PB_PREFIX; }

static void pb_varint_done(struct lg_pb_scan *s, uint64_t v) {
  switch (s->state) {
  case PB_TAG:
    s->field = (uint32_t)(v >> 3);
    s->wire_type = (uint8_t)(v & 7);
    if (s->field == 0 || v >> 32) {
      s->error = true;
      return;
    }
    switch (s->wire_type) {
    case 0:
      s->state = PB_VALUE;
      break;
    case 1:
      s->skip = 8;
      s->state = PB_SKIP;
      break;
    case 2:
      s->state = PB_LEN;
      break;
    case 5:
      s->skip = 4;
      s->state = PB_SKIP;
      break;
    default:
      s->error = true; /* groups are not proto3 */
    }
    break;
  case PB_LEN:
    if (s->field == 1)
      s->count++;
    s->skip = v;
    if (v > s->msg_left)
      s->error = true;
    else if (v == 0)
      pb_field_done(s);
    else
      s->state = PB_SKIP;
    break;
  case PB_VALUE:
    if (s->field == 2) {
      s->field2 = v;
      s->has_field2 = true;
    } else if (s->field == 1) {
      s->field1 = v;
      s->has_field1 = true;
    }
    pb_field_done(s);
    break;
  }
}

void lg_pb_scan_feed(struct lg_pb_scan *s, const uint8_t *p, size_t n) {
  while (n > 0 && !s->error) {
    switch (s->state) {
    case PB_PREFIX:
      s->prefix[s->prefix_have++] = *p++;
      n--;
      if (s->prefix_have == 5) {
        s->prefix_have = 0;
        if (s->prefix[0] != 0) {
          s->error = true; /* compressed: never asked for */
          break;
        }
        s->msg_left = (uint64_t)s->prefix[1] << 24 | (uint64_t)s->prefix[2] << 16 |
                      (uint64_t)s->prefix[3] << 8 | s->prefix[4];
        s->messages++;
        pb_field_done(s);
      }
      break;
    case PB_SKIP: {
      if (s->skip > s->msg_left) {
        s->error = true;
        break;
      }
      size_t k = s->skip < n ? (size_t)s->skip : n;
      p += k;
      n -= k;
      s->skip -= k;
      s->msg_left -= k;
      if (s->skip == 0)
        pb_field_done(s);
      break;
    }
    default: { /* a varint: TAG, LEN or VALUE */
      if (s->msg_left == 0) {
        s->error = true; /* a field cut by the end of its message */
        break;
      }
      uint8_t c = *p++;
      n--;
      s->msg_left--;
      if (s->shift >= 64) {
        s->error = true;
        break;
      }
      s->acc |= (uint64_t)(c & 0x7f) << s->shift;
      s->shift += 7;
      if (c & 0x80) {
        if (s->msg_left == 0)
          s->error = true;
        break;
      }
      uint64_t v = s->acc;
      s->acc = 0;
      s->shift = 0;
      pb_varint_done(s, v);
      break;
    }
    }
  }
}

bool lg_pb_scan_complete(const struct lg_pb_scan *s) {
  return !s->error && s->state == PB_PREFIX && s->prefix_have == 0;
}

/* ---- HTTP/JSON read page scanner ---- */

#define POSITION_KEY "\"position\":"
#define CHECKPOINT_KEY "\"checkpoint\":"

/*
 * memmem (glibc's skips ahead by the key's length) is about twice as fast
 * here as stopping at every quote: a page has some 20 quotes per event.
 */
size_t lg_json_scan(struct lg_json_scan *s, const uint8_t *p, size_t n, bool final) {
  const size_t plen = sizeof(POSITION_KEY) - 1, clen = sizeof(CHECKPOINT_KEY) - 1;
  /* Not final: keep the last LG_JSON_LOOKAHEAD bytes for the next call, so a key cut by the
   * chunk's end is found whole then, and the final call sees the body's last bytes. */
  size_t cut = final ? n : n > LG_JSON_LOOKAHEAD ? n - LG_JSON_LOOKAHEAD : 0;
  const uint8_t *q = p, *end = p + n;
  while (q < end && (q = memmem(q, (size_t)(end - q), POSITION_KEY, plen)) != NULL && q < p + cut) {
    s->count++;
    q += plen;
  }
  if (final) {
    /* The checkpoint is the page's last key: look in the last bytes only. */
    size_t from = n > LG_JSON_LOOKAHEAD ? n - LG_JSON_LOOKAHEAD : 0;
    const uint8_t *k = memmem(p + from, n - from, CHECKPOINT_KEY, clen);
    if (k != NULL) {
      uint64_t v = 0;
      for (const uint8_t *d = k + clen; d < end && *d >= '0' && *d <= '9' && d - (k + clen) < 20; d++)
        v = v * 10 + (uint64_t)(*d - '0');
      s->checkpoint = v;
      s->has_checkpoint = true;
    }
  }
  return cut;
}
