#ifndef EVF_EVENT_FIELDS_H
#define EVF_EVENT_FIELDS_H

/*
 * The fields of a stored event (an encoded api.Event) that the server looks
 * at without decoding the whole event, read in place with protobuf-c's wire
 * rules (evf/pbwire.h): the index rebuild derives its entries from them,
 * subscriptions filter and order events by them.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evf_event_fields {
  const char *id, *stream, *type;  /* inside the bytes: not NUL-terminated */
  size_t id_len, stream_len, type_len;
  uint32_t version;
  int64_t added_at;
  uint64_t position;
};

/**
 * Reads them without copying or allocating. Returns false where protobuf-c's
 * unpack of api.Event would fail; *out is then partly filled.
 */
bool evf_event_fields_read(const void *in, size_t len, struct evf_event_fields *out);

#endif
