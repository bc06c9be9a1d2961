#include "stream_cache.h"

#include "name_table.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct cached_stream {
  struct name_key key;       /* the name is owned: allocated by put, freed by clear */
  struct stream_record record;
};

/*
 * A name table (name_table.h) that grows with the streams it holds, so
 * that a few hot streams stay in a few cache lines.
 */
struct stream_cache {
  struct cached_stream *slots;
  size_t cap;                /* a power of two */
  size_t count;
  size_t max;
};

#define INITIAL_CAPACITY 64

struct stream_cache *stream_cache_create(size_t max_streams) {
  struct stream_cache *cache = calloc(1, sizeof(*cache));
  if (cache == NULL)
    return NULL;
  cache->max = max_streams > 0 ? max_streams : 1;
  cache->cap = INITIAL_CAPACITY;
  cache->slots = calloc(cache->cap, sizeof(*cache->slots));
  if (cache->slots == NULL) {
    free(cache);
    return NULL;
  }
  return cache;
}

void stream_cache_clear(struct stream_cache *cache) {
  for (size_t i = 0; i < cache->cap && cache->count > 0; i++) {
    if (cache->slots[i].key.name != NULL) {
      free((char *)cache->slots[i].key.name);
      cache->slots[i] = (struct cached_stream){0};
      cache->count--;
    }
  }
}

void stream_cache_destroy(struct stream_cache *cache) {
  if (cache == NULL)
    return;
  stream_cache_clear(cache);
  free(cache->slots);
  free(cache);
}

static size_t slot_of(const struct stream_cache *cache, const char *name, size_t len,
                      uint64_t hash) {
  return name_table_slot(cache->slots, sizeof(*cache->slots), cache->cap, name, len, hash);
}

const struct stream_record *stream_cache_find(const struct stream_cache *cache, const char *name,
                                              size_t len, uint64_t hash) {
  const struct cached_stream *s = &cache->slots[slot_of(cache, name, len, hash)];
  return s->key.name != NULL ? &s->record : NULL;
}

int stream_cache_put(struct stream_cache *cache, const char *name, size_t len, uint64_t hash,
                     const struct stream_record *record) {
  size_t i = slot_of(cache, name, len, hash);
  if (cache->slots[i].key.name == NULL) {
    if (cache->count == cache->max)
      stream_cache_clear(cache);
    else if (2 * (cache->count + 1) > cache->cap &&
             name_table_grow((void **)&cache->slots, sizeof(*cache->slots), &cache->cap) != 0)
      return -ENOMEM;
    i = slot_of(cache, name, len, hash);
  }
  struct cached_stream *s = &cache->slots[i];
  if (s->key.name == NULL) {
    char *copy = malloc(len);
    if (copy == NULL)
      return -ENOMEM;
    memcpy(copy, name, len);
    s->key = (struct name_key){copy, len, hash};
    cache->count++;
  }
  s->record = *record;
  return 0;
}
