/*
 * The sequencer: grants and the watermark on one thread, then committers
 * granting and settling at once on several threads while a reader checks
 * that the watermark never passes an unsettled position.
 */
#include "sequencer.h"

#include "evf/clock.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

#include <cmocka.h>

static void positions_resume_after_the_last_committed(void **state) {
  (void)state;
  struct sequencer seq;
  assert_int_equal(sequencer_init(&seq, 2, 41), 0);
  assert_int_equal(sequencer_watermark(&seq), 41);
  assert_int_equal(sequencer_grant(&seq, 0, 3), 42);
  assert_int_equal(sequencer_grant(&seq, 1, 1), 45);
  sequencer_deinit(&seq);
}

static void watermark_waits_for_the_lowest_pending_grant(void **state) {
  (void)state;
  struct sequencer seq;
  assert_int_equal(sequencer_init(&seq, 3, 0), 0);
  assert_int_equal(sequencer_grant(&seq, 0, 5), 1); /* 1..5 */
  assert_int_equal(sequencer_grant(&seq, 1, 2), 6); /* 6..7 */
  assert_int_equal(sequencer_grant(&seq, 2, 1), 8); /* 8 */
  assert_int_equal(sequencer_watermark(&seq), 0);
  sequencer_settle(&seq, 2); /* 8 done, but 1..7 are not */
  assert_int_equal(sequencer_watermark(&seq), 0);
  sequencer_settle(&seq, 0);
  assert_int_equal(sequencer_watermark(&seq), 5);
  sequencer_settle(&seq, 1);
  assert_int_equal(sequencer_watermark(&seq), 8);
  sequencer_deinit(&seq);
}

static void abandoned_grants_leave_holes_and_do_not_block(void **state) {
  (void)state;
  struct sequencer seq;
  assert_int_equal(sequencer_init(&seq, 2, 10), 0);
  sequencer_grant(&seq, 0, 4); /* 11..14, abandoned */
  sequencer_grant(&seq, 1, 2); /* 15..16 */
  sequencer_settle(&seq, 1);
  assert_int_equal(sequencer_watermark(&seq), 10);
  sequencer_settle(&seq, 0); /* an abandoned grant settles like a commit */
  assert_int_equal(sequencer_watermark(&seq), 16);
  /* Positions are never handed out twice. */
  assert_int_equal(sequencer_grant(&seq, 0, 1), 17);
  sequencer_deinit(&seq);
}

static void a_shard_may_grant_again_after_settling(void **state) {
  (void)state;
  struct sequencer seq;
  assert_int_equal(sequencer_init(&seq, 1, 0), 0);
  for (uint64_t i = 0; i < 100; i++) {
    assert_int_equal(sequencer_grant(&seq, 0, 2), 1 + 2 * i);
    assert_int_equal(sequencer_watermark(&seq), 2 * i);
    sequencer_settle(&seq, 0);
    assert_int_equal(sequencer_watermark(&seq), 2 * i + 2);
  }
  sequencer_deinit(&seq);
}

/* A watching shard's loop is woken by another shard's settle; one not watching is not. */
struct watcher {
  struct waker wake;
  int woken;
};

static void watcher_cb(struct waker *w) { ((struct watcher *)w->data)->woken++; }

static void run_until_woken(uv_loop_t *loop, struct watcher *w) {
  uint64_t deadline = evf_monotonic_ns() + 10ull * 1000000000u;
  while (w->woken == 0) {
    uv_run(loop, UV_RUN_ONCE);
    assert_true(evf_monotonic_ns() < deadline);
  }
}

