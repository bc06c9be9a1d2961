#ifndef SHARDS_SEQUENCER_H
#define SHARDS_SEQUENCER_H

/*
 * DESIGN
 * The sequencer thread hands out global positions and publishes the
 * watermark. It runs its own libuv loop and talks to each shard over two
 * SPSC rings of struct seq_msg values (shard -> sequencer, sequencer ->
 * shard). The sequencer is woken by its waker (waker.h); a grant wakes
 * the channel's grant receiver (on_grant), the shard's committer.
 *
 *   shard: SEQ_REQUEST n     -> sequencer: grants [next, next + n), pending
 *   sequencer: SEQ_GRANT     -> shard's committer, already holding the
 *                               batch: writes and commits
 *   shard's committer:       -> sequencer: the grant is committed or
 *     SEQ_SETTLE                abandoned; the watermark may move
 *
 * The grant goes straight to the committer, not through the shard's loop:
 * one wake-up less before every commit.
 *
 * The shard's side of a channel has one producer at a time: the committer
 * settles before it hands the job back, and the loop requests again only
 * after it took the job back (an acquire of what the committer released).
 * The ring back has one consumer, the committer.
 *
 * A shard has at most one grant outstanding (it commits one batch at a
 * time), so a shard never has more than two messages in its ring and the
 * rings cannot fill. The watermark is stored with release semantics after
 * each drain and loaded with acquire semantics by readers. A shard that
 * watches the watermark (for live subscriptions) is woken after it moves:
 * the sequencer stores the watermark then reads the flag, the shard sets the
 * flag then reads the watermark, both sequentially consistent, so one of the
 * two always sees the other and no advance goes unnoticed. A shard watches
 * for its live subscriptions, and while it holds acknowledgements of
 * durable appends that global reads cannot see yet (positions above the
 * watermark).
 */

#include "waker.h"

#include <ck_ring.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

enum seq_msg_kind { SEQ_REQUEST, SEQ_GRANT, SEQ_SETTLE };

struct seq_msg {
  uint32_t kind;
  uint32_t count;
  uint64_t first;
};

CK_RING_PROTOTYPE(seq_msg, seq_msg)

/* The pure bookkeeping, testable without threads. */
struct seq_grant {
  uint64_t first;
  uint32_t count;
  bool pending;
};

struct seq_state {
  uint64_t next;             /* the next position to hand out */
  unsigned shard_count;
  struct seq_grant *grants;  /* one per shard: its outstanding grant */
};

/** Positions resume after last_position (the highest committed one). grants: shard_count entries. */
void seq_state_init(struct seq_state *s, unsigned shard_count, uint64_t last_position,
                    struct seq_grant *grants);

/** Grants count positions to a shard with no outstanding grant; returns the first. */
uint64_t seq_state_grant(struct seq_state *s, unsigned shard, uint32_t count);

/** The shard's grant is committed or abandoned (the same for the watermark). */
void seq_state_settle(struct seq_state *s, unsigned shard);

/** The largest W such that every position <= W is settled. */
uint64_t seq_state_watermark(const struct seq_state *s);

/* One shard's side of the sequencer. */
struct seq_channel {
  struct ck_ring to_seq;
  struct ck_ring from_seq;
  struct seq_msg to_seq_buf[8];
  struct seq_msg from_seq_buf[8];
  struct waker *shard_wake;  /* set before the sequencer starts: watermark moves */
  void (*on_grant)(void *arg); /* set before the sequencer starts: wakes the grant's receiver */
  void *on_grant_arg;
  atomic_uint watermark_watch; /* nonzero: wake the shard whenever the watermark moves */
};

struct sequencer {
  uv_thread_t thread;
  uv_loop_t loop;
  struct waker wake;
  struct seq_state state;
  struct seq_channel *channels;
  _Atomic uint64_t watermark;
  atomic_bool stopping;
};

/** Allocates the channels and state. Main thread. Returns 0 or -errno. */
int sequencer_init(struct sequencer *seq, unsigned shard_count, uint64_t last_position);

/** Starts the thread (channels' shard_wake and on_grant must be set). Returns 0 or a -errno. */
int sequencer_start(struct sequencer *seq);

/** Stops and joins the thread, after every shard has stopped. Main thread. */
void sequencer_stop(struct sequencer *seq);

void sequencer_deinit(struct sequencer *seq);

/** Sends a message from a shard's thread and wakes the sequencer. */
void sequencer_send(struct sequencer *seq, unsigned shard, struct seq_msg msg);

/* Why a shard watches the watermark: a bit set of these (0: it does not). */
enum { SEQ_WATCH_SUBSCRIBERS = 1, SEQ_WATCH_ACKS = 2 };

/** Whether (reasons != 0) the sequencer wakes the shard after each watermark move. Shard's thread. */
static inline void sequencer_watch_watermark(struct sequencer *seq, unsigned shard,
                                             unsigned reasons) {
  atomic_store(&seq->channels[shard].watermark_watch, reasons);
}

/** Takes the next message for a shard, on its grant receiver's thread. Returns false when none. */
bool sequencer_receive(struct sequencer *seq, unsigned shard, struct seq_msg *msg);

static inline uint64_t sequencer_watermark(const struct sequencer *seq) {
  return atomic_load_explicit(&seq->watermark, memory_order_acquire);
}

#endif
