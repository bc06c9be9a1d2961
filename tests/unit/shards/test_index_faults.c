/*
 * A write error on the index after the log committed (a disk that fills
 * between the two commits): the batch is indexed from the log at once, or
 * the shard repairs its index before it decides anything more.
 *
 * The failure is injected by interposing pwrite and writev, LMDB's page
 * writes: this program's definitions take precedence over libc's for
 * liblmdb. Only page writes (4 KiB or more) to the failing files (index
 * files, unless a test aims at a log) fail; the meta record is written, as
 * it would be on a full disk (it overwrites allocated blocks).
 *
 * An index mapped writable, where the file system allocates on request,
 * writes no pages: its full disk is the failure of fallocate, interposed
 * the same way.
 */
#define _GNU_SOURCE
#include "harness.h"

#include "evf/clock.h"
#include "evf/hash.h"
#include "evf/status.h"

#include <dlfcn.h>
#include <errno.h>
#include <linux/magic.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define FAIL_ALWAYS (-1)
#define PAGE 4096
#define ROOM (2 << 20)         /* bytes an index file may be allocated when a disk fills */
#define FILL_APPEND 128        /* events per append while filling it */
#define MAX_FILL_EVENTS 100000 /* bound: 2 MiB of index holds far fewer */

static atomic_int failures_left; /* page writes still to fail; FAIL_ALWAYS: every one */
static atomic_bool writes_cut_short; /* failing page writes return a short count, not ENOSPC */
static atomic_bool no_room_left;     /* fstatvfs reports a full file system */
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);

#define INDEX_FILES "/index/data.mdb"
static _Atomic(const char *) failing_files = INDEX_FILES; /* the end of their paths */

static bool is_failing_file(int fd) {
  const char *suffix = atomic_load(&failing_files);
  char link[64], path[4096];
  snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof(path) - 1);
  if (n < (ssize_t)strlen(suffix))
    return false;
  path[n] = '\0';
  return strcmp(path + n - strlen(suffix), suffix) == 0;
}

static bool fail_now(int fd, size_t len) {
  int left = atomic_load(&failures_left);
  if (left == 0 || len < PAGE || !is_failing_file(fd))
    return false;
  while (left > 0 && !atomic_compare_exchange_weak(&failures_left, &left, left - 1)) {
  }
  return left != 0;
}

/* A failing page write: ENOSPC, or a short count as when a disk fills during the write. */
static ssize_t failed_write(size_t len) {
  if (atomic_load(&writes_cut_short))
    return (ssize_t)(len / 2);
  errno = ENOSPC;
  return -1;
}

ssize_t pwrite(int fd, const void *buf, size_t len, off_t offset) {
  if (fail_now(fd, len))
    return failed_write(len);
  return real_pwrite(fd, buf, len, offset);
}

ssize_t writev(int fd, const struct iovec *iov, int count) {
  size_t len = 0;
  for (int i = 0; i < count; i++)
    len += iov[i].iov_len;
  if (fail_now(fd, len))
    return failed_write(len);
  return real_writev(fd, iov, count);
}

static int (*real_fstatvfs)(int, struct statvfs *);

int fstatvfs(int fd, struct statvfs *fs) {
  int rc = real_fstatvfs(fd, fs);
  if (rc == 0 && atomic_load(&no_room_left))
    fs->f_bavail = 0;
  return rc;
}

/*
 * The file system's fallocate, as the index sees it: by default there is
 * none (EOPNOTSUPP), so the index is written with pwrite and the failures
 * above reach it. A test of the mapped index (MDB_WRITEMAP) lets it
 * allocate files up to a length, as a disk with that much room would.
 */
#define NO_FALLOCATE (-2)
#define ANY_LENGTH (-1)
static atomic_llong allocatable = NO_FALLOCATE; /* bytes a file may be allocated up to */
static atomic_int allocations_refused;
static int (*real_fallocate)(int, int, off_t, off_t);

