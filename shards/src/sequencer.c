#include "sequencer.h"

#include "evf/log.h"
#include "ring.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>

#define SEQ_RING_SIZE 8

/* The seq_msg rings, with the annotations of ring.h. */
static bool seq_ring_push(struct ck_ring *ring, struct seq_msg *buffer, struct seq_msg msg) {
  RING_BEFORE_WRITE(ring);
  struct seq_msg *slot = ck_ring_enqueue_reserve_spsc_seq_msg(ring, buffer);
  if (slot == NULL)
    return false;
  *slot = msg;
  RING_AFTER_WRITE(ring);
  ck_ring_enqueue_commit_spsc(ring);
  return true;
}

static bool seq_ring_pop(struct ck_ring *ring, struct seq_msg *buffer, struct seq_msg *msg) {
  if (ck_ring_size(ring) == 0)
    return false;
  RING_BEFORE_READ(ring);
  bool popped = ck_ring_dequeue_spsc_seq_msg(ring, buffer, msg);
  RING_AFTER_READ(ring);
  return popped;
}

void seq_state_init(struct seq_state *s, unsigned shard_count, uint64_t last_position,
                    struct seq_grant *grants) {
  s->next = last_position + 1;
  s->shard_count = shard_count;
  s->grants = grants;
  for (unsigned i = 0; i < shard_count; i++)
    grants[i] = (struct seq_grant){0};
}

uint64_t seq_state_grant(struct seq_state *s, unsigned shard, uint32_t count) {
  assert(!s->grants[shard].pending);
  uint64_t first = s->next;
  s->grants[shard] = (struct seq_grant){.first = first, .count = count, .pending = true};
  s->next += count;
  return first;
}

void seq_state_settle(struct seq_state *s, unsigned shard) {
  assert(s->grants[shard].pending);
  s->grants[shard].pending = false;
}

uint64_t seq_state_watermark(const struct seq_state *s) {
  uint64_t lowest_unsettled = s->next;
  for (unsigned i = 0; i < s->shard_count; i++) {
    if (s->grants[i].pending && s->grants[i].first < lowest_unsettled)
      lowest_unsettled = s->grants[i].first;
  }
  return lowest_unsettled - 1;
}

int sequencer_init(struct sequencer *seq, unsigned shard_count, uint64_t last_position) {
  struct seq_grant *grants = calloc(shard_count, sizeof(*grants));
  seq->channels = calloc(shard_count, sizeof(*seq->channels));
  if (grants == NULL || seq->channels == NULL) {
    free(grants);
    free(seq->channels);
    return -ENOMEM;
  }
  int rc = waker_open(&seq->wake);
  if (rc != 0) {
    free(grants);
    free(seq->channels);
    return rc;
  }
  for (unsigned i = 0; i < shard_count; i++) {
    ck_ring_init(&seq->channels[i].to_seq, SEQ_RING_SIZE);
    ck_ring_init(&seq->channels[i].from_seq, SEQ_RING_SIZE);
    atomic_init(&seq->channels[i].watermark_watch, 0);
  }
  seq_state_init(&seq->state, shard_count, last_position, grants);
  atomic_init(&seq->watermark, last_position);
  atomic_init(&seq->stopping, false);
  return 0;
}

void sequencer_deinit(struct sequencer *seq) {
  waker_destroy(&seq->wake);
  free(seq->state.grants);
  free(seq->channels);
}

static void reply(struct sequencer *seq, unsigned shard, struct seq_msg msg) {
  struct seq_channel *ch = &seq->channels[shard];
  /* A shard has at most one request outstanding: the ring cannot be full. */
  bool queued = seq_ring_push(&ch->from_seq, ch->from_seq_buf, msg);
  assert(queued);
  (void)queued;
  ck_pr_fence_memory();
  ch->on_grant(ch->on_grant_arg);
}

static void handle(struct sequencer *seq, unsigned shard, const struct seq_msg *msg) {
  switch (msg->kind) {
  case SEQ_REQUEST: {
    uint64_t first = seq_state_grant(&seq->state, shard, msg->count);
    reply(seq, shard, (struct seq_msg){.kind = SEQ_GRANT, .count = msg->count, .first = first});
    break;
  }
  case SEQ_SETTLE:
    seq_state_settle(&seq->state, shard);
    break;
  default:
    evf_error("sequencer: unexpected message kind %u from shard %u", msg->kind, shard);
  }
}

/* Wakes the shards that watch the watermark (waker_send coalesces). */
static void announce_watermark(struct sequencer *seq) {
  for (unsigned i = 0; i < seq->state.shard_count; i++) {
    struct seq_channel *ch = &seq->channels[i];
    if (atomic_load(&ch->watermark_watch) != 0)
      waker_send(ch->shard_wake);
  }
}

static void wake_cb(struct waker *w) {
  struct sequencer *seq = w->data;
  struct seq_msg msg;
  for (unsigned i = 0; i < seq->state.shard_count; i++) {
    struct seq_channel *ch = &seq->channels[i];
    while (seq_ring_pop(&ch->to_seq, ch->to_seq_buf, &msg))
      handle(seq, i, &msg);
  }
  uint64_t watermark = seq_state_watermark(&seq->state);
  if (watermark != atomic_load_explicit(&seq->watermark, memory_order_relaxed)) {
    atomic_store(&seq->watermark, watermark); /* seq_cst: ordered before the flags' loads */
    announce_watermark(seq);
  }
  if (atomic_load(&seq->stopping))
    waker_stop(&seq->wake);
}

static void run(void *arg) {
  struct sequencer *seq = arg;
  uv_run(&seq->loop, UV_RUN_DEFAULT);
}

int sequencer_start(struct sequencer *seq) {
  int rc = uv_loop_init(&seq->loop);
  if (rc != 0)
    return rc;
  if ((rc = waker_start(&seq->wake, &seq->loop, wake_cb, seq)) != 0) {
    uv_run(&seq->loop, UV_RUN_DEFAULT);
    uv_loop_close(&seq->loop);
    return rc;
  }
  if ((rc = uv_thread_create(&seq->thread, run, seq)) != 0) {
    waker_stop(&seq->wake);
    uv_run(&seq->loop, UV_RUN_DEFAULT);
    uv_loop_close(&seq->loop);
  }
  return rc;
}

void sequencer_stop(struct sequencer *seq) {
  atomic_store(&seq->stopping, true);
  waker_send(&seq->wake);
  uv_thread_join(&seq->thread);
  uv_loop_close(&seq->loop);
}

void sequencer_send(struct sequencer *seq, unsigned shard, struct seq_msg msg) {
  struct seq_channel *ch = &seq->channels[shard];
  /* At most a settle and a request are in flight per shard: never full. */
  bool queued = seq_ring_push(&ch->to_seq, ch->to_seq_buf, msg);
  assert(queued);
  (void)queued;
  ck_pr_fence_memory();
  waker_send(&seq->wake);
}

bool sequencer_receive(struct sequencer *seq, unsigned shard, struct seq_msg *msg) {
  struct seq_channel *ch = &seq->channels[shard];
  return seq_ring_pop(&ch->from_seq, ch->from_seq_buf, msg);
}
