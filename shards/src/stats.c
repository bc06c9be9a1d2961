/* Shard statistics: counted on the shard thread, read by any thread (stats.h). */
#include "internal.h"

#define NS_PER_US UINT64_C(1000)

/* Events per committed batch. */
static const uint64_t batch_bounds[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000};

/* Commit durations, 100 us to 10 s, in nanoseconds. */
static const uint64_t commit_bounds[] = {
    100 * NS_PER_US,     250 * NS_PER_US,     500 * NS_PER_US,     1000 * NS_PER_US,
    2500 * NS_PER_US,    5000 * NS_PER_US,    10000 * NS_PER_US,   25000 * NS_PER_US,
    50000 * NS_PER_US,   100000 * NS_PER_US,  250000 * NS_PER_US,  500000 * NS_PER_US,
    1000000 * NS_PER_US, 2500000 * NS_PER_US, 5000000 * NS_PER_US, 10000000 * NS_PER_US};

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

_Static_assert(COUNT_OF(batch_bounds) <= STORE_HISTOGRAM_MAX_BOUNDS, "too many bounds");
_Static_assert(COUNT_OF(commit_bounds) <= STORE_HISTOGRAM_MAX_BOUNDS, "too many bounds");

/* The one writer adds without a read-modify-write instruction. */
static void add(atomic_uint_least64_t *x, uint64_t n) {
  atomic_store_explicit(x, atomic_load_explicit(x, memory_order_relaxed) + n,
                        memory_order_relaxed);
}

static uint64_t load(const atomic_uint_least64_t *x) {
  return atomic_load_explicit(x, memory_order_relaxed);
}

static void observe(struct stats_histogram *h, const uint64_t *bounds, unsigned n_bounds,
                    uint64_t value) {
  unsigned i = 0;
  while (i < n_bounds && value > bounds[i])
    i++;
  add(&h->buckets[i], 1);
  add(&h->sum, value);
}

static void read_histogram(const struct stats_histogram *h, const uint64_t *bounds,
                           unsigned n_bounds, struct store_histogram *out) {
  uint64_t total = 0;
  out->bounds = bounds;
  out->n_bounds = n_bounds;
  for (unsigned i = 0; i < n_bounds; i++) {
    total += load(&h->buckets[i]);
    out->cumulative[i] = total;
  }
  out->count = total + load(&h->buckets[n_bounds]);
  out->sum = load(&h->sum);
}

static void init_histogram(struct stats_histogram *h) {
  for (unsigned i = 0; i < COUNT_OF(h->buckets); i++)
    atomic_init(&h->buckets[i], 0);
  atomic_init(&h->sum, 0);
}

void stats__init(struct shard_stats *s) {
  init_histogram(&s->batch_events);
  init_histogram(&s->commit_ns);
  atomic_init(&s->queue_depth, 0);
}

void stats__commit(struct shard_stats *s, uint64_t events, uint64_t ns) {
  observe(&s->batch_events, batch_bounds, COUNT_OF(batch_bounds), events);
  observe(&s->commit_ns, commit_bounds, COUNT_OF(commit_bounds), ns);
}

void stats__queue_depth(struct shard_stats *s, size_t depth) {
  atomic_store_explicit(&s->queue_depth, depth, memory_order_relaxed);
}

/* Bytes used and mapped by one environment; 0 used when LMDB cannot tell. */
static void env_figures(MDB_env *env, uint64_t *used, uint64_t *map) {
  MDB_envinfo info;
  MDB_stat stat;
  *used = 0;
  if (mdb_env_info(env, &info) == 0 && mdb_env_stat(env, &stat) == 0) {
    *used = ((uint64_t)info.me_last_pgno + 1) * stat.ms_psize;
    *map = info.me_mapsize;
  }
}

/*
 * LMDB's environment figures need no transaction: they read the newest
 * meta page, which any thread may do (MDB_NOTLS).
 */
void store_shard_stats(struct evf_store *store, unsigned shard, struct store_shard_stats *out) {
  struct shard *sh = &store->shards[shard];
  read_histogram(&sh->stats.batch_events, batch_bounds, COUNT_OF(batch_bounds),
                 &out->batch_events);
  read_histogram(&sh->stats.commit_ns, commit_bounds, COUNT_OF(commit_bounds), &out->commit_ns);
  out->queue_depth = load(&sh->stats.queue_depth);
  out->storage_map_bytes = store->options.map_size;
  out->index_map_bytes = store->options.map_size;
  env_figures(sh->db.env, &out->storage_used_bytes, &out->storage_map_bytes);
  env_figures(sh->db.index_env, &out->index_used_bytes, &out->index_map_bytes);
}
