#include "id_claims.h"

#include "evf/clock.h"
#include "evf/hash.h"

#include <errno.h>
#include <sys/mman.h>
#include <sys/random.h>

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
  if (getrandom(&claims->seed, sizeof(claims->seed), 0) != sizeof(claims->seed))
    claims->seed = (uint64_t)evf_monotonic_ns() * UINT64_C(0x9e3779b97f4a7c15);
  claims->seed ^= UINT64_C(0xcbf29ce484222325); /* FNV's offset basis */
  return 0;
}

void id_claims_free(struct id_claims *claims) {
  if (claims->slots != NULL)
    munmap((void *)claims->slots, table_bytes(claims));
  claims->slots = NULL;
}

/*
 * FNV-1a from a seed the process draws at start, then mixed (the bucket
 * comes from the low bits): ids chosen to share a window cannot be made
 * without knowing the seed.
 */
static uint64_t id_hash(const struct id_claims *claims, const struct evf_uuid *id) {
  uint64_t h = evf_hash_fnv1a64_from(claims->seed, id->bytes, sizeof(id->bytes));
  h ^= h >> 32;
  h *= UINT64_C(0xd6e8feb86659fd93);
  return h ^ (h >> 32);
}

/* A shard's claim on the id of this hash: the fingerprint, and the shard (never 0). */
static uint64_t claim_of(uint64_t hash, unsigned shard) {
  return (hash & ~OWNER_MASK) | (shard + 1);
}

static bool same_id(uint64_t claim, uint64_t hash) {
  return claim != 0 && (claim & ~OWNER_MASK) == (hash & ~OWNER_MASK);
}

/*
 * The id's window: WINDOW_BUCKETS buckets from one whose number is a
 * multiple of WINDOW_BUCKETS, so WINDOW_SLOTS slots in a row. Windows do
 * not overlap: a shard holds at most one claim per fingerprint in a
 * window, so a drop clears the one it took.
 */
static _Atomic uint64_t *window(const struct id_claims *claims, uint64_t hash) {
  uint64_t first = hash & claims->bucket_mask & ~(uint64_t)(WINDOW_BUCKETS - 1);
  return &claims->slots[first * BUCKET_SLOTS];
}

/* A claim for the id in a slot of the window other than skip, or 0. */
static uint64_t find_claim(_Atomic uint64_t *slots, uint64_t hash, const _Atomic uint64_t *skip) {
  for (unsigned i = 0; i < WINDOW_SLOTS; i++) {
    uint64_t claim = atomic_load(&slots[i]);
    if (&slots[i] != skip && same_id(claim, hash))
      return claim;
  }
  return 0;
}

/* Whether a slot of the window holds another shard's claim (for any id). */
static bool others_in_window(_Atomic uint64_t *slots, uint64_t owner) {
  for (unsigned i = 0; i < WINDOW_SLOTS; i++) {
    uint64_t claim = atomic_load(&slots[i]);
    if (claim != 0 && (claim & OWNER_MASK) != owner)
      return true;
  }
  return false;
}

/* Stores mine in an empty slot of the window; returns the slot, or NULL if there is none. */
static _Atomic uint64_t *store_claim(_Atomic uint64_t *slots, uint64_t mine) {
  for (unsigned i = 0; i < WINDOW_SLOTS; i++) {
    uint64_t empty = 0;
    if (atomic_compare_exchange_strong(&slots[i], &empty, mine))
      return &slots[i];
  }
  return NULL;
}

enum id_claim id_claims_take(struct id_claims *claims, const struct evf_uuid *id, unsigned shard) {
  uint64_t hash = id_hash(claims, id);
  uint64_t mine = claim_of(hash, shard);
  _Atomic uint64_t *slots = window(claims, hash);
  uint64_t held = find_claim(slots, hash, NULL);
  if (held != 0)
    return held == mine ? ID_CLAIM_HELD_HERE : ID_CLAIM_HELD;
  _Atomic uint64_t *slot = store_claim(slots, mine);
  if (slot == NULL) {
    /* Other shards' claims go: wait for them. Full of this shard's own: no room. */
    if (others_in_window(slots, shard + 1))
      return ID_CLAIM_HELD;
    /* Others' claims may have gone between the two looks: one more try. */
    if ((slot = store_claim(slots, mine)) == NULL)
      return ID_CLAIM_FULL;
  }
  /* Stored, now look again: a claim for the id taken meanwhile makes this one withdraw. */
  if (find_claim(slots, hash, slot) == 0)
    return ID_CLAIM_TAKEN;
  atomic_store(slot, 0);
  return ID_CLAIM_RACED;
}

void id_claims_drop(struct id_claims *claims, const struct evf_uuid *id, unsigned shard) {
  uint64_t hash = id_hash(claims, id);
  uint64_t mine = claim_of(hash, shard);
  _Atomic uint64_t *slots = window(claims, hash);
  for (unsigned i = 0; i < WINDOW_SLOTS; i++) {
    if (atomic_load(&slots[i]) == mine) {
      atomic_store(&slots[i], 0);
      return;
    }
  }
}
