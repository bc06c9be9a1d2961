/*
 * Tests for bench/loadgen/histogram.h: every percentile is compared with the
 * exact nearest-rank percentile of the same samples, sorted, and must lie
 * within the documented bound (at least the exact value, less than
 * 1/LG_HIST_SUB above it).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "histogram.h"
#include "rng.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define SAMPLES 200000

static const double quantiles[] = {0.0, 0.001, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 0.9999, 1.0};

/* Uniform in (0, 1). */
static double unit(uint64_t *s) { return ((double)(lg_xorshift64(s) >> 11) + 0.5) / 9007199254740992.0; }

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* The nearest-rank percentile of sorted samples, ranked as lg_hist_percentile documents. */
static uint64_t exact(const uint64_t *sorted, size_t n, double q) {
  double want = ceil(q * (double)n);
  size_t rank = want < 1 ? 1 : want >= (double)n ? n : (size_t)want;
  return sorted[rank - 1];
}

static struct lg_hist *new_hist(void) {
  struct lg_hist *h = malloc(sizeof(*h));
  assert_non_null(h);
  lg_hist_init(h);
  return h;
}

/* Records samples, then checks every quantile, min, max, mean and count against them. */
static void check_against_sorted(uint64_t *samples, size_t n) {
  struct lg_hist *h = new_hist();
  long double sum = 0;
  for (size_t i = 0; i < n; i++) {
    lg_hist_record(h, samples[i]);
    sum += samples[i];
  }
  qsort(samples, n, sizeof(*samples), cmp_u64);
  assert_int_equal(h->count, n);
  assert_int_equal(h->min, samples[0]);
  assert_int_equal(h->max, samples[n - 1]);
  assert_int_equal(h->clamped, 0);
  double mean = (double)(sum / n);
  assert_true(fabs(lg_hist_mean(h) - mean) <= mean * 1e-9);
  for (size_t k = 0; k < sizeof(quantiles) / sizeof(quantiles[0]); k++) {
    uint64_t want = exact(samples, n, quantiles[k]);
    uint64_t got = lg_hist_percentile(h, quantiles[k]);
    if (got < want || (got > want && (got - want) * LG_HIST_SUB >= want))
      fail_msg("q=%g: histogram %llu, exact %llu: outside [exact, exact * (1 + 1/%u))",
               quantiles[k], (unsigned long long)got, (unsigned long long)want, LG_HIST_SUB);
    if (want < 2 * LG_HIST_SUB)
      assert_int_equal(got, want); /* small values are exact */
  }
  assert_int_equal(lg_hist_percentile(h, 1.0), samples[n - 1]);
  free(h);
}

static void uniform(void **state) {
  (void)state;
  uint64_t *v = malloc(SAMPLES * sizeof(*v)), rng = 0x243F6A8885A308D3u;
  for (size_t i = 0; i < SAMPLES; i++)
    v[i] = 1 + lg_xorshift64(&rng) % 1000000;
  check_against_sorted(v, SAMPLES);
  free(v);
}

static void exponential(void **state) {
  (void)state;
  uint64_t *v = malloc(SAMPLES * sizeof(*v)), rng = 0x13198A2E03707344u;
  for (size_t i = 0; i < SAMPLES; i++)
    v[i] = (uint64_t)(-log(unit(&rng)) * 2000.0);
  check_against_sorted(v, SAMPLES);
  free(v);
}

static void constant(void **state) {
  (void)state;
  uint64_t *v = malloc(SAMPLES * sizeof(*v));
  for (size_t i = 0; i < SAMPLES; i++)
    v[i] = 123457;
  check_against_sorted(v, SAMPLES);
  free(v);
}

/* 90% fast (about 200 us), 10% slow (about 50 ms): the tail quantiles land in the slow mode. */
static void bimodal(void **state) {
  (void)state;
  uint64_t *v = malloc(SAMPLES * sizeof(*v)), rng = 0xA4093822299F31D0u;
  for (size_t i = 0; i < SAMPLES; i++) {
    bool slow = lg_xorshift64(&rng) % 10 == 0;
    v[i] = slow ? 45000 + lg_xorshift64(&rng) % 10000 : 150 + lg_xorshift64(&rng) % 100;
  }
  check_against_sorted(v, SAMPLES);
  free(v);
}