int fallocate(int fd, int mode, off_t offset, off_t len) {
  long long limit = atomic_load(&allocatable);
  if (limit == NO_FALLOCATE) {
    errno = EOPNOTSUPP;
    return -1;
  }
  if (limit != ANY_LENGTH && offset + len > limit) {
    atomic_fetch_add(&allocations_refused, 1);
    errno = ENOSPC;
    return -1;
  }
  return real_fallocate(fd, mode, offset, len);
}

/* No failure is left armed from one test to the next. */
static int setup(void **state) {
  atomic_store(&failures_left, 0);
  atomic_store(&failing_files, INDEX_FILES);
  atomic_store(&writes_cut_short, false);
  atomic_store(&no_room_left, false);
  atomic_store(&allocatable, NO_FALLOCATE);
  atomic_store(&allocations_refused, 0);
  return harness_fixture_setup(state);
}

static int teardown(void **state) {
  atomic_store(&failures_left, 0);
  return harness_fixture_teardown(state);
}

/* Events in the global stream, page by page. */
static size_t global_length(struct harness_fixture *f) {
  size_t n = 0, page;
  uint64_t offset = 0;
  do {
    struct harness_events e;
    assert_int_equal(harness_read_global(f->store, offset, 0, &e, &offset), 0);
    page = e.count;
    n += page;
    harness_events_free(&e);
  } while (page > 0);
  return n;
}

/* Events in the stream, page by page. */
static size_t stream_length(struct harness_fixture *f, const char *stream) {
  size_t n = 0, page;
  do {
    struct harness_events e;
    assert_int_equal(harness_read_stream(f->store, stream, (uint32_t)n, 0, &e), 0);
    page = e.count;
    n += page;
    harness_events_free(&e);
  } while (page > 0);
  return n;
}

static void a_failed_index_commit_is_indexed_from_the_log(void **state) {
  struct harness_fixture *f = *state;
  struct harness_result r;
  assert_int_equal(harness_fixture_append(f, "s", 0, 2, NULL, NULL), 0);
  atomic_store(&failures_left, 1);
  assert_int_equal(harness_fixture_append(f, "s", 2, 3, NULL, &r), 0);
  assert_int_equal(atomic_load(&failures_left), 0); /* the failure did happen */
  assert_int_equal(r.first_version, 2);
  assert_int_equal(stream_length(f, "s"), 5);
  assert_int_equal(harness_fixture_append(f, "s", 5, 1, NULL, &r), 0);
  assert_int_equal(r.first_version, 5);
}

/* The nth (from 0) of the other streams "t-<i>" of the shard that owns "s". */
static void stream_next_to_s(char *out, size_t len, unsigned nth) {
  unsigned shards = 2, owner = evf_stream_shard("s", 1, shards);
  for (unsigned i = 0;; i++) {
    snprintf(out, len, "t-%u", i);
    if (evf_stream_shard(out, strlen(out), shards) == owner && nth-- == 0)
      return;
  }
}

static void a_shard_repairs_its_index_before_it_decides_more(void **state) {
  struct harness_fixture *f = *state;
  struct harness_result r;
  char neighbour[32];
  stream_next_to_s(neighbour, sizeof(neighbour), 0);
  assert_int_equal(store_shard_count(f->store), 2);
  assert_int_equal(harness_fixture_append(f, "s", 0, 1, NULL, NULL), 0);
  atomic_store(&failures_left, FAIL_ALWAYS);
  /* stored in the log, but not indexed: not acknowledged */
  assert_int_equal(harness_fixture_append(f, "s", 1, 2, NULL, NULL), EVF_EINTERNAL);
  /* nothing is decided against the index that lacks them */
  assert_int_equal(harness_fixture_append(f, "s", 1, 1, NULL, NULL), EVF_EFULL);
  assert_int_equal(harness_fixture_append(f, neighbour, -1, 1, NULL, NULL), EVF_EFULL);
  atomic_store(&failures_left, 0);
  assert_int_equal(harness_fixture_append(f, "s", 1, 1, NULL, &r), EVF_EVERSION);
  assert_int_equal(r.actual_version, 3);
  assert_int_equal(harness_fixture_append(f, "s", 3, 1, NULL, &r), 0);
  assert_int_equal(r.first_version, 3);
  assert_int_equal(stream_length(f, "s"), 4);
  struct harness_events e;
  uint64_t checkpoint;
  assert_int_equal(harness_read_global(f->store, 0, 0, &e, &checkpoint), 0);
  assert_int_equal(e.count, 4);
  harness_events_free(&e);
}

