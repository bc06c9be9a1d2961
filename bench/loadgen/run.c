/* A run, driven from the main thread. */
#include "run.h"

#include "evf/clock.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- templates ---- */

/*
 * Client ids start with 32 bits that differ from run to run: a second run
 * against the same server sends none of the first's.
 */
static uint32_t id_nonce(void) {
  return (uint32_t)(evf_now_ms() * 2654435761u) ^ (uint32_t)getpid() ^
         (uint32_t)evf_monotonic_ns();
}

static int grpc_append(struct lg_run *run, struct lg_tmpl *t, const char *name,
                       const uint8_t *payload) {
  const struct lg_options *o = run->opt;
  if (o->client_ids)
    return lg_req_grpc_append_with_ids(t, name, run->name_width, o->events_per_append, payload,
                                       o->event_size, id_nonce());
  return lg_req_grpc_append(t, name, run->name_width, o->events_per_append, payload,
                            o->event_size);
}

static int build_template(struct lg_run *run, enum lg_op_id op, const char *name,
                          const uint8_t *payload, uint32_t limit_stream, uint32_t limit_global) {
  const struct lg_options *o = run->opt;
  unsigned width = run->name_width;
  struct lg_tmpl *t = &run->proto_req[op];
  bool grpc = run->proto == LG_PROTO_GRPC;
  int rc;
  switch (op) {
  case LG_OP_BATCH_APPEND:
    if (!grpc)
      return -ENOTSUP;
    /* the same AppendToStreamRequest, wrapped per send */
    __attribute__((fallthrough));
  case LG_OP_APPEND:
    rc = grpc ? grpc_append(run, t, name, payload)
              : lg_req_http_append(t, run->authority, name, width, o->events_per_append, payload,
                                   o->event_size);
    if (rc == 0 && grpc)
      lg_tmpl_set_tail(t, (uint64_t)(int64_t)-1);
    if (rc == 0 && run->subs == LG_SUBS_LIVE)
      rc = lg_tmpl_find_stamp(t, payload, o->event_size);
    return rc;
  case LG_OP_SUBSCRIBE:
    if (!grpc)
      return -ENOTSUP;
    rc = lg_req_grpc_subscribe_all(t);
    if (rc == 0)
      lg_tmpl_set_tail(t, run->sub_offset);
    return rc;
  case LG_OP_EVENT_COUNT:
    return grpc ? lg_req_grpc_event_count(t) : -ENOTSUP;
  case LG_OP_APPEND_OCC:
    if (!grpc)
      return -ENOTSUP;
    return grpc_append(run, t, name, payload);
  case LG_OP_READ_STREAM:
    return grpc ? lg_req_grpc_get_stream(t, name, width, limit_stream)
                : lg_req_http_get_stream(t, run->authority, name, width, limit_stream);
  case LG_OP_READ_GLOBAL:
    return grpc ? lg_req_grpc_get_global(t, limit_global)
                : lg_req_http_get_global(t, run->authority, limit_global);
  case LG_OP_PREFILL:
    rc = grpc ? lg_req_grpc_append(t, name, width, run->prefill_chunk, payload, o->event_size)
              : lg_req_http_append(t, run->authority, name, width, run->prefill_chunk, payload,
                                   o->event_size);
    if (rc == 0 && grpc)
      lg_tmpl_set_tail(t, (uint64_t)(int64_t)-1);
    if (rc == 0 && run->prefill_last != run->prefill_chunk) {
      struct lg_tmpl *last = &run->proto_prefill_last;
      rc = grpc ? lg_req_grpc_append(last, name, width, run->prefill_last, payload, o->event_size)
                : lg_req_http_append(last, run->authority, name, width, run->prefill_last, payload,
                                     o->event_size);
      if (rc == 0 && grpc)
        lg_tmpl_set_tail(last, (uint64_t)(int64_t)-1);
    }
    return rc;
  case LG_OP_COUNT:
    break;
  }
  return -EINVAL;
}

int lg_run_prepare(struct lg_run *run, uint32_t limit_stream, uint32_t limit_global) {
  const struct lg_options *o = run->opt;
  for (unsigned i = 0; i < LG_OP_COUNT; i++) {
    run->proto_req[i] = (struct lg_tmpl){.name_at = SIZE_MAX, .tail_at = SIZE_MAX};
    run->weight_total += run->weights[i];
  }
  run->proto_prefill_last = (struct lg_tmpl){.name_at = SIZE_MAX, .tail_at = SIZE_MAX};
  run->name_width = lg_options_name_width(o);
  run->writers_per_conn = run->subs == LG_SUBS_CATCH_UP ? 0
                          : run->proto == LG_PROTO_HTTP  ? 1
                                                         : run->concurrency;
  run->slots_per_conn =
      run->writers_per_conn + (run->subscribers + run->connections - 1) / run->connections;
  run->total_slots = run->connections * run->writers_per_conn;
  run->timeout_ns = (uint64_t)(o->timeout_s * 1e9);
  atomic_init(&run->go, 0);
  atomic_init(&run->stop_ns, 0);
  atomic_init(&run->ready, 0);
  atomic_init(&run->done, 0);
  atomic_init(&run->drained, 0);
  atomic_init(&run->acked_in_window, 0);
  if (run->weight_total == 0)
    return -EINVAL;

  char name[LG_MAX_STREAM_NAME + 1];
  snprintf(name, sizeof(name), "%s", o->stream_prefix);
  size_t len = strlen(name);
  memset(name + len, '0', run->name_width);
  name[len + run->name_width] = '\0';
  uint8_t *payload = malloc(o->event_size ? o->event_size : 1);
  if (payload == NULL)
    return -ENOMEM;
  for (uint32_t i = 0; i < o->event_size; i++)
    payload[i] = (uint8_t)('a' + i % 26);
  int rc = 0;
  for (unsigned op = 0; op < LG_OP_COUNT && rc == 0; op++)
    if (run->weights[op] || (op == LG_OP_SUBSCRIBE && run->subscribers))
      rc = build_template(run, (enum lg_op_id)op, name, payload, limit_stream, limit_global);
  free(payload);
  return rc;
}

