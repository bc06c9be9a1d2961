/*
 * The engine under concurrent load: producer threads append to overlapping
 * streams on every shard while reader threads page through the global
 * stream, then racing appends with the same expected version.
 *
 * Worker threads never call cmocka assertions (they longjmp to the main
 * thread's stack): they record the first thing that went wrong, and the
 * main thread asserts after joining them.
 */
#include "harness.h"
#include "internal.h"

#include "evf/clock.h"
#include "evf/status.h"

#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#define SHARDS 4
#define PRODUCERS 4
#define READERS 2
#define STREAMS 20
#define APPENDS_PER_PRODUCER 1000
#define MAX_BATCH 5
#define READ_LIMIT 7
#define RACERS 4
#define ROUNDS 200
#define WAIT_NS (60ull * 1000000000ull) /* bound on a reader catching up */

/* One event as an acknowledgement or a read reports it. */
struct seen {
  struct evf_uuid id;
  uint64_t position;
  uint32_t version;
  uint32_t stream;
};

/* A growing array of events, owned by one thread until it is joined. */
struct seen_list {
  struct seen *items;
  size_t count;
  size_t capacity;
};

static void seen_push(struct seen_list *l, struct seen s) {
  if (l->count == l->capacity) {
    l->capacity = l->capacity ? 2 * l->capacity : 256;
    l->items = realloc(l->items, l->capacity * sizeof(*l->items));
  }
  l->items[l->count++] = s;
}

static int by_id(const void *a, const void *b) {
  return memcmp(&((const struct seen *)a)->id, &((const struct seen *)b)->id,
                sizeof(struct evf_uuid));
}

static int by_position(const void *a, const void *b) {
  const struct seen *x = a, *y = b;
  return (x->position > y->position) - (x->position < y->position);
}

static void stream_name(uint32_t stream, char out[32]) {
  snprintf(out, 32, "account-%02u", stream);
}

static struct harness_options store_options(void) {
  return (struct harness_options){.shards = SHARDS, .external_ports = PRODUCERS + RACERS,
                                  .sync_full = false, .page_size = 1000};
}

/* ---- producers ---- */

struct producer {
  struct evf_store *store;
  unsigned port;
  unsigned seed;
  uint32_t known[STREAMS]; /* a lower bound of each stream's length */
  size_t conflicts;
  struct seen_list acked;
  char error[160];         /* empty unless something went wrong */
};

static void record_ack(struct producer *p, uint32_t stream, size_t n,
                       const struct harness_result *r) {
  for (size_t i = 0; i < n; i++)
    seen_push(&p->acked, (struct seen){.id = r->ids[i], .position = r->first_position + i,
                                       .version = r->first_version + (uint32_t)i,
                                       .stream = stream});
  p->known[stream] = r->first_version + (uint32_t)n;
}

/*
 * One append: a third of them at the version this producer last knew, which
 * others may have moved on. Lengths only grow, so a success lands at or
 * after what we knew, and a conflict reports a longer stream.
 */
static bool produce_one(struct producer *p, struct harness_client *c) {
  uint32_t stream = (uint32_t)rand_r(&p->seed) % STREAMS;
  size_t n = 1 + (size_t)rand_r(&p->seed) % MAX_BATCH;
  int32_t expected = rand_r(&p->seed) % 3 == 0 ? (int32_t)p->known[stream] : -1;
  char name[32];
  stream_name(stream, name);
  struct harness_request req;
  struct harness_result r = {0};
  harness_request(&req, name, expected, n, "Deposited", "{\"amount\":1}", NULL);
  int rc = harness_append(c, &req.request, &r);
  if (rc == 0 && (expected < 0 ? r.first_version >= p->known[stream]
                               : r.first_version == (uint32_t)expected)) {
    record_ack(p, stream, n, &r);
    return true;
  }
  if (rc == EVF_EVERSION && expected >= 0 && r.actual_version > (uint32_t)expected) {
    p->known[stream] = r.actual_version;
    p->conflicts++;
    return true;
  }
  snprintf(p->error, sizeof(p->error),
           "append to %s at %d: %s, first_version %u, actual_version %u, known %u", name,
           expected, evf_err_name(rc), r.first_version, r.actual_version, p->known[stream]);
  return false;
}

