/*
 * Disk room for an index mapped writable.
 *
 * The index is opened with MDB_WRITEMAP where the file system can allocate
 * blocks on request: LMDB then changes pages in the map itself, instead of
 * building them in memory and copying each one into the page cache with
 * pwrite(2) at commit. That copy was the largest cost of a commit: with
 * many streams, each append dirties a stream_index leaf of its own.
 *
 * The price: LMDB extends the file to the map's size, sparse. A store into
 * a hole that the file system cannot fill (a full disk) raises SIGBUS in
 * the writer instead of failing a call. So the file's blocks are allocated
 * (fallocate) ahead of LMDB's use: before each write transaction writes,
 * up to the last page in use plus the most pages that transaction can add,
 * and a margin, so that most transactions make no call at all. A
 * transaction the disk has no room for fails up front, with ENOSPC, before
 * anything is written: the same outcome as a full map.
 *
 * Only the index's one writer at a time (the opening thread, then the
 * committer) calls index_room__reserve.
 */
#define _GNU_SOURCE /* fallocate */
#include "internal.h"

#include "evf/log.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#define RESERVE_AHEAD (16u << 20) /* bytes allocated past what a transaction needs */
#define PROBE_BYTES 4096
/*
 * Pages a transaction may take besides its puts' own: the named databases'
 * records in the main database, roots that split, and the freelist's pages.
 */
#define TREE_SLACK 256

/*
 * File systems that always overwrite an allocated block in place. On a
 * copy-on-write one (btrfs, ZFS) rewriting a page needs new blocks, and so
 * it does on XFS where a block is shared with a reflinked copy (which
 * `cp` makes by default, of a backup say, at any time): a full disk would
 * then raise SIGBUS whatever fallocate reserved.
 */
static bool overwrites_in_place(int fd) {
  struct statfs fs;
  if (fstatfs(fd, &fs) != 0)
    return false;
  return fs.f_type == EXT4_SUPER_MAGIC || fs.f_type == TMPFS_MAGIC;
}

bool index_room__can_reserve(const char *dir, const char *data_path) {
  if (mkdir(dir, 0755) != 0 && errno != EEXIST)
    return false; /* opening the environment reports it */
  int fd = open(data_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return false;
  /* KEEP_SIZE: a new file stays empty, which LMDB takes for a new environment. */
  bool can = overwrites_in_place(fd) && fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, PROBE_BYTES) == 0;
  close(fd);
  return can;
}

/*
 * The most pages a write transaction takes from an index of `used` pages
 * whose deepest tree has `depth` levels, for `puts` puts that fall in
 * `runs` runs of keys put in rising order into one gap between stored
 * keys (a put on its own is a run of one), adding at most `bytes` bytes.
 *
 * Each run: the pages on the path to its gap are copied (once per
 * transaction at most) and may each split once, and the tree may grow a
 * level or two. Past that, a run's keys go into a page with room: the new
 * half of one that split, or, when LMDB splits a full page at its end (the
 * old page keeps all but its last node), the new page, which the rising
 * keys then fill. So further splits come only from new bytes: one for
 * every half page of them, and as many again above the leaves, at most.
 * Runs of several ports in one gap (the store's ids after the last one
 * stored) break that: MDB_APPEND fills a page whole, and another port's
 * keys then split it. Each of those appends is also a run of its own
 * (commit.c counts them), so the bound held, measured with 8 and 16 ports
 * at under a fifth of it (a review of 30f7498).
 *
 * Whatever the runs: each page in use is copied once and splits once at
 * most. But puts in any order can split at a full page's end again and
 * again (keys put in falling pairs into one gap make a page for every two),
 * and a split adds a key to the page above, which can do the same: a page
 * per put at most, besides the bytes.
 */
