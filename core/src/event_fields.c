#include "evf/event_fields.h"

#include "evf/pbwire.h"

/* The wire type of each field of api.Event; -1 for a field unknown here. */
static int field_wire(uint32_t number) {
  switch (number) {
  case 1: case 2: case 4: case 5: case 6: case 7: case 8: return EVF_PB_LEN;
  case 3: case 9: case 10: return EVF_PB_VARINT;
  default: return -1;
  }
}

bool evf_event_fields_read(const void *in, size_t len, struct evf_event_fields *out) {
  struct evf_pb_reader r = {in, (const uint8_t *)in + len};
  struct evf_pb_field f;
  *out = (struct evf_event_fields){.id = "", .stream = "", .type = ""};
  while (r.p < r.end) {
    if (!evf_pb_read_field(&r, &f))
      return false;
    int wire = field_wire(f.number);
    if (wire >= 0 && (enum evf_pb_wire)wire != f.wire)
      return false;
    switch (f.number) {
    case 1: out->id = (const char *)f.data, out->id_len = f.len; break;
    case 2: out->stream = (const char *)f.data, out->stream_len = f.len; break;
    case 3: out->version = evf_pb_varint32(&f); break;
    case 4: out->type = (const char *)f.data, out->type_len = f.len; break;
    case 9: out->added_at = (int64_t)evf_pb_varint(&f); break;
    case 10: out->position = evf_pb_varint(&f); break;
    default: break; /* data, metadata, causation and correlation ids, unknown fields */
    }
  }
  return true;
}
