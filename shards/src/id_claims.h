#ifndef SHARDS_ID_CLAIMS_H
#define SHARDS_ID_CLAIMS_H

/*
 * DESIGN
 * Client-given event ids claimed by the shards deciding appends that carry
 * them. An id is stored once in the whole store, but a shard deciding an
 * append looks only at committed data (its own index and the other shards'
 * indexes): two shards deciding the same new id at once, each before the
 * other's commit, would both store it. So a shard claims an append's ids
 * before it looks for them, and keeps the claims until the append's batch
 * is committed and indexed, or failed (a batch the log took but the index
 * did not keeps them until the index is repaired). A shard that finds an
 * id claimed by another defers the append, and is woken when claims are
 * dropped (shard.c); by then the id is stored (the append is refused or
 * recognized as a retry) or free again.
 *
 * Lock-free: a table of 64-bit claims, each the id's fingerprint (the high
 * 48 bits of its seeded hash) and its shard plus one (the low 16 bits). An
 * id's claim lives in a window of four 8-slot buckets (cache lines);
 * windows do not overlap. A claim looks through the window for the same
 * fingerprint, takes an empty slot with a compare-and-swap, then looks
 * through the window again: of two shards claiming one id at once, each
 * stores then loads (sequentially consistent), so at least one sees the
 * other, and a shard that sees another claim withdraws its own. Both may
 * withdraw (both defer and try again); both cannot keep one. Two ids with
 * one fingerprint only defer an append (odds of 2^-48 a pair).
 */

#include "evf/uuid.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct id_claims {
  _Atomic uint64_t *slots;
  uint64_t bucket_mask;
  uint64_t seed;       /* of the ids' hash, drawn at init */
};

enum id_claim {
  ID_CLAIM_TAKEN,     /* this shard holds the id until id_claims_drop */
  ID_CLAIM_HELD,      /* another shard's claims are in the way: the id's, or a full window */
  ID_CLAIM_RACED,     /* as HELD, but this shard took the id and withdrew (a claim dropped) */
  ID_CLAIM_HELD_HERE, /* this shard holds the id (or another with the same fingerprint) */
  ID_CLAIM_FULL,      /* this shard's own claims fill the id's window */
};

/** Sizes the table for shards deciding at once. Returns 0 or -ENOMEM. */
int id_claims_init(struct id_claims *claims, unsigned shards);
void id_claims_free(struct id_claims *claims);

/** Claims the id for the shard. Any thread; a shard's claims are taken and dropped by one. */
enum id_claim id_claims_take(struct id_claims *claims, const struct evf_uuid *id, unsigned shard);

/** Withdraws a claim this shard took. */
void id_claims_drop(struct id_claims *claims, const struct evf_uuid *id, unsigned shard);

#endif