static uint64_t pages_bound(uint64_t used, unsigned depth, const struct index_growth *growth,
                            unsigned page_size) {
  uint64_t by_bytes = 2 * (2 * growth->bytes / page_size + 1);
  uint64_t by_runs = growth->runs * 2 * (depth + 2) + by_bytes;
  uint64_t by_size = used * 5 / 2 + growth->puts + by_bytes;
  uint64_t pages = by_runs < by_size ? by_runs : by_size;
  /* Freed pages are listed in the freelist at commit: 8 bytes each. */
  return pages + (pages + used) / 256 + TREE_SLACK;
}

/*
 * The deepest of the index's trees: the main database's (main_depth), and
 * the named ones as of txn when it is given. Returns an LMDB code.
 */
static int deepest_tree(MDB_txn *txn, const struct shard_db *db, unsigned main_depth,
                        unsigned *depth) {
  *depth = main_depth;
  if (txn == NULL)
    return 0; /* the named databases are not open yet */
  const MDB_dbi trees[] = {db->streams, db->stream_index, db->event_ids, db->index_meta};
  for (size_t i = 0; i < sizeof(trees) / sizeof(trees[0]); i++) {
    MDB_stat stat;
    int rc = mdb_stat(txn, trees[i], &stat);
    if (rc != 0)
      return rc;
    if (stat.ms_depth > *depth)
      *depth = stat.ms_depth;
  }
  return 0;
}

/* Allocates the file's blocks in [from, to). Returns 0 or an errno value. */
static int allocate(int fd, uint64_t from, uint64_t to) {
  if (fallocate(fd, 0, (off_t)from, (off_t)(to - from)) == 0)
    return 0;
  return errno;
}

struct index_growth index_room__puts(uint64_t puts) {
  return (struct index_growth){.puts = puts, .runs = puts, .bytes = puts * INDEX_RECORD_MAX};
}

int index_room__reserve(struct shard_db *db, MDB_txn *txn, const struct index_growth *growth) {
  if (!db->index_mapped)
    return 0;
  MDB_envinfo info;
  MDB_stat stat;
  unsigned depth;
  int fd;
  int rc = mdb_env_info(db->index_env, &info);
  if (rc == 0)
    rc = mdb_env_stat(db->index_env, &stat);
  if (rc == 0)
    rc = mdb_env_get_fd(db->index_env, &fd);
  if (rc == 0)
    rc = deepest_tree(txn, db, stat.ms_depth, &depth);
  if (rc != 0)
    return rc;
  uint64_t used = (uint64_t)info.me_last_pgno + 1;
  uint64_t need = (used + pages_bound(used, depth, growth, stat.ms_psize)) * stat.ms_psize;
  if (need > info.me_mapsize)
    need = info.me_mapsize; /* past it, LMDB fails the transaction with MDB_MAP_FULL */
  db->index_need = need;
  if (need <= db->index_reserved)
    return 0;
  uint64_t ahead = need + RESERVE_AHEAD < info.me_mapsize ? need + RESERVE_AHEAD : info.me_mapsize;
  if ((rc = allocate(fd, db->index_reserved, ahead)) == 0) {
    db->index_reserved = ahead;
    return 0;
  }
  /* Short of the margin, the transaction's own room may still be there. */
  if (rc == ENOSPC && (rc = allocate(fd, db->index_reserved, need)) == 0)
    db->index_reserved = need;
  return rc;
}

void index_room__check(struct shard_db *db) {
  MDB_envinfo info;
  MDB_stat stat;
  if (!db->index_mapped || mdb_env_info(db->index_env, &info) != 0 ||
      mdb_env_stat(db->index_env, &stat) != 0)
    return;
  uint64_t end = ((uint64_t)info.me_last_pgno + 1) * stat.ms_psize;
  if (end <= db->index_need)
    return;
  atomic_fetch_add(&db->index_overruns, 1);
  evf_error("the index grew to %llu bytes in a transaction whose bound was %llu: on a full "
            "disk that could have been SIGBUS (please report)",
            (unsigned long long)end, (unsigned long long)db->index_need);
}
