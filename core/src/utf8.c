#include "evf/utf8.h"

#include <stdint.h>
#include <string.h>

#define HIGH_BITS 0x8080808080808080u

/* Whether the eight bytes at p are all ASCII. */
static bool ascii_word(const unsigned char *p) {
  uint64_t word;
  memcpy(&word, p, sizeof(word));
  return (word & HIGH_BITS) == 0;
}

/*
 * How many continuation bytes a non-ASCII lead byte takes (0: it leads no
 * character) and the range of the first of them. Follows the well-formed
 * byte sequences table of Unicode 15, section 3.9.
 */
static unsigned lead(unsigned char c, unsigned char *lo, unsigned char *hi) {
  *lo = 0x80;
  *hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF)
    return 1;
  if (c >= 0xE0 && c <= 0xEF) {
    if (c == 0xE0)
      *lo = 0xA0; /* overlong */
    else if (c == 0xED)
      *hi = 0x9F; /* surrogates */
    return 2;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (c == 0xF0)
      *lo = 0x90; /* overlong */
    else if (c == 0xF4)
      *hi = 0x8F; /* above U+10FFFF */
    return 3;
  }
  return 0;
}

static bool continuation(unsigned char c) { return c >= 0x80 && c <= 0xBF; }

size_t evf_utf8_char_len(const char *text, size_t len) {
  const unsigned char *s = (const unsigned char *)text;
  if (len == 0)
    return 0;
  if (s[0] < 0x80)
    return 1;
  unsigned char lo, hi;
  unsigned need = lead(s[0], &lo, &hi);
  if (need == 0 || len - 1 < need || s[1] < lo || s[1] > hi)
    return 0;
  for (unsigned k = 2; k <= need; k++) {
    if (!continuation(s[k]))
      return 0;
  }
  return need + 1;
}

bool evf_utf8_valid(const char *text, size_t len) {
  const unsigned char *s = (const unsigned char *)text;
  size_t i = 0;
  while (i < len) {
    /* Names and types are mostly ASCII: eight bytes at a time while they are. */
    if (len - i >= 8 && ascii_word(s + i)) {
      i += 8;
      continue;
    }
    size_t n = evf_utf8_char_len(text + i, len - i);
    if (n == 0)
      return false;
    i += n;
  }
  return true;
}

size_t evf_utf8_cut(const char *text, size_t len) {
  const unsigned char *s = (const unsigned char *)text;
  /* A character cut short has its lead byte among the last three, continuations after it. */
  for (size_t k = 1; k <= 3 && k <= len; k++) {
    unsigned char c = s[len - k], lo, hi;
    if (continuation(c))
      continue;
    unsigned need = lead(c, &lo, &hi);
    if (need < k || (k >= 2 && (s[len - k + 1] < lo || s[len - k + 1] > hi)))
      return len; /* whole, or no character's beginning: nothing to take off */
    return len - k;
  }
  return len;
}
