/*
 * A full map: with a tiny LMDB map and SYNC=full, appends fill it until one
 * fails with EVF_EFULL. The failed append must write nothing, everything
 * acknowledged before must stay readable, a small append must still fit,
 * and the store must reopen with the same data. An event larger than the
 * whole map fails the same way.
 */
#include "harness.h"

#include "evf/status.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define STREAM "filler"
#define MAP_SIZE (1u << 20) /* the configuration's minimum */
#define BIG_PAYLOAD (64u << 10)
#define MEDIUM_PAYLOAD (4u << 10)
#define SMALL_PAYLOAD 100
#define MAX_EVENTS 1024     /* far more than 1 MiB can hold: bounds the fill loops */

/* What the test believes the stream holds, per version. */
struct expected {
  size_t count;
  size_t sizes[MAX_EVENTS];
  size_t letters[MAX_EVENTS]; /* the version whose letter fills the payload */
  struct evf_uuid ids[MAX_EVENTS];
  uint64_t positions[MAX_EVENTS];
};

struct fixture {
  char *dir;
  struct harness_options options;
  struct evf_store *store;
  struct harness_client client;
  struct expected expected;
  char *payload; /* BIG_PAYLOAD bytes of text, cut to size by a NUL */
};

static int setup(void **state) {
  struct fixture *f = calloc(1, sizeof(*f));
  f->dir = harness_make_dir();
  f->options = (struct harness_options){.shards = 1, .external_ports = 1, .sync_full = true,
                                        .map_size = MAP_SIZE, .page_size = 1000};
  f->store = harness_open(f->dir, &f->options);
  harness_client_init(&f->client, f->store, 0);
  f->payload = malloc(BIG_PAYLOAD + 1);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fixture *f = *state;
  harness_client_deinit(&f->client);
  store_close(f->store);
  harness_remove_dir(f->dir);
  free(f->payload);
  free(f);
  return 0;
}

static void reopen(struct fixture *f) {
  harness_client_deinit(&f->client);
  store_close(f->store);
  f->store = harness_open(f->dir, &f->options);
  harness_client_init(&f->client, f->store, 0);
}

/* The payload of a given size; each version gets its own letter, so a mix-up shows. */
static const char *payload(struct fixture *f, size_t size, size_t version) {
  memset(f->payload, 'a' + (int)(version % 26), size);
  f->payload[size] = '\0';
  return f->payload;
}

/* Appends n events at the expected version; records them when acknowledged. */
static int append_n(struct fixture *f, size_t n, size_t size, struct harness_result *r) {
  struct expected *e = &f->expected;
  struct harness_request req;
  /* Every event of one append shares the payload of its first version. */
  harness_request(&req, STREAM, (int32_t)e->count, n, "Filled", payload(f, size, e->count), NULL);
  int rc = harness_append(&f->client, &req.request, r);
  if (rc == 0) {
    assert_true(e->count + n <= MAX_EVENTS);
    assert_int_equal(r->first_version, e->count);
    for (size_t i = 0; i < n; i++, e->count++) {
      e->sizes[e->count] = size;
      e->letters[e->count] = e->count - i;
      e->ids[e->count] = r->ids[i];
      e->positions[e->count] = r->first_position + i;
    }
  }
  return rc;
}

static int64_t event_count(struct fixture *f) {
  int64_t count = -1;
  assert_int_equal(store_event_count(f->store, &count), 0);
  return count;
}

static int64_t stream_count(struct fixture *f) {
  int64_t count = -1;
  assert_int_equal(store_stream_count(f->store, &count), 0);
  return count;
}

/* Appends n events of one size at a time until the map is full; returns how many events fitted. */
static size_t fill(struct fixture *f, size_t n, size_t size, struct harness_result *failed) {
  size_t before = f->expected.count;
  for (size_t i = 0; i < MAX_EVENTS; i++) {
    int rc = append_n(f, n, size, failed);
    if (rc == EVF_EFULL)
      return f->expected.count - before;
    assert_int_equal(rc, 0);
  }
  fail_msg("a %u-byte map never filled up", MAP_SIZE);
  return 0;
}

/* The stream holds exactly what was acknowledged, byte for byte. */
static void assert_stream_intact(struct fixture *f) {
  const struct expected *e = &f->expected;
  struct harness_events events;
  size_t seen = 0;
  while (seen <= e->count) {
    assert_int_equal(harness_read_stream(f->store, STREAM, (uint32_t)seen, 100, &events), 0);
    if (events.count == 0)
      break;
    for (size_t i = 0; i < events.count; i++, seen++) {
      const Api__Event *ev = events.events[i];
      char id[EVF_UUID_TEXT_LEN + 1];
      assert_true(seen < e->count);
      evf_uuid_format(&e->ids[seen], id);
      assert_int_equal(ev->version, seen);
      assert_string_equal(ev->id, id);
      assert_int_equal(ev->position, e->positions[seen]);
      assert_int_equal(ev->data.len, e->sizes[seen]);
      assert_memory_equal(ev->data.data, payload(f, e->sizes[seen], e->letters[seen]),
                          e->sizes[seen]);
    }
    harness_events_free(&events);
  }
  assert_int_equal(seen, e->count);
  assert_int_equal(event_count(f), (int64_t)e->count);
}

static int ignore_event(const uint8_t *event, size_t len, uint64_t position, void *arg) {
  (void)event;
  (void)len;
  (void)position;
  (void)arg;
  return 0;
}

