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

/* Follows the well-formed byte sequences table of Unicode 15, section 3.9. */
bool evf_utf8_valid(const char *text, size_t len) {
  const unsigned char *s = (const unsigned char *)text;
  size_t i = 0;
  while (i < len) {
    /* Names and types are mostly ASCII: eight bytes at a time while they are. */
    if (len - i >= 8 && ascii_word(s + i)) {
      i += 8;
      continue;
    }
    unsigned char c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    unsigned need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      need = 2;
      if (c == 0xE0)
        lo = 0xA0; /* overlong */
      else if (c == 0xED)
        hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
      need = 3;
      if (c == 0xF0)
        lo = 0x90; /* overlong */
      else if (c == 0xF4)
        hi = 0x8F; /* above U+10FFFF */
    } else {
      return false;
    }
    if (len - i - 1 < need)
      return false;
    if (s[i + 1] < lo || s[i + 1] > hi)
      return false;
    for (unsigned k = 2; k <= need; k++) {
      if (s[i + k] < 0x80 || s[i + k] > 0xBF)
        return false;
    }
    i += need + 1;
  }
  return true;
}