void lg_run_deinit(struct lg_run *run) {
  for (unsigned i = 0; i < LG_OP_COUNT; i++)
    lg_tmpl_free(&run->proto_req[i]);
  lg_tmpl_free(&run->proto_prefill_last);
}

/* ---- driving the workers ---- */

struct driver {
  struct lg_run *run;
  struct lg_worker *workers;
  unsigned started;
  uv_async_t notify;
  uv_signal_t sigint, sigterm;
  uv_timer_t progress;
  uv_timer_t deadline;
  bool show_progress;
  bool deadline_passed;
  bool going;
  bool closing;
  bool interrupted;
  bool drained_told;
  uint64_t last_ok, last_events, last_bytes, last_ns;
  int progress_len;
};

static void wake_all(struct driver *d) {
  for (unsigned i = 0; i < d->started; i++)
    lg_worker_wake(&d->workers[i]);
}

static void stop_all(struct driver *d) {
  uint_fast64_t expected = 0;
  atomic_compare_exchange_strong(&d->run->stop_ns, &expected, evf_monotonic_ns());
  wake_all(d);
}

static void clear_progress(struct driver *d) {
  if (d->progress_len > 0)
    fprintf(stderr, "\r%*s\r", d->progress_len, "");
  d->progress_len = 0;
}

static void close_driver(struct driver *d) {
  d->closing = true;
  clear_progress(d);
  uv_close((uv_handle_t *)&d->notify, NULL);
  uv_close((uv_handle_t *)&d->sigint, NULL);
  uv_close((uv_handle_t *)&d->sigterm, NULL);
  uv_close((uv_handle_t *)&d->progress, NULL);
  uv_close((uv_handle_t *)&d->deadline, NULL);
}

static void progress_cb(uv_timer_t *t);

static void notify_cb(uv_async_t *h) {
  struct driver *d = h->data;
  struct lg_run *run = d->run;
  if (d->closing)
    return;
  if (atomic_load(&run->done) == d->started) {
    /* Join before closing: a worker's last uv_async_send may still be on its way. */
    for (unsigned i = 0; i < d->started; i++)
      lg_worker_join(&d->workers[i]);
    close_driver(d);
    return;
  }
  if (!d->drained_told && run->subs == LG_SUBS_LIVE && atomic_load(&run->drained) == run->threads) {
    d->drained_told = true;
    wake_all(d); /* every subscriber now knows what it is owed */
  }
  if (atomic_load(&run->stop_ns) != 0) {
    stop_all(d);
    return;
  }
  if (!d->going && atomic_load(&run->ready) == d->started) {
    d->going = true;
    uint64_t now = evf_monotonic_ns();
    run->t_start = now;
    bool until_done = run->items || run->subs == LG_SUBS_CATCH_UP; /* measured from the start */
    run->t_measure = until_done ? now : now + (uint64_t)(run->warmup_s * 1e9);
    run->t_end = until_done || run->requests ? UINT64_MAX
                                             : run->t_measure + (uint64_t)(run->duration_s * 1e9);
    d->last_ns = now;
    atomic_store_explicit(&run->go, 1, memory_order_release);
    wake_all(d);
    if (d->show_progress)
      uv_timer_start(&d->progress, progress_cb, 1000, 1000);
  }
}

static void deadline_cb(uv_timer_t *t) {
  struct driver *d = t->data;
  d->deadline_passed = true;
  stop_all(d);
}

static void signal_cb(uv_signal_t *h, int signum) {
  struct driver *d = h->data;
  (void)signum;
  d->interrupted = true;
  stop_all(d);
}