/* Reads do not wait for another append: the shard retries the repair on its own. */
static void the_repair_is_retried_without_appends(void **state) {
  struct harness_fixture *f = *state;
  assert_int_equal(harness_fixture_append(f, "s", 0, 1, NULL, NULL), 0);
  atomic_store(&failures_left, FAIL_ALWAYS);
  assert_int_equal(harness_fixture_append(f, "s", 1, 2, NULL, NULL), EVF_EINTERNAL);
  assert_int_equal(stream_length(f, "s"), 1);
  atomic_store(&failures_left, 0);
  /* The retry comes within a second or so; the bound leaves room for a slow machine. */
  uint64_t deadline = evf_monotonic_ns() + 10ull * 1000 * 1000 * 1000;
  while (stream_length(f, "s") < 3 && evf_monotonic_ns() < deadline) {
    struct timespec pause = {0, 10 * 1000 * 1000};
    nanosleep(&pause, NULL);
  }
  assert_int_equal(stream_length(f, "s"), 3);
}

/*
 * A batch that failed in the log took a stream id with it; the index's
 * counter does not know it. A new stream whose batch is then indexed from
 * the log gets its id from the index, and later appends must use that id.
 */
static void a_stream_indexed_from_the_log_keeps_the_index_s_id(void **state) {
  struct harness_fixture *f = *state;
  struct harness_result r;
  char lost[32], kept[32];
  stream_next_to_s(lost, sizeof(lost), 0);
  stream_next_to_s(kept, sizeof(kept), 1);
  const char *log_file = evf_stream_shard("s", 1, 2) == 0 ? "shard-000/data.mdb"
                                                          : "shard-001/data.mdb";
  assert_int_equal(harness_fixture_append(f, "s", -1, 1, NULL, NULL), 0);
  atomic_store(&failing_files, log_file);
  atomic_store(&failures_left, 1);
  assert_int_equal(harness_fixture_append(f, lost, -1, 1, NULL, NULL), EVF_EFULL);
  assert_int_equal(atomic_load(&failures_left), 0); /* the log's write did fail */
  atomic_store(&failing_files, INDEX_FILES);
  atomic_store(&failures_left, 1);
  assert_int_equal(harness_fixture_append(f, kept, -1, 1, NULL, NULL), 0);
  assert_int_equal(atomic_load(&failures_left), 0); /* so did the index's */
  assert_int_equal(harness_fixture_append(f, kept, 1, 2, NULL, &r), 0);
  assert_int_equal(r.first_version, 1);
  assert_int_equal(stream_length(f, kept), 3);
  assert_int_equal(stream_length(f, lost), 0);
  /* A stream created after them gets an id of its own. */
  assert_int_equal(harness_fixture_append(f, lost, -1, 1, NULL, NULL), 0);
  assert_int_equal(stream_length(f, lost), 1);
  assert_int_equal(stream_length(f, kept), 3);
}

/*
 * A disk that fills during a log commit: LMDB sees a page write cut short
 * and reports EIO. With no room left the append fails with storage full;
 * with room (an I/O error of another kind) it stays an internal error.
 * Either way nothing stored is lost, and the same append then succeeds.
 */
