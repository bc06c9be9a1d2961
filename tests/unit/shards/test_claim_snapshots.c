/*
 * A shard that claims a client id looks for it in the other shards from
 * read transactions renewed after the claim (shard.c, renew_other_txns):
 * one begun earlier in the same prepare may predate a commit of that id by
 * another shard, which let go of its claim since.
 *
 * The interleaving is forced by interposing mdb_txn_begin (this program's
 * definition takes precedence for the engine linked into it): shard A's
 * loop, as it opens its read transaction on shard B's index, waits there
 * for the test. The first time, the test queues two more appends for A, so
 * that they form A's next batch together; the second time (that batch's
 * first append looking for its id in B), shard B stores the second
 * append's id meanwhile.
 */
#define _GNU_SOURCE
#include "harness.h"
#include "internal.h"

#include "evf/status.h"

#include <dlfcn.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#define SHARD_A 0
#define SHARD_B 1
#define PAUSES 2 /* A's two batches each open a read transaction on B's index once */

/* ---- the pause in shard A's loop ---- */

static struct {
  pthread_mutex_t lock;
  pthread_cond_t changed;
  MDB_env *watched_env;    /* B's index; NULL: no pause */
  pthread_t pausing_thread; /* A's loop */
  unsigned reached;         /* pauses reached so far */
  unsigned released;        /* pauses the test let go */
} pause_point = {.lock = PTHREAD_MUTEX_INITIALIZER};

typedef int (*txn_begin_fn)(MDB_env *env, MDB_txn *parent, unsigned flags, MDB_txn **txn);

static txn_begin_fn real_txn_begin;

/* Before main: the engine's threads then only read these. */
__attribute__((constructor)) static void set_up_pause_point(void) {
  real_txn_begin = (txn_begin_fn)dlsym(RTLD_NEXT, "mdb_txn_begin");
  if (real_txn_begin == NULL) {
    fprintf(stderr, "mdb_txn_begin is not in a shared library: nothing to interpose\n");
    abort();
  }
  /* Deadlines on the monotonic clock: a clock set meanwhile moves no wait. */
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&pause_point.changed, &attr);
  pthread_condattr_destroy(&attr);
}

static bool is_watched(MDB_env *env) {
  pthread_mutex_lock(&pause_point.lock);
  bool watched = env != NULL && env == pause_point.watched_env &&
                 pthread_equal(pthread_self(), pause_point.pausing_thread);
  pthread_mutex_unlock(&pause_point.lock);
  return watched;
}

/* Waits under the lock, at most HARNESS_WAIT_MS, until done() holds; aborts past it. */
static void wait_until(bool (*done)(unsigned), unsigned n, const char *what) {
  struct timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  deadline.tv_sec += HARNESS_WAIT_MS / 1000;
  while (!done(n)) {
    if (pthread_cond_timedwait(&pause_point.changed, &pause_point.lock, &deadline) != 0) {
      fprintf(stderr, "%s did not happen within %d ms\n", what, HARNESS_WAIT_MS);
      abort(); /* not fail_msg: this may be the engine's thread */
    }
  }
}

static bool reached_at_least(unsigned n) { return pause_point.reached >= n; }
static bool released_at_least(unsigned n) { return pause_point.released >= n; }

int mdb_txn_begin(MDB_env *env, MDB_txn *parent, unsigned flags, MDB_txn **txn) {
  int rc = real_txn_begin(env, parent, flags, txn);
  if (rc == 0 && is_watched(env)) {
    pthread_mutex_lock(&pause_point.lock);
    unsigned n = ++pause_point.reached;
    if (n > PAUSES) {
      fprintf(stderr, "shard A opened a read transaction on B's index %u times, not %d\n", n,
              PAUSES);
      abort(); /* the test's interleaving is not the one the engine took */
    }
    pthread_cond_broadcast(&pause_point.changed);
    wait_until(released_at_least, n, "the test's release of the pause");
    pthread_mutex_unlock(&pause_point.lock);
  }
  return rc;
}

