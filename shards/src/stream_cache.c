#include "stream_cache.h"

#include "evf/hash.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct cached_stream {
  char *name;                /* owned; NULL: an empty slot */
  size_t len;
  uint64_t hash;
  struct stream_record record;
};

/*
 * Open addressing with linear probing, never more than half full: no
 * deletes, so no tombstones. The table grows with the streams it holds, so
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
    if (cache->slots[i].name != NULL) {
      free(cache->slots[i].name);
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
  size_t mask = cache->cap - 1;
  size_t i = evf_hash_slot(hash, mask);
  const struct cached_stream *s;
  while ((s = &cache->slots[i])->name != NULL &&
         !(s->hash == hash && s->len == len && memcmp(s->name, name, len) == 0))
    i = (i + 1) & mask;
  return i;
}

const struct stream_record *stream_cache_find(const struct stream_cache *cache, const char *name,
                                              size_t len, uint64_t hash) {
  const struct cached_stream *s = &cache->slots[slot_of(cache, name, len, hash)];
  return s->name != NULL ? &s->record : NULL;
}

static int grow(struct stream_cache *cache) {
  struct cached_stream *old = cache->slots;
  size_t old_cap = cache->cap;
  struct cached_stream *grown = calloc(old_cap * 2, sizeof(*grown));
  if (grown == NULL)
    return -ENOMEM;
  cache->slots = grown;
  cache->cap = old_cap * 2;
  for (size_t i = 0; i < old_cap; i++) {
    if (old[i].name != NULL)
      cache->slots[slot_of(cache, old[i].name, old[i].len, old[i].hash)] = old[i];
  }
  free(old);
  return 0;
}

int stream_cache_put(struct stream_cache *cache, const char *name, size_t len, uint64_t hash,
                     const struct stream_record *record) {
  size_t i = slot_of(cache, name, len, hash);
  if (cache->slots[i].name == NULL) {
    if (cache->count == cache->max)
      stream_cache_clear(cache);
    else if (2 * (cache->count + 1) > cache->cap && grow(cache) != 0)
      return -ENOMEM;
    i = slot_of(cache, name, len, hash);
  }
  struct cached_stream *s = &cache->slots[i];
  if (s->name == NULL) {
    if ((s->name = malloc(len)) == NULL)
      return -ENOMEM;
    memcpy(s->name, name, len);
    s->len = len;
    s->hash = hash;
    cache->count++;
  }
  s->record = *record;
  return 0;
}
