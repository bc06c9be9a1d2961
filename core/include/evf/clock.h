#ifndef EVF_CLOCK_H
#define EVF_CLOCK_H

#include <stdint.h>

/** Unix time in milliseconds (wall clock). Any thread. */
int64_t evf_now_ms(void);

/** A monotonic clock in nanoseconds, for measuring durations. Any thread. */
uint64_t evf_monotonic_ns(void);

#endif
