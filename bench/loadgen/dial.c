#include "dial.h"

#include <stdio.h>

static void fail(struct lg_dial *d, int status) {
  char why[320];
  if (status != 0)
    snprintf(why, sizeof(why), "cannot connect to %s: %s", d->authority, uv_strerror(status));
  else
    snprintf(why, sizeof(why), "cannot connect to %s: no answer within %.1f s", d->authority,
             (double)d->timeout_ns / 1e9);
  d->done(d, why);
}

static void timeout_cb(uv_timer_t *t) {
  struct lg_dial *d = t->data;
  fail(d, d->early_error);
}

static void connect_cb(uv_connect_t *req, int status) {
  struct lg_dial *d = req->data;
  uv_timer_stop(&d->timer);
  if (status != 0) {
    fail(d, status);
    return;
  }
  uv_tcp_nodelay((uv_tcp_t *)req->handle, 1);
  d->done(d, NULL);
}

void lg_dial_start(struct lg_dial *d, uv_loop_t *loop, uv_tcp_t *tcp,
                   const struct sockaddr *addr) {
  uv_timer_init(loop, &d->timer);
  d->timer.data = d;
  d->req.data = d;
  d->early_error = uv_tcp_connect(&d->req, tcp, addr, connect_cb);
  uint64_t timeout_ms = d->early_error != 0 ? 0 : (d->timeout_ns + 999999) / 1000000;
  uv_timer_start(&d->timer, timeout_cb, timeout_ms, 0);
}

void lg_dial_close(struct lg_dial *d, uv_close_cb cb) {
  d->timer.data = d->data;
  uv_close((uv_handle_t *)&d->timer, cb);
}
