#include "waker.h"

#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

int waker_open(struct waker *w) {
  w->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (w->fd < 0)
    return -errno;
  w->open = true;
  atomic_init(&w->pending, false);
  return 0;
}

static void readable_cb(uv_poll_t *handle, int status, int events) {
  struct waker *w = handle->data;
  (void)status;
  (void)events;
  uint64_t count;
  /* Resets the counter; EAGAIN after a spurious readiness is harmless. */
  ssize_t n = read(w->fd, &count, sizeof(count));
  (void)n;
  /* Before the callback, so that a send racing it wakes the loop again. */
  atomic_exchange(&w->pending, false);
  w->cb(w);
}

int waker_start(struct waker *w, uv_loop_t *loop, void (*cb)(struct waker *), void *data) {
  w->cb = cb;
  w->data = data;
  int rc = uv_poll_init(loop, &w->poll, w->fd);
  if (rc != 0)
    return rc;
  w->poll.data = w;
  rc = uv_poll_start(&w->poll, UV_READABLE, readable_cb);
  if (rc != 0)
    uv_close((uv_handle_t *)&w->poll, NULL);
  return rc;
}

void waker_stop(struct waker *w) { uv_close((uv_handle_t *)&w->poll, NULL); }

void waker_send(struct waker *w) {
  if (atomic_exchange(&w->pending, true))
    return; /* a wake-up is already under way */
  uint64_t one = 1;
  /* Only fails if the counter would overflow, and then the fd is readable anyway. */
  ssize_t n = write(w->fd, &one, sizeof(one));
  (void)n;
}

void waker_destroy(struct waker *w) {
  if (w->open)
    close(w->fd);
  w->open = false;
}
