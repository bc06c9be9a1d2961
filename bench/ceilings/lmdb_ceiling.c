/*
 * lmdb-ceiling: how many synced LMDB write transactions this disk takes,
 * with --puts-per-txn values of --value-size bytes in each: the storage
 * ceiling EventflowDB's group commits sit under (bench/compare).
 *
 * One thread, one environment in a fresh temporary folder (removed after),
 * opened as the shards open theirs with SYNC=full (MDB_NOTLS |
 * MDB_NORDAHEAD, no MDB_NOSYNC: every commit syncs). Keys are 8-byte
 * big-endian sequence numbers put with MDB_APPEND, like the events table.
 * This is a benchmark outside the engine: it is the one place besides
 * shards/ that includes <lmdb.h>, on purpose, to measure LMDB alone.
 *
 * Then it reads everything back once, in key order in one read
 * transaction, copying each value out as a response would: the ceiling of
 * a catch-up read (the data is in the page cache by then, as it is for
 * EventflowDB's reads in bench/compare).
 *
 * Prints one JSON line on stdout: transactions, puts and bytes per second,
 * the commit latency (begin to synced commit) in microseconds, and the
 * values scanned per second.
 */
#define _GNU_SOURCE /* nftw */
#include "ceiling.h"

#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

static void usage(FILE *f) {
  fprintf(f, "usage: lmdb-ceiling [options]\n"
             "  --puts-per-txn N      puts in each synced write transaction (default 1)\n"
             "  --value-size BYTES    size of each value (default 200)\n"
             "  --duration SECONDS    measured time (default 5)\n"
             "  --dir DIR             parent of the temporary environment (default $TMPDIR or /tmp)\n");
}

int main(int argc, char **argv) {
  unsigned long puts_per_txn = 1, value_size = 200;
  double duration = 5;
  const char *parent = ceiling_default_parent();

  static const struct option options[] = {
      {"puts-per-txn", required_argument, NULL, 'p'}, {"value-size", required_argument, NULL, 's'},
      {"duration", required_argument, NULL, 'd'},     {"dir", required_argument, NULL, 'D'},
      {"help", no_argument, NULL, 'h'},               {NULL, 0, NULL, 0},
  };
  int opt;
  while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
    int bad = 0;
    switch (opt) {
    case 'p':
      bad = ceiling_parse_ulong(optarg, 1, 1000000, &puts_per_txn);
      break;
    case 's':
      bad = ceiling_parse_ulong(optarg, 1, 1u << 20, &value_size);
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
      fprintf(stderr, "lmdb-ceiling: bad value: %s\n", optarg);
      return 2;
    }
  }
  if (optind != argc) {
    usage(stderr);
    return 2;
  }

  char dir[4096];
  if (ceiling_make_dir("lmdb-ceiling", parent, dir, sizeof(dir)) != 0)
    return 1;

  int status = 1;
  MDB_env *env = NULL;
  MDB_dbi dbi;
  MDB_txn *txn = NULL;
  unsigned char *value = malloc(value_size);
  struct ceiling_latencies lat = {0};
  if (value == NULL) {
    fprintf(stderr, "lmdb-ceiling: out of memory\n");
    goto out;
  }
  memset(value, 'v', value_size);

  int rc;
  if ((rc = mdb_env_create(&env)) || (rc = mdb_env_set_mapsize(env, (size_t)16 << 30)) ||
      (rc = mdb_env_open(env, dir, MDB_NOTLS | MDB_NORDAHEAD, 0644)) ||
      (rc = mdb_txn_begin(env, NULL, 0, &txn)) || (rc = mdb_dbi_open(txn, NULL, 0, &dbi)) ||
      (rc = mdb_txn_commit(txn))) {
    fprintf(stderr, "lmdb-ceiling: open %s: %s\n", dir, mdb_strerror(rc));
    goto out;
  }

  uint64_t seq = 0, t0 = ceiling_now_ns(), end_ns = t0 + (uint64_t)(duration * 1e9), t = t0;
  while (t < end_ns) {
    uint64_t begin = t;
    if ((rc = mdb_txn_begin(env, NULL, 0, &txn)) != 0)
      break;
    for (unsigned long i = 0; i < puts_per_txn && rc == 0; i++) {
      unsigned char key[8];
      uint64_t k = ++seq;
      for (int b = 7; b >= 0; b--, k >>= 8)
        key[b] = (unsigned char)k;
      MDB_val kv = {sizeof(key), key}, vv = {value_size, value};
      rc = mdb_put(txn, dbi, &kv, &vv, MDB_APPEND);
    }
    if (rc != 0) {
      mdb_txn_abort(txn);
      break;
    }
    if ((rc = mdb_txn_commit(txn)) != 0)
      break;
    t = ceiling_now_ns();
    if (ceiling_latencies_add(&lat, t - begin) != 0) {
      rc = ENOMEM;
      break;
    }
  }
  if (rc != 0) {
    fprintf(stderr, "lmdb-ceiling: write: %s\n", mdb_strerror(rc));
    goto out;
  }

  /* The read-back scan. */
  uint64_t scanned = 0, scan_t0 = ceiling_now_ns(), sum = 0;
  MDB_cursor *cur = NULL;
  unsigned char *copy = malloc(value_size);
  txn = NULL;
  if (copy == NULL || (rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn)) != 0 ||
      (rc = mdb_cursor_open(txn, dbi, &cur)) != 0) {
    fprintf(stderr, "lmdb-ceiling: scan: %s\n", copy ? mdb_strerror(rc) : "out of memory");
    if (copy && txn)
      mdb_txn_abort(txn);
    free(copy);
    goto out;
  }
  MDB_val kv, vv;
  for (rc = mdb_cursor_get(cur, &kv, &vv, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur, &kv, &vv, MDB_NEXT)) {
    memcpy(copy, vv.mv_data, vv.mv_size < value_size ? vv.mv_size : value_size);
    sum += copy[0];
    scanned++;
  }
  double scan_secs = (double)(ceiling_now_ns() - scan_t0) / 1e9;
  mdb_cursor_close(cur);
  mdb_txn_abort(txn);
  free(copy);
  if (rc != MDB_NOTFOUND || scanned != seq || sum != scanned * 'v') {
    fprintf(stderr, "lmdb-ceiling: the scan read %" PRIu64 " of %" PRIu64 " values (%s)\n",
            scanned, seq, mdb_strerror(rc));
    goto out;
  }

  size_t n = lat.n;
  double secs = (double)(t - t0) / 1e9, tps = (double)n / secs, p50, p99, max;
  ceiling_latencies_summary(&lat, &p50, &p99, &max);
  printf("{\"tool\":\"lmdb-ceiling\",\"puts_per_txn\":%lu,\"value_size\":%lu,\"seconds\":%.3f,"
         "\"txns\":%zu,\"puts\":%" PRIu64 ",\"txns_per_second\":%.1f,\"puts_per_second\":%.1f,"
         "\"bytes_per_second\":%.1f,\"latency_us\":{\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f},"
         "\"scan_seconds\":%.4f,\"scan_per_second\":%.1f}\n",
         puts_per_txn, value_size, secs, n, seq, tps, tps * (double)puts_per_txn,
         tps * (double)puts_per_txn * (double)value_size, p50, p99, max, scan_secs,
         (double)scanned / scan_secs);
  status = 0;

out:
  if (env)
    mdb_env_close(env);
  free(value);
  ceiling_latencies_free(&lat);
  nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
  return status;
}
