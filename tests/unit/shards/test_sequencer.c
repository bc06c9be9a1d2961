/*
 * The sequencer: the grant and watermark bookkeeping without threads, then
 * the real thread over its rings.
 */
#include "sequencer.h"

#include "evf/clock.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

static void positions_resume_after_the_last_committed(void **state) {
  (void)state;
  struct seq_grant grants[2];
  struct seq_state s;
  seq_state_init(&s, 2, 41, grants);
  assert_int_equal(seq_state_watermark(&s), 41);
  assert_int_equal(seq_state_grant(&s, 0, 3), 42);
  assert_int_equal(seq_state_grant(&s, 1, 1), 45);
}

static void watermark_waits_for_the_lowest_pending_grant(void **state) {
  (void)state;
  struct seq_grant grants[3];
  struct seq_state s;
  seq_state_init(&s, 3, 0, grants);
  uint64_t a = seq_state_grant(&s, 0, 5); /* 1..5 */
  uint64_t b = seq_state_grant(&s, 1, 2); /* 6..7 */
  uint64_t c = seq_state_grant(&s, 2, 1); /* 8 */
  assert_int_equal(a, 1);
  assert_int_equal(b, 6);
  assert_int_equal(c, 8);
  assert_int_equal(seq_state_watermark(&s), 0);
  seq_state_settle(&s, 2); /* 8 done, but 1..7 are not */
  assert_int_equal(seq_state_watermark(&s), 0);
  seq_state_settle(&s, 0);
  assert_int_equal(seq_state_watermark(&s), 5);
  seq_state_settle(&s, 1);
  assert_int_equal(seq_state_watermark(&s), 8);
}

static void abandoned_grants_leave_holes_and_do_not_block(void **state) {
  (void)state;
  struct seq_grant grants[2];
  struct seq_state s;
  seq_state_init(&s, 2, 10, grants);
  seq_state_grant(&s, 0, 4);  /* 11..14, abandoned */
  seq_state_grant(&s, 1, 2);  /* 15..16 */
  seq_state_settle(&s, 1);
  assert_int_equal(seq_state_watermark(&s), 10);
  seq_state_settle(&s, 0);    /* an abandoned grant settles like a commit */
  assert_int_equal(seq_state_watermark(&s), 16);
  /* Positions are never handed out twice. */
  assert_int_equal(seq_state_grant(&s, 0, 1), 17);
}

static void a_shard_may_grant_again_after_settling(void **state) {
  (void)state;
  struct seq_grant grants[1];
  struct seq_state s;
  seq_state_init(&s, 1, 0, grants);
  for (uint64_t i = 0; i < 100; i++) {
    assert_int_equal(seq_state_grant(&s, 0, 2), 1 + 2 * i);
    assert_int_equal(seq_state_watermark(&s), 2 * i);
    seq_state_settle(&s, 0);
    assert_int_equal(seq_state_watermark(&s), 2 * i + 2);
  }
}

/* The thread: a fake shard on this thread's loop, talking over the real rings. */
struct fake_shard {
  struct sequencer *seq;
  struct waker wake;
  uint64_t granted_first;
  bool granted;
};

static void fake_wake_cb(struct waker *w) {
  struct fake_shard *f = w->data;
  struct seq_msg msg;
  while (sequencer_receive(f->seq, 0, &msg)) {
    assert_int_equal(msg.kind, SEQ_GRANT);
    f->granted_first = msg.first;
    f->granted = true;
  }
}

static void wake_fake_shard(void *wake) { waker_send(wake); }

static void run_until(uv_loop_t *loop, bool *flag) {
  uint64_t deadline = evf_monotonic_ns() + 10ull * 1000000000u;
  while (!*flag) {
    uv_run(loop, UV_RUN_ONCE);
    assert_true(evf_monotonic_ns() < deadline);
  }
}

static void the_thread_grants_over_rings_and_publishes_the_watermark(void **state) {
  (void)state;
  uv_loop_t loop;
  struct sequencer seq;
  struct fake_shard f = {.seq = &seq};
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(waker_open(&f.wake), 0);
  assert_int_equal(waker_start(&f.wake, &loop, fake_wake_cb, &f), 0);
  assert_int_equal(sequencer_init(&seq, 1, 100), 0);
  seq.channels[0].shard_wake = &f.wake;
  seq.channels[0].on_grant = wake_fake_shard;
  seq.channels[0].on_grant_arg = &f.wake;
  assert_int_equal(sequencer_start(&seq), 0);

  for (uint64_t round = 0; round < 50; round++) {
    f.granted = false;
    sequencer_send(&seq, 0, (struct seq_msg){.kind = SEQ_REQUEST, .count = 3});
    run_until(&loop, &f.granted);
    assert_int_equal(f.granted_first, 101 + 3 * round);
    sequencer_send(&seq, 0, (struct seq_msg){.kind = SEQ_SETTLE});
  }
  /* The last settle is processed before the thread stops; its watermark is published. */
  sequencer_stop(&seq);
  assert_int_equal(sequencer_watermark(&seq), 100 + 3 * 50);
  sequencer_deinit(&seq);
  waker_stop(&f.wake);
  uv_run(&loop, UV_RUN_DEFAULT);
  waker_destroy(&f.wake);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(positions_resume_after_the_last_committed),
      cmocka_unit_test(watermark_waits_for_the_lowest_pending_grant),
      cmocka_unit_test(abandoned_grants_leave_holes_and_do_not_block),
      cmocka_unit_test(a_shard_may_grant_again_after_settling),
      cmocka_unit_test(the_thread_grants_over_rings_and_publishes_the_watermark),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
