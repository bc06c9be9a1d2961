#ifndef SHARDS_WAKER_H
#define SHARDS_WAKER_H

/*
 * Wakes a libuv loop from any thread: what uv_async_t does, without its
 * spin. libuv 1.44's async handle makes the woken loop busy-wait while a
 * sender is inside uv_async_send, so that uv_close never races a send; with
 * more busy threads than cores the sender is often preempted right there,
 * and at 10,000 appends/s the loops spent 9% of the server's time spinning
 * (perf). Here sends may race anything: the eventfd stays open until
 * waker_destroy(), which runs once every thread that could send has ended.
 *
 * Sends coalesce: `pending` is set by the first send and cleared by the
 * callback (an exchange, which synchronizes with the senders' exchanges)
 * before it runs, so whatever a sender published before sending is seen
 * by that run or causes another one.
 */

#include <stdatomic.h>
#include <stdbool.h>
#include <uv.h>

struct waker {
  uv_poll_t poll;
  int fd;                        /* eventfd, valid while open */
  bool open;
  atomic_bool pending;
  void (*cb)(struct waker *);
  void *data;
};

/** Creates the eventfd. Any thread, before sends. Returns 0 or -errno. */
int waker_open(struct waker *w);

/** Calls cb on loop's thread after sends. On that thread. Returns 0 or a libuv error. */
int waker_start(struct waker *w, uv_loop_t *loop, void (*cb)(struct waker *), void *data);

/** Stops the callbacks (closes the poll handle; run the loop to finish). On the loop's thread. */
void waker_stop(struct waker *w);

/** Any thread, between waker_open and waker_destroy. */
void waker_send(struct waker *w);

/** Closes the eventfd, once no thread can send and the waker is stopped. */
void waker_destroy(struct waker *w);

#endif
