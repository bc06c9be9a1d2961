/* Allocations that fail on purpose (failing_alloc.h). */
#include "failing_alloc.h"

/* Allocations left before the one that fails; -1: none fails. */
static long countdown = -1;
static bool injected;

static bool should_fail(void) {
  if (countdown < 0 || countdown-- > 0)
    return false;
  injected = true;
  return true;
}

void *__wrap_malloc(size_t size) { return should_fail() ? NULL : __real_malloc(size); }
void *__wrap_calloc(size_t n, size_t size) { return should_fail() ? NULL : __real_calloc(n, size); }
void *__wrap_realloc(void *p, size_t size) {
  return should_fail() ? NULL : __real_realloc(p, size);
}

void fail_allocation(long n) {
  countdown = n;
  injected = false;
}

bool stop_failing(void) {
  countdown = -1;
  return injected;
}
