/*
 * The engine's semantics through its public header: appends, expected
 * versions, ids and idempotent retries, validation, reads, counts, restarts.
 */
#include "harness.h"

#include "evf/hash.h"
#include "evf/status.h"

#include <stdatomic.h>
#include <time.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void uuid_text(const struct evf_uuid *id, char out[EVF_UUID_TEXT_LEN + 1]) {
  evf_uuid_format(id, out);
}

/* ---- appends and reads ---- */

/* The fixture's store has 4 external ports: 0..3, and no fifth. */
static void external_ports_past_the_last_are_null(void **state) {
  struct harness_fixture *f = *state;
  assert_non_null(store_external_port(f->store, 3));
  assert_null(store_external_port(f->store, 4));
  assert_null(store_external_port(f->store, 1000));
}

static void append_then_read_the_stream(void **state) {
  struct harness_fixture *f = *state;
  struct harness_result r;
  assert_int_equal(harness_fixture_append(f, "account-1", 0, 3, NULL, &r), 0);
  assert_int_equal(r.first_version, 0);
  assert_int_equal(r.first_position, 1);

  struct harness_events e;
  assert_int_equal(harness_read_stream(f->store, "account-1", 0, 0, &e), 0);
  assert_int_equal(e.count, 3);
  for (size_t i = 0; i < 3; i++) {
    char id[EVF_UUID_TEXT_LEN + 1];
    uuid_text(&r.ids[i], id);
    assert_string_equal(e.events[i]->id, id);
    assert_string_equal(e.events[i]->stream, "account-1");
    assert_string_equal(e.events[i]->type, "Deposited");
    assert_int_equal(e.events[i]->version, i);
    assert_int_equal(e.events[i]->position, 1 + i);
    assert_memory_equal(e.events[i]->data.data, "{\"amount\":1}", 12);
    /* causation and correlation default to the event's own id */
    assert_string_equal(e.events[i]->causation_id, id);
    assert_string_equal(e.events[i]->correlation_id, id);
    assert_true(e.events[i]->added_at > 1700000000000);
  }
  harness_events_free(&e);
}

static void generated_ids_are_uuidv7(void **state) {
  struct harness_fixture *f = *state;
  struct harness_result r;
  assert_int_equal(harness_fixture_append(f, "s", -1, 2, NULL, &r), 0);
  assert_int_equal(r.ids[0].bytes[6] >> 4, 7);
  assert_true(memcmp(&r.ids[0], &r.ids[1], 16) < 0);
}

static void version_minus_one_appends_whatever_the_length(void **state) {
  struct harness_fixture *f = *state;
  struct harness_result r;
  assert_int_equal(harness_fixture_append(f, "s", -1, 2, NULL, &r), 0);
  assert_int_equal(r.first_version, 0);
  assert_int_equal(harness_fixture_append(f, "s", -1, 1, NULL, &r), 0);
  assert_int_equal(r.first_version, 2);
  assert_int_equal(r.first_position, 3);
}

static void wrong_expected_version_names_the_actual_one(void **state) {
  struct harness_fixture *f = *state;
  struct harness_result r;
  assert_int_equal(harness_fixture_append(f, "s", 1, 1, NULL, &r), EVF_EVERSION); /* new stream has length 0 */
  assert_int_equal(r.actual_version, 0);
  assert_int_equal(harness_fixture_append(f, "s", 0, 2, NULL, &r), 0);
  assert_int_equal(harness_fixture_append(f, "s", 0, 1, NULL, &r), EVF_EVERSION);
  assert_int_equal(r.actual_version, 2);
  assert_int_equal(harness_fixture_append(f, "s", 3, 1, NULL, &r), EVF_EVERSION);
  assert_int_equal(harness_fixture_append(f, "s", 2, 1, NULL, &r), 0);
  assert_int_equal(r.first_version, 2);
  /* rejected appends take no position: positions stay dense */
  assert_int_equal(r.first_position, 3);
}

static void a_rejected_append_writes_nothing(void **state) {
  struct harness_fixture *f = *state;
  int64_t events, streams;
  assert_int_equal(harness_fixture_append(f, "fresh", 5, 1, NULL, NULL), EVF_EVERSION);
  assert_int_equal(store_event_count(f->store, &events), 0);
  assert_int_equal(store_stream_count(f->store, &streams), 0);
  assert_int_equal(events, 0);
  assert_int_equal(streams, 0);
}

/* ---- ids ---- */

static const char *const ids_a[] = {"0190a7e2-0000-7000-8000-00000000000a",
                                    "0190A7E2-0000-7000-8000-00000000000B",
                                    "0190a7e2-0000-7000-8000-00000000000c"};

