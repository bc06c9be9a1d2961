/*
 * Preloaded (LD_PRELOAD) into the server by integration tests: while the
 * file EVF_FAIL_ALLOC names exists, one allocation in EVF_FAIL_ALLOC_EVERY
 * (default 20) fails as it does out of memory: malloc, calloc, realloc,
 * aligned_alloc and posix_memalign, on every thread, nghttp2's, LMDB's and
 * libuv's included.
 *
 * The flag is looked at by every allocation (a system call each: a test's
 * server is slower, and failures begin and end exactly with the file).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef void *(*malloc_fn)(size_t);
typedef void *(*calloc_fn)(size_t, size_t);
typedef void *(*realloc_fn)(void *, size_t);
typedef void *(*aligned_alloc_fn)(size_t, size_t);
typedef int (*posix_memalign_fn)(void **, size_t, size_t);
typedef void (*free_fn)(void *);

static malloc_fn real_malloc;
static calloc_fn real_calloc;
static realloc_fn real_realloc;
static aligned_alloc_fn real_aligned_alloc;
static posix_memalign_fn real_posix_memalign;
static free_fn real_free;

static const char *flag_path;
static long fail_every = 20;
static atomic_ulong allocations;

/*
 * dlsym may allocate before the real functions are known: those few
 * allocations come from here and are never freed.
 */
static _Alignas(max_align_t) unsigned char early[4096];
static atomic_size_t early_used;

static bool is_early(const void *p) {
  return (const unsigned char *)p >= early && (const unsigned char *)p < early + sizeof(early);
}

static void *early_alloc(size_t size) {
  size_t rounded = (size + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
  size_t at = atomic_fetch_add(&early_used, rounded);
  return at + rounded <= sizeof(early) ? early + at : NULL;
}

__attribute__((constructor)) static void find_real_functions(void) {
  real_malloc = (malloc_fn)dlsym(RTLD_NEXT, "malloc");
  real_calloc = (calloc_fn)dlsym(RTLD_NEXT, "calloc");
  real_realloc = (realloc_fn)dlsym(RTLD_NEXT, "realloc");
  real_aligned_alloc = (aligned_alloc_fn)dlsym(RTLD_NEXT, "aligned_alloc");
  real_posix_memalign = (posix_memalign_fn)dlsym(RTLD_NEXT, "posix_memalign");
  real_free = (free_fn)dlsym(RTLD_NEXT, "free");
  flag_path = getenv("EVF_FAIL_ALLOC");
  const char *every = getenv("EVF_FAIL_ALLOC_EVERY");
  if (every != NULL && atol(every) > 0)
    fail_every = atol(every);
}

static bool ready(void) { return real_free != NULL; }

/* Whether this allocation fails. */
static bool failing(void) {
  if (flag_path == NULL)
    return false;
  if (access(flag_path, F_OK) != 0)
    return false;
  return atomic_fetch_add(&allocations, 1) % (unsigned long)fail_every == 0;
}

void *malloc(size_t size) {
  if (!ready())
    return early_alloc(size);
  return failing() ? NULL : real_malloc(size);
}

void *calloc(size_t n, size_t size) {
  if (!ready()) {
    void *p = n != 0 && size > SIZE_MAX / n ? NULL : early_alloc(n * size);
    return p ? memset(p, 0, n * size) : NULL;
  }
  return failing() ? NULL : real_calloc(n, size);
}

void *realloc(void *p, size_t size) {
  if (!ready() || is_early(p)) {
    void *moved = early_alloc(size);
    if (moved != NULL && p != NULL) {
      size_t room = (size_t)(early + sizeof(early) - (unsigned char *)p);
      memcpy(moved, p, size < room ? size : room); /* the old block's size is not kept */
    }
    return moved;
  }
  /* realloc to 0 frees: that cannot fail */
  return size != 0 && failing() ? NULL : real_realloc(p, size);
}

void *aligned_alloc(size_t alignment, size_t size) {
  return !ready() || failing() ? NULL : real_aligned_alloc(alignment, size);
}

int posix_memalign(void **out, size_t alignment, size_t size) {
  return !ready() || failing() ? ENOMEM : real_posix_memalign(out, alignment, size);
}

void free(void *p) {
  if (p == NULL || is_early(p))
    return;
  real_free(p);
}
