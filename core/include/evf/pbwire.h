#ifndef EVF_PBWIRE_H
#define EVF_PBWIRE_H

/*
 * Protobuf's wire format read field by field, without allocating, with the
 * rules of protobuf-c 1.4's unpack, which the server used before it decoded
 * its hottest messages by hand: a key of at most 5 bytes whose first byte
 * holds a non-zero field number, varints of at most 10 bytes, length
 * prefixes of at most 5 bytes and at most INT_MAX, and the wire types 0, 1,
 * 2 and 5 only. A decoder built on it refuses a known field with another
 * wire type and lets the last occurrence of a singular field win, as
 * protobuf-c does.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum evf_pb_wire { EVF_PB_VARINT = 0, EVF_PB_64BIT = 1, EVF_PB_LEN = 2, EVF_PB_32BIT = 5 };

struct evf_pb_field {
  uint32_t number;
  enum evf_pb_wire wire;
  const uint8_t *data;  /* the value: a varint's or a fixed value's bytes, or a payload */
  size_t len;
};

struct evf_pb_reader {
  const uint8_t *p, *end;
};

/** Reads the next field; false when the bytes break the rules above. r->p < r->end. */
bool evf_pb_read_field(struct evf_pb_reader *r, struct evf_pb_field *f);

/** A varint field's value, as protobuf-c takes a 64-bit integer. */
uint64_t evf_pb_varint(const struct evf_pb_field *f);

/** A varint field's value, as protobuf-c takes a 32-bit integer: the low 32 bits. */
uint32_t evf_pb_varint32(const struct evf_pb_field *f);

/* Writing: the same format, for the encoders written by hand. */

#define EVF_PB_VARINT_MAX 10 /* bytes of the longest varint */

/** The bytes of value as a varint: one per started 7 bits, at least one. */
static inline size_t evf_pb_varint_size(uint64_t value) {
  /* Without a loop: 9/64 is just above 1/7 for every bit count. */
  unsigned top_bit = 63u - (unsigned)__builtin_clzll(value | 1);
  return (9u * top_bit + 73u) / 64u;
}

/** Writes value as a varint at out (room for EVF_PB_VARINT_MAX bytes); returns its size. */
size_t evf_pb_put_varint(uint8_t *out, uint64_t value);

#endif