static void client_ids_are_stored_lowercase(void **state) {
  struct harness_fixture *f = *state;
  assert_int_equal(harness_fixture_append(f, "s", 0, 2, ids_a, NULL), 0);
  struct harness_events e;
  assert_int_equal(harness_read_stream(f->store, "s", 0, 0, &e), 0);
  assert_int_equal(e.count, 2);
  assert_string_equal(e.events[1]->id, "0190a7e2-0000-7000-8000-00000000000b");
  harness_events_free(&e);
}

static int count_cb(const uint8_t *event, size_t len, uint64_t position, void *arg) {
  (void)event;
  (void)len;
  (void)position;
  (*(int *)arg)++;
  return 0;
}

static void get_event_finds_by_id_in_any_case(void **state) {
  struct harness_fixture *f = *state;
  assert_int_equal(harness_fixture_append(f, "s", 0, 2, ids_a, NULL), 0);
  int found = 0;
  assert_int_equal(store_get_event(f->store, "0190a7e2-0000-7000-8000-00000000000B", 36, count_cb,
                                   &found), 0);
  assert_int_equal(found, 1);
  assert_int_equal(store_get_event(f->store, "0190a7e2-0000-7000-8000-0000000000ff", 36, count_cb,
                                   &found), EVF_ENOTFOUND);
  assert_int_equal(store_get_event(f->store, "nope", 4, count_cb, &found), EVF_EINVAL);
  assert_int_equal(found, 1);
}

static void an_exact_retry_succeeds_without_writing(void **state) {
  struct harness_fixture *f = *state;
  struct harness_result first, retry;
  assert_int_equal(harness_fixture_append(f, "s", 0, 1, NULL, NULL), 0);
  assert_int_equal(harness_fixture_append(f, "s", 1, 3, ids_a, &first), 0);
  assert_int_equal(harness_fixture_append(f, "s", -1, 1, NULL, NULL), 0);
  /* the retry carries a stale expected version: ids win over it */
  assert_int_equal(harness_fixture_append(f, "s", 1, 3, ids_a, &retry), 0);
  assert_int_equal(retry.first_version, 1);
  assert_int_equal(retry.first_position, first.first_position);
  assert_memory_equal(retry.ids, first.ids, 3 * sizeof(first.ids[0]));
  int64_t events;
  assert_int_equal(store_event_count(f->store, &events), 0);
  assert_int_equal(events, 5);
  /* a retry of a part, in order, from its start, is also the same append */
  assert_int_equal(harness_fixture_append(f, "s", -1, 2, ids_a, &retry), 0);
  assert_int_equal(retry.first_version, 1);
}

static void ids_reused_otherwise_are_rejected_whole(void **state) {
  struct harness_fixture *f = *state;
  assert_int_equal(harness_fixture_append(f, "s", 0, 2, ids_a, NULL), 0);
  /* another stream */
  assert_int_equal(harness_fixture_append(f, "other", -1, 1, ids_a, NULL), EVF_EEXIST);
  /* another order */
  const char *const swapped[] = {ids_a[1], ids_a[0]};
  assert_int_equal(harness_fixture_append(f, "s", -1, 2, swapped, NULL), EVF_EEXIST);
  /* partly new */
  const char *const partly[] = {ids_a[0], ids_a[1], ids_a[2]};
  assert_int_equal(harness_fixture_append(f, "s", -1, 3, partly, NULL), EVF_EEXIST);
  /* not from the start of the stored run */
  const char *const tail[] = {ids_a[1]};
  int64_t events;
  assert_int_equal(harness_fixture_append(f, "s", -1, 1, tail, NULL), 0);
  assert_int_equal(store_event_count(f->store, &events), 0);
  assert_int_equal(events, 2);
  /* nothing of the rejected appends was written: ids_a[2] is still free */
  const char *const third[] = {ids_a[2]};
  assert_int_equal(harness_fixture_append(f, "other", 0, 1, third, NULL), 0);
}

/* A stream name with this prefix in the shard that `stream` belongs to (the fixture has 2). */
static void stream_beside(const char *stream, const char *prefix, char out[32]) {
  unsigned shard = evf_shard_of(evf_hash_fnv1a64(stream, strlen(stream)), 2);
  for (unsigned n = 0;; n++) {
    snprintf(out, 32, "%s-%u", prefix, n);
    if (evf_shard_of(evf_hash_fnv1a64(out, strlen(out)), 2) == shard)
      return;
  }
}

static const char *const run_ids[] = {"0190a7e2-0000-7000-8000-0000000000a1",
                                    "0190a7e2-0000-7000-8000-0000000000a2",
                                    "0190a7e2-0000-7000-8000-0000000000a3"};

/*
 * Ids at consecutive positions of the shard that are not consecutive
 * versions of the append's stream are not a retry (index format 3 checks
 * the first and the last of them in the log).
 */
