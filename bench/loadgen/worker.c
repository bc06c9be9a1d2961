/* Worker threads: one uv loop each, its connections, its in-flight slots. */
#include "worker.h"

#include "evf/clock.h"
#include "rng.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define TICK_MS 100

static void issue(struct lg_worker *w, struct lg_slot *s, uint64_t intended, uint64_t now);
static void begin_stop(struct lg_worker *w);
static void finish(struct lg_worker *w);
static void open_streams(struct lg_worker *w);

/* Which subscriber slot index is (see the DESIGN in worker.h), or -1 for a writer's. */
static long subscriber_of(const struct lg_run *run, unsigned index) {
  unsigned j = index % run->slots_per_conn, conn = index / run->slots_per_conn;
  if (j < run->writers_per_conn)
    return -1;
  return (long)(j - run->writers_per_conn) * run->connections + conn;
}

bool lg_slot_usable(const struct lg_run *run, unsigned index) {
  long k = subscriber_of(run, index);
  if (k >= 0)
    return k < (long)run->subscribers;
  bool occ_only = run->weights[LG_OP_APPEND_OCC] == run->weight_total;
  return !occ_only || index < run->opt->streams;
}

/* The slots of worker k: connections k, k + threads, ...; each has slots_per_conn slots. */
static unsigned usable_slots_of(const struct lg_run *run, unsigned k) {
  unsigned per = run->slots_per_conn, n = 0;
  for (unsigned conn = k; conn < run->connections; conn += run->threads)
    for (unsigned j = 0; j < per; j++)
      n += lg_slot_usable(run, conn * per + j);
  return n;
}

/* --requests: worker k's share, in proportion to its usable slots; the shares sum to the total. */
static uint64_t quota_of(const struct lg_run *run, unsigned k) {
  uint64_t before = 0, total = 0, mine = 0;
  for (unsigned i = 0; i < run->threads; i++) {
    uint64_t n = usable_slots_of(run, i);
    if (i < k)
      before += n;
    if (i == k)
      mine = n;
    total += n;
  }
  if (total == 0)
    return 0;
  unsigned __int128 r = run->requests;
  return (uint64_t)(r * (before + mine) / total - r * before / total);
}

/* ---- what to send ---- */

static enum lg_op_id pick_op(struct lg_worker *w) {
  const struct lg_run *run = w->run;
  unsigned r = run->weight_total > 1 ? (unsigned)(lg_xorshift64(&w->rng) % run->weight_total) : 0;
  for (unsigned op = 0; op < LG_OP_COUNT; op++) {
    if (r < run->weights[op])
      return (enum lg_op_id)op;
    r -= run->weights[op];
  }
  return LG_OP_APPEND; /* not reached: the weights sum to weight_total */
}

static bool may_issue(const struct lg_worker *w, uint64_t now) {
  const struct lg_run *run = w->run;
  if (w->phase != LG_RUNNING || run->subs == LG_SUBS_CATCH_UP)
    return false;
  if (run->items)
    return w->next_item < w->end_item;
  if (run->requests)
    return now < run->t_measure || w->measured_sent < w->quota;
  return now < run->t_end;
}

static bool is_measured(const struct lg_worker *w, const struct lg_slot *s, uint64_t now) {
  const struct lg_run *run = w->run;
  if (run->items)
    return true;
  uint64_t stop = atomic_load_explicit(&run->stop_ns, memory_order_relaxed);
  if (stop != 0 && now > stop)
    return false;
  if (run->requests)
    return s->measured;
  return now >= run->t_measure && now <= run->t_end;
}

static void fatal(struct lg_worker *w, const char *reason) {
  if (w->fatal[0] == '\0')
    snprintf(w->fatal, sizeof(w->fatal), "%s", reason);
  uint_fast64_t expected = 0;
  atomic_compare_exchange_strong(&w->run->stop_ns, &expected, evf_monotonic_ns());
  uv_async_send(w->run->notify); /* the main loop stops the other workers */
  begin_stop(w);
}