static void a_settle_wakes_the_shards_that_watch(void **state) {
  (void)state;
  uv_loop_t loop;
  struct watcher watching = {.woken = 0}, idle = {.woken = 0};
  struct sequencer seq;
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(waker_open(&watching.wake), 0);
  assert_int_equal(waker_open(&idle.wake), 0);
  assert_int_equal(waker_start(&watching.wake, &loop, watcher_cb, &watching), 0);
  assert_int_equal(waker_start(&idle.wake, &loop, watcher_cb, &idle), 0);
  assert_int_equal(sequencer_init(&seq, 3, 0), 0);
  seq.shards[1].wake = &watching.wake;
  seq.shards[2].wake = &idle.wake;
  sequencer_watch_watermark(&seq, 1, SEQ_WATCH_ACKS);

  sequencer_grant(&seq, 0, 4);
  sequencer_settle(&seq, 0);
  run_until_woken(&loop, &watching);
  assert_int_equal(sequencer_watermark(&seq), 4);
  assert_int_equal(idle.woken, 0);

  sequencer_deinit(&seq);
  waker_stop(&watching.wake);
  waker_stop(&idle.wake);
  uv_run(&loop, UV_RUN_DEFAULT);
  waker_destroy(&watching.wake);
  waker_destroy(&idle.wake);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/*
 * Committers on threads of their own grant, "commit" (mark their positions
 * settled), and settle, while a reader checks each watermark it sees
 * against the marks. Failures are counted, not asserted, off the main thread.
 */
#define RACE_SHARDS 4
#define RACE_BATCHES 20000
#define RACE_MAX_BATCH 5
#define RACE_POSITIONS (RACE_SHARDS * RACE_BATCHES * RACE_MAX_BATCH + 1)

struct race {
  struct sequencer seq;
  atomic_uchar *settled;        /* [position]: times marked settled */
  atomic_int committers_left;
  atomic_long watermark_passed_unsettled;
  atomic_long watermark_went_back;
};

struct committer_arg {
  struct race *race;
  unsigned shard;
};

static void committer_thread(void *arg) {
  struct committer_arg *a = arg;
  struct race *r = a->race;
  unsigned seed = a->shard + 1;
  for (int b = 0; b < RACE_BATCHES; b++) {
    uint32_t count = 1 + (uint32_t)rand_r(&seed) % RACE_MAX_BATCH;
    uint64_t first = sequencer_grant(&r->seq, a->shard, count);
    for (uint64_t p = first; p < first + count; p++)
      atomic_fetch_add(&r->settled[p], 1);
    sequencer_settle(&r->seq, a->shard);
  }
  atomic_fetch_sub(&r->committers_left, 1);
}

static void reader_thread(void *arg) {
  struct race *r = arg;
  uint64_t checked = 0;
  for (;;) {
    bool last_look = atomic_load(&r->committers_left) == 0;
    uint64_t watermark = sequencer_watermark(&r->seq);
    if (watermark < checked)
      atomic_fetch_add(&r->watermark_went_back, 1);
    for (uint64_t p = checked + 1; p <= watermark; p++) {
      if (atomic_load(&r->settled[p]) == 0)
        atomic_fetch_add(&r->watermark_passed_unsettled, 1);
    }
    if (watermark > checked)
      checked = watermark;
    if (last_look)
      return;
  }
}

static void concurrent_grants_never_let_the_watermark_pass_an_unsettled_position(void **state) {
  (void)state;
  struct race *r = calloc(1, sizeof(*r));
  assert_non_null(r);
  r->settled = calloc(RACE_POSITIONS, sizeof(*r->settled));
  assert_non_null(r->settled);
  assert_int_equal(sequencer_init(&r->seq, RACE_SHARDS, 0), 0);
  atomic_init(&r->committers_left, RACE_SHARDS);
  uv_thread_t committers[RACE_SHARDS], reader;
  struct committer_arg args[RACE_SHARDS];
  assert_int_equal(uv_thread_create(&reader, reader_thread, r), 0);
  for (unsigned i = 0; i < RACE_SHARDS; i++) {
    args[i] = (struct committer_arg){.race = r, .shard = i};
    assert_int_equal(uv_thread_create(&committers[i], committer_thread, &args[i]), 0);
  }
  for (unsigned i = 0; i < RACE_SHARDS; i++)
    uv_thread_join(&committers[i]);
  uv_thread_join(&reader);

  assert_int_equal(atomic_load(&r->watermark_passed_unsettled), 0);
  assert_int_equal(atomic_load(&r->watermark_went_back), 0);
  /* Every position up to the last handed out exactly once, and all of them visible. */
  uint64_t handed_out = atomic_load(&r->seq.next) - 1;
  assert_int_equal(sequencer_watermark(&r->seq), handed_out);
  for (uint64_t p = 1; p <= handed_out; p++)
    assert_int_equal(atomic_load(&r->settled[p]), 1);
  sequencer_deinit(&r->seq);
  free(r->settled);
  free(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(positions_resume_after_the_last_committed),
      cmocka_unit_test(watermark_waits_for_the_lowest_pending_grant),
      cmocka_unit_test(abandoned_grants_leave_holes_and_do_not_block),
      cmocka_unit_test(a_shard_may_grant_again_after_settling),
      cmocka_unit_test(a_settle_wakes_the_shards_that_watch),
      cmocka_unit_test(concurrent_grants_never_let_the_watermark_pass_an_unsettled_position),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
