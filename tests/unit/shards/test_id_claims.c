/*
 * Claims on client-given ids: who holds what on one thread, a full window,
 * then shards claiming the same few ids at once on several threads while
 * each checks that nobody else holds an id it holds.
 */
#include "id_claims.h"

#include <pthread.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static struct evf_uuid uuid_of(uint64_t n) {
  struct evf_uuid id = {0};
  memcpy(id.bytes, &n, sizeof(n));
  id.bytes[15] = 0x42; /* never the nil UUID */
  return id;
}

static void a_claim_is_held_until_dropped(void **state) {
  (void)state;
  struct id_claims claims;
  assert_int_equal(id_claims_init(&claims, 2), 0);
  struct evf_uuid a = uuid_of(1), b = uuid_of(2);
  assert_int_equal(id_claims_take(&claims, &a, 0), ID_CLAIM_TAKEN);
  assert_int_equal(id_claims_take(&claims, &a, 0), ID_CLAIM_HELD_HERE);
  assert_int_equal(id_claims_take(&claims, &a, 1), ID_CLAIM_HELD);
  assert_int_equal(id_claims_take(&claims, &b, 1), ID_CLAIM_TAKEN);
  id_claims_drop(&claims, &a, 1); /* not shard 1's: nothing happens */
  assert_int_equal(id_claims_take(&claims, &a, 1), ID_CLAIM_HELD);
  id_claims_drop(&claims, &a, 0);
  assert_int_equal(id_claims_take(&claims, &a, 1), ID_CLAIM_TAKEN);
  id_claims_free(&claims);
}

/* Claims until a window is full: this shard's own claims fill it; another shard waits. */
static void a_full_window_takes_no_more(void **state) {
  (void)state;
  struct id_claims claims;
  assert_int_equal(id_claims_init(&claims, 1), 0);
  uint64_t slots = (claims.bucket_mask + 1) * 8, n = 0;
  enum id_claim c = ID_CLAIM_TAKEN;
  struct evf_uuid full;
  for (; n < slots && c == ID_CLAIM_TAKEN; n++) {
    full = uuid_of(n);
    c = id_claims_take(&claims, &full, 0);
  }
  assert_int_equal(c, ID_CLAIM_FULL);
  assert_int_equal(id_claims_take(&claims, &full, 1), ID_CLAIM_HELD);
  for (uint64_t i = 0; i + 1 < n; i++) {
    struct evf_uuid id = uuid_of(i);
    id_claims_drop(&claims, &id, 0);
  }
  assert_int_equal(id_claims_take(&claims, &full, 1), ID_CLAIM_TAKEN);
  id_claims_free(&claims);
}

/* ---- shards racing for the same ids ---- */

#define RACING_SHARDS 4
#define RACED_IDS 8
#define ROUNDS 200000

struct race {
  struct id_claims claims;
  atomic_int holders[RACED_IDS]; /* shards holding each id right now */
  atomic_int overlaps;           /* times an id had two holders */
};

struct racer {
  struct race *race;
  unsigned shard;
  unsigned taken;
};

static void *racer_main(void *arg) {
  struct racer *r = arg;
  struct race *race = r->race;
  for (unsigned k = 0; k < ROUNDS; k++) {
    unsigned which = (k * 7 + r->shard) % RACED_IDS;
    struct evf_uuid id = uuid_of(which);
    if (id_claims_take(&race->claims, &id, r->shard) != ID_CLAIM_TAKEN)
      continue;
    r->taken++;
    if (atomic_fetch_add(&race->holders[which], 1) != 0)
      atomic_fetch_add(&race->overlaps, 1);
    atomic_fetch_sub(&race->holders[which], 1);
    id_claims_drop(&race->claims, &id, r->shard);
  }
  return NULL;
}

static void racing_shards_never_hold_one_id_together(void **state) {
  (void)state;
  struct race *race = calloc(1, sizeof(*race));
  assert_int_equal(id_claims_init(&race->claims, RACING_SHARDS), 0);
  struct racer racers[RACING_SHARDS];
  pthread_t threads[RACING_SHARDS];
  for (unsigned i = 0; i < RACING_SHARDS; i++) {
    racers[i] = (struct racer){.race = race, .shard = i};
    assert_int_equal(pthread_create(&threads[i], NULL, racer_main, &racers[i]), 0);
  }
  unsigned taken = 0;
  for (unsigned i = 0; i < RACING_SHARDS; i++) {
    assert_int_equal(pthread_join(threads[i], NULL), 0);
    taken += racers[i].taken;
  }
  assert_int_equal(atomic_load(&race->overlaps), 0);
  assert_true(taken > 0);
  /* Every claim was dropped: each id is free again. */
  for (unsigned i = 0; i < RACED_IDS; i++) {
    struct evf_uuid id = uuid_of(i);
    assert_int_equal(id_claims_take(&race->claims, &id, 0), ID_CLAIM_TAKEN);
  }
  id_claims_free(&race->claims);
  free(race);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(a_claim_is_held_until_dropped),
      cmocka_unit_test(a_full_window_takes_no_more),
      cmocka_unit_test(racing_shards_never_hold_one_id_together),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