/* ---- subscribe: what the subscribers are owed ---- */

/* Live subscribe: this worker's appends are all answered (or will never be). Once. */
static void tell_drained(struct lg_worker *w) {
  struct lg_run *run = w->run;
  if (run->subs != LG_SUBS_LIVE || w->told_drained)
    return;
  w->told_drained = true;
  atomic_fetch_add_explicit(&run->acked_in_window, w->acked_in_window, memory_order_relaxed);
  atomic_fetch_add_explicit(&run->drained, 1, memory_order_release);
  uv_async_send(run->notify); /* the main loop wakes every worker once all have */
}

/* After a call ended while draining: done once none is left, drained once only subscribers are. */
static void drain_step(struct lg_worker *w) {
  if (w->inflight == 0)
    finish(w);
  else if (w->inflight == w->subs_open)
    tell_drained(w);
}

/* Every worker drained: the owed count is final; subscribers that have it all end. */
static void learn_owed(struct lg_worker *w) {
  struct lg_run *run = w->run;
  if (run->subs != LG_SUBS_LIVE || w->owed_known ||
      atomic_load_explicit(&run->drained, memory_order_acquire) != run->threads)
    return;
  w->owed = atomic_load_explicit(&run->acked_in_window, memory_order_relaxed);
  w->owed_known = true;
  for (unsigned i = 0; i < w->n_slots && w->phase == LG_DRAINING; i++)
    if (w->slots[i].subscriber && w->slots[i].busy)
      lg_ops[LG_OP_SUBSCRIBE].stop(&w->slots[i]);
}

bool lg_worker_delivery_owed(struct lg_slot *s, uint64_t *owed) {
  const struct lg_worker *w = s->worker;
  if (w->run->subs == LG_SUBS_CATCH_UP) {
    *owed = 0;
    return true;
  }
  *owed = w->owed;
  return w->owed_known;
}

bool lg_worker_delivered(struct lg_slot *s, uint64_t sent_ns, uint64_t bytes) {
  struct lg_worker *w = s->worker;
  const struct lg_run *run = w->run;
  if (run->subs == LG_SUBS_LIVE) {
    /* Another worker's writers may start before this worker has seen go: read it here. */
    if (!atomic_load_explicit(&run->go, memory_order_acquire) || sent_ns < run->t_measure ||
        sent_ns >= run->t_end)
      return false;
    uint64_t now = evf_monotonic_ns();
    lg_hist_record(&w->stats->delivery, now > sent_ns ? (now - sent_ns + 500) / 1000 : 0);
  }
  w->stats->delivered++;
  w->stats->delivered_bytes += bytes;
  return true;
}

static void become_ready(struct lg_worker *w);

void lg_worker_subscribed(struct lg_slot *s) {
  struct lg_worker *w = s->worker;
  if (++w->subs_live == w->subs && w->phase == LG_CONNECTING)
    become_ready(w);
}

/* ---- pacing (--rate) ---- */

static uint64_t due_time(const struct lg_worker *w, uint64_t n) {
  return w->sched_start + (uint64_t)((double)n * w->interval_ns);
}

