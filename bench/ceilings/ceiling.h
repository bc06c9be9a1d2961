#ifndef CEILINGS_CEILING_H
#define CEILINGS_CEILING_H

/* What both ceiling programs (fsync_ceiling.c, lmdb_ceiling.c) share. */

#include <stddef.h>
#include <stdint.h>

uint64_t ceiling_now_ns(void);

/* Latencies of every operation, in ns, kept whole for exact percentiles. */
struct ceiling_latencies {
  uint64_t *ns;
  size_t n, cap;
};

/** Appends one; returns 0 or -1 (out of memory). */
int ceiling_latencies_add(struct ceiling_latencies *l, uint64_t ns);

/** Sorts them and gives p50, p99 and max in microseconds (0 when empty). */
void ceiling_latencies_summary(struct ceiling_latencies *l, double *p50_us, double *p99_us,
                               double *max_us);

void ceiling_latencies_free(struct ceiling_latencies *l);

/** Parses a whole decimal in [min, max]; returns 0 or -1. */
int ceiling_parse_ulong(const char *text, unsigned long min, unsigned long max,
                        unsigned long *out);

/** Parses seconds in (0, 3600]; returns 0 or -1. */
int ceiling_parse_seconds(const char *text, double *out);

/** $TMPDIR, or /tmp. */
const char *ceiling_default_parent(void);

/** Makes dir = PARENT/TOOL-XXXXXX (mkdtemp); returns 0, or -1 after saying why on stderr. */
int ceiling_make_dir(const char *tool, const char *parent, char *dir, size_t size);

#endif
