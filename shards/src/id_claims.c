#include "id_claims.h"

#include "evf/hash.h"

#include <errno.h>
#include <sys/mman.h>

#define BUCKET_SLOTS 8     /* one cache line */
#define WINDOW_BUCKETS 4   /* an id's claim is in one of these */
#define OWNER_BITS 16
#define OWNER_MASK ((UINT64_C(1) << OWNER_BITS) - 1)
/*
 * Slots per shard: a batch's claims fill under a tenth of them, and one
 * append with as many client ids as a 4 MiB message holds (about 97,000)
 * overflows a window with odds under 10^-6. Pages are touched as used.
 */
#define SLOTS_PER_SHARD (1u << 18)
#define MAX_SLOTS (1u << 24)

static size_t table_bytes(const struct id_claims *claims) {
  return (claims->bucket_mask + 1) * BUCKET_SLOTS * sizeof(*claims->slots);
}

/* Mapped, not allocated: aligned to pages (so buckets to cache lines), zero until touched. */
int id_claims_init(struct id_claims *claims, unsigned shards) {
  uint64_t slots = SLOTS_PER_SHARD;
  while (slots < (uint64_t)shards * SLOTS_PER_SHARD && slots < MAX_SLOTS)
    slots *= 2;
  claims->bucket_mask = slots / BUCKET_SLOTS - 1;
  void *table = mmap(NULL, table_bytes(claims), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (table == MAP_FAILED)
    return -ENOMEM;
  claims->slots = table;
  return 0;
}

void id_claims_free(struct id_claims *claims) {
  if (claims->slots != NULL)
    munmap((void *)claims->slots, table_bytes(claims));
  claims->slots = NULL;
}

static uint64_t id_hash(const struct evf_uuid *id) {
  return evf_hash_fnv1a64(id->bytes, sizeof(id->bytes));
}

static bool same_id(uint64_t claim, uint64_t hash) {
  return claim != 0 && (claim & ~OWNER_MASK) == (hash & ~OWNER_MASK);
}

/* Bucket b of the id's window (one cache line). */
static _Atomic uint64_t *window_bucket(const struct id_claims *claims, uint64_t hash, unsigned b) {
  return &claims->slots[((hash + b) & claims->bucket_mask) * BUCKET_SLOTS];
}

/* A claim for the id in a slot of the window other than skip, or 0. */
static uint64_t find_claim(const struct id_claims *claims, uint64_t hash,
                           const _Atomic uint64_t *skip) {
  for (unsigned b = 0; b < WINDOW_BUCKETS; b++) {
    _Atomic uint64_t *bucket = window_bucket(claims, hash, b);
    for (unsigned i = 0; i < BUCKET_SLOTS; i++) {
      uint64_t claim = atomic_load(&bucket[i]);
      if (&bucket[i] != skip && same_id(claim, hash))
        return claim;
    }
  }
  return 0;
}

/* Stores mine in an empty slot of the window; returns the slot, or NULL if there is none. */
static _Atomic uint64_t *store_claim(struct id_claims *claims, uint64_t hash, uint64_t mine) {
  for (unsigned b = 0; b < WINDOW_BUCKETS; b++) {
    _Atomic uint64_t *bucket = window_bucket(claims, hash, b);
    for (unsigned i = 0; i < BUCKET_SLOTS; i++) {
      uint64_t empty = 0;
      if (atomic_compare_exchange_strong(&bucket[i], &empty, mine))
        return &bucket[i];
    }
  }
  return NULL;
}

enum id_claim id_claims_take(struct id_claims *claims, const struct evf_uuid *id, unsigned shard) {
  uint64_t hash = id_hash(id);
  uint64_t mine = (hash & ~OWNER_MASK) | (shard + 1);
  uint64_t held = find_claim(claims, hash, NULL);
  if (held != 0)
    return held == mine ? ID_CLAIM_HELD_HERE : ID_CLAIM_HELD;
  _Atomic uint64_t *slot = store_claim(claims, hash, mine);
  if (slot == NULL)
    return ID_CLAIM_FULL;
  /* Stored, now look again: a claim for the id taken meanwhile makes this one withdraw. */
  if (find_claim(claims, hash, slot) == 0)
    return ID_CLAIM_TAKEN;
  atomic_store(slot, 0);
  return ID_CLAIM_HELD;
}

void id_claims_drop(struct id_claims *claims, const struct evf_uuid *id, unsigned shard) {
  uint64_t hash = id_hash(id);
  uint64_t mine = (hash & ~OWNER_MASK) | (shard + 1);
  for (unsigned b = 0; b < WINDOW_BUCKETS; b++) {
    _Atomic uint64_t *bucket = window_bucket(claims, hash, b);
    for (unsigned i = 0; i < BUCKET_SLOTS; i++) {
      if (atomic_load(&bucket[i]) == mine) {
        atomic_store(&bucket[i], 0);
        return;
      }
    }
  }
}