static void arm_pacer(struct lg_worker *w, uint64_t at_ns) {
  struct itimerspec its = {.it_value = {.tv_sec = (time_t)(at_ns / 1000000000u),
                                        .tv_nsec = (long)(at_ns % 1000000000u)}};
  timerfd_settime(w->timer_fd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* Sends every due request a free slot can take; arms the timer for the next one. */
static void pump(struct lg_worker *w) {
  uint64_t now = evf_monotonic_ns();
  while (w->n_free > 0 && may_issue(w, now)) {
    uint64_t due = due_time(w, w->sched_sent);
    if (due > now) {
      arm_pacer(w, due);
      return;
    }
    struct lg_slot *s = w->free_slots[--w->n_free];
    w->sched_sent++;
    issue(w, s, due, now);
  }
}

static void pacer_cb(uv_poll_t *h, int status, int events) {
  (void)status;
  (void)events;
  struct lg_worker *w = h->data;
  uint64_t expirations;
  if (read(w->timer_fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
    return;
  pump(w);
}

/* ---- calls ---- */

static void record(struct lg_worker *w, struct lg_slot *s, const struct lg_reply *r,
                   enum lg_outcome out, uint64_t events, uint64_t now) {
  struct lg_op_stats *st = &w->stats->op[s->op];
  switch (out) {
  case LG_OUTCOME_OK:
    st->ok++;
    st->events += events;
    if (!lg_ops[s->op].appends)
      st->bytes += r->bytes;
    break;
  case LG_OUTCOME_CONFLICT:
    st->conflicts++;
    break;
  case LG_OUTCOME_ERROR:
    st->errors++;
    lg_stats_error(w->stats, r);
    break;
  }
  if (r->kind != LG_REPLY_CLOSED)
    lg_hist_record(&st->latency, (now - s->intended_ns + 500) / 1000);
  w->last_measured_ns = now;
}

/* Ends the run here when nothing is in flight and nothing more will be sent. */
static void check_done(struct lg_worker *w, uint64_t now) {
  if (w->phase == LG_RUNNING && w->inflight == 0 && !may_issue(w, now))
    begin_stop(w);
}

static void call_done(struct lg_call *call) {
  struct lg_slot *s = (struct lg_slot *)call; /* the call is the slot's first member */
  struct lg_worker *w = s->worker;
  const struct lg_run *run = w->run;
  uint64_t now = evf_monotonic_ns();
  s->busy = false;
  w->inflight--;
  uint64_t events = 0;
  enum lg_outcome out = lg_ops[s->op].complete(s, &call->reply, &events);
  if (out == LG_OUTCOME_OK) {
    w->seen_ok++;
    w->seen_events += events;
    if (lg_ops[s->op].appends)
      w->appended_events += events;
    else
      w->seen_bytes += call->reply.bytes;
    /* What the subscribers must deliver: the same window as theirs, on the same times. */
    if (run->subs == LG_SUBS_LIVE && lg_ops[s->op].appends && s->intended_ns >= run->t_measure &&
        s->intended_ns < run->t_end)
      w->acked_in_window += events;
  } else if (out == LG_OUTCOME_ERROR) {
    w->seen_errors++;
  }
  if (is_measured(w, s, now))
    record(w, s, &call->reply, out, events, now);
  if (w->phase == LG_RUNNING) {
    if (run->rate > 0) {
      w->free_slots[w->n_free++] = s;
      pump(w);
    } else if (may_issue(w, now)) {
      issue(w, s, now, now);
    }
    check_done(w, now);
  } else if (w->phase == LG_DRAINING) {
    drain_step(w);
  }
}

static void issue(struct lg_worker *w, struct lg_slot *s, uint64_t intended, uint64_t now) {
  const struct lg_run *run = w->run;
  (void)now;
  s->op = pick_op(w);
  if (run->items)
    s->item = w->next_item++;
  s->intended_ns = intended; /* before prepare: a subscribe append carries it */
  lg_ops[s->op].prepare(s);
  s->measured = run->requests && intended >= run->t_measure && w->measured_sent < w->quota;
  s->call.cb = call_done;
  int rc = s->conn->grpc ? lg_grpc_conn_submit(s->conn->grpc, &s->call)
                         : lg_http_conn_submit(s->conn->http, &s->call);
  if (rc != 0) {
    if (run->rate > 0)
      w->free_slots[w->n_free++] = s;
    if (!s->conn->dead) {
      char reason[128];
      snprintf(reason, sizeof(reason), "cannot send a request: %s", uv_strerror(rc));
      fatal(w, reason);
    }
    return;
  }
  if (s->measured)
    w->measured_sent++;
  s->busy = true;
  w->inflight++;
}

/* ---- streaming operations ---- */

static bool streaming(const struct lg_run *run) {
  for (unsigned op = 0; op < LG_OP_COUNT; op++)
    if (run->weights[op] && lg_ops[op].open)
      return true;
  return false;
}

bool lg_worker_may_send(struct lg_slot *s, uint64_t now) { return may_issue(s->worker, now); }

bool lg_worker_sent(struct lg_slot *s, uint64_t now) {
  struct lg_worker *w = s->worker;
  const struct lg_run *run = w->run;
  bool measured = run->requests && now >= run->t_measure && w->measured_sent < w->quota;
  if (measured)
    w->measured_sent++;
  w->stream_pending++;
  return measured;
}

void lg_worker_count(struct lg_slot *s, enum lg_outcome out, uint64_t events, uint64_t bytes,
                     const struct lg_reply *reply, uint64_t intended_ns, bool measured,
                     bool answers_sent) {
  struct lg_worker *w = s->worker;
  uint64_t now = evf_monotonic_ns();
  struct lg_reply ok = {.kind = LG_REPLY_GRPC, .bytes = bytes};
  if (out == LG_OUTCOME_OK) {
    reply = &ok;
    w->seen_ok++;
    w->seen_events += events;
    if (lg_ops[s->op].appends)
      w->appended_events += events;
    else
      w->seen_bytes += bytes;
  } else if (out == LG_OUTCOME_ERROR) {
    w->seen_errors++;
  }
  s->measured = measured;
  s->intended_ns = intended_ns;
  if (is_measured(w, s, now))
    record(w, s, reply, out, events, now);
  if (answers_sent && w->stream_pending > 0)
    w->stream_pending--;
  if (w->phase == LG_RUNNING && w->stream_pending == 0 && !may_issue(w, now))
    begin_stop(w);
}

void lg_worker_call_ended(struct lg_slot *s, const struct lg_reply *reply, uint64_t lost) {
  struct lg_worker *w = s->worker;
  uint64_t now = evf_monotonic_ns();
  s->busy = false;
  w->inflight--;
  if (s->subscriber)
    w->subs_open--;
  w->stream_pending = w->stream_pending > lost ? w->stream_pending - lost : 0;
  bool failed = !lg_reply_ok(reply);
  if (failed || lost > 0) {
    w->seen_errors += lost ? lost : 1;
    if (is_measured(w, s, now)) {
      w->stats->op[s->op].errors += lost ? lost : 1;
      lg_stats_error(w->stats, reply);
    }
  }
  if (w->phase < LG_DRAINING) { /* live subscribers open before the run starts */
    char reason[sizeof(w->fatal)]; /* cut to what fatal keeps */
    snprintf(reason, sizeof(reason), "a %s call ended before the run did: %s", lg_ops[s->op].name,
             reply->message[0] ? reply->message : "the server closed it");
    fatal(w, reason);
  } else if (w->phase == LG_DRAINING) {
    drain_step(w);
  }
}

/* A slot that keeps a streaming call open rather than sending unary calls. */
static bool slot_streams(const struct lg_run *run, const struct lg_slot *s) {
  return s->subscriber || streaming(run);
}

/* Opens the streaming calls of the slots that have none yet. */
static void open_streams(struct lg_worker *w) {
  const struct lg_run *run = w->run;
  for (unsigned i = 0; i < w->n_slots && w->phase < LG_DRAINING; i++) {
    struct lg_slot *s = &w->slots[i];
    if (s->unused || s->busy || !slot_streams(run, s))
      continue;
    s->op = s->subscriber ? LG_OP_SUBSCRIBE : pick_op(w);
    s->busy = true;
    w->inflight++;
    w->subs_open += s->subscriber;
    int rc = lg_ops[s->op].open(s);
    if (rc != 0) {
      s->busy = false;
      w->inflight--;
      w->subs_open -= s->subscriber;
      char reason[128];
      snprintf(reason, sizeof(reason), "cannot open a %s call: %s", lg_ops[s->op].name,
               uv_strerror(rc));
      fatal(w, reason);
    }
  }
}

/* ---- phases ---- */

static void end_cb(uv_timer_t *t) { begin_stop(t->data); }

static void start(struct lg_worker *w) {
  const struct lg_run *run = w->run;
  uint64_t now = evf_monotonic_ns();
  w->phase = LG_RUNNING;
  if (run->t_end != UINT64_MAX) {
    uint64_t left = run->t_end > now ? run->t_end - now : 0;
    uv_timer_start(&w->end_timer, end_cb, (left + 999999) / 1000000, 0);
  }
  open_streams(w);
  if (w->phase != LG_RUNNING)
    return;
  if (run->rate > 0) {
    w->interval_ns = 1e9 * run->threads / run->rate;
    w->sched_start = run->t_start + (uint64_t)(1e9 * w->index / run->rate);
    for (unsigned i = w->n_slots; i > 0; i--)
      if (!w->slots[i - 1].unused && !slot_streams(run, &w->slots[i - 1]))
        w->free_slots[w->n_free++] = &w->slots[i - 1];
    uv_poll_start(&w->pacer, UV_READABLE, pacer_cb);
    pump(w);
  } else {
    for (unsigned i = 0; i < w->n_slots && may_issue(w, now); i++)
      if (!w->slots[i].unused && !slot_streams(run, &w->slots[i]))
        issue(w, &w->slots[i], now, now);
  }
  check_done(w, now);
}

static void drain_timeout_cb(uv_timer_t *t) { finish(t->data); }

/* No more requests: wait (bounded) for those in flight, then close. */
static void begin_stop(struct lg_worker *w) {
  if (w->phase >= LG_DRAINING)
    return;
  if (w->phase != LG_RUNNING) {
    finish(w);
    return;
  }
  w->phase = LG_DRAINING;
  const struct lg_run *run = w->run;
  if (run->rate > 0) {
    uv_poll_stop(&w->pacer);
    uint64_t now = evf_monotonic_ns(), end = run->requests ? now : now < run->t_end ? now : run->t_end;
    if (end >= w->sched_start) {
      uint64_t due = (uint64_t)((double)(end - w->sched_start) / w->interval_ns) + 1;
      w->rate_missed = due > w->sched_sent ? due - w->sched_sent : 0;
    }
  }
  if (w->inflight == 0) {
    finish(w);
    return;
  }
  for (unsigned i = 0; i < w->n_slots; i++)
    if (w->slots[i].busy && lg_ops[w->slots[i].op].stop)
      lg_ops[w->slots[i].op].stop(&w->slots[i]);
  if (w->phase == LG_CLOSING)
    return;
  if (w->inflight == w->subs_open)
    tell_drained(w);
  uv_timer_stop(&w->end_timer);
  uv_timer_start(&w->end_timer, drain_timeout_cb, (run->timeout_ns + 999999) / 1000000, 0);
}

static void close_handle(uv_handle_t *h) {
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

static void pacer_closed_cb(uv_handle_t *h) {
  struct lg_worker *w = h->data;
  close(w->timer_fd);
  w->timer_fd = -1;
}

static void finish(struct lg_worker *w) {
  if (w->phase == LG_CLOSING)
    return;
  w->phase = LG_CLOSING;
  tell_drained(w); /* the other workers' subscribers must not wait for us */
  for (unsigned i = 0; i < w->n_conns; i++) {
    struct lg_wconn *c = &w->conns[i];
    if (c->grpc)
      lg_grpc_conn_close(c->grpc);
    if (c->http)
      lg_http_conn_close(c->http);
    c->grpc = NULL;
    c->http = NULL;
  }
  close_handle((uv_handle_t *)&w->wake);
  close_handle((uv_handle_t *)&w->tick);
  close_handle((uv_handle_t *)&w->end_timer);
  if (w->timer_fd >= 0)
    uv_close((uv_handle_t *)&w->pacer, pacer_closed_cb);
}

static void publish(struct lg_worker *w) {
  atomic_store_explicit(&w->live_ok, w->seen_ok, memory_order_relaxed);
  atomic_store_explicit(&w->live_events, w->seen_events, memory_order_relaxed);
  atomic_store_explicit(&w->live_bytes, w->seen_bytes, memory_order_relaxed);
  atomic_store_explicit(&w->live_errors, w->seen_errors, memory_order_relaxed);
}

static void tick_cb(uv_timer_t *t) {
  struct lg_worker *w = t->data;
  uint64_t now = evf_monotonic_ns();
  for (unsigned i = 0; i < w->n_conns && w->phase != LG_CLOSING; i++) {
    struct lg_wconn *c = &w->conns[i];
    if (c->grpc)
      lg_grpc_conn_check(c->grpc, now);
    else if (c->http)
      lg_http_conn_check(c->http, now);
  }
  publish(w);
  check_done(w, now);
  /* A subscriber never caught up (a server out of streams queues it): do not wait forever. */
  if (w->phase == LG_CONNECTING && w->subscribed_ns && now - w->subscribed_ns > w->run->timeout_ns)
    fatal(w, "a subscriber was not caught up within the timeout");
}

static void wake_cb(uv_async_t *h) {
  struct lg_worker *w = h->data;
  if (atomic_load_explicit(&w->run->stop_ns, memory_order_acquire) != 0)
    begin_stop(w);
  else if (w->phase == LG_WAITING && atomic_load_explicit(&w->run->go, memory_order_acquire))
    start(w);
  learn_owed(w);
}

/* ---- connections ---- */

static void become_ready(struct lg_worker *w) {
  w->phase = LG_WAITING;
  atomic_fetch_add(&w->run->ready, 1);
  uv_async_send(w->run->notify);
  wake_cb(&w->wake); /* the run may have been stopped meanwhile */
}

static void conn_connected(void *data) {
  struct lg_wconn *c = data;
  struct lg_worker *w = c->worker;
  c->up = true;
  if (++w->conns_up != w->n_conns || w->phase != LG_CONNECTING)
    return;
  bool live = w->run->subs == LG_SUBS_LIVE;
  if (live) {
    w->subscribed_ns = evf_monotonic_ns();
    open_streams(w); /* only subscriber slots stream here; ready once they are caught up */
  }
  if (w->phase == LG_CONNECTING && (!live || w->subs_live == w->subs))
    become_ready(w);
}

static void conn_failed(void *data, const char *reason) {
  struct lg_wconn *c = data;
  c->dead = true;
  if (c->worker->phase != LG_CLOSING)
    fatal(c->worker, reason);
}

static void worker_main(void *arg) {
  struct lg_worker *w = arg;
  const struct lg_run *run = w->run;
  struct lg_conn_events ev = {.connected = conn_connected, .failed = conn_failed};
  for (unsigned i = 0; i < w->n_conns && w->phase == LG_CONNECTING; i++) {
    struct lg_wconn *c = &w->conns[i];
    ev.data = c;
    int rc = run->proto == LG_PROTO_GRPC
                 ? lg_grpc_conn_create(&w->loop, (const struct sockaddr *)&run->addr,
                                       run->authority, run->timeout_ns, &ev, &c->grpc)
                 : lg_http_conn_create(&w->loop, (const struct sockaddr *)&run->addr,
                                       run->authority, run->timeout_ns, &ev, &c->http);
    if (rc != 0) {
      c->dead = true;
      fatal(w, "cannot create a connection: out of memory");
    }
  }
  if (w->phase != LG_CLOSING)
    uv_timer_start(&w->tick, tick_cb, TICK_MS, TICK_MS);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  publish(w);
  /* The loop stays open: the main thread may still wake it (its eventfd) until it joins us. */
  atomic_fetch_add_explicit(&w->run->done, 1, memory_order_release);
  uv_async_send(w->run->notify);
}

/* ---- life cycle (main thread) ---- */

static void free_slots(struct lg_worker *w) {
  for (unsigned i = 0; w->slots && i < w->n_slots; i++) {
    struct lg_slot *s = &w->slots[i];
    for (unsigned op = 0; op < LG_OP_COUNT; op++)
      lg_tmpl_free(&s->req[op]);
    lg_tmpl_free(&s->req_last);
    free(s->occ_versions);
    lg_buf_free(&s->scratch);
    free(s->win_free);
    free(s->win_sent_ns);
    free(s->win_measured);
  }
  free(w->slots);
  free(w->free_slots);
  free(w->conns);
  w->slots = NULL;
  w->free_slots = NULL;
  w->conns = NULL;
}

static int init_slots(struct lg_worker *w) {
  const struct lg_run *run = w->run;
  unsigned per = run->slots_per_conn;
  w->n_conns = (run->connections - w->index + run->threads - 1) / run->threads;
  w->n_slots = w->n_conns * per;
  w->conns = calloc(w->n_conns, sizeof(*w->conns));
  w->slots = calloc(w->n_slots, sizeof(*w->slots));
  w->free_slots = calloc(w->n_slots, sizeof(*w->free_slots));
  if (w->conns == NULL || w->slots == NULL || w->free_slots == NULL)
    return -ENOMEM;
  for (unsigned c = 0; c < w->n_conns; c++) {
    w->conns[c].worker = w;
    for (unsigned j = 0; j < per; j++) {
      struct lg_slot *s = &w->slots[c * per + j];
      s->worker = w;
      s->conn = &w->conns[c];
      s->index = (w->index + c * run->threads) * per + j;
      s->unused = !lg_slot_usable(run, s->index);
      s->subscriber = subscriber_of(run, s->index) >= 0;
      if (s->unused)
        continue;
      w->subs += s->subscriber;
      for (unsigned op = 0; op < LG_OP_COUNT; op++) {
        bool needed = s->subscriber ? op == LG_OP_SUBSCRIBE : run->weights[op] > 0;
        int rc = needed ? lg_ops[op].init(s) : 0;
        if (rc != 0)
          return rc;
      }
    }
  }
  return 0;
}

int lg_worker_start(struct lg_worker *w, struct lg_run *run, unsigned index) {
  memset(w, 0, sizeof(*w));
  w->run = run;
  w->index = index;
  w->timer_fd = -1;
  w->phase = LG_CONNECTING;
  w->rng = (0x9E3779B97F4A7C15u * (index + 1)) ^ evf_monotonic_ns();
  if (w->rng == 0)
    w->rng = 1;
  w->next_stream = (uint64_t)index * run->opt->streams / run->threads;
  w->next_id = (uint64_t)index << 40; /* 2^40 ids per worker before another's */
  w->next_item = run->items * index / run->threads;
  w->end_item = run->items * (index + 1) / run->threads;
  w->quota = run->requests ? quota_of(run, index) : 0;
  w->stats = malloc(sizeof(*w->stats));
  if (w->stats == NULL)
    return -ENOMEM;
  lg_stats_init(w->stats);
  int rc = init_slots(w);
  if (rc == 0)
    rc = uv_loop_init(&w->loop);
  if (rc != 0) {
    free_slots(w);
    return rc;
  }
  uv_async_init(&w->loop, &w->wake, wake_cb);
  uv_timer_init(&w->loop, &w->tick);
  uv_timer_init(&w->loop, &w->end_timer);
  w->wake.data = w->tick.data = w->end_timer.data = w;
  if (run->rate > 0) {
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (fd < 0) {
      rc = -errno;
      goto fail_loop;
    }
    if ((rc = uv_poll_init(&w->loop, &w->pacer, fd)) != 0) {
      close(fd);
      goto fail_loop;
    }
    w->timer_fd = fd;
    w->pacer.data = w;
  }
  if ((rc = uv_thread_create(&w->thread, worker_main, w)) != 0)
    goto fail_loop;
  return 0;

fail_loop:
  finish(w);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  uv_loop_close(&w->loop);
  free_slots(w);
  return rc ? rc : -EIO;
}

void lg_worker_wake(struct lg_worker *w) { uv_async_send(&w->wake); }

void lg_worker_join(struct lg_worker *w) {
  uv_thread_join(&w->thread);
  uv_loop_close(&w->loop);
  free_slots(w);
}