static void *producer_main(void *arg) {
  struct producer *p = arg;
  struct harness_client c;
  harness_client_init(&c, p->store, p->port);
  for (size_t i = 0; i < APPENDS_PER_PRODUCER && produce_one(p, &c); i++)
    ;
  harness_client_deinit(&c);
  return NULL;
}

/* ---- readers ---- */

struct reader {
  struct evf_store *store;
  const _Atomic uint64_t *target; /* 0 while producing, then the last acknowledged position */
  uint64_t last;                  /* the highest position seen so far */
  size_t pages;
  size_t live_events;             /* read before the producers were done */
  struct seen_list seen;
  char error[160];
};

static int reader_cb(const uint8_t *event, size_t len, uint64_t position, void *arg) {
  struct reader *r = arg;
  Api__Event *e = api__event__unpack(NULL, len, event);
  struct seen s = {.position = position};
  if (e == NULL || e->position != position || evf_uuid_parse(e->id, strlen(e->id), &s.id) != 0)
    snprintf(r->error, sizeof(r->error), "undecodable event at position %llu",
             (unsigned long long)position);
  else if (position <= r->last)
    snprintf(r->error, sizeof(r->error), "position %llu after %llu",
             (unsigned long long)position, (unsigned long long)r->last);
  if (e != NULL)
    api__event__free_unpacked(e, NULL);
  if (r->error[0] != '\0')
    return 1;
  r->last = position;
  seen_push(&r->seen, s);
  return 0;
}

/*
 * Pages with a small limit until the producers are done and the reader has
 * caught up with their last acknowledged position. An empty page while they
 * run means the reader is ahead: it pauses briefly instead of spinning (a
 * pace, not a synchronisation: correctness never depends on its length).
 */
static void *reader_main(void *arg) {
  struct reader *r = arg;
  uint64_t checkpoint = 0, deadline = evf_monotonic_ns() + WAIT_NS;
  while (r->error[0] == '\0') {
    uint64_t target = atomic_load(r->target); /* before the read: the read then covers it */
    size_t before = r->seen.count;
    int rc = store_read_global(r->store, checkpoint, READ_LIMIT, reader_cb, r, &checkpoint);
    size_t got = r->seen.count - before;
    r->pages++;
    if (target == 0)
      r->live_events += got;
    if (rc != 0)
      snprintf(r->error, sizeof(r->error), "store_read_global: %s", evf_err_name(rc));
    else if (target != 0 && checkpoint >= target)
      break;
    else if (evf_monotonic_ns() > deadline)
      snprintf(r->error, sizeof(r->error), "stuck at %llu, target %llu",
               (unsigned long long)checkpoint, (unsigned long long)target);
    else if (got == 0)
      nanosleep(&(struct timespec){0, 200000}, NULL);
  }
  return NULL;
}

/* ---- checks on the main thread ---- */

/* Every acknowledged event, sorted by position; ids and positions must be unique. */
static void merge_acked(struct producer *producers, struct seen_list *all) {
  for (unsigned i = 0; i < PRODUCERS; i++) {
    for (size_t k = 0; k < producers[i].acked.count; k++)
      seen_push(all, producers[i].acked.items[k]);
  }
  qsort(all->items, all->count, sizeof(*all->items), by_id);
  for (size_t k = 1; k < all->count; k++)
    assert_true(by_id(&all->items[k - 1], &all->items[k]) < 0);
  qsort(all->items, all->count, sizeof(*all->items), by_position);
  for (size_t k = 1; k < all->count; k++)
    assert_true(all->items[k - 1].position < all->items[k].position);
}

