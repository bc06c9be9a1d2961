#ifndef LOADGEN_HISTOGRAM_H
#define LOADGEN_HISTOGRAM_H

/*
 * A log-linear latency histogram in the manner of HdrHistogram: each power
 * of two is split into LG_HIST_SUB equal sub-buckets, so a bucket is never
 * wider than 1/LG_HIST_SUB of the values it holds. Values are unsigned
 * integers (eventflowdb-bench records microseconds).
 *
 * Accuracy: values below 2 * LG_HIST_SUB (256) are exact. Above, a
 * percentile is the highest value of the bucket holding the exact
 * nearest-rank percentile p, so it is at least p and less than
 * p * (1 + 1/LG_HIST_SUB): a relative error under 0.79%.
 *
 * Range: 0 to LG_HIST_HIGHEST (2^32 - 1, about 71.6 minutes in
 * microseconds). A larger value is recorded into the top bucket and counted
 * in `clamped`; min, max and mean are kept exact for every value.
 *
 * A histogram is plain memory (about 27 KiB) with no locking: one thread
 * records into it; merge copies after the recording threads are joined.
 */

#include <stdint.h>

#define LG_HIST_SUB_BITS 7
#define LG_HIST_SUB (1u << LG_HIST_SUB_BITS)
#define LG_HIST_TOP_BITS 32
#define LG_HIST_HIGHEST ((UINT64_C(1) << LG_HIST_TOP_BITS) - 1)
#define LG_HIST_BUCKETS ((LG_HIST_TOP_BITS - LG_HIST_SUB_BITS + 1) * LG_HIST_SUB)

struct lg_hist {
  uint64_t counts[LG_HIST_BUCKETS];
  uint64_t count;              /* values recorded */
  uint64_t clamped;            /* of which above LG_HIST_HIGHEST */
  uint64_t min, max;           /* exact; 0 when empty */
  uint64_t sum;                /* exact (saturates at UINT64_MAX) */
};

/** Makes h empty. h is the caller's storage. */
void lg_hist_init(struct lg_hist *h);

/** Records one value (values above LG_HIST_HIGHEST are clamped and counted). */
void lg_hist_record(struct lg_hist *h, uint64_t value);

/** Adds every value recorded in from to into; from is unchanged. */
void lg_hist_merge(struct lg_hist *into, const struct lg_hist *from);

/**
 * The q-quantile (q from 0 to 1; 0.99 is p99) by nearest rank: the value
 * at rank ceil(q * count), at least 1, in ascending order, reported as its
 * bucket's highest value but never above max. 0 when h is empty.
 */
uint64_t lg_hist_percentile(const struct lg_hist *h, double q);

/** The exact mean of the recorded values; 0 when empty. */
double lg_hist_mean(const struct lg_hist *h);

/** The bucket a value falls in (exposed for tests). */
unsigned lg_hist_index(uint64_t value);

/** The highest value bucket i holds (exposed for tests). */
uint64_t lg_hist_bucket_high(unsigned i);

#endif
