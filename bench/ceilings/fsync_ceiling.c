/*
 * fsync-ceiling: how many synced appends one file takes on this disk:
 * write --record-size bytes at the end of a file, fdatasync, repeat, for
 * --duration seconds. The floor under any store that syncs each
 * acknowledged write on its own (bench/compare).
 *
 * The file is created in a fresh temporary folder (removed after) and
 * grows (no preallocation), as a log does. Prints one JSON line on
 * stdout: synced appends per second and their latency (write to synced)
 * in microseconds.
 */
#define _GNU_SOURCE /* mkdtemp */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static double quantile_us(const uint64_t *sorted, size_t n, double q) {
  if (n == 0)
    return 0;
  size_t i = (size_t)(q * (double)(n - 1) + 0.5);
  return (double)sorted[i] / 1e3;
}

static void usage(FILE *f) {
  fprintf(f, "usage: fsync-ceiling [options]\n"
             "  --record-size BYTES   bytes written before each fdatasync (default 256)\n"
             "  --duration SECONDS    measured time (default 5)\n"
             "  --dir DIR             parent of the temporary file's folder (default $TMPDIR or /tmp)\n");
}

int main(int argc, char **argv) {
  unsigned long record_size = 256;
  double duration = 5;
  const char *parent = getenv("TMPDIR");
  if (parent == NULL || *parent == '\0')
    parent = "/tmp";

  static const struct option options[] = {
      {"record-size", required_argument, NULL, 's'}, {"duration", required_argument, NULL, 'd'},
      {"dir", required_argument, NULL, 'D'},         {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  int opt;
  while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
    char *end;
    int bad = 0;
    switch (opt) {
    case 's':
      errno = 0;
      record_size = strtoul(optarg, &end, 10);
      bad = errno || end == optarg || *end || optarg[0] == '-' || record_size < 1 ||
            record_size > (1u << 20);
      break;
    case 'd':
      duration = strtod(optarg, &end);
      bad = end == optarg || *end || !(duration > 0 && duration <= 3600);
      break;
    case 'D':
      parent = optarg;
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
    if (bad) {
      fprintf(stderr, "fsync-ceiling: bad value: %s\n", optarg);
      return 2;
    }
  }
  if (optind != argc) {
    usage(stderr);
    return 2;
  }

  char dir[4096], path[4200];
  snprintf(dir, sizeof(dir), "%s/fsync-ceiling-XXXXXX", parent);
  if (mkdtemp(dir) == NULL) {
    fprintf(stderr, "fsync-ceiling: mkdtemp %s: %s\n", dir, strerror(errno));
    return 1;
  }
  snprintf(path, sizeof(path), "%s/log", dir);

  int status = 1, fd = -1;
  char *record = malloc(record_size);
  size_t cap = 1u << 16, n = 0;
  uint64_t *lat = malloc(cap * sizeof(*lat));
  if (record == NULL || lat == NULL) {
    fprintf(stderr, "fsync-ceiling: out of memory\n");
    goto out;
  }
  memset(record, 'r', record_size);
  if ((fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) < 0) {
    fprintf(stderr, "fsync-ceiling: open %s: %s\n", path, strerror(errno));
    goto out;
  }

  uint64_t t0 = now_ns(), end_ns = t0 + (uint64_t)(duration * 1e9), t = t0;
  while (t < end_ns) {
    uint64_t begin = t;
    ssize_t w = write(fd, record, record_size);
    if (w != (ssize_t)record_size) {
      fprintf(stderr, "fsync-ceiling: write: %s\n", w < 0 ? strerror(errno) : "short write");
      goto out;
    }
    if (fdatasync(fd) != 0) {
      fprintf(stderr, "fsync-ceiling: fdatasync: %s\n", strerror(errno));
      goto out;
    }
    t = now_ns();
    if (n == cap) {
      uint64_t *grown = realloc(lat, 2 * cap * sizeof(*lat));
      if (grown == NULL) {
        fprintf(stderr, "fsync-ceiling: out of memory\n");
        goto out;
      }
      lat = grown, cap *= 2;
    }
    lat[n++] = t - begin;
  }

  double secs = (double)(t - t0) / 1e9;
  qsort(lat, n, sizeof(*lat), cmp_u64);
  printf("{\"tool\":\"fsync-ceiling\",\"record_size\":%lu,\"seconds\":%.3f,\"syncs\":%zu,"
         "\"syncs_per_second\":%.1f,\"latency_us\":{\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f}}\n",
         record_size, secs, n, (double)n / secs, quantile_us(lat, n, 0.5),
         quantile_us(lat, n, 0.99), n ? (double)lat[n - 1] / 1e3 : 0.0);
  status = 0;

out:
  if (fd >= 0)
    close(fd);
  free(record);
  free(lat);
  unlink(path);
  rmdir(dir);
  return status;
}