/* A reader saw the acknowledged events, each once, in position order. */
static void assert_reader_saw(const struct reader *r, const struct seen_list *acked) {
  if (r->error[0] != '\0')
    fail_msg("reader: %s", r->error);
  assert_int_equal(r->seen.count, acked->count);
  for (size_t k = 0; k < acked->count; k++) {
    assert_int_equal(r->seen.items[k].position, acked->items[k].position);
    assert_memory_equal(&r->seen.items[k].id, &acked->items[k].id, sizeof(struct evf_uuid));
  }
}

/* A full global read holds exactly the acknowledged events, stream and version included. */
static void assert_global_is(struct evf_store *store, const struct seen_list *acked) {
  struct harness_events *page = malloc(sizeof(*page));
  uint64_t checkpoint = 0;
  size_t k = 0, got;
  do {
    assert_int_equal(harness_read_global(store, checkpoint, 1000, page, &checkpoint), 0);
    got = page->count;
    for (size_t i = 0; i < got; i++, k++) {
      const Api__Event *e = page->events[i];
      struct evf_uuid id;
      char name[32];
      assert_true(k < acked->count);
      stream_name(acked->items[k].stream, name);
      assert_int_equal(evf_uuid_parse(e->id, strlen(e->id), &id), 0);
      assert_memory_equal(&id, &acked->items[k].id, sizeof(id));
      assert_int_equal(e->position, acked->items[k].position);
      assert_int_equal(e->version, acked->items[k].version);
      assert_string_equal(e->stream, name);
    }
    harness_events_free(page);
  } while (got > 0);
  free(page);
  assert_int_equal(k, acked->count);
  int64_t count;
  assert_int_equal(store_event_count(store, &count), 0);
  assert_int_equal(count, (int64_t)acked->count);
}

/* Each stream's versions run 0..n-1 without a gap, in commit order; returns n. */
static size_t assert_stream_gapless(struct evf_store *store, uint32_t stream) {
  struct harness_events *page = malloc(sizeof(*page));
  char name[32];
  stream_name(stream, name);
  uint32_t version = 0;
  uint64_t last = 0;
  size_t got;
  do {
    assert_int_equal(harness_read_stream(store, name, version, 1000, page), 0);
    got = page->count;
    for (size_t i = 0; i < got; i++, version++) {
      assert_int_equal(page->events[i]->version, version);
      assert_true(page->events[i]->position > last);
      last = page->events[i]->position;
    }
    harness_events_free(page);
  } while (got > 0);
  free(page);
  return version;
}

static void start_producers(struct evf_store *store, struct producer *p, pthread_t *threads) {
  for (unsigned i = 0; i < PRODUCERS; i++) {
    p[i] = (struct producer){.store = store, .port = i, .seed = 1000u + i};
    assert_int_equal(pthread_create(&threads[i], NULL, producer_main, &p[i]), 0);
  }
}

static void start_readers(struct evf_store *store, const _Atomic uint64_t *target,
                          struct reader *r, pthread_t *threads) {
  for (unsigned i = 0; i < READERS; i++) {
    r[i] = (struct reader){.store = store, .target = target};
    assert_int_equal(pthread_create(&threads[i], NULL, reader_main, &r[i]), 0);
  }
}

