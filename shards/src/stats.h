#ifndef SHARDS_STATS_H
#define SHARDS_STATS_H

/*
 * DESIGN
 * A shard's statistics for the metrics endpoint. Only the shard's loop
 * thread writes them (a commit's duration is measured on the pool thread
 * but recorded by the loop in the commit's completion); any thread reads
 * them (store_shard_stats) without a lock. Every field is an atomic with
 * relaxed order: a single writer adds with a load and a store, so counting
 * costs no locked instruction, and a reader never sees a torn value. A
 * histogram keeps one count per bucket, not cumulative ones: the reader
 * sums them, so its +Inf bucket always equals its count.
 */

#include "evf/store.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct stats_histogram {
  atomic_uint_least64_t buckets[STORE_HISTOGRAM_MAX_BOUNDS + 1]; /* per bound, then above all */
  atomic_uint_least64_t sum;
};

struct shard_stats {
  struct stats_histogram batch_events;
  struct stats_histogram commit_ns;
  atomic_uint_least64_t queue_depth;
};

/** Zeroes the statistics. Main thread, before the shard thread starts. */
void stats__init(struct shard_stats *s);

/** A committed batch: its events and how long writing and committing it took. Shard thread. */
void stats__commit(struct shard_stats *s, uint64_t events, uint64_t ns);

/** The appends now waiting for a batch. Shard thread. */
void stats__queue_depth(struct shard_stats *s, size_t depth);

#endif
