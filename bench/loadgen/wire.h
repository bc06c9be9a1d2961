#ifndef LOADGEN_WIRE_H
#define LOADGEN_WIRE_H

/*
 * Bytes on the wire without a full decode: a growing buffer, protobuf
 * varints, and two streaming scanners that read only what the load
 * generator counts from a response.
 *
 * - lg_pb_scan reads a gRPC response body (length-prefixed messages) chunk
 *   by chunk as HTTP/2 DATA frames arrive: it counts the entries of
 *   repeated field 1 by skipping length-delimited fields whole (events of a
 *   read, ids of an append) and keeps the last value of varint field 2 (the
 *   checkpoint of GetGlobalStreamResponse) and of varint field 1 (the count
 *   of EventCountResponse). Its state survives any split
 *   of the input, so nothing is copied.
 * - lg_json_scan reads an HTTP/JSON read page: it counts "position": keys
 *   (one per event) with memmem and takes the "checkpoint": value, which
 *   the server writes as the page's last key. It needs its input contiguous
 *   around a key: it leaves the last LG_JSON_LOOKAHEAD bytes of a chunk
 *   unconsumed, and the caller hands them back in front of the next chunk.
 *
 * Everything here is reentrant: any thread, no shared state.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- A growing byte buffer ---- */

struct lg_buf {
  uint8_t *data;
  size_t len, cap;
};

/** Appends n bytes (p may be NULL when n is 0). Returns 0 or -ENOMEM (b unchanged). */
int lg_buf_append(struct lg_buf *b, const void *p, size_t n);

/** Frees b's memory; b is empty and reusable afterwards. */
void lg_buf_free(struct lg_buf *b);

/* ---- Encoding ---- */

/* Varints: evf_pb_put_varint (evf/pbwire.h). */

/** Writes v in exactly width decimal digits at p, zero-padded (higher digits are dropped). */
void lg_digits_put(uint8_t *p, unsigned width, uint64_t v);

/** The number of decimal digits of v (1 for 0). */
unsigned lg_digits_count(uint64_t v);

/** Standard base64 with padding of n bytes into out (room for 4 * ((n + 2) / 3)); returns its length. */
size_t lg_base64_put(const uint8_t *in, size_t n, char *out);

/* ---- Decoding one whole message ---- */

struct lg_pb_field {
  uint32_t number;
  uint8_t wire_type;            /* 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32 */
  uint64_t value;               /* varint and fixed values */
  const uint8_t *data;          /* length-delimited: the bytes (borrowed from the message) */
  size_t len;
};

/**
 * Reads the field at *p (before end) into *f and moves *p past it. Returns
 * 1 with a field, 0 at the end, -1 for a malformed message.
 */
int lg_pb_next(const uint8_t **p, const uint8_t *end, struct lg_pb_field *f);

/* ---- gRPC response scanner ---- */

struct lg_pb_scan {
  uint8_t state;
  uint8_t prefix_have;
  uint8_t prefix[5];
  uint8_t wire_type;
  uint8_t shift;
  bool error;                   /* compressed, malformed, or a varint over 10 bytes */
  uint32_t field;
  uint32_t messages;            /* complete gRPC messages seen */
  uint64_t msg_left;            /* bytes of the current message still to come */
  uint64_t acc;                 /* varint being read */
  uint64_t skip;                /* bytes of a field still to skip */
  uint64_t count;               /* entries of field 1 */
  uint64_t field2;              /* the last value of varint field 2 */
  bool has_field2;
  uint64_t field1;              /* the last value of varint field 1 */
  bool has_field1;
};

/** Makes s ready for a new response body. */
void lg_pb_scan_init(struct lg_pb_scan *s);

/** Scans the next n bytes of the body (n may be 0). */
void lg_pb_scan_feed(struct lg_pb_scan *s, const uint8_t *p, size_t n);

/** True when the body seen so far ends on a message boundary, without error. */
bool lg_pb_scan_complete(const struct lg_pb_scan *s);

/* ---- HTTP/JSON read page scanner ---- */

/* The bytes lg_json_scan leaves unconsumed when not final (a key, 20 digits, '}'). */
#define LG_JSON_LOOKAHEAD 40

struct lg_json_scan {
  uint64_t count;               /* "position": keys */
  uint64_t checkpoint;
  bool has_checkpoint;
};

/**
 * Scans n bytes of a JSON body. Returns how many it consumed: n when final
 * (the body ends here), else all but the last LG_JSON_LOOKAHEAD (0 when n
 * is not more than that); the next call must begin with the bytes left.
 * "checkpoint": is looked for in the body's last LG_JSON_LOOKAHEAD bytes.
 */
size_t lg_json_scan(struct lg_json_scan *s, const uint8_t *p, size_t n, bool final);

#endif
