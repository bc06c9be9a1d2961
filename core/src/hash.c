#include "evf/hash.h"

uint64_t evf_hash_fnv1a64(const void *data, size_t len) {
  return evf_hash_fnv1a64_from(0xcbf29ce484222325u, data, len);
}

uint64_t evf_hash_fnv1a64_from(uint64_t basis, const void *data, size_t len) {
  const unsigned char *p = data;
  uint64_t h = basis;
  for (size_t i = 0; i < len; i++) {
    h ^= p[i];
    h *= 0x100000001b3u;
  }
  return h;
}

unsigned evf_stream_shard(const char *name, size_t len, unsigned shard_count) {
  return evf_shard_of(evf_hash_fnv1a64(name, len), shard_count);
}

unsigned evf_shard_of(uint64_t stream_hash, unsigned shard_count) {
  return (unsigned)(stream_hash % shard_count);
}
