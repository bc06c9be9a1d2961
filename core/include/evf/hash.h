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

/** The shard that owns a stream name. shard_count must be at least 1. */
unsigned evf_stream_shard(const char *name, size_t len, unsigned shard_count);

#endif