static void ids_at_consecutive_positions_of_other_streams_are_rejected(void **state) {
  struct harness_fixture *f = *state;
  char t[32], u[32];
  stream_beside("s", "t", t);
  stream_beside("s", "u", u);
  /* one shard, one at a time: positions p, p+1, p+2, p+3 */
  assert_int_equal(harness_fixture_append(f, t, -1, 1, NULL, NULL), 0);       /* t v0 */
  assert_int_equal(harness_fixture_append(f, "s", -1, 1, &run_ids[0], NULL), 0); /* s v0 */
  assert_int_equal(harness_fixture_append(f, t, -1, 1, &run_ids[1], NULL), 0);   /* t v1 */
  assert_int_equal(harness_fixture_append(f, "s", -1, 1, &run_ids[2], NULL), 0); /* s v1 */
  assert_int_equal(harness_fixture_append(f, u, -1, 1, NULL, NULL), 0);       /* u exists */
  /* first s v0, last t v1: the last one's stream */
  assert_int_equal(harness_fixture_append(f, "s", -1, 2, run_ids, NULL), EVF_EEXIST);
  /* first and last s v0, s v1 over three positions: the versions */
  assert_int_equal(harness_fixture_append(f, "s", -1, 3, run_ids, NULL), EVF_EEXIST);
  /* all of t's ids, as an append to an existing stream of the same shard: the stream */
  assert_int_equal(harness_fixture_append(f, u, -1, 1, &run_ids[1], NULL), EVF_EEXIST);
  int64_t events;
  assert_int_equal(store_event_count(f->store, &events), 0);
  assert_int_equal(events, 5);
  /* the real ones are still retries */
  assert_int_equal(harness_fixture_append(f, t, -1, 1, &run_ids[1], NULL), 0);
  assert_int_equal(harness_fixture_append(f, "s", -1, 1, &run_ids[2], NULL), 0);
}

/* Submitted back to back, both usually land in one batch: the retry waits for its original. */
static void a_retry_racing_its_original_succeeds(void **state) {
  struct harness_fixture *f = *state;
  struct harness_request a, b;
  harness_request(&a, "race", 0, 2, "T", "x", ids_a);
  harness_request(&b, "race", 0, 2, "T", "x", ids_a);
  struct harness_pending p[2];
  harness_send(&f->client, &p[0], &a.request);
  harness_send(&f->client, &p[1], &b.request);
  harness_await(&f->client, p, 2);
  assert_int_equal(p[0].status, 0);
  assert_int_equal(p[1].status, 0);
  assert_int_equal(p[0].append.first_position, p[1].append.first_position);
  assert_int_equal(p[1].append.first_version, 0);
  int64_t events;
  assert_int_equal(store_event_count(f->store, &events), 0);
  assert_int_equal(events, 2);
}

/* ---- validation ---- */

static void invalid_stream_names(void **state) {
  struct harness_fixture *f = *state;
  char long_name[202];
  memset(long_name, 'x', 201);
  long_name[201] = '\0';
  const char *bad[] = {"", "all", "count", "$system", "\xff\xfe", "caf\xc3", long_name};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
    assert_int_equal(harness_fixture_append(f, bad[i], -1, 1, NULL, NULL), EVF_EINVAL);
  long_name[200] = '\0';
  assert_int_equal(harness_fixture_append(f, long_name, -1, 1, NULL, NULL), 0);
  assert_int_equal(harness_fixture_append(f, "all-accounts", -1, 1, NULL, NULL), 0);
  assert_int_equal(harness_fixture_append(f, "caf\xc3\xa9", -1, 1, NULL, NULL), 0);
}

static void invalid_types(void **state) {
  struct harness_fixture *f = *state;
  struct harness_request r;
  char long_type[202];
  memset(long_type, 't', 201);
  long_type[201] = '\0';
  const char *bad[] = {"", long_type, "\xc0\x80"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    harness_request(&r, "s", -1, 1, bad[i], "{}", NULL);
    assert_int_equal(harness_append(&f->client, &r.request, NULL), EVF_EINVAL);
  }
}

static void invalid_ids(void **state) {
  struct harness_fixture *f = *state;
  const char *bad[] = {"{0190a7e2-0000-7000-8000-00000000000a}", "0190a7e200007000800000000000000a",
                       "00000000-0000-0000-0000-000000000000", "0190a7e2-0000-7000-8000-00000000000g",
                       "urn:uuid:0190a7e2-0000-7000-8000-00000000000a"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    const char *ids[] = {bad[i]};
    assert_int_equal(harness_fixture_append(f, "s", -1, 1, ids, NULL), EVF_EINVAL);
  }
  struct harness_request r;
  harness_request(&r, "s", -1, 1, "T", "{}", NULL);
  r.events[0].causation_id = "not-a-uuid";
  assert_int_equal(harness_append(&f->client, &r.request, NULL), EVF_EINVAL);
  r.events[0].causation_id = "";
  r.events[0].correlation_id = "00000000-0000-0000-0000-000000000000";
  assert_int_equal(harness_append(&f->client, &r.request, NULL), EVF_EINVAL);
}