static void producers_and_readers_agree(void **state) {
  (void)state;
  char *dir = harness_make_dir();
  struct harness_options o = store_options();
  struct evf_store *store = harness_open(dir, &o);
  struct producer producers[PRODUCERS];
  struct reader readers[READERS];
  pthread_t producer_threads[PRODUCERS], reader_threads[READERS];
  _Atomic uint64_t target = 0;
  start_readers(store, &target, readers, reader_threads);
  start_producers(store, producers, producer_threads);

  struct seen_list acked = {0};
  size_t conflicts = 0;
  for (unsigned i = 0; i < PRODUCERS; i++) {
    assert_int_equal(pthread_join(producer_threads[i], NULL), 0);
    conflicts += producers[i].conflicts;
  }
  for (unsigned i = 0; i < PRODUCERS; i++) {
    if (producers[i].error[0] != '\0')
      fail_msg("producer %u: %s", i, producers[i].error);
  }
  merge_acked(producers, &acked);
  assert_true(acked.count > 0);
  /* Readers stop once they reach the last acknowledged position. */
  uint64_t last = acked.items[acked.count - 1].position;
  assert_true(harness_wait_watermark(store, last));
  atomic_store(&target, last);
  size_t pages = 0, live = 0;
  for (unsigned i = 0; i < READERS; i++) {
    assert_int_equal(pthread_join(reader_threads[i], NULL), 0);
    pages += readers[i].pages;
    live += readers[i].live_events;
  }

  for (unsigned i = 0; i < READERS; i++)
    assert_reader_saw(&readers[i], &acked);
  assert_global_is(store, &acked);
  size_t total = 0;
  for (uint32_t s = 0; s < STREAMS; s++)
    total += assert_stream_gapless(store, s);
  assert_int_equal(total, acked.count);
  print_message("%zu events acknowledged, %zu version conflicts, %zu reader pages, "
                "%zu events read while producing\n",
                acked.count, conflicts, pages, live);

  for (unsigned i = 0; i < PRODUCERS; i++)
    free(producers[i].acked.items);
  for (unsigned i = 0; i < READERS; i++)
    free(readers[i].seen.items);
  free(acked.items);
  store_close(store);
  harness_remove_dir(dir);
}

/* ---- racing expected versions ---- */

struct racer {
  struct evf_store *store;
  unsigned port;
  pthread_barrier_t *start; /* one round starts when every racer finished the previous one */
  struct harness_result results[ROUNDS];
};

/* Runs RACERS threads of racer_fn on their own ports to the end; returns their results. */
static struct racer *run_racers(struct evf_store *store, void *(*racer_fn)(void *)) {
  pthread_barrier_t start;
  assert_int_equal(pthread_barrier_init(&start, NULL, RACERS), 0);
  struct racer *racers = calloc(RACERS, sizeof(*racers)); /* results are large */
  assert_non_null(racers);
  pthread_t threads[RACERS];
  for (unsigned i = 0; i < RACERS; i++) {
    racers[i].store = store;
    racers[i].port = PRODUCERS + i;
    racers[i].start = &start;
    assert_int_equal(pthread_create(&threads[i], NULL, racer_fn, &racers[i]), 0);
  }
  for (unsigned i = 0; i < RACERS; i++)
    assert_int_equal(pthread_join(threads[i], NULL), 0);
  pthread_barrier_destroy(&start);
  return racers;
}

/* Round k: every racer appends one event to the same stream at version k. */
static void *racer_main(void *arg) {
  struct racer *r = arg;
  struct harness_client c;
  harness_client_init(&c, r->store, r->port);
  for (uint32_t k = 0; k < ROUNDS; k++) {
    struct harness_request req;
    harness_request(&req, "contested", (int32_t)k, 1, "Claimed", "{}", NULL);
    pthread_barrier_wait(r->start);
    r->results[k].status = harness_append(&c, &req.request, &r->results[k]);
  }
  harness_client_deinit(&c);
  return NULL;
}

/* Exactly one racer won round k; the others saw the winner's event. Returns the winner. */
static unsigned assert_one_winner(const struct racer *racers, uint32_t k) {
  unsigned winners = 0, winner = 0;
  for (unsigned i = 0; i < RACERS; i++) {
    const struct harness_result *r = &racers[i].results[k];
    if (r->status == 0) {
      assert_int_equal(r->first_version, k);
      winners++;
      winner = i;
    } else {
      assert_int_equal(r->status, EVF_EVERSION);
      assert_int_equal(r->actual_version, k + 1);
    }
  }
  assert_int_equal(winners, 1);
  return winner;
}

