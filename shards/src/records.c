#include "records.h"

void record_put_u32(uint8_t *out, uint32_t v) {
  for (int i = 0; i < 4; i++)
    out[i] = (uint8_t)(v >> (24 - 8 * i));
}

void record_put_u64(uint8_t *out, uint64_t v) {
  for (int i = 0; i < 8; i++)
    out[i] = (uint8_t)(v >> (56 - 8 * i));
}

uint32_t record_get_u32(const uint8_t *in) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++)
    v = (v << 8) | in[i];
  return v;
}

uint64_t record_get_u64(const uint8_t *in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = (v << 8) | in[i];
  return v;
}

void record_position_key(uint8_t out[RECORD_POSITION_LEN], uint64_t position) {
  record_put_u64(out, position);
}

void record_index_key(uint8_t out[RECORD_INDEX_KEY_LEN], uint64_t stream_id, uint32_t version) {
  record_put_u64(out, stream_id);
  record_put_u32(out + 8, version);
}

void record_stream_encode(uint8_t out[RECORD_STREAM_LEN], const struct stream_record *r) {
  record_put_u64(out, r->stream_id);
  record_put_u32(out + 8, r->next_version);
  record_put_u64(out + 12, (uint64_t)r->created_at);
}

bool record_stream_decode(const void *in, size_t len, struct stream_record *r) {
  const uint8_t *p = in;
  if (len != RECORD_STREAM_LEN)
    return false;
  r->stream_id = record_get_u64(p);
  r->next_version = record_get_u32(p + 8);
  r->created_at = (int64_t)record_get_u64(p + 12);
  return true;
}

void record_event_id_encode(uint8_t out[RECORD_EVENT_ID_LEN], const struct event_id_record *r) {
  record_put_u64(out, r->position);
  record_put_u64(out + 8, r->stream_id);
  record_put_u32(out + 16, r->version);
}

bool record_event_id_decode(const void *in, size_t len, struct event_id_record *r) {
  const uint8_t *p = in;
  if (len != RECORD_EVENT_ID_LEN)
    return false;
  r->position = record_get_u64(p);
  r->stream_id = record_get_u64(p + 8);
  r->version = record_get_u32(p + 16);
  return true;
}
