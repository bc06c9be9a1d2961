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
#include "ceiling.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f) {
  fprintf(f, "usage: fsync-ceiling [options]\n"
             "  --record-size BYTES   bytes written before each fdatasync (default 256)\n"
             "  --duration SECONDS    measured time (default 5)\n"
             "  --dir DIR             parent of the temporary file's folder (default $TMPDIR or /tmp)\n");
}

int main(int argc, char **argv) {
  unsigned long record_size = 256;
  double duration = 5;
  const char *parent = ceiling_default_parent();

  static const struct option options[] = {
      {"record-size", required_argument, NULL, 's'}, {"duration", required_argument, NULL, 'd'},
      {"dir", required_argument, NULL, 'D'},         {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  int opt;
  while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
    int bad = 0;
    switch (opt) {
    case 's':
      bad = ceiling_parse_ulong(optarg, 1, 1u << 20, &record_size);
      break;
    case 'd':
      bad = ceiling_parse_seconds(optarg, &duration);
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
  if (ceiling_make_dir("fsync-ceiling", parent, dir, sizeof(dir)) != 0)
    return 1;
  snprintf(path, sizeof(path), "%s/log", dir);

  int status = 1, fd = -1;
  char *record = malloc(record_size);
  struct ceiling_latencies lat = {0};
  if (record == NULL) {
    fprintf(stderr, "fsync-ceiling: out of memory\n");
    goto out;
  }
  memset(record, 'r', record_size);
  if ((fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) < 0) {
    fprintf(stderr, "fsync-ceiling: open %s: %s\n", path, strerror(errno));
    goto out;
  }

  uint64_t t0 = ceiling_now_ns(), end_ns = t0 + (uint64_t)(duration * 1e9), t = t0;
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
    t = ceiling_now_ns();
    if (ceiling_latencies_add(&lat, t - begin) != 0) {
      fprintf(stderr, "fsync-ceiling: out of memory\n");
      goto out;
    }
  }

  double secs = (double)(t - t0) / 1e9, p50, p99, max;
  size_t n = lat.n;
  ceiling_latencies_summary(&lat, &p50, &p99, &max);
  printf("{\"tool\":\"fsync-ceiling\",\"record_size\":%lu,\"seconds\":%.3f,\"syncs\":%zu,"
         "\"syncs_per_second\":%.1f,\"latency_us\":{\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f}}\n",
         record_size, secs, n, (double)n / secs, p50, p99, max);
  status = 0;

out:
  if (fd >= 0)
    close(fd);
  free(record);
  ceiling_latencies_free(&lat);
  unlink(path);
  rmdir(dir);
  return status;
}