static void duplicate_ids_in_one_append(void **state) {
  struct harness_fixture *f = *state;
  const char *ids[] = {ids_a[0], "0190A7E2-0000-7000-8000-00000000000A"};
  assert_int_equal(harness_fixture_append(f, "s", -1, 2, ids, NULL), EVF_EINVAL);
}

static void invalid_versions_and_empty_appends(void **state) {
  struct harness_fixture *f = *state;
  assert_int_equal(harness_fixture_append(f, "s", -2, 1, NULL, NULL), EVF_EINVAL);
  assert_int_equal(harness_fixture_append(f, "s", INT32_MIN, 1, NULL, NULL), EVF_EINVAL);
  assert_int_equal(harness_fixture_append(f, "s", -1, 0, NULL, NULL), EVF_EINVAL);
  int64_t events;
  assert_int_equal(store_event_count(f->store, &events), 0);
  assert_int_equal(events, 0);
}

static void causation_and_correlation_are_kept_lowercase(void **state) {
  struct harness_fixture *f = *state;
  struct harness_request r;
  harness_request(&r, "s", -1, 1, "T", "{}", NULL);
  r.events[0].causation_id = "0190A7E2-0000-7000-8000-0000000000CA";
  r.events[0].correlation_id = "0190a7e2-0000-7000-8000-0000000000cb";
  assert_int_equal(harness_append(&f->client, &r.request, NULL), 0);
  struct harness_events e;
  assert_int_equal(harness_read_stream(f->store, "s", 0, 0, &e), 0);
  assert_string_equal(e.events[0]->causation_id, "0190a7e2-0000-7000-8000-0000000000ca");
  assert_string_equal(e.events[0]->correlation_id, "0190a7e2-0000-7000-8000-0000000000cb");
  harness_events_free(&e);
}

static void events_larger_than_the_limit_are_refused(void **state) {
  (void)state;
  char *dir = harness_make_dir();
  struct harness_options o = {.shards = 1, .external_ports = 1, .max_event_size = 1000};
  struct evf_store *s = harness_open(dir, &o);
  struct harness_client c;
  harness_client_init(&c, s, 0);
  char big[1100];
  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  struct harness_request r;
  harness_request(&r, "s", -1, 1, "T", big, NULL);
  assert_int_equal(harness_append(&c, &r.request, NULL), EVF_ETOOBIG);
  big[800] = '\0';
  harness_request(&r, "s", -1, 1, "T", big, NULL);
  assert_int_equal(harness_append(&c, &r.request, NULL), 0);
  harness_client_deinit(&c);
  store_close(s);
  harness_remove_dir(dir);
}

/* ---- reads ---- */

static void stream_reads_page_from_a_version(void **state) {
  struct harness_fixture *f = *state;
  assert_int_equal(harness_fixture_append(f, "s", -1, 10, NULL, NULL), 0);
  struct harness_events e;
  assert_int_equal(harness_read_stream(f->store, "s", 4, 3, &e), 0);
  assert_int_equal(e.count, 3);
  assert_int_equal(e.events[0]->version, 4);
  assert_int_equal(e.events[2]->version, 6);
  harness_events_free(&e);
  assert_int_equal(harness_read_stream(f->store, "s", 8, 0, &e), 0);
  assert_int_equal(e.count, 2);
  harness_events_free(&e);
  assert_int_equal(harness_read_stream(f->store, "s", 10, 0, &e), 0);
  assert_int_equal(e.count, 0);
  assert_int_equal(harness_read_stream(f->store, "unknown", 0, 0, &e), 0);
  assert_int_equal(e.count, 0);
  assert_int_equal(harness_read_stream(f->store, "all", 0, 0, &e), EVF_EINVAL);
}

/*
 * An append's events are one stream_index entry (a run): a read may start
 * at any version inside a run and go on across the next ones, with other
 * streams' events at the positions between.
 */
