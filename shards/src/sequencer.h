#ifndef SHARDS_SEQUENCER_H
#define SHARDS_SEQUENCER_H

/*
 * DESIGN
 * The sequencer hands out global positions and publishes the watermark.
 * It is a few atomics, not a thread: a shard's committer takes its
 * batch's positions itself (sequencer_grant) just before writing, and
 * settles them (sequencer_settle) after the commit, whether it succeeded
 * or not. A sequencer thread used to do this over rings, and each batch
 * waited for two wake-ups of that thread and one of the committer by it:
 * about 100 us per batch on a 2-core VM, a tenth of a batch's cycle under
 * unary appends (bench/RESULTS.md, "The sequencer without a thread").
 *
 * - `next`: the next position to hand out. A grant is one fetch-add.
 * - `unsettled_from` (per shard): at or below the first position of the
 *   shard's outstanding grant, or SEQ_NO_GRANT when it has none. A grant
 *   stores the value of `next` it reads, then fetch-adds, then stores the
 *   first position it got; a settle stores SEQ_NO_GRANT. A shard has at
 *   most one grant outstanding (it commits one batch at a time).
 * - `watermark`: the largest W such that every position <= W is settled.
 *   After each settle, the settling thread computes it (`next` - 1, lowered
 *   below every shard's `unsettled_from`) and raises the published one to
 *   it with a compare-and-swap, so it never goes back.
 *
 * Every access is sequentially consistent, but for readers' loads of the
 * watermark (sequencer_watermark, acquire). Why the computed watermark is
 * safe: a position p below the `next` it read was handed out by a
 * fetch-add ordered before that read, so the grant's bound (stored before
 * its fetch-add) is seen, unless that grant has settled since; the same
 * shard's next grant stores a bound above p. Of two settles that race,
 * each stores its SEQ_NO_GRANT before reading the other's, so at least one
 * sees both, and the larger raise stands. A grant that finds other grants
 * came between its bound and its fetch-add computes the watermark too: a
 * settle meanwhile may have stopped at its low bound.
 *
 * A shard that watches the watermark (live subscriptions, or acknowledgements
 * waiting to become visible) is woken after it moves: the settling thread
 * raises the watermark then reads the shard's flag, the shard sets its flag
 * then reads the watermark with a sequentially consistent load (not
 * sequencer_watermark's acquire), so one of the two always sees the other.
 */

#include "waker.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define SEQ_NO_GRANT UINT64_MAX

/* Padding keeps what different threads write 64 bytes apart: never on one cache line. */
#define SEQ_LINE 64

/* One shard's side: written by its committer (and its loop for the flag), read by all. */
struct seq_shard {
  _Atomic uint64_t unsettled_from;
  atomic_uint watermark_watch; /* nonzero: wake the shard whenever the watermark moves */
  struct waker *wake;          /* set before any grant: the shard's loop */
  char pad[SEQ_LINE - sizeof(uint64_t) - sizeof(unsigned) - sizeof(void *)];
};

struct sequencer {
  _Atomic uint64_t next;
  char pad_next[SEQ_LINE - sizeof(uint64_t)];
  _Atomic uint64_t watermark;
  char pad_watermark[SEQ_LINE - sizeof(uint64_t)];
  unsigned shard_count;
  struct seq_shard *shards;
};

/** Positions resume after last_position (the highest committed one). Returns 0 or -ENOMEM. */
int sequencer_init(struct sequencer *seq, unsigned shard_count, uint64_t last_position);

void sequencer_deinit(struct sequencer *seq);

/** Hands out count positions to a shard with no grant outstanding; returns the first. */
uint64_t sequencer_grant(struct sequencer *seq, unsigned shard, uint32_t count);

/** The shard's grant is committed or abandoned: the watermark may move. */
void sequencer_settle(struct sequencer *seq, unsigned shard);

/* Why a shard watches the watermark: a bit set of these (0: it does not). */
enum { SEQ_WATCH_SUBSCRIBERS = 1, SEQ_WATCH_ACKS = 2 };

/** Whether (reasons != 0) settles wake the shard after each watermark move. Shard's thread. */
static inline void sequencer_watch_watermark(struct sequencer *seq, unsigned shard,
                                             unsigned reasons) {
  atomic_store(&seq->shards[shard].watermark_watch, reasons);
}

static inline uint64_t sequencer_watermark(const struct sequencer *seq) {
  return atomic_load_explicit(&seq->watermark, memory_order_acquire);
}

#endif