static void watch(struct evf_store *store) {
  pthread_mutex_lock(&pause_point.lock);
  pause_point.watched_env = store->shards[SHARD_B].db.index_env;
  pause_point.pausing_thread = store->shards[SHARD_A].thread;
  pthread_mutex_unlock(&pause_point.lock);
}

static void unwatch(void) {
  pthread_mutex_lock(&pause_point.lock);
  pause_point.watched_env = NULL;
  pthread_mutex_unlock(&pause_point.lock);
}

static void await_pause(unsigned n) {
  pthread_mutex_lock(&pause_point.lock);
  wait_until(reached_at_least, n, "shard A's pause");
  pthread_mutex_unlock(&pause_point.lock);
}

static void release_pause(unsigned n) {
  pthread_mutex_lock(&pause_point.lock);
  pause_point.released = n;
  pthread_cond_broadcast(&pause_point.changed);
  pthread_mutex_unlock(&pause_point.lock);
}

/* ---- the test ---- */

static void an_id_stored_by_another_shard_meanwhile_is_found(void **state) {
  (void)state;
  char *dir = harness_make_dir();
  struct harness_options o = {.shards = 2, .external_ports = 2};
  struct evf_store *store = harness_open(dir, &o);
  struct harness_client on_a, on_b;
  harness_client_init(&on_a, store, 0);
  harness_client_init(&on_b, store, 1);
  char stream_a[32], stream_b[32];
  harness_name_in_shard("a-", SHARD_A, o.shards, 0, stream_a);
  harness_name_in_shard("b-", SHARD_B, o.shards, 0, stream_b);
  static const char first[] = "00000000-0000-4000-8000-000000000001",
                    second[] = "00000000-0000-4000-8000-000000000002",
                    raced[] = "00000000-0000-4000-8000-000000000003";
  const char *first_ids[] = {first}, *second_ids[] = {second}, *raced_ids[] = {raced};
  struct harness_request first_req, second_req, raced_req;
  harness_request(&first_req, stream_a, -1, 1, "Claimed", "{}", first_ids);
  harness_request(&second_req, stream_a, -1, 1, "Claimed", "{}", second_ids);
  harness_request(&raced_req, stream_a, -1, 1, "Claimed", "{}", raced_ids);
  struct harness_pending on_a_appends[3];

  watch(store);
  harness_send(&on_a, &on_a_appends[0], &first_req.request);
  await_pause(1); /* A's first batch looks for its id in B */
  harness_send(&on_a, &on_a_appends[1], &second_req.request);
  harness_send(&on_a, &on_a_appends[2], &raced_req.request); /* one batch with the one before */
  release_pause(1);
  await_pause(2); /* that batch's first append looks for its id in B */
  struct harness_request on_b_req;
  harness_request(&on_b_req, stream_b, -1, 1, "Claimed", "{}", raced_ids);
  assert_int_equal(harness_append(&on_b, &on_b_req.request, NULL), 0); /* B stores it, lets go */
  release_pause(2);
  harness_await(&on_a, on_a_appends, 3);
  unwatch();
  assert_int_equal(pause_point.reached, PAUSES);

  assert_int_equal(on_a_appends[0].status, 0);
  assert_int_equal(on_a_appends[1].status, 0);
  /* Claimed after B let go, looked for from a snapshot taken before B stored it: */
  assert_int_equal(on_a_appends[2].status, EVF_EEXIST);
  struct harness_events *events = malloc(sizeof(*events));
  assert_non_null(events);
  assert_int_equal(harness_read_stream(store, stream_a, 0, 0, events), 0);
  assert_int_equal(events->count, 2);
  harness_events_free(events);
  free(events);
  harness_client_deinit(&on_a);
  harness_client_deinit(&on_b);
  store_close(store);
  harness_remove_dir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(an_id_stored_by_another_shard_meanwhile_is_found),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