static void stream_reads_start_inside_and_cross_appends(void **state) {
  struct harness_fixture *f = *state;
  static const size_t sizes[] = {1, 3, 5, 2};
  uint32_t length = 0;
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    assert_int_equal(harness_fixture_append(f, "runs", (int32_t)length, sizes[i], NULL, NULL), 0);
    assert_int_equal(harness_fixture_append(f, "other", -1, 2, NULL, NULL), 0);
    length += (uint32_t)sizes[i];
  }
  struct harness_events all, e;
  assert_int_equal(harness_read_stream(f->store, "runs", 0, 0, &all), 0);
  assert_int_equal(all.count, length);
  for (uint32_t from = 0; from <= length + 1; from++) {
    for (uint32_t limit = 0; limit <= 4; limit++) {
      assert_int_equal(harness_read_stream(f->store, "runs", from, limit, &e), 0);
      uint32_t left = from < length ? length - from : 0;
      assert_int_equal(e.count, limit == 0 || limit > left ? left : limit);
      for (size_t k = 0; k < e.count; k++) {
        assert_int_equal(e.events[k]->version, from + k);
        assert_int_equal(e.events[k]->position, all.events[from + k]->position);
        assert_string_equal(e.events[k]->id, all.events[from + k]->id);
      }
      harness_events_free(&e);
    }
  }
  harness_events_free(&all);
  struct harness_result r;
  assert_int_equal(harness_fixture_append(f, "runs", (int32_t)length - 1, 1, NULL, &r),
                   EVF_EVERSION);
  assert_int_equal(r.actual_version, length);
}

static void reads_are_capped_at_the_page_size(void **state) {
  (void)state;
  char *dir = harness_make_dir();
  struct harness_options o = {.shards = 2, .external_ports = 1, .page_size = 5};
  struct evf_store *s = harness_open(dir, &o);
  struct harness_client c;
  harness_client_init(&c, s, 0);
  struct harness_request r;
  harness_request(&r, "s", -1, 12, "T", "x", NULL);
  assert_int_equal(harness_append(&c, &r.request, NULL), 0);
  struct harness_events e;
  uint64_t checkpoint;
  assert_int_equal(harness_read_stream(s, "s", 0, 0, &e), 0);
  assert_int_equal(e.count, 5);
  harness_events_free(&e);
  assert_int_equal(harness_read_stream(s, "s", 0, 100, &e), 0);
  assert_int_equal(e.count, 5);
  harness_events_free(&e);
  assert_true(harness_wait_watermark(s, 12));
  assert_int_equal(harness_read_global(s, 0, 0, &e, &checkpoint), 0);
  assert_int_equal(e.count, 5);
  assert_int_equal(checkpoint, 5);
  harness_events_free(&e);
  harness_client_deinit(&c);
  store_close(s);
  harness_remove_dir(dir);
}

static void the_global_stream_merges_shards_in_position_order(void **state) {
  struct harness_fixture *f = *state;
  char name[32];
  for (int i = 0; i < 20; i++) {
    snprintf(name, sizeof(name), "stream-%d", i);
    assert_int_equal(harness_fixture_append(f, name, -1, 1 + i % 3, NULL, NULL), 0);
  }
  int64_t total;
  assert_int_equal(store_event_count(f->store, &total), 0);
  assert_true(harness_wait_watermark(f->store, (uint64_t)total));
  uint64_t offset = 0, expected = 1;
  struct harness_events e;
  do {
    uint64_t checkpoint;
    assert_int_equal(harness_read_global(f->store, offset, 7, &e, &checkpoint), 0);
    for (size_t i = 0; i < e.count; i++)
      assert_int_equal(e.events[i]->position, expected++);
    if (e.count > 0)
      assert_int_equal(checkpoint, e.events[e.count - 1]->position);
    else
      assert_int_equal(checkpoint, offset);
    offset = checkpoint;
    harness_events_free(&e);
  } while (offset < (uint64_t)total);
  assert_int_equal(expected - 1, (uint64_t)total);
  uint64_t checkpoint;
  assert_int_equal(harness_read_global(f->store, offset, 7, &e, &checkpoint), 0);
  assert_int_equal(e.count, 0);
  assert_int_equal(checkpoint, offset);
}

static int stop_after_two(const uint8_t *event, size_t len, uint64_t position, void *arg) {
  (void)event;
  (void)len;
  (void)position;
  return ++*(int *)arg > 2;
}

static void a_visitor_can_cut_the_page(void **state) {
  struct harness_fixture *f = *state;
  assert_int_equal(harness_fixture_append(f, "s", -1, 5, NULL, NULL), 0);
  assert_true(harness_wait_watermark(f->store, 5));
  int seen = 0;
  uint64_t checkpoint;
  assert_int_equal(store_read_global(f->store, 0, 0, stop_after_two, &seen, &checkpoint), 0);
  assert_int_equal(checkpoint, 2); /* the refused third event is not read */
  seen = 0; /* a stream read ends at the refused event too: no later one is handed over */
  assert_int_equal(store_read_stream(f->store, "s", 1, 0, 0, stop_after_two, &seen), 0);
  assert_int_equal(seen, 3);
}

