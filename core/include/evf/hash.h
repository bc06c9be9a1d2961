#ifndef EVF_HASH_H
#define EVF_HASH_H

#include <stddef.h>
#include <stdint.h>

/*
 * The stream hash is part of the on-disk format: a stream lives on shard
 * evf_stream_shard(name, shard count), and the data folder records
 * EVF_STREAM_HASH_NAME. Changing the function is a format change.
 */
#define EVF_STREAM_HASH_NAME "fnv1a-64"

/** 64-bit FNV-1a of the bytes. */
uint64_t evf_hash_fnv1a64(const void *data, size_t len);

/** The same from another offset basis (a seed): not the stream hash. */
uint64_t evf_hash_fnv1a64_from(uint64_t basis, const void *data, size_t len);

/** The shard that owns a stream name. shard_count must be at least 1. */
unsigned evf_stream_shard(const char *name, size_t len, unsigned shard_count);

/** The same from the name's hash (evf_hash_fnv1a64). */
unsigned evf_shard_of(uint64_t stream_hash, unsigned shard_count);

/*
 * The first slot to probe for a key of this hash in a table of mask + 1
 * slots (a power of two). The hash is mixed first: in a shard's tables
 * every stream hash has the same remainder by the shard count, so its low
 * bits alone would leave slots unused.
 */
static inline size_t evf_hash_slot(uint64_t hash, size_t mask) {
  return (size_t)((hash * 0x9E3779B97F4A7C15u) >> 32) & mask;
}

#endif
