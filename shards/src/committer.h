#ifndef SHARDS_COMMITTER_H
#define SHARDS_COMMITTER_H

/*
 * A shard's committer: a thread that runs the shard's write transactions,
 * one at a time, so that their sync never blocks the loop. It replaces the
 * libuv pool, whose hand-off cost a mutex, a condition variable and a
 * uv_async_t per commit (the async spins; see waker.h).
 *
 * The loop fills the batch, then committer_submit(): the job flag is set
 * (release) before the thread is woken through its eventfd, and the thread
 * takes it with an exchange (acquire). After the job the thread sets `done`
 * (release) and wakes the loop's waker; committer_take_done() exchanges it
 * (acquire), so the loop sees everything the job wrote. Wake-ups are
 * counted by the eventfd, so one sent before the thread waits is not lost.
 */

#include "waker.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <uv.h>

struct committer {
  uv_thread_t thread;
  int fd;                      /* eventfd the thread blocks on */
  bool started;
  atomic_bool job;             /* submitted, not taken by the thread yet */
  atomic_bool done;            /* ran; the loop has not taken the result yet */
  atomic_bool stopping;
  void (*run)(void *arg);      /* the job, on the committer's thread */
  void *arg;
  struct waker *wake;          /* the loop's, woken after each job */
};

/** Starts the thread. Returns 0 or a -errno / libuv error. */
int committer_start(struct committer *c, void (*run)(void *), void *arg, struct waker *wake);

/** Runs the job once on the thread. Loop thread; one job at a time. */
void committer_submit(struct committer *c);

/** True once after each job ran (then its results are visible). Loop thread. */
bool committer_take_done(struct committer *c);

/** Ends and joins the thread, once no job is pending, and closes its eventfd. Not on the thread. */
void committer_stop(struct committer *c);

#endif