struct names {
  int count;
  char names[16][32];
};

static int name_cb(const char *name, size_t len, void *arg) {
  struct names *n = arg;
  snprintf(n->names[n->count++], 32, "%.*s", (int)len, name);
  return 0;
}

static void streams_are_listed_in_byte_order(void **state) {
  struct harness_fixture *f = *state;
  const char *names[] = {"b", "a", "c-1", "c", "B", "aa"};
  for (size_t i = 0; i < 6; i++)
    assert_int_equal(harness_fixture_append(f, names[i], -1, 1, NULL, NULL), 0);
  struct names n = {0};
  assert_int_equal(store_list_streams(f->store, 0, 0, name_cb, &n), 0);
  assert_int_equal(n.count, 6);
  const char *want[] = {"B", "a", "aa", "b", "c", "c-1"};
  for (int i = 0; i < 6; i++)
    assert_string_equal(n.names[i], want[i]);
  n.count = 0;
  assert_int_equal(store_list_streams(f->store, 2, 3, name_cb, &n), 0);
  assert_int_equal(n.count, 3);
  assert_string_equal(n.names[0], "aa");
  assert_string_equal(n.names[2], "c");
  int64_t streams;
  assert_int_equal(store_stream_count(f->store, &streams), 0);
  assert_int_equal(streams, 6);
}

/* ---- restarts ---- */

static void data_and_positions_survive_a_restart(void **state) {
  struct harness_fixture *f = *state;
  struct harness_result r;
  assert_int_equal(harness_fixture_append(f, "s", 0, 3, NULL, NULL), 0);
  assert_int_equal(harness_fixture_append(f, "t", 0, 2, NULL, NULL), 0);
  harness_fixture_reopen(f);
  int64_t events, streams;
  assert_int_equal(store_event_count(f->store, &events), 0);
  assert_int_equal(store_stream_count(f->store, &streams), 0);
  assert_int_equal(events, 5);
  assert_int_equal(streams, 2);
  assert_int_equal(store_watermark(f->store), 5);
  assert_int_equal(harness_fixture_append(f, "s", 3, 1, NULL, &r), 0);
  assert_int_equal(r.first_version, 3);
  assert_int_equal(r.first_position, 6);
  assert_int_equal(harness_fixture_append(f, "new", 0, 1, NULL, &r), 0);
  assert_int_equal(r.first_position, 7);
}

/* Stream ids are never reused: batches that create no stream leave the stored counter as it was. */
static void streams_created_after_a_restart_get_new_ids(void **state) {
  struct harness_fixture *f = *state;
  struct harness_events e;
  assert_int_equal(harness_fixture_append(f, "first", 0, 1, NULL, NULL), 0);
  assert_int_equal(harness_fixture_append(f, "first", 1, 1, NULL, NULL), 0); /* a batch creating nothing */
  harness_fixture_reopen(f);
  assert_int_equal(harness_fixture_append(f, "second", 0, 2, NULL, NULL), 0);
  assert_int_equal(harness_fixture_append(f, "first", 2, 1, NULL, NULL), 0);
  harness_fixture_reopen(f);
  assert_int_equal(harness_fixture_append(f, "third", 0, 1, NULL, NULL), 0);
  const char *names[] = {"first", "second", "third"};
  const size_t lengths[] = {3, 2, 1};
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(harness_read_stream(f->store, names[i], 0, 0, &e), 0);
    assert_int_equal(e.count, lengths[i]);
    for (size_t k = 0; k < e.count; k++)
      assert_string_equal(e.events[k]->stream, names[i]);
    harness_events_free(&e);
  }
}

static void another_shard_count_is_refused(void **state) {
  struct harness_fixture *f = *state;
  harness_fixture_close(f);
  struct harness_options o = {.shards = 3, .external_ports = 1};
  struct evf_store *s = NULL;
  assert_int_equal(harness_try_open(f->dir, &o, &s), EVF_EFORMAT);
  o.shards = 0; /* unset: the recorded count */
  s = harness_open(f->dir, &o);
  assert_int_equal(store_shard_count(s), 2);
  store_close(s);
}

static void a_second_process_cannot_open_the_folder(void **state) {
  struct harness_fixture *f = *state;
  struct evf_store *s = NULL;
  assert_int_equal(harness_try_open(f->dir, NULL, &s), -EWOULDBLOCK);
}

/* ---- appends from a shard's own thread (the transport's case) ---- */

struct local_run {
  struct harness_request rejected; /* heap: freed by its callback, as a connection would */
  struct harness_request *rejected_heap;
  struct harness_request accepted;
  struct store_append a, b;
  int status_a, status_b;
  char name[32];
  atomic_int done;
};

