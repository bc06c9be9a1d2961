#include "records.h"

#include "evf/pbwire.h"

#include <endian.h>
#include <string.h>

/* Big-endian, so that LMDB's byte order sorts keys by number; unaligned. */

void record_put_u32(uint8_t *out, uint32_t v) {
  v = htobe32(v);
  memcpy(out, &v, sizeof(v));
}

void record_put_u64(uint8_t *out, uint64_t v) {
  v = htobe64(v);
  memcpy(out, &v, sizeof(v));
}

uint32_t record_get_u32(const uint8_t *in) {
  uint32_t v;
  memcpy(&v, in, sizeof(v));
  return be32toh(v);
}

uint64_t record_get_u64(const uint8_t *in) {
  uint64_t v;
  memcpy(&v, in, sizeof(v));
  return be64toh(v);
}

static int order_of(uint64_t a, uint64_t b) { return (a > b) - (a < b); }

int record_key_compare(const MDB_val *a, const MDB_val *b) {
  const uint8_t *x = a->mv_data, *y = b->mv_data;
  size_t common = a->mv_size < b->mv_size ? a->mv_size : b->mv_size, i = 0;
  for (; i + 8 <= common; i += 8) {
    uint64_t p = record_get_u64(x + i), q = record_get_u64(y + i);
    if (p != q)
      return order_of(p, q);
  }
  if (i + 4 <= common) {
    uint32_t p = record_get_u32(x + i), q = record_get_u32(y + i);
    if (p != q)
      return order_of(p, q);
    i += 4;
  }
  for (; i < common; i++) {
    if (x[i] != y[i])
      return order_of(x[i], y[i]);
  }
  return order_of(a->mv_size, b->mv_size);
}

void record_position_key(uint8_t out[RECORD_POSITION_LEN], uint64_t position) {
  record_put_u64(out, position);
}

void record_index_key(uint8_t out[RECORD_INDEX_KEY_LEN], uint64_t stream_id, uint32_t version) {
  record_put_u64(out, stream_id);
  record_put_u32(out + 8, version);
}

size_t record_run_encode(uint8_t out[RECORD_RUN_MAX], const struct record_run *run) {
  record_put_u64(out, run->first_position);
  if (run->count == 1)
    return RECORD_POSITION_LEN;
  record_put_u32(out + RECORD_POSITION_LEN, run->count);
  return RECORD_RUN_MAX;
}

bool record_index_key_stream(const MDB_val *key, uint64_t *stream_id) {
  if (key->mv_size != RECORD_INDEX_KEY_LEN)
    return false;
  *stream_id = record_get_u64(key->mv_data);
  return true;
}

bool record_run_decode(const MDB_val *key, const MDB_val *value, struct record_run *run) {
  if (key->mv_size != RECORD_INDEX_KEY_LEN ||
      (value->mv_size != RECORD_POSITION_LEN && value->mv_size != RECORD_RUN_MAX))
    return false;
  const uint8_t *k = key->mv_data, *v = value->mv_data;
  run->first_version = record_get_u32(k + 8);
  run->first_position = record_get_u64(v);
  run->count = value->mv_size == RECORD_RUN_MAX ? record_get_u32(v + RECORD_POSITION_LEN) : 1;
  if (value->mv_size == RECORD_RUN_MAX && run->count < 2)
    return false; /* the longer value is written for runs of two or more */
  return run->count <= UINT32_MAX - run->first_version &&
         run->count - 1 <= UINT64_MAX - run->first_position;
}

void record_stream_encode(uint8_t out[RECORD_STREAM_LEN], const struct stream_record *r) {
  record_put_u64(out, r->stream_id);
  record_put_u64(out + 8, (uint64_t)r->created_at);
}

bool record_stream_decode(const void *in, size_t len, struct stream_record *r) {
  const uint8_t *p = in;
  if (len != RECORD_STREAM_LEN)
    return false;
  r->stream_id = record_get_u64(p);
  r->created_at = (int64_t)record_get_u64(p + 8);
  r->next_version = 0;
  return true;
}

bool record_position_decode(const void *in, size_t len, uint64_t *position) {
  if (len != RECORD_POSITION_LEN)
    return false;
  *position = record_get_u64(in);
  return true;
}

/* ---- api.Event in protobuf wire format ---- */


/* Every field of api.Event has a number below 16: its tag is one byte. */
static size_t varint_field_size(uint64_t v) { return v == 0 ? 0 : 1 + evf_pb_varint_size(v); }

size_t record_bytes_field_size(size_t len) {
  return len == 0 ? 0 : 1 + evf_pb_varint_size(len) + len;
}

static uint8_t *put_varint_field(uint8_t *out, unsigned field, uint64_t v) {
  if (v == 0)
    return out;
  *out++ = (uint8_t)(field << 3 | EVF_PB_VARINT);
  return out + evf_pb_put_varint(out, v);
}

