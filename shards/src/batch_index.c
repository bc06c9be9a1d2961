#include "batch_index.h"

#include "evf/hash.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Open addressing with linear probing (streams: name_table.h); tables grow at half full. */
struct batch_index {
  struct batch_stream *streams;
  size_t stream_cap;
  size_t stream_count;
  struct evf_uuid *ids;      /* all-zero slots are empty: the nil UUID is never an id */
  size_t id_cap;
  size_t id_count;
};

#define INITIAL_CAPACITY 64

struct batch_index *batch_index_create(void) {
  struct batch_index *index = calloc(1, sizeof(*index));
  if (index == NULL)
    return NULL;
  index->streams = calloc(INITIAL_CAPACITY, sizeof(*index->streams));
  index->ids = calloc(INITIAL_CAPACITY, sizeof(*index->ids));
  if (index->streams == NULL || index->ids == NULL) {
    batch_index_destroy(index);
    return NULL;
  }
  index->stream_cap = INITIAL_CAPACITY;
  index->id_cap = INITIAL_CAPACITY;
  return index;
}

void batch_index_destroy(struct batch_index *index) {
  if (index == NULL)
    return;
  free(index->streams);
  free(index->ids);
  free(index);
}

void batch_index_clear(struct batch_index *index) {
  if (index->stream_count > 0)
    memset(index->streams, 0, index->stream_cap * sizeof(*index->streams));
  if (index->id_count > 0)
    memset(index->ids, 0, index->id_cap * sizeof(*index->ids));
  index->stream_count = 0;
  index->id_count = 0;
}

static size_t stream_slot(const struct batch_index *index, const char *name, size_t len,
                          uint64_t hash) {
  return name_table_slot(index->streams, sizeof(*index->streams), index->stream_cap, name, len,
                         hash);
}

struct batch_stream *batch_index_find_stream(struct batch_index *index, const char *name,
                                             size_t len, uint64_t hash) {
  struct batch_stream *s = &index->streams[stream_slot(index, name, len, hash)];
  return s->key.name != NULL ? s : NULL;
}

struct batch_stream *batch_index_add_stream(struct batch_index *index, const char *name,
                                            size_t len, uint64_t hash,
                                            const struct stream_record *record, bool is_new) {
  if (2 * (index->stream_count + 1) > index->stream_cap &&
      name_table_grow((void **)&index->streams, sizeof(*index->streams), &index->stream_cap) != 0)
    return NULL;
  struct batch_stream *s = &index->streams[stream_slot(index, name, len, hash)];
  *s = (struct batch_stream){.key = {name, len, hash}, .record = *record, .is_new = is_new};
  index->stream_count++;
  return s;
}

static size_t id_slot(const struct batch_index *index, const struct evf_uuid *id) {
  size_t mask = index->id_cap - 1;
  size_t i = evf_hash_slot(evf_hash_fnv1a64(id->bytes, sizeof(id->bytes)), mask);
  while (!evf_uuid_is_nil(&index->ids[i]) && memcmp(&index->ids[i], id, sizeof(*id)) != 0)
    i = (i + 1) & mask;
  return i;
}

bool batch_index_has_id(const struct batch_index *index, const struct evf_uuid *id) {
  return !evf_uuid_is_nil(&index->ids[id_slot(index, id)]);
}

static int grow_ids(struct batch_index *index) {
  struct evf_uuid *old = index->ids;
  size_t old_cap = index->id_cap;
  struct evf_uuid *grown = calloc(old_cap * 2, sizeof(*grown));
  if (grown == NULL)
    return -ENOMEM;
  index->ids = grown;
  index->id_cap = old_cap * 2;
  for (size_t i = 0; i < old_cap; i++) {
    if (!evf_uuid_is_nil(&old[i]))
      index->ids[id_slot(index, &old[i])] = old[i];
  }
  free(old);
  return 0;
}

int batch_index_add_id(struct batch_index *index, const struct evf_uuid *id) {
  if (2 * (index->id_count + 1) > index->id_cap && grow_ids(index) != 0)
    return -ENOMEM;
  size_t i = id_slot(index, id);
  if (evf_uuid_is_nil(&index->ids[i])) {
    index->ids[i] = *id;
    index->id_count++;
  }
  return 0;
}
