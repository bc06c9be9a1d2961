#ifndef SHARDS_RING_H
#define SHARDS_RING_H

/*
 * The SPSC ck_ring carrying struct store_append pointers between a port and
 * a shard. ck orders the ring with plain accesses and CPU fences, which
 * ThreadSanitizer cannot see, so under TSan the helpers below annotate the
 * same ordering (RING_* are no-ops otherwise).
 */

#include <ck_ring.h>
#include <stdbool.h>

#if defined(__SANITIZE_THREAD__)
#define RING_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RING_TSAN 1
#endif
#endif

#ifdef RING_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define RING_RELEASE(addr) __tsan_release(addr)
#define RING_ACQUIRE(addr) __tsan_acquire(addr)
#else
#define RING_RELEASE(addr) ((void)(addr))
#define RING_ACQUIRE(addr) ((void)(addr))
#endif

struct ring {
  struct ck_ring ring;
  ck_ring_buffer_t *buffer;
};

/*
 * Happens-before for TSan: the producer releases the ring's tail after
 * writing a slot and before publishing it; the consumer acquires it after
 * seeing the slot and before reading it, then releases the head so that the
 * producer's reuse of the slot is ordered after the read.
 */
#define RING_BEFORE_WRITE(ck) RING_ACQUIRE(&(ck)->c_head)
#define RING_AFTER_WRITE(ck) RING_RELEASE(&(ck)->p_tail)
#define RING_BEFORE_READ(ck) RING_ACQUIRE(&(ck)->p_tail)
#define RING_AFTER_READ(ck) RING_RELEASE(&(ck)->c_head)

/** Producer side. Returns false when the ring is full. */
static inline bool ring_push(struct ring *r, void *msg) {
  RING_BEFORE_WRITE(&r->ring);
  void **slot = ck_ring_enqueue_reserve_spsc(&r->ring, r->buffer);
  if (slot == NULL)
    return false;
  *slot = msg;
  RING_AFTER_WRITE(&r->ring);
  ck_ring_enqueue_commit_spsc(&r->ring);
  return true;
}

/** Consumer side. Returns false when the ring is empty. */
static inline bool ring_pop(struct ring *r, void *msg_out) {
  if (ck_ring_size(&r->ring) == 0)
    return false;
  RING_BEFORE_READ(&r->ring);
  bool popped = ck_ring_dequeue_spsc(&r->ring, r->buffer, msg_out);
  RING_AFTER_READ(&r->ring);
  return popped;
}

#endif