static uint8_t *put_bytes_field(uint8_t *out, unsigned field, const void *data, size_t len) {
  if (len == 0)
    return out;
  *out++ = (uint8_t)(field << 3 | EVF_PB_LEN);
  out += evf_pb_put_varint(out, len);
  memcpy(out, data, len);
  return out + len;
}

static size_t text_length(const char *s) { return s ? strlen(s) : 0; }

/* Fields 9 and 1 of api.Event: how a short form and a whole event begin. */
#define ADDED_AT_KEY ((uint8_t)(9 << 3 | EVF_PB_VARINT))
#define ID_KEY ((uint8_t)(1 << 3 | EVF_PB_LEN))

size_t record_event_size(const Api__Event *e, struct record_event_text *text) {
  *text = (struct record_event_text){
      .id = text_length(e->id),
      .stream = text_length(e->stream),
      .type = text_length(e->type),
      .causation_id = text_length(e->causation_id),
      .correlation_id = text_length(e->correlation_id),
  };
  return record_bytes_field_size(text->id) + record_bytes_field_size(text->stream) +
         varint_field_size(e->version) + record_bytes_field_size(text->type) +
         record_bytes_field_size(e->data.len) + record_bytes_field_size(e->metadata.len) +
         record_bytes_field_size(text->causation_id) +
         record_bytes_field_size(text->correlation_id) + varint_field_size((uint64_t)e->added_at) +
         varint_field_size(e->position);
}

static bool same_text(const char *a, const char *b) { return a == b || strcmp(a, b) == 0; }

/* Both other ids are the event's own, and added_at is there to mark the short form. */
static bool can_be_short(const Api__Event *e, const struct record_event_text *text) {
  return text->id != 0 && e->added_at != 0 && same_text(e->causation_id, e->id) &&
         same_text(e->correlation_id, e->id);
}

size_t record_event_stored_size(const Api__Event *e, struct record_event_text *text) {
  size_t size = record_event_size(e, text);
  if (!can_be_short(e, text))
    return size;
  size -= record_bytes_field_size(text->causation_id) +
          record_bytes_field_size(text->correlation_id);
  text->causation_id = text->correlation_id = 0;
  text->short_form = true;
  return size;
}

void record_event_encode(const Api__Event *e, const struct record_event_text *text,
                         uint8_t *out) {
  if (text->short_form)
    out = put_varint_field(out, 9, (uint64_t)e->added_at);
  out = put_bytes_field(out, 1, e->id, text->id);
  out = put_bytes_field(out, 2, e->stream, text->stream);
  out = put_varint_field(out, 3, e->version);
  out = put_bytes_field(out, 4, e->type, text->type);
  out = put_bytes_field(out, 5, e->data.data, e->data.len);
  out = put_bytes_field(out, 6, e->metadata.data, e->metadata.len);
  out = put_bytes_field(out, 7, e->causation_id, text->causation_id);
  out = put_bytes_field(out, 8, e->correlation_id, text->correlation_id);
  if (!text->short_form)
    out = put_varint_field(out, 9, (uint64_t)e->added_at);
  put_varint_field(out, 10, e->position);
}

/*
 * The end of the short form's first field, added_at, a varint of at most
 * 10 bytes, or NULL. Skipped here: evf_pb_read_field's general loop for
 * its 6 bytes was 7% of a global read's instructions.
 */
static const uint8_t *after_added_at(const uint8_t *in, const uint8_t *end) {
  const uint8_t *last = end - in > 1 + EVF_PB_VARINT_MAX ? in + 1 + EVF_PB_VARINT_MAX : end;
  for (const uint8_t *p = in + 1; p < last; p++) {
    if (*p < 0x80)
      return p + 1;
  }
  return NULL;
}

bool record_event_left_out(const uint8_t *in, size_t len, struct record_left_out *out) {
  if (len == 0 || in[0] != ADDED_AT_KEY)
    return false;
  struct evf_pb_reader r = {after_added_at(in, in + len), in + len};
  struct evf_pb_field id;
  if (r.p == NULL || r.p == r.end || r.p[0] != ID_KEY || !evf_pb_read_field(&r, &id) ||
      id.len == 0)
    return false;
  *out = (struct record_left_out){.id = id.data, .id_len = id.len};
  return true;
}

size_t record_event_restored_size(size_t len, const struct record_left_out *left_out) {
  return len + 2 * record_bytes_field_size(left_out->id_len);
}

void record_event_restore(const uint8_t *in, size_t len, const struct record_left_out *left_out,
                          uint8_t *out) {
  memcpy(out, in, len);
  out = put_bytes_field(out + len, 7, left_out->id, left_out->id_len);
  put_bytes_field(out, 8, left_out->id, left_out->id_len);
}
