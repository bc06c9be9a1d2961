#ifndef EVF_UUID_H
#define EVF_UUID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EVF_UUID_TEXT_LEN 36 /* 8-4-4-4-12 hex digits and dashes, no NUL */

struct evf_uuid {
  uint8_t bytes[16];
};

/**
 * Parses 8-4-4-4-12 hex text, in any case. Other forms (braces, no dashes,
 * URNs) and the nil UUID are rejected with EVF_EINVAL; *out is then untouched.
 */
int evf_uuid_parse(const char *text, size_t len, struct evf_uuid *out);

/** Writes the lowercase 8-4-4-4-12 form and a NUL: out holds 37 bytes. */
void evf_uuid_format(const struct evf_uuid *id, char out[EVF_UUID_TEXT_LEN + 1]);

/**
 * A new UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then a 12-bit counter
 * that keeps the ids of one thread strictly increasing within a millisecond,
 * then 62 random bits. Any thread; the generator state is per thread.
 * now_ms is the time the caller read (evf_now_ms), once for as many ids as
 * it likes: a time before the last one given is taken as that one, so the
 * ids still rise.
 */
void evf_uuid_v7_at(struct evf_uuid *out, int64_t now_ms);

bool evf_uuid_is_nil(const struct evf_uuid *id);

#endif
