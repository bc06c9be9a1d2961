#include "evf/uuid.h"

#include "evf/status.h"

#include <string.h>
#include <sys/random.h>

static int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

static bool is_dash_offset(size_t i) { return i == 8 || i == 13 || i == 18 || i == 23; }

int evf_uuid_parse(const char *text, size_t len, struct evf_uuid *out) {
  struct evf_uuid id;
  if (len != EVF_UUID_TEXT_LEN)
    return EVF_EINVAL;
  size_t nibble = 0;
  for (size_t i = 0; i < len; i++) {
    if (is_dash_offset(i)) {
      if (text[i] != '-')
        return EVF_EINVAL;
      continue;
    }
    int v = hex_value(text[i]);
    if (v < 0)
      return EVF_EINVAL;
    if (nibble % 2 == 0)
      id.bytes[nibble / 2] = (uint8_t)(v << 4);
    else
      id.bytes[nibble / 2] |= (uint8_t)v;
    nibble++;
  }
  if (evf_uuid_is_nil(&id))
    return EVF_EINVAL;
  *out = id;
  return 0;
}

/* "000102...ff": the two hex digits of every byte, one load per byte. */
static const char hex_pairs[513] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

static char *put_hex(char *out, const uint8_t *bytes, size_t n) {
  for (size_t i = 0; i < n; i++) {
    memcpy(out, &hex_pairs[2 * bytes[i]], 2);
    out += 2;
  }
  return out;
}

/* Group by group, so that the compiler unrolls each: ids are formatted for every event stored and sent. */
void evf_uuid_format(const struct evf_uuid *id, char out[EVF_UUID_TEXT_LEN + 1]) {
  const uint8_t *b = id->bytes;
  char *p = put_hex(out, b, 4);
  *p++ = '-';
  p = put_hex(p, b + 4, 2);
  *p++ = '-';
  p = put_hex(p, b + 6, 2);
  *p++ = '-';
  p = put_hex(p, b + 8, 2);
  *p++ = '-';
  p = put_hex(p, b + 10, 6);
  *p = '\0';
}

bool evf_uuid_is_nil(const struct evf_uuid *id) {
  static const struct evf_uuid nil;
  return memcmp(id, &nil, sizeof(nil)) == 0;
}

/* Per-thread generator: xoshiro256** seeded once from the kernel. */
struct uuid_state {
  bool seeded;
  uint64_t s[4];
  int64_t last_ms;
  uint16_t counter;
};
static _Thread_local struct uuid_state state;

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_random(void) {
  uint64_t *s = state.s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

static void seed(void) {
  size_t got = 0;
  while (got < sizeof(state.s)) {
    ssize_t n = getrandom((char *)state.s + got, sizeof(state.s) - got, 0);
    if (n > 0)
      got += (size_t)n;
  }
  /* xoshiro must not start from all zeroes. */
  state.s[0] |= 1;
  state.seeded = true;
}

void evf_uuid_v7_at(struct evf_uuid *out, int64_t now_ms) {
  if (!state.seeded)
    seed();
  if (now_ms > state.last_ms) {
    state.last_ms = now_ms;
    state.counter = (uint16_t)(next_random() & 0x7FF); /* leave room to count up */
  } else if (++state.counter > 0xFFF) {
    /* 4096 ids in one millisecond, or the clock stepped back: borrow the next ms. */
    state.last_ms++;
    state.counter = 0;
  }
  uint64_t ts = (uint64_t)state.last_ms;
  uint64_t rand_b = next_random();
  uint8_t *b = out->bytes;
  for (int i = 0; i < 6; i++)
    b[i] = (uint8_t)(ts >> (40 - 8 * i));
  b[6] = (uint8_t)(0x70 | (state.counter >> 8));
  b[7] = (uint8_t)state.counter;
  b[8] = (uint8_t)(0x80 | ((rand_b >> 56) & 0x3F));
  for (int i = 9; i < 16; i++)
    b[i] = (uint8_t)(rand_b >> (8 * (15 - i)));
}