static void rejected_cb(struct store_append *req, int status) {
  struct local_run *run = req->data;
  run->status_a = status;
  store_append_deinit(req);
  /* The origin frees its request at once: the engine must hold no pointer into it. */
  free((char *)run->rejected_heap->request.stream);
  free(run->rejected_heap);
  run->rejected_heap = NULL;
  atomic_fetch_add(&run->done, 1);
}

static void accepted_cb(struct store_append *req, int status) {
  struct local_run *run = req->data;
  run->status_b = status;
  store_append_deinit(req);
  atomic_fetch_add(&run->done, 1);
}

/* On shard 0's thread: a rejected append and another to the same stream, in one batch. */
static void submit_on_shard(struct evf_store *store, unsigned shard, uv_loop_t *loop, void *arg) {
  struct local_run *run = arg;
  (void)loop;
  if (shard != 0)
    return;
  run->rejected_heap = malloc(sizeof(*run->rejected_heap));
  harness_request(run->rejected_heap, strdup(run->name), 7, 1, "T", "x", NULL);
  harness_request(&run->accepted, run->name, -1, 1, "T", "y", NULL);
  run->a = (struct store_append){.request = &run->rejected_heap->request, .cb = rejected_cb,
                                 .data = run};
  run->b = (struct store_append){.request = &run->accepted.request, .cb = accepted_cb, .data = run};
  struct store_port *port = store_shard_port(store, 0);
  assert_int_equal(store_append(port, &run->a), 0);
  assert_int_equal(store_append(port, &run->b), 0);
}

static void a_rejected_append_may_be_freed_while_its_batch_is_prepared(void **state) {
  (void)state;
  char *dir = harness_make_dir();
  static struct local_run run;
  memset(&run, 0, sizeof(run));
  /* A stream that shard 0 owns, so both appends are local to its thread. */
  for (int i = 0;; i++) {
    snprintf(run.name, sizeof(run.name), "local-%d", i);
    if (evf_stream_shard(run.name, strlen(run.name), 2) == 0)
      break;
  }
  struct store_options options = {.data_dir = dir, .shards = 2, .map_size = 64u << 20,
                                   .page_size = 100, .on_shard_start = submit_on_shard,
                                   .hook_arg = &run};
  struct evf_store *store;
  char err[256];
  assert_int_equal(store_open(&options, &store, err, sizeof(err)), 0);
  assert_int_equal(store_start(store), 0);
  for (int i = 0; atomic_load(&run.done) < 2; i++) {
    assert_true(i < 30000);
    struct timespec pause = {0, 1000000};
    nanosleep(&pause, NULL);
  }
  assert_int_equal(run.status_a, EVF_EVERSION);
  assert_int_equal(run.status_b, 0);
  store_close(store);
  harness_remove_dir(dir);
}

/* ---- reads as bytes and into the caller's room (format 3's short form) ---- */

#define SEEN_MAX 8

/* Events a read handed over: copies of their bytes, in order. */
struct seen {
  size_t count, stop_at; /* stop_at: stop before this event (0: never) */
  uint8_t *bytes[SEEN_MAX];
  size_t len[SEEN_MAX];
  uint64_t position[SEEN_MAX];
};

static uint8_t *seen_room(size_t len, uint64_t position, void *arg) {
  struct seen *s = arg;
  if ((s->stop_at != 0 && s->count == s->stop_at) || s->count == SEEN_MAX)
    return NULL;
  s->bytes[s->count] = malloc(len);
  assert_non_null(s->bytes[s->count]);
  s->len[s->count] = len;
  s->position[s->count] = position;
  return s->bytes[s->count++];
}

static int seen_bytes(const uint8_t *event, size_t len, uint64_t position, void *arg) {
  uint8_t *room = seen_room(len, position, arg);
  if (room != NULL)
    memcpy(room, event, len);
  return room == NULL;
}

static void seen_free(struct seen *s) {
  for (size_t i = 0; i < s->count; i++)
    free(s->bytes[i]);
}

static void assert_seen_equal(const struct seen *a, const struct seen *b) {
  assert_int_equal(a->count, b->count);
  for (size_t i = 0; i < a->count; i++) {
    assert_int_equal(a->position[i], b->position[i]);
    assert_int_equal(a->len[i], b->len[i]);
    assert_memory_equal(a->bytes[i], b->bytes[i], a->len[i]);
  }
}

/*
 * Events stored short (their own id as causation and correlation, one of
 * them larger than a read's stack buffer) and whole (another causation id)
 * read back whole, the same as bytes and into the caller's room; a room
 * refused stops the read before that event.
 */
