#include "committer.h"

#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

static void wake_thread(struct committer *c) {
  uint64_t one = 1;
  /* An eventfd write fails only if the counter would overflow: it is readable then. */
  ssize_t n = write(c->fd, &one, sizeof(one));
  (void)n;
}

static void wait_for_wake(struct committer *c) {
  uint64_t count;
  while (read(c->fd, &count, sizeof(count)) < 0 && errno == EINTR)
    continue;
}

static void thread_main(void *arg) {
  struct committer *c = arg;
  for (;;) {
    wait_for_wake(c);
    if (atomic_exchange(&c->job, false)) {
      c->run(c->arg);
      atomic_store(&c->done, true);
      waker_send(c->wake);
    }
    if (atomic_load(&c->stopping))
      return;
  }
}

int committer_start(struct committer *c, void (*run)(void *), void *arg, struct waker *wake) {
  c->fd = eventfd(0, EFD_CLOEXEC); /* blocking: the thread sleeps in read */
  if (c->fd < 0)
    return -errno;
  atomic_init(&c->job, false);
  atomic_init(&c->done, false);
  atomic_init(&c->stopping, false);
  c->run = run;
  c->arg = arg;
  c->wake = wake;
  int rc = uv_thread_create(&c->thread, thread_main, c);
  if (rc != 0) {
    close(c->fd);
    return rc;
  }
  c->started = true;
  return 0;
}

void committer_submit(struct committer *c) {
  atomic_store(&c->job, true);
  wake_thread(c);
}

bool committer_take_done(struct committer *c) { return atomic_exchange(&c->done, false); }

void committer_stop(struct committer *c) {
  if (!c->started)
    return;
  atomic_store(&c->stopping, true);
  wake_thread(c);
  uv_thread_join(&c->thread);
  close(c->fd); /* only the loop and this call wake the thread */
  c->started = false;
}