/* A failed append left no trace: no event, no id, no version. */
static void assert_nothing_written(struct fixture *f, const struct harness_result *failed,
                                   size_t n) {
  assert_int_equal(failed->n_ids, n);
  for (size_t i = 0; i < n; i++) {
    char id[EVF_UUID_TEXT_LEN + 1];
    evf_uuid_format(&failed->ids[i], id);
    assert_int_equal(store_get_event(f->store, id, strlen(id), ignore_event, NULL),
                     EVF_ENOTFOUND);
  }
  /* The event count and the stream's length are those of the acknowledged events. */
  assert_stream_intact(f);
}

/* A failed append to a new stream does not create it. */
static void assert_new_stream_not_created(struct fixture *f) {
  struct harness_request req;
  struct harness_result r;
  harness_request(&req, "never-written", -1, 1, "Filled", payload(f, BIG_PAYLOAD, 0), NULL);
  assert_int_equal(harness_append(&f->client, &req.request, &r), EVF_EFULL);
  assert_nothing_written(f, &r, 1);
  struct harness_events events;
  assert_int_equal(harness_read_stream(f->store, "never-written", 0, 0, &events), 0);
  assert_int_equal(events.count, 0);
  assert_int_equal(stream_count(f), 1);
}

/* The global stream, read in full, holds the same events (holes of failed grants skipped). */
static void assert_global_intact(struct fixture *f) {
  const struct expected *e = &f->expected;
  assert_true(harness_wait_watermark(f->store, e->positions[e->count - 1]));
  struct harness_events events;
  uint64_t checkpoint = 0;
  assert_int_equal(harness_read_global(f->store, 0, 1000, &events, &checkpoint), 0);
  assert_int_equal(events.count, e->count);
  for (size_t i = 0; i < events.count; i++)
    assert_int_equal(events.events[i]->position, e->positions[i]);
  assert_int_equal(checkpoint, e->positions[e->count - 1]);
  harness_events_free(&events);
}

static void a_full_map_fails_cleanly_and_recovers(void **state) {
  struct fixture *f = *state;
  struct harness_result failed;

  /* Large events fill the map coarsely. */
  size_t big = fill(f, 1, BIG_PAYLOAD, &failed);
  assert_true(big >= 3);
  assert_nothing_written(f, &failed, 1);
  assert_new_stream_not_created(f);

  /* Appends of four medium events fill it finer; the one that fails must not be half written... */
  size_t quads = fill(f, 4, MEDIUM_PAYLOAD, &failed);
  assert_nothing_written(f, &failed, 4);
  /* ...even though part of it would have fitted: single medium events still do. */
  size_t singles = fill(f, 1, MEDIUM_PAYLOAD, &failed);
  assert_true(singles >= 1);
  assert_nothing_written(f, &failed, 1);

  /* A failure does not stop the shard: a small event still fits. */
  struct harness_result r;
  uint64_t last = f->expected.positions[f->expected.count - 1];
  assert_int_equal(append_n(f, 1, SMALL_PAYLOAD, &r), 0);
  assert_true(r.first_position > last);
  assert_stream_intact(f);
  assert_global_intact(f);

  /* The full map was not damaged: it reopens with the same data. */
  reopen(f);
  assert_stream_intact(f);
  assert_global_intact(f);
  print_message("full after %zu events of 64 KiB, then %zu of 4 KiB in fours, then %zu alone\n",
                big, quads, singles);
}

static void an_event_larger_than_the_map_fails_cleanly(void **state) {
  struct fixture *f = *state;
  size_t size = 2 * MAP_SIZE;
  char *huge = malloc(size + 1);
  memset(huge, 'h', size);
  huge[size] = '\0';
  struct harness_request req;
  struct harness_result failed, r;
  harness_request(&req, STREAM, -1, 1, "Filled", huge, NULL);
  assert_int_equal(harness_append(&f->client, &req.request, &failed), EVF_EFULL);
  free(huge);
  assert_nothing_written(f, &failed, 1);

  /* The stream was not created: the next append starts it. */
  assert_int_equal(stream_count(f), 0);
  assert_int_equal(append_n(f, 1, SMALL_PAYLOAD, &r), 0);
  assert_int_equal(r.first_version, 0);
  assert_global_intact(f);
}

/*
 * Submitted back to back, a huge and a tiny append share one batch; the
 * batch hits the map's end, and the tiny one is retried alone and fits.
 */
static void a_small_append_batched_with_a_huge_one_still_fits(void **state) {
  struct fixture *f = *state;
  char *huge = malloc(2 * MAP_SIZE + 1);
  memset(huge, 'h', 2 * MAP_SIZE);
  huge[2 * MAP_SIZE] = '\0';
  struct harness_request big, small;
  harness_request(&big, "huge", -1, 1, "Huge", huge, NULL);
  harness_request(&small, "small", -1, 1, "Small", "x", NULL);
  struct harness_pending p[2];
  harness_send(&f->client, &p[0], &big.request);
  harness_send(&f->client, &p[1], &small.request);
  harness_await(&f->client, p, 2);
  assert_int_equal(p[0].status, EVF_EFULL);
  assert_int_equal(p[1].status, 0);
  assert_int_equal(event_count(f), 1);
  assert_int_equal(stream_count(f), 1);
  free(huge);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(a_full_map_fails_cleanly_and_recovers, setup, teardown),
      cmocka_unit_test_setup_teardown(an_event_larger_than_the_map_fails_cleanly, setup, teardown),
      cmocka_unit_test_setup_teardown(a_small_append_batched_with_a_huge_one_still_fits, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