/* Every value up to 2^20 and a few above: each falls in a bucket whose range holds it. */
static void buckets_hold_their_values(void **state) {
  (void)state;
  for (uint64_t v = 0; v < (UINT64_C(1) << 20); v++) {
    unsigned i = lg_hist_index(v);
    assert_true(i < LG_HIST_BUCKETS);
    assert_true(lg_hist_bucket_high(i) >= v);
    assert_true(i == 0 || lg_hist_bucket_high(i - 1) < v);
  }
  assert_int_equal(lg_hist_index(LG_HIST_HIGHEST), LG_HIST_BUCKETS - 1);
  assert_int_equal(lg_hist_bucket_high(LG_HIST_BUCKETS - 1), LG_HIST_HIGHEST);
  /* One hour in microseconds is in range. */
  assert_true(UINT64_C(3600000000) <= LG_HIST_HIGHEST);
}

static void merge_equals_recording_all(void **state) {
  (void)state;
  struct lg_hist *all = new_hist(), *parts[3], *merged = new_hist();
  for (int p = 0; p < 3; p++)
    parts[p] = new_hist();
  uint64_t rng = 0x082EFA98EC4E6C89u;
  for (size_t i = 0; i < SAMPLES; i++) {
    uint64_t v = (uint64_t)(-log(unit(&rng)) * 5000.0);
    lg_hist_record(all, v);
    lg_hist_record(parts[i % 3], v);
  }
  lg_hist_record(all, UINT64_C(1) << 40);
  lg_hist_record(parts[1], UINT64_C(1) << 40);
  for (int p = 0; p < 3; p++)
    lg_hist_merge(merged, parts[p]);
  assert_memory_equal(merged->counts, all->counts, sizeof(all->counts));
  assert_int_equal(merged->count, all->count);
  assert_int_equal(merged->clamped, 1);
  assert_int_equal(merged->min, all->min);
  assert_int_equal(merged->max, all->max);
  assert_int_equal(merged->sum, all->sum);
  for (size_t k = 0; k < sizeof(quantiles) / sizeof(quantiles[0]); k++)
    assert_int_equal(lg_hist_percentile(merged, quantiles[k]), lg_hist_percentile(all, quantiles[k]));
  /* Merging an empty histogram changes nothing, and merging into an empty one copies. */
  struct lg_hist *empty = new_hist(), *copy = new_hist();
  lg_hist_merge(merged, empty);
  assert_memory_equal(merged, all, sizeof(*all));
  lg_hist_merge(copy, all);
  assert_memory_equal(copy, all, sizeof(*all));
  for (int p = 0; p < 3; p++)
    free(parts[p]);
  free(all);
  free(merged);
  free(empty);
  free(copy);
}

static void clamping(void **state) {
  (void)state;
  struct lg_hist *h = new_hist();
  lg_hist_record(h, 10);
  lg_hist_record(h, LG_HIST_HIGHEST + 1);
  lg_hist_record(h, UINT64_MAX);
  assert_int_equal(h->count, 3);
  assert_int_equal(h->clamped, 2);
  assert_int_equal(h->counts[LG_HIST_BUCKETS - 1], 2);
  assert_int_equal(h->max, UINT64_MAX);
  assert_int_equal(h->min, 10);
  assert_int_equal(h->sum, UINT64_MAX); /* saturated */
  assert_int_equal(lg_hist_percentile(h, 0.0), 10);
  assert_int_equal(lg_hist_percentile(h, 0.5), LG_HIST_HIGHEST);
  assert_int_equal(lg_hist_percentile(h, 1.0), LG_HIST_HIGHEST);
  /* The highest trackable value itself is not clamped. */
  lg_hist_init(h);
  lg_hist_record(h, LG_HIST_HIGHEST);
  assert_int_equal(h->clamped, 0);
  assert_int_equal(lg_hist_percentile(h, 0.5), LG_HIST_HIGHEST);
  free(h);
}

static void empty_histogram(void **state) {
  (void)state;
  struct lg_hist *h = new_hist();
  assert_int_equal(h->count, 0);
  assert_int_equal(h->min, 0);
  assert_int_equal(h->max, 0);
  assert_true(lg_hist_mean(h) == 0);
  for (size_t k = 0; k < sizeof(quantiles) / sizeof(quantiles[0]); k++)
    assert_int_equal(lg_hist_percentile(h, quantiles[k]), 0);
  /* One value is every percentile, exactly when small. */
  lg_hist_record(h, 0);
  assert_int_equal(lg_hist_percentile(h, 0.5), 0);
  assert_int_equal(lg_hist_percentile(h, 1.0), 0);
  free(h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(uniform),
      cmocka_unit_test(exponential),
      cmocka_unit_test(constant),
      cmocka_unit_test(bimodal),
      cmocka_unit_test(buckets_hold_their_values),
      cmocka_unit_test(merge_equals_recording_all),
      cmocka_unit_test(clamping),
      cmocka_unit_test(empty_histogram),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