static void reads_into_a_room_hand_over_what_reads_as_bytes_do(void **state) {
  struct harness_fixture *f = *state;
  static uint8_t large[5000];
  memset(large, 'x', sizeof(large));
  const char *cause = "0191e1c4-7d2a-7cc0-8f00-0000000000c1";
  struct harness_request req;
  harness_request(&req, "forms", 0, 3, "Deposited", "{}", NULL);
  req.events[1].causation_id = (char *)cause;
  req.events[2].data = (ProtobufCBinaryData){sizeof(large), large};
  struct harness_result r;
  assert_int_equal(harness_append(&f->client, &req.request, &r), 0);
  assert_true(harness_wait_watermark(f->store, r.first_position + 2));

  struct seen as_bytes = {0}, into = {0}, global_bytes = {0}, global_into = {0};
  uint64_t checkpoint_bytes, checkpoint_into;
  assert_int_equal(store_read_stream(f->store, "forms", 5, 0, 0, seen_bytes, &as_bytes), 0);
  assert_int_equal(store_read_stream_into(f->store, "forms", 5, 0, 0, seen_room, &into), 0);
  assert_int_equal(as_bytes.count, 3);
  assert_seen_equal(&as_bytes, &into);
  assert_int_equal(
      store_read_global(f->store, 0, 0, seen_bytes, &global_bytes, &checkpoint_bytes), 0);
  assert_int_equal(
      store_read_global_into(f->store, 0, 0, seen_room, &global_into, &checkpoint_into), 0);
  assert_seen_equal(&global_bytes, &as_bytes);
  assert_seen_equal(&global_into, &as_bytes);
  assert_int_equal(checkpoint_bytes, r.first_position + 2);
  assert_int_equal(checkpoint_into, r.first_position + 2);

  for (size_t i = 0; i < 3; i++) {
    Api__Event *e = api__event__unpack(NULL, as_bytes.len[i], as_bytes.bytes[i]);
    assert_non_null(e);
    char id[EVF_UUID_TEXT_LEN + 1];
    uuid_text(&r.ids[i], id);
    assert_string_equal(e->id, id);
    assert_string_equal(e->causation_id, i == 1 ? cause : id);
    assert_string_equal(e->correlation_id, id);
    assert_int_equal(e->data.len, i == 2 ? sizeof(large) : 2);
    assert_true(e->added_at > 1700000000000);
    assert_int_equal(e->position, r.first_position + i);
    api__event__free_unpacked(e, NULL);
  }

  struct seen stopped = {.stop_at = 2}, stopped_stream = {.stop_at = 1};
  uint64_t checkpoint;
  assert_int_equal(store_read_global_into(f->store, 0, 0, seen_room, &stopped, &checkpoint), 0);
  assert_int_equal(stopped.count, 2);
  assert_int_equal(checkpoint, r.first_position + 1);
  assert_int_equal(
      store_read_stream_into(f->store, "forms", 5, 0, 0, seen_room, &stopped_stream), 0);
  assert_int_equal(stopped_stream.count, 1);
  seen_free(&stopped);
  seen_free(&stopped_stream);
  seen_free(&as_bytes);
  seen_free(&into);
  seen_free(&global_bytes);
  seen_free(&global_into);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, harness_fixture_setup, harness_fixture_teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(external_ports_past_the_last_are_null),
      T(append_then_read_the_stream),
      T(reads_into_a_room_hand_over_what_reads_as_bytes_do),
      T(generated_ids_are_uuidv7),
      T(version_minus_one_appends_whatever_the_length),
      T(wrong_expected_version_names_the_actual_one),
      T(a_rejected_append_writes_nothing),
      T(client_ids_are_stored_lowercase),
      T(get_event_finds_by_id_in_any_case),
      T(an_exact_retry_succeeds_without_writing),
      T(ids_reused_otherwise_are_rejected_whole),
      T(a_retry_racing_its_original_succeeds),
      T(ids_at_consecutive_positions_of_other_streams_are_rejected),
      T(invalid_stream_names),
      T(invalid_types),
      T(invalid_ids),
      T(duplicate_ids_in_one_append),
      T(invalid_versions_and_empty_appends),
      T(causation_and_correlation_are_kept_lowercase),
      cmocka_unit_test(events_larger_than_the_limit_are_refused),
      T(stream_reads_page_from_a_version),
      T(stream_reads_start_inside_and_cross_appends),
      cmocka_unit_test(reads_are_capped_at_the_page_size),
      T(the_global_stream_merges_shards_in_position_order),
      T(a_visitor_can_cut_the_page),
      T(streams_are_listed_in_byte_order),
      T(data_and_positions_survive_a_restart),
      T(streams_created_after_a_restart_get_new_ids),
      T(another_shard_count_is_refused),
      T(a_second_process_cannot_open_the_folder),
      cmocka_unit_test(a_rejected_append_may_be_freed_while_its_batch_is_prepared),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
