#include "stream_cache.h"

#include "name_table.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct cached_stream {
  struct name_key key;       /* the name is owned: allocated by put, freed with its generation */
  struct stream_record record;
};

/*
 * A name table (name_table.h) that grows with the streams it holds, so
 * that a few hot streams stay in a few cache lines.
 */
struct generation {
  struct cached_stream *slots;
  size_t cap;                /* a power of two */
  size_t count;
};

/*
 * Two generations, each of at most half the capacity: streams are put into
 * the young one; when it is full it becomes the old one, and the old one
 * is dropped. A stream used again before its generation is dropped is put
 * into the young one again, so the streams in use survive any number of
 * new ones passing through, and dropping frees half the cache at most.
 * A stream in both is found young: a put only ever goes there.
 */
struct stream_cache {
  struct generation young, old;
  size_t max_per_generation;
};

#define INITIAL_CAPACITY 64

static int generation_init(struct generation *g) {
  *g = (struct generation){.cap = INITIAL_CAPACITY};
  g->slots = calloc(g->cap, sizeof(*g->slots));
  return g->slots != NULL ? 0 : -ENOMEM;
}

/* Empty generations keep their tables: a clear allocates nothing. */
static void generation_clear(struct generation *g) {
  for (size_t i = 0; i < g->cap && g->count > 0; i++) {
    if (g->slots[i].key.name != NULL) {
      free((char *)g->slots[i].key.name);
      g->slots[i] = (struct cached_stream){0};
      g->count--;
    }
  }
}

static void generation_free(struct generation *g) {
  generation_clear(g);
  free(g->slots);
  *g = (struct generation){0};
}

struct stream_cache *stream_cache_create(size_t max_streams) {
  struct stream_cache *cache = calloc(1, sizeof(*cache));
  if (cache == NULL)
    return NULL;
  cache->max_per_generation = max_streams > 2 ? max_streams / 2 : 1;
  if (generation_init(&cache->young) != 0 || generation_init(&cache->old) != 0) {
    stream_cache_destroy(cache);
    return NULL;
  }
  return cache;
}

void stream_cache_destroy(struct stream_cache *cache) {
  if (cache == NULL)
    return;
  generation_free(&cache->young);
  generation_free(&cache->old);
  free(cache);
}

void stream_cache_clear(struct stream_cache *cache) {
  generation_clear(&cache->young);
  generation_clear(&cache->old);
}

static struct cached_stream *slot_in(const struct generation *g, const char *name, size_t len,
                                     uint64_t hash) {
  return &g->slots[name_table_slot(g->slots, sizeof(*g->slots), g->cap, name, len, hash)];
}

const struct stream_record *stream_cache_find(const struct stream_cache *cache, const char *name,
                                              size_t len, uint64_t hash) {
  const struct cached_stream *s = slot_in(&cache->young, name, len, hash);
  if (s->key.name == NULL)
    s = slot_in(&cache->old, name, len, hash);
  return s->key.name != NULL ? &s->record : NULL;
}

/* The young generation is full: it becomes the old one; the old one, emptied, the young one. */
static void turn_over(struct stream_cache *cache) {
  struct generation dropped = cache->old;
  generation_clear(&dropped);
  cache->old = cache->young;
  cache->young = dropped;
}

int stream_cache_put(struct stream_cache *cache, const char *name, size_t len, uint64_t hash,
                     const struct stream_record *record) {
  struct generation *young = &cache->young;
  struct cached_stream *s = slot_in(young, name, len, hash);
  if (s->key.name == NULL) {
    /* Kept right first: if moving it into the young generation fails, the old entry stands. */
    struct cached_stream *aged = slot_in(&cache->old, name, len, hash);
    if (aged->key.name != NULL)
      aged->record = *record;
    if (young->count == cache->max_per_generation)
      turn_over(cache);
    else if (2 * (young->count + 1) > young->cap &&
             name_table_grow((void **)&young->slots, sizeof(*young->slots), &young->cap) != 0)
      return -ENOMEM;
    s = slot_in(young, name, len, hash);
    char *copy = malloc(len);
    if (copy == NULL)
      return -ENOMEM;
    memcpy(copy, name, len);
    s->key = (struct name_key){copy, len, hash};
    young->count++;
  }
  s->record = *record;
  return 0;
}
