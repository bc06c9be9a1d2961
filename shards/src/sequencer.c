#include "sequencer.h"

#include <errno.h>
#include <stdlib.h>

int sequencer_init(struct sequencer *seq, unsigned shard_count, uint64_t last_position) {
  seq->shards = calloc(shard_count, sizeof(*seq->shards));
  if (seq->shards == NULL)
    return -ENOMEM;
  seq->shard_count = shard_count;
  for (unsigned i = 0; i < shard_count; i++) {
    atomic_init(&seq->shards[i].unsettled_from, SEQ_NO_GRANT);
    atomic_init(&seq->shards[i].watermark_watch, 0);
  }
  atomic_init(&seq->next, last_position + 1);
  atomic_init(&seq->watermark, last_position);
  return 0;
}

void sequencer_deinit(struct sequencer *seq) { free(seq->shards); }

/* The largest W such that every position <= W is settled, as of these loads. */
static uint64_t settled_through(struct sequencer *seq) {
  uint64_t watermark = atomic_load(&seq->next) - 1;
  for (unsigned i = 0; i < seq->shard_count; i++) {
    uint64_t from = atomic_load(&seq->shards[i].unsettled_from);
    if (from != SEQ_NO_GRANT && from - 1 < watermark)
      watermark = from - 1;
  }
  return watermark;
}

/* Raises the published watermark to at least `watermark`; true if this call moved it. */
static bool raise_watermark(struct sequencer *seq, uint64_t watermark) {
  uint64_t published = atomic_load(&seq->watermark);
  while (published < watermark) {
    if (atomic_compare_exchange_weak(&seq->watermark, &published, watermark))
      return true;
  }
  return false;
}

/* Wakes the shards that watch the watermark (waker_send coalesces). */
static void announce_watermark(struct sequencer *seq) {
  for (unsigned i = 0; i < seq->shard_count; i++) {
    struct seq_shard *s = &seq->shards[i];
    if (atomic_load(&s->watermark_watch) != 0)
      waker_send(s->wake);
  }
}

static void advance_watermark(struct sequencer *seq) {
  if (raise_watermark(seq, settled_through(seq)))
    announce_watermark(seq);
}

uint64_t sequencer_grant(struct sequencer *seq, unsigned shard, uint32_t count) {
  struct seq_shard *own = &seq->shards[shard];
  /* The bound first: from here on, no watermark computed passes this grant. */
  uint64_t bound = atomic_load(&seq->next);
  atomic_store(&own->unsettled_from, bound);
  uint64_t first = atomic_fetch_add(&seq->next, count);
  atomic_store(&own->unsettled_from, first);
  /*
   * Other grants came in between: a settle meanwhile may have stopped below
   * them at this grant's low bound, and nothing else would raise it until
   * the next settle.
   */
  if (first != bound)
    advance_watermark(seq);
  return first;
}

void sequencer_settle(struct sequencer *seq, unsigned shard) {
  atomic_store(&seq->shards[shard].unsettled_from, SEQ_NO_GRANT);
  advance_watermark(seq);
}
