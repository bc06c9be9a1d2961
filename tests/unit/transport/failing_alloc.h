#ifndef TESTS_FAILING_ALLOC_H
#define TESTS_FAILING_ALLOC_H

/*
 * Allocation failures for unit tests whose link wraps malloc, calloc and
 * realloc (-Wl,--wrap, see CMakeLists.txt): once armed, the n-th
 * allocation of our code fails, so a test can walk every allocation of an
 * operation and check each failure. Shared libraries (protobuf-c, jansson)
 * are outside the wrap unless our code hands them an allocator.
 */
#include <stdbool.h>
#include <stddef.h>

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);

/** Makes the n-th allocation from now fail (0: the next one); -1 stops failing. */
void fail_allocation(long n);
/** Stops failing; returns whether an allocation failed since fail_allocation(). */
bool stop_failing(void);

#endif
