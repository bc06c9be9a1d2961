#include "name_table.h"

#include "evf/hash.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const struct name_key *key_at(const void *slots, size_t entry_size, size_t i) {
  return (const struct name_key *)((const char *)slots + i * entry_size);
}

size_t name_table_slot(const void *slots, size_t entry_size, size_t cap, const char *name,
                       size_t len, uint64_t hash) {
  size_t mask = cap - 1;
  size_t i = evf_hash_slot(hash, mask);
  const struct name_key *k;
  while ((k = key_at(slots, entry_size, i))->name != NULL &&
         !(k->hash == hash && k->len == len && memcmp(k->name, name, len) == 0))
    i = (i + 1) & mask;
  return i;
}

int name_table_grow(void **slots, size_t entry_size, size_t *cap) {
  size_t old_cap = *cap, new_cap = 2 * old_cap;
  char *old = *slots, *grown = calloc(new_cap, entry_size);
  if (grown == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < old_cap; i++) {
    const struct name_key *k = key_at(old, entry_size, i);
    if (k->name == NULL)
      continue;
    size_t slot = name_table_slot(grown, entry_size, new_cap, k->name, k->len, k->hash);
    memcpy(grown + slot * entry_size, k, entry_size);
  }
  free(old);
  *slots = grown;
  *cap = new_cap;
  return 0;
}
