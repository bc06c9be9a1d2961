#ifndef SHARDS_NAME_TABLE_H
#define SHARDS_NAME_TABLE_H

/*
 * Open addressing with linear probing for entries found by stream name:
 * the stream cache's table and the batch index's. Each entry type begins
 * with a struct name_key, and a slot whose name is NULL is empty. Tables
 * have a power-of-two capacity, grow at half full, and are never deleted
 * from, so they need no tombstones.
 */

#include <stddef.h>
#include <stdint.h>

struct name_key {
  const char *name;          /* NULL: an empty slot */
  size_t len;
  uint64_t hash;             /* evf_hash_fnv1a64 of the name */
};

/** The slot holding the name, or the empty slot where it goes. */
size_t name_table_slot(const void *slots, size_t entry_size, size_t cap, const char *name,
                       size_t len, uint64_t hash);

/** Doubles the table, moving its entries. Returns 0, or -ENOMEM with the table unchanged. */
int name_table_grow(void **slots, size_t entry_size, size_t *cap);

#endif