static void a_log_write_cut_short_on_a_full_disk_is_storage_full(void **state) {
  struct harness_fixture *f = *state;
  const char *log_file = evf_stream_shard("s", 1, 2) == 0 ? "shard-000/data.mdb"
                                                          : "shard-001/data.mdb";
  assert_int_equal(harness_fixture_append(f, "s", -1, 2, NULL, NULL), 0);
  atomic_store(&failing_files, log_file);
  atomic_store(&writes_cut_short, true);
  atomic_store(&no_room_left, true);
  atomic_store(&failures_left, 1);
  assert_int_equal(harness_fixture_append(f, "s", 2, 1, NULL, NULL), EVF_EFULL);
  assert_int_equal(atomic_load(&failures_left), 0); /* the log's write was cut short */
  atomic_store(&no_room_left, false);
  atomic_store(&failures_left, 1);
  assert_int_equal(harness_fixture_append(f, "s", 2, 1, NULL, NULL), -EIO);
  assert_int_equal(atomic_load(&failures_left), 0);
  assert_int_equal(stream_length(f, "s"), 2);
  assert_int_equal(harness_fixture_append(f, "s", 2, 1, NULL, NULL), 0);
  assert_int_equal(stream_length(f, "s"), 3);
}

/* The file systems on which the store maps its index writable (index_room.c). */
static bool overwrites_in_place(const char *dir) {
  struct statfs fs;
  assert_int_equal(statfs(dir, &fs), 0);
  return fs.f_type == EXT4_SUPER_MAGIC || fs.f_type == TMPFS_MAGIC;
}

/* The apparent size of shard 0's index file: the map's size once mapped writable. */
static off_t index_file_size(const struct harness_fixture *f) {
  char path[4300];
  struct stat st;
  snprintf(path, sizeof(path), "%s/shard-000/index/data.mdb", f->dir);
  assert_int_equal(stat(path, &st), 0);
  return st.st_size;
}

/*
 * A mapped index on a disk that fills up: the batch whose index could need
 * more room than is left is refused whole, before the log has any of it (a
 * store into an unallocated page would have raised SIGBUS instead).
 */
static void a_disk_without_room_for_the_index_refuses_the_batch(void **state) {
  struct harness_fixture *f = *state;
  struct harness_result r;
  if (!overwrites_in_place(f->dir))
    skip(); /* the index is never mapped there */
  atomic_store(&allocatable, ROOM);
  harness_fixture_reopen(f);
  assert_int_equal(index_file_size(f), HARNESS_MAP_SIZE); /* mapped writable */
  size_t stored = 0;
  int rc = 0;
  while (stored < MAX_FILL_EVENTS &&
         (rc = harness_fixture_append(f, "s", (int32_t)stored, FILL_APPEND, NULL, NULL)) == 0)
    stored += FILL_APPEND;
  assert_int_equal(rc, EVF_EFULL);
  assert_true(atomic_load(&allocations_refused) > 0);
  assert_int_equal(stream_length(f, "s"), stored);
  assert_int_equal(global_length(f), stored); /* the refused batch is not in the log either */
  /* Room again: the same append goes through. */
  atomic_store(&allocatable, ANY_LENGTH);
  assert_int_equal(harness_fixture_append(f, "s", (int32_t)stored, FILL_APPEND, NULL, &r), 0);
  assert_int_equal(r.first_version, stored);
  assert_int_equal(stream_length(f, "s"), stored + FILL_APPEND);
}

static void remove_indexes(const struct harness_fixture *f) {
  for (unsigned shard = 0; shard < 2; shard++) { /* the fixture's shards */
    char *index = malloc(4300);
    assert_non_null(index);
    snprintf(index, 4300, "%s/shard-%03u/index", f->dir, shard);
    harness_remove_dir(index);
  }
}

/*
 * New indexes (the index folders were lost) on a disk that fills up: with
 * no room at all, the store opens them unmapped, written with pwrite, whose
 * full disk is an error and not a SIGBUS; with room for the probe but not
 * for the first transaction's reservation, it refuses to open, with
 * storage full; with room again, it opens them mapped. Each time the index
 * is rebuilt from the log. (That the reservation comes before LMDB's first
 * store into the map is not seen here: this disk is not really full.)
 */
