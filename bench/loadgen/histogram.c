/* A log-linear histogram: LG_HIST_SUB linear sub-buckets per power of two. */
#include "histogram.h"

#include <math.h>
#include <string.h>

void lg_hist_init(struct lg_hist *h) { memset(h, 0, sizeof(*h)); }

unsigned lg_hist_index(uint64_t v) {
  if (v > LG_HIST_HIGHEST)
    v = LG_HIST_HIGHEST;
  if (v < LG_HIST_SUB)
    return (unsigned)v;
  unsigned e = 63u - (unsigned)__builtin_clzll(v); /* LG_HIST_SUB_BITS .. TOP_BITS - 1 */
  unsigned sub = (unsigned)(v >> (e - LG_HIST_SUB_BITS)) & (LG_HIST_SUB - 1);
  return (e - LG_HIST_SUB_BITS + 1) * LG_HIST_SUB + sub;
}

uint64_t lg_hist_bucket_high(unsigned i) {
  if (i < LG_HIST_SUB)
    return i;
  unsigned e = i / LG_HIST_SUB + LG_HIST_SUB_BITS - 1, sub = i % LG_HIST_SUB;
  uint64_t low = (uint64_t)(LG_HIST_SUB + sub) << (e - LG_HIST_SUB_BITS);
  return low + (UINT64_C(1) << (e - LG_HIST_SUB_BITS)) - 1;
}

void lg_hist_record(struct lg_hist *h, uint64_t v) {
  h->counts[lg_hist_index(v)]++;
  if (v > LG_HIST_HIGHEST)
    h->clamped++;
  if (h->count == 0 || v < h->min)
    h->min = v;
  if (v > h->max)
    h->max = v;
  h->count++;
  h->sum = h->sum + v < h->sum ? UINT64_MAX : h->sum + v;
}

void lg_hist_merge(struct lg_hist *into, const struct lg_hist *from) {
  if (from->count == 0)
    return;
  for (unsigned i = 0; i < LG_HIST_BUCKETS; i++)
    into->counts[i] += from->counts[i];
  if (into->count == 0 || from->min < into->min)
    into->min = from->min;
  if (from->max > into->max)
    into->max = from->max;
  into->count += from->count;
  into->clamped += from->clamped;
  into->sum = into->sum + from->sum < into->sum ? UINT64_MAX : into->sum + from->sum;
}

uint64_t lg_hist_percentile(const struct lg_hist *h, double q) {
  if (h->count == 0)
    return 0;
  double want = ceil(q * (double)h->count);
  uint64_t rank = want < 1 ? 1 : want >= (double)h->count ? h->count : (uint64_t)want;
  uint64_t seen = 0;
  for (unsigned i = 0; i < LG_HIST_BUCKETS; i++) {
    seen += h->counts[i];
    if (seen >= rank) {
      uint64_t high = lg_hist_bucket_high(i);
      return high < h->max ? high : h->max;
    }
  }
  return h->max;
}

double lg_hist_mean(const struct lg_hist *h) {
  return h->count ? (double)h->sum / (double)h->count : 0;
}