static void progress_cb(uv_timer_t *t) {
  struct driver *d = t->data;
  const struct lg_run *run = d->run;
  if (!d->going)
    return;
  uint64_t ok = 0, events = 0, bytes = 0, errors = 0, now = evf_monotonic_ns();
  for (unsigned i = 0; i < d->started; i++) {
    ok += atomic_load_explicit(&d->workers[i].live_ok, memory_order_relaxed);
    events += atomic_load_explicit(&d->workers[i].live_events, memory_order_relaxed);
    bytes += atomic_load_explicit(&d->workers[i].live_bytes, memory_order_relaxed);
    errors += atomic_load_explicit(&d->workers[i].live_errors, memory_order_relaxed);
  }
  double s = (double)(now - d->last_ns) / 1e9, since = (double)(now - run->t_start) / 1e9;
  /* The phase of the second shown: its middle. */
  const char *phase = d->last_ns + (now - d->last_ns) / 2 < run->t_measure ? "warmup" : run->label;
  char line[200];
  int n = snprintf(line, sizeof(line),
                   "[%5.1f s %s] %.0f req/s  %.0f events/s  %.1f MB/s  %llu errors", since, phase,
                   s > 0 ? (double)(ok - d->last_ok) / s : 0,
                   s > 0 ? (double)(events - d->last_events) / s : 0,
                   s > 0 ? (double)(bytes - d->last_bytes) / s / 1e6 : 0,
                   (unsigned long long)errors);
  fprintf(stderr, "\r%s%*s", line, d->progress_len > n ? d->progress_len - n : 0, "");
  fflush(stderr);
  d->progress_len = n;
  d->last_ok = ok;
  d->last_events = events;
  d->last_bytes = bytes;
  d->last_ns = now;
}

int lg_run_execute(struct lg_run *run, uv_loop_t *loop, bool progress, uint64_t deadline_ns,
                   struct lg_result *out) {
  memset(out, 0, sizeof(*out));
  out->stats = malloc(sizeof(*out->stats));
  struct driver *d = calloc(1, sizeof(*d));
  if (out->stats == NULL || d == NULL) {
    free(d);
    snprintf(out->failure, sizeof(out->failure), "out of memory");
    return -ENOMEM;
  }
  lg_stats_init(out->stats);
  d->run = run;
  d->workers = calloc(run->threads, sizeof(*d->workers));
  if (d->workers == NULL) {
    free(d);
    snprintf(out->failure, sizeof(out->failure), "out of memory");
    return -ENOMEM;
  }
  uv_async_init(loop, &d->notify, notify_cb);
  uv_signal_init(loop, &d->sigint);
  uv_signal_init(loop, &d->sigterm);
  uv_timer_init(loop, &d->progress);
  uv_timer_init(loop, &d->deadline);
  d->notify.data = d->sigint.data = d->sigterm.data = d->progress.data = d->deadline.data = d;
  if (deadline_ns != 0) {
    uint64_t now = evf_monotonic_ns();
    uv_timer_start(&d->deadline, deadline_cb,
                   deadline_ns > now ? (deadline_ns - now + 999999) / 1000000 : 0, 0);
  }
  uv_signal_start(&d->sigint, signal_cb, SIGINT);
  uv_signal_start(&d->sigterm, signal_cb, SIGTERM);
  d->show_progress = progress;
  run->notify = &d->notify;

  int rc = 0;
  for (unsigned i = 0; i < run->threads; i++) {
    if ((rc = lg_worker_start(&d->workers[i], run, i)) != 0) {
      snprintf(out->failure, sizeof(out->failure), "cannot start a worker thread: %s",
               uv_strerror(rc));
      stop_all(d);
      break;
    }
    d->started++;
  }
  if (d->started == 0)
    close_driver(d);
  else
    uv_async_send(&d->notify); /* the workers may all be done before the loop runs */
  uv_run(loop, UV_RUN_DEFAULT);

  uint64_t last = 0;
  for (unsigned i = 0; i < d->started; i++) {
    struct lg_worker *w = &d->workers[i];
    lg_stats_merge(out->stats, w->stats);
    out->appended_events += w->appended_events;
    out->rate_missed += w->rate_missed;
    out->acked_in_window += w->acked_in_window;
    if (w->last_measured_ns > last)
      last = w->last_measured_ns;
    if (out->failure[0] == '\0' && w->fatal[0] != '\0')
      snprintf(out->failure, sizeof(out->failure), "%s", w->fatal);
    free(w->stats);
  }
  out->interrupted = d->interrupted;
  if (d->deadline_passed && out->failure[0] == '\0')
    snprintf(out->failure, sizeof(out->failure),
             "the run was still going at its deadline (--max-time %g s)", run->opt->max_time_s);
  uint64_t stop = atomic_load(&run->stop_ns);
  if (d->going) {
    out->window_from_ns = run->t_measure;
    out->window_to_ns = run->t_end;
  }
  if (run->t_end == UINT64_MAX) {
    uint64_t from = run->items || run->subs == LG_SUBS_CATCH_UP ? run->t_start : run->t_measure;
    out->duration_s = d->going && last > from ? (double)(last - from) / 1e9 : 0;
  } else if (d->going) {
    uint64_t end = stop != 0 && stop < run->t_end ? stop : run->t_end;
    out->duration_s = end > run->t_measure ? (double)(end - run->t_measure) / 1e9 : 0;
  }
  free(d->workers);
  free(d);
  return rc;
}

void lg_result_free(struct lg_result *out) {
  free(out->stats);
  out->stats = NULL;
}
