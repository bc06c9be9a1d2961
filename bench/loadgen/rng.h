#ifndef LOADGEN_RNG_H
#define LOADGEN_RNG_H

/* xorshift64: a fast, seedable generator for choosing streams and shares (not for secrets). */

#include <stdint.h>

/** The next value; *state must start nonzero. */
static inline uint64_t lg_xorshift64(uint64_t *state) {
  uint64_t x = *state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *state = x;
}

#endif
