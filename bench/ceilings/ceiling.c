#define _GNU_SOURCE /* mkdtemp */
#include "ceiling.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t ceiling_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int ceiling_latencies_add(struct ceiling_latencies *l, uint64_t ns) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 1u << 16;
    uint64_t *grown = realloc(l->ns, cap * sizeof(*grown));
    if (grown == NULL)
      return -1;
    l->ns = grown;
    l->cap = cap;
  }
  l->ns[l->n++] = ns;
  return 0;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static double quantile_us(const struct ceiling_latencies *l, double q) {
  size_t i = (size_t)(q * (double)(l->n - 1) + 0.5);
  return (double)l->ns[i] / 1e3;
}

void ceiling_latencies_summary(struct ceiling_latencies *l, double *p50_us, double *p99_us,
                               double *max_us) {
  *p50_us = *p99_us = *max_us = 0;
  if (l->n == 0)
    return;
  qsort(l->ns, l->n, sizeof(*l->ns), cmp_u64);
  *p50_us = quantile_us(l, 0.5);
  *p99_us = quantile_us(l, 0.99);
  *max_us = (double)l->ns[l->n - 1] / 1e3;
}

void ceiling_latencies_free(struct ceiling_latencies *l) {
  free(l->ns);
  *l = (struct ceiling_latencies){0};
}

int ceiling_parse_ulong(const char *text, unsigned long min, unsigned long max,
                        unsigned long *out) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(text, &end, 10);
  if (errno || end == text || *end || text[0] == '-' || v < min || v > max)
    return -1;
  *out = v;
  return 0;
}

int ceiling_parse_seconds(const char *text, double *out) {
  char *end;
  double v = strtod(text, &end);
  if (end == text || *end || !(v > 0 && v <= 3600))
    return -1;
  *out = v;
  return 0;
}

const char *ceiling_default_parent(void) {
  const char *parent = getenv("TMPDIR");
  return parent != NULL && *parent != '\0' ? parent : "/tmp";
}

int ceiling_make_dir(const char *tool, const char *parent, char *dir, size_t size) {
  snprintf(dir, size, "%s/%s-XXXXXX", parent, tool);
  if (mkdtemp(dir) != NULL)
    return 0;
  fprintf(stderr, "%s: mkdtemp %s: %s\n", tool, dir, strerror(errno));
  return -1;
}
