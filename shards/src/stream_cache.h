#ifndef SHARDS_STREAM_CACHE_H
#define SHARDS_STREAM_CACHE_H

/*
 * The committed state of the streams a shard decided appends for lately:
 * id, creation time and length. Preparing an append then needs no search
 * of `streams` and `stream_index`, two B-tree descents per append.
 *
 * Owned by one shard's loop. It holds only what the index holds: entries
 * are added from a read of the index, or after a batch's commit succeeded;
 * a failed commit leaves them as they were. Its memory stays bounded: at
 * capacity it drops the streams not put since it last dropped any (two
 * generations, stream_cache.c), so the streams in use stay.
 */

#include "records.h"

#include <stddef.h>
#include <stdint.h>

struct stream_cache;

/** A cache of at most max_streams streams (2 at least), or NULL when out of memory. */
struct stream_cache *stream_cache_create(size_t max_streams);
void stream_cache_destroy(struct stream_cache *cache);

/** Forgets every stream: the index changed in a way the cache did not follow. */
void stream_cache_clear(struct stream_cache *cache);

/*
 * Streams are found by name and the name's hash (evf_hash_fnv1a64),
 * computed once per append by the caller.
 */

/** The stream's committed record, or NULL when the cache does not hold it. */
const struct stream_record *stream_cache_find(const struct stream_cache *cache, const char *name,
                                              size_t len, uint64_t hash);

/** Sets the stream's committed record, copying its name. Returns 0 or -ENOMEM. */
int stream_cache_put(struct stream_cache *cache, const char *name, size_t len, uint64_t hash,
                     const struct stream_record *record);

#endif