static void new_indexes_on_a_full_disk_are_never_mapped_into_holes(void **state) {
  struct harness_fixture *f = *state;
  if (!overwrites_in_place(f->dir))
    skip(); /* the index is never mapped there */
  assert_int_equal(harness_fixture_append(f, "s", -1, 10, NULL, NULL), 0);
  harness_fixture_close(f);

  remove_indexes(f);
  atomic_store(&allocatable, 0);
  harness_fixture_open(f);
  assert_true(index_file_size(f) < HARNESS_MAP_SIZE); /* not mapped */
  assert_int_equal(stream_length(f, "s"), 10);
  harness_fixture_close(f);

  remove_indexes(f);
  atomic_store(&allocatable, 4096); /* the probe's length */
  atomic_store(&allocations_refused, 0);
  struct evf_store *refused = NULL;
  assert_int_equal(harness_try_open(f->dir, NULL, &refused), EVF_EFULL);
  assert_null(refused);
  assert_true(atomic_load(&allocations_refused) > 0);

  atomic_store(&allocatable, ANY_LENGTH);
  harness_fixture_open(f);
  assert_int_equal(index_file_size(f), HARNESS_MAP_SIZE); /* mapped writable */
  assert_int_equal(stream_length(f, "s"), 10);
}

/*
 * The client id of a batch the log took but the index did not stays
 * claimed until the repair: an append of it to a stream of the other
 * shard waits, then finds it stored (the repair runs on its timer, a
 * second later). Without the claim, it stored the id a second time.
 */
static void an_unindexed_client_id_is_not_stored_again_elsewhere(void **state) {
  struct harness_fixture *f = *state;
  static const char *const ids[] = {"11111111-2222-4333-8444-555555555555"};
  unsigned owner = evf_stream_shard("s", 1, 2);
  char other[32];
  for (unsigned i = 0;; i++) {
    snprintf(other, sizeof(other), "o-%u", i);
    if (evf_stream_shard(other, strlen(other), 2) != owner)
      break;
  }
  static char failing[64];
  snprintf(failing, sizeof(failing), "shard-%03u/index/data.mdb", owner);
  assert_int_equal(harness_fixture_append(f, "s", -1, 1, NULL, NULL), 0);
  atomic_store(&failing_files, failing);
  atomic_store(&failures_left, FAIL_ALWAYS);
  assert_int_equal(harness_fixture_append(f, "s", 1, 1, ids, NULL), EVF_EINTERNAL);
  atomic_store(&failures_left, 0);
  assert_int_equal(harness_fixture_append(f, other, -1, 1, ids, NULL), EVF_EEXIST);
  assert_int_equal(stream_length(f, "s"), 2);
}

int main(void) {
  real_pwrite = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
  real_writev = (ssize_t(*)(int, const struct iovec *, int))dlsym(RTLD_NEXT, "writev");
  real_fallocate = (int (*)(int, int, off_t, off_t))dlsym(RTLD_NEXT, "fallocate");
  real_fstatvfs = (int (*)(int, struct statvfs *))dlsym(RTLD_NEXT, "fstatvfs");
  if (real_pwrite == NULL || real_writev == NULL || real_fallocate == NULL ||
      real_fstatvfs == NULL) {
    fprintf(stderr, "cannot find libc's pwrite, writev, fallocate and fstatvfs\n");
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(a_failed_index_commit_is_indexed_from_the_log, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(an_unindexed_client_id_is_not_stored_again_elsewhere,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(a_shard_repairs_its_index_before_it_decides_more, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(the_repair_is_retried_without_appends, setup, teardown),
      cmocka_unit_test_setup_teardown(a_stream_indexed_from_the_log_keeps_the_index_s_id, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(a_disk_without_room_for_the_index_refuses_the_batch, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(new_indexes_on_a_full_disk_are_never_mapped_into_holes,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(a_log_write_cut_short_on_a_full_disk_is_storage_full, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
