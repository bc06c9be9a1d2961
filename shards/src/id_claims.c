#include "id_claims.h"

#include "evf/hash.h"

#include <errno.h>
#include <stdlib.h>

#define BUCKET_SLOTS 8     /* one cache line */
#define WINDOW_BUCKETS 4   /* an id's claim is in one of these */
#define WINDOW_SLOTS (BUCKET_SLOTS * WINDOW_BUCKETS)
#define OWNER_BITS 16
#define OWNER_MASK ((UINT64_C(1) << OWNER_BITS) - 1)
/*
 * Slots per shard: a batch's claims fill under a tenth of them, and one
 * append with as many client ids as a 4 MiB message holds (about 97,000)
 * overflows a window with odds under 10^-6. Pages are touched as used.
 */
#define SLOTS_PER_SHARD (1u << 18)
#define MAX_SLOTS (1u << 24)

int id_claims_init(struct id_claims *claims, unsigned shards) {
  uint64_t slots = SLOTS_PER_SHARD;
  while (slots < (uint64_t)shards * SLOTS_PER_SHARD && slots < MAX_SLOTS)
    slots *= 2;
  claims->slots = calloc(slots, sizeof(*claims->slots));
  if (claims->slots == NULL)
    return -ENOMEM;
  claims->bucket_mask = slots / BUCKET_SLOTS - 1;
  return 0;
}

void id_claims_free(struct id_claims *claims) {
  free((void *)claims->slots);
  claims->slots = NULL;
}

static uint64_t id_hash(const struct evf_uuid *id) {
  return evf_hash_fnv1a64(id->bytes, sizeof(id->bytes));
}

static bool same_id(uint64_t claim, uint64_t hash) {
  return claim != 0 && (claim & ~OWNER_MASK) == (hash & ~OWNER_MASK);
}

static _Atomic uint64_t *window_slot(const struct id_claims *claims, uint64_t hash, unsigned i) {
  uint64_t bucket = (hash + i / BUCKET_SLOTS) & claims->bucket_mask;
  return &claims->slots[bucket * BUCKET_SLOTS + i % BUCKET_SLOTS];
}

/* A claim for the id in a slot of the window other than skip, or 0. */
static uint64_t find_claim(const struct id_claims *claims, uint64_t hash, unsigned skip) {
  for (unsigned i = 0; i < WINDOW_SLOTS; i++) {
    uint64_t claim = atomic_load(window_slot(claims, hash, i));
    if (i != skip && same_id(claim, hash))
      return claim;
  }
  return 0;
}

enum id_claim id_claims_take(struct id_claims *claims, const struct evf_uuid *id, unsigned shard) {
  uint64_t hash = id_hash(id);
  uint64_t mine = (hash & ~OWNER_MASK) | (shard + 1);
  uint64_t held = find_claim(claims, hash, WINDOW_SLOTS);
  if (held != 0)
    return held == mine ? ID_CLAIM_HELD_HERE : ID_CLAIM_HELD;
  for (unsigned i = 0; i < WINDOW_SLOTS; i++) {
    _Atomic uint64_t *slot = window_slot(claims, hash, i);
    uint64_t empty = 0;
    if (!atomic_compare_exchange_strong(slot, &empty, mine))
      continue;
    /* Stored, now look again: a claim for the id taken meanwhile makes this one withdraw. */
    if (find_claim(claims, hash, i) == 0)
      return ID_CLAIM_TAKEN;
    atomic_store(slot, 0);
    return ID_CLAIM_HELD;
  }
  return ID_CLAIM_FULL;
}

void id_claims_drop(struct id_claims *claims, const struct evf_uuid *id, unsigned shard) {
  uint64_t hash = id_hash(id);
  uint64_t mine = (hash & ~OWNER_MASK) | (shard + 1);
  for (unsigned i = 0; i < WINDOW_SLOTS; i++) {
    _Atomic uint64_t *slot = window_slot(claims, hash, i);
    if (atomic_load(slot) == mine) {
      atomic_store(slot, 0);
      return;
    }
  }
}
