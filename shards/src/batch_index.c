#include "batch_index.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

/*
 * Open addressing with linear probing (streams: name_table.h); tables grow at
 * half full. The table lists its filled slots, so that clearing it after a
 * batch costs the batch's size, not the table's: a table keeps the size of
 * the largest batch it ever held.
 */
struct batch_index {
  struct batch_stream *streams;
  size_t stream_cap;
  size_t stream_count;
  size_t *stream_slots;      /* the filled slots: stream_count of them, room for stream_cap / 2 */
};

#define INITIAL_CAPACITY 64

struct batch_index *batch_index_create(void) {
  struct batch_index *index = calloc(1, sizeof(*index));
  if (index == NULL)
    return NULL;
  index->streams = calloc(INITIAL_CAPACITY, sizeof(*index->streams));
  index->stream_slots = malloc(INITIAL_CAPACITY / 2 * sizeof(*index->stream_slots));
  if (index->streams == NULL || index->stream_slots == NULL) {
    batch_index_destroy(index);
    return NULL;
  }
  index->stream_cap = INITIAL_CAPACITY;
  return index;
}

void batch_index_destroy(struct batch_index *index) {
  if (index == NULL)
    return;
  free(index->streams);
  free(index->stream_slots);
  free(index);
}

void batch_index_clear(struct batch_index *index) {
  for (size_t i = 0; i < index->stream_count; i++)
    index->streams[index->stream_slots[i]] = (struct batch_stream){0};
  index->stream_count = 0;
}

/* Room in *slots for the filled slots of a table of cap slots. */
static int grow_slot_list(size_t **slots, size_t cap) {
  size_t *grown = realloc(*slots, cap / 2 * sizeof(*grown));
  if (grown == NULL)
    return -ENOMEM;
  *slots = grown;
  return 0;
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

/* Entries move when the table grows: their slots are listed anew. */
static int grow_streams(struct batch_index *index) {
  if (grow_slot_list(&index->stream_slots, 2 * index->stream_cap) != 0 ||
      name_table_grow((void **)&index->streams, sizeof(*index->streams), &index->stream_cap) != 0)
    return -ENOMEM;
  size_t filled = 0;
  for (size_t i = 0; i < index->stream_cap; i++) {
    if (index->streams[i].key.name != NULL)
      index->stream_slots[filled++] = i;
  }
  return 0;
}

struct batch_stream *batch_index_add_stream(struct batch_index *index, const char *name,
                                            size_t len, uint64_t hash,
                                            const struct stream_record *record, bool is_new) {
  if (2 * (index->stream_count + 1) > index->stream_cap && grow_streams(index) != 0)
    return NULL;
  size_t slot = stream_slot(index, name, len, hash);
  struct batch_stream *s = &index->streams[slot];
  *s = (struct batch_stream){.key = {name, len, hash}, .record = *record, .is_new = is_new};
  index->stream_slots[index->stream_count++] = slot;
  return s;
}