static void racing_appends_have_one_winner(void **state) {
  (void)state;
  char *dir = harness_make_dir();
  struct harness_options o = store_options();
  struct evf_store *store = harness_open(dir, &o);
  struct racer *racers = run_racers(store, racer_main);

  /* The stream holds the winners' events, one per round, in round order. */
  struct harness_events *e = malloc(sizeof(*e));
  assert_int_equal(harness_read_stream(store, "contested", 0, 0, e), 0);
  assert_int_equal(e->count, ROUNDS);
  for (uint32_t k = 0; k < ROUNDS; k++) {
    const struct harness_result *won = &racers[assert_one_winner(racers, k)].results[k];
    char id[EVF_UUID_TEXT_LEN + 1];
    evf_uuid_format(&won->ids[0], id);
    assert_string_equal(e->events[k]->id, id);
    assert_int_equal(e->events[k]->version, k);
    assert_int_equal(e->events[k]->position, won->first_position);
  }
  harness_events_free(e);
  free(e);
  free(racers);
  store_close(store);
  harness_remove_dir(dir);
}

/* ---- racing client-given ids ---- */

/* Claims still in the store's table (white box: internal.h). */
static size_t claims_held(const struct evf_store *store) {
  const struct id_claims *claims = &store->id_claims;
  size_t held = 0;
  for (uint64_t i = 0; i < (claims->bucket_mask + 1) * 8; i++)
    held += atomic_load(&claims->slots[i]) != 0;
  return held;
}

/* Round k: every racer appends one event with the same client id, each to a stream of its shard. */
static void *id_racer_main(void *arg) {
  struct racer *r = arg;
  struct harness_client c;
  harness_client_init(&c, r->store, r->port);
  char stream[32];
  harness_name_in_shard("holder-", r->port - PRODUCERS, SHARDS, 0, stream);
  for (uint32_t k = 0; k < ROUNDS; k++) {
    char id[EVF_UUID_TEXT_LEN + 1];
    snprintf(id, sizeof(id), "00000000-0000-4000-8000-%012" PRIx32, k);
    const char *ids[] = {id};
    struct harness_request req;
    harness_request(&req, stream, -1, 1, "Claimed", "{}", ids);
    pthread_barrier_wait(r->start);
    r->results[k].status = harness_append(&c, &req.request, &r->results[k]);
  }
  harness_client_deinit(&c);
  return NULL;
}

/*
 * Each shard decides against committed data only: without claims, racers
 * on different shards all stored the id (every round, on this machine).
 */
static void racing_client_ids_have_one_winner(void **state) {
  (void)state;
  char *dir = harness_make_dir();
  struct harness_options o = store_options();
  struct evf_store *store = harness_open(dir, &o);
  struct racer *racers = run_racers(store, id_racer_main);

  size_t stored = 0;
  for (uint32_t k = 0; k < ROUNDS; k++) {
    unsigned winners = 0;
    for (unsigned i = 0; i < RACERS; i++) {
      int status = racers[i].results[k].status;
      if (status != 0)
        assert_int_equal(status, EVF_EEXIST);
      winners += status == 0;
    }
    assert_int_equal(winners, 1);
  }
  /* What the streams hold agrees: one event per round in all. */
  struct harness_events *e = malloc(sizeof(*e));
  for (unsigned i = 0; i < RACERS; i++) {
    char stream[32];
    harness_name_in_shard("holder-", i, SHARDS, 0, stream);
    int rc = harness_read_stream(store, stream, 0, 0, e);
    assert_true(rc == 0 || rc == EVF_ENOTFOUND);
    stored += rc == 0 ? e->count : 0;
    if (rc == 0)
      harness_events_free(e);
  }
  assert_int_equal(stored, ROUNDS);
  assert_int_equal(claims_held(store), 0); /* every append answered: no claim left behind */
  free(e);
  free(racers);
  store_close(store);
  harness_remove_dir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(producers_and_readers_agree),
      cmocka_unit_test(racing_appends_have_one_winner),
      cmocka_unit_test(racing_client_ids_have_one_winner),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
