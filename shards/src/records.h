#ifndef SHARDS_RECORDS_H
#define SHARDS_RECORDS_H

/*
 * Keys and values of the LMDB databases (shards/README.md). All integers are
 * big-endian so that keys sort numerically byte by byte.
 */

#include "api.pb-c.h"

#include <lmdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RECORD_POSITION_LEN 8
#define RECORD_INDEX_KEY_LEN 12
#define RECORD_RUN_MAX 12
#define RECORD_STREAM_LEN 16

/*
 * streams: name -> stream id and created-at, written once, when the stream
 * is created. Its length is not stored here: it is where the stream's last
 * run in stream_index ends, so an append dirties no streams page.
 */
struct stream_record {
  uint64_t stream_id;
  int64_t created_at;    /* Unix ms */
  uint32_t next_version; /* the stream's length: not encoded, found in stream_index */
};

void record_put_u32(uint8_t *out, uint32_t v);
void record_put_u64(uint8_t *out, uint64_t v);
uint32_t record_get_u32(const uint8_t *in);
uint64_t record_get_u64(const uint8_t *in);

/*
 * LMDB's comparison for the databases keyed by big-endian integers (events,
 * stream_index, event_ids): the order of LMDB's own (memcmp, then the
 * shorter first) for keys of any size, so files and tools are unchanged,
 * but eight bytes at a time instead of a call to memcmp: searching these
 * trees was 2.5% of the server's instructions under unary appends.
 */
int record_key_compare(const MDB_val *a, const MDB_val *b);

/* events: position key */
void record_position_key(uint8_t out[RECORD_POSITION_LEN], uint64_t position);

/*
 * stream_index: a run of a stream's versions stored at consecutive
 * positions, such as an append's events: (stream id, first version) ->
 * first position (8), and the run's length (4) when it is more than one.
 * One entry per append, not per event: appends of many events write a
 * fraction of the index they did.
 */
struct record_run {
  uint32_t first_version;
  uint64_t first_position;
  uint32_t count;
};
void record_index_key(uint8_t out[RECORD_INDEX_KEY_LEN], uint64_t stream_id, uint32_t version);
/** Writes a run's value; returns its size. */
size_t record_run_encode(uint8_t out[RECORD_RUN_MAX], const struct record_run *run);
/** The stream of a stream_index key. False when damaged. */
bool record_index_key_stream(const MDB_val *key, uint64_t *stream_id);
/**
 * A stream_index entry's run. False when damaged, or when the stream's
 * length (first version + count) would not fit in 32 bits.
 */
bool record_run_decode(const MDB_val *key, const MDB_val *value, struct record_run *run);
/** Whether the run holds that version. */
static inline bool record_run_holds(const struct record_run *run, uint32_t version) {
  return version >= run->first_version && version - run->first_version < run->count;
}

void record_stream_encode(uint8_t out[RECORD_STREAM_LEN], const struct stream_record *r);
/** Returns false when the value has the wrong size (damaged data). */
bool record_stream_decode(const void *in, size_t len, struct stream_record *r);

/**
 * The position an event_ids value names (id -> position key alone; an
 * exact retry reads the rest from the log, shard.c). False when damaged.
 */
bool record_position_decode(const void *in, size_t len, uint64_t *position);

/*
 * events: the value is the api.Event in protobuf wire format. Encoded by hand
 * (protobuf-c's reflective packing cost a tenth of a commit): the same bytes
 * as protobuf_c_message_pack, fields in number order, proto3 defaults
 * (empty strings and bytes, zeroes) left out; or in the short form below.
 *
 * Format 3 stores an event whose causation and correlation ids both equal
 * its id (the default) in a short form: without those two ids, 76 of the
 * 372 bytes of an event with 200 bytes of data, and with its added_at
 * (field 9) moved before its id, which otherwise comes first, so that a
 * reader tells the forms apart by the first byte. Readers get the event
 * back whole: the short form with the two ids appended. Every field is
 * then there, though not in number order, which protobuf's decoders accept
 * (a message's fields may come in any order).
 */
struct record_event_text {
  size_t id, stream, type, causation_id, correlation_id; /* strlen of each string stored */
  bool short_form;
};
/** The event's size in protobuf-c's encoding; *text takes what the encoding needs. */
size_t record_event_size(const Api__Event *event, struct record_event_text *text);
/** The same for its stored form: the short form where the event can take it (added_at set). */
size_t record_event_stored_size(const Api__Event *event, struct record_event_text *text);
/** What a string or bytes field of len bytes adds to a size (0 when empty: left out). */
size_t record_bytes_field_size(size_t len);
/** Writes the event to out: as many bytes as the size function that filled text returned. */
void record_event_encode(const Api__Event *event, const struct record_event_text *text,
                         uint8_t *out);

/** The id of a stored event in the short form, inside its bytes. */
struct record_left_out {
  const uint8_t *id;
  size_t id_len;
};
/** Whether stored bytes are an event in the short form, which *out then describes. */
bool record_event_left_out(const uint8_t *in, size_t len, struct record_left_out *out);
/** The size of the event whole: with its two ids appended. */
size_t record_event_restored_size(size_t len, const struct record_left_out *left_out);
/** Writes record_event_restored_size(len, left_out) bytes to out. */
void record_event_restore(const uint8_t *in, size_t len, const struct record_left_out *left_out,
                          uint8_t *out);

#endif
