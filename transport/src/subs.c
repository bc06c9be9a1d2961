/* Live subscriptions: catch-up from storage, then the hub's shared reads of each committed range. */
#include "subs.h"

#include "evf/clock.h"
#include "evf/event_fields.h"
#include "evf/hash.h"
#include "evf/log.h"
#include "server.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* glibc's sys/queue.h has no safe iteration: the body may remove the current element. */
#define LIST_FOREACH_SAFE_(var, head, field, tmp)                                         \
  for ((var) = LIST_FIRST(head); (var) != NULL && ((tmp) = LIST_NEXT(var, field), 1);      \
       (var) = (tmp))

/* Catch-up pages read per loop turn, across subscriptions: the rest waits a turn. */
#define PAGES_PER_TURN 8
/* A range read for the live subscriptions stops after this many bytes (and one event). */
#define CHUNK_MAX_BYTES (4u << 20)

/* ---- the stored event's fields (an encoded api.Event) ---- */

/* The store wrote the bytes, so they are well formed; damaged ones read as no fields. */
static void parse_event(const uint8_t *p, size_t len, struct evf_event_fields *f) {
  if (!evf_event_fields_read(p, len, f))
    *f = (struct evf_event_fields){.id = "", .stream = "", .type = ""};
}

static bool one_of(char *const *names, size_t n, const char *s, size_t len, bool prefix) {
  if (n == 0)
    return true;
  for (size_t i = 0; i < n; i++) {
    size_t nlen = strlen(names[i]);
    if ((prefix ? nlen <= len : nlen == len) && memcmp(names[i], s, nlen) == 0)
      return true;
  }
  return false;
}

static bool fields_match(const struct tp_sub_filter *filter, const struct evf_event_fields *f) {
  return one_of(filter->types, filter->n_types, f->type, f->type_len, false) &&
         one_of(filter->prefixes, filter->n_prefixes, f->stream, f->stream_len, true);
}

static const char *check_names(char *const *names, size_t n, const char *what_many,
                               const char *what_long) {
  if (n > TP_SUB_FILTER_MAX_NAMES)
    return what_many;
  for (size_t i = 0; i < n; i++) {
    size_t len = strlen(names[i]);
    if (len == 0 || len > TP_SUB_FILTER_MAX_NAME)
      return what_long;
  }
  return NULL;
}

const char *tp_sub_filter_check(const struct tp_sub_filter *filter) {
  const char *why = check_names(filter->types, filter->n_types, "more than 100 event types",
                                "an event type filter must be 1 to 200 bytes");
  return why ? why
             : check_names(filter->prefixes, filter->n_prefixes, "more than 100 stream prefixes",
                           "a stream prefix must be 1 to 200 bytes");
}

bool tp_sub_filter_match(const struct tp_sub_filter *filter, const uint8_t *event, size_t len) {
  if (filter->n_types == 0 && filter->n_prefixes == 0)
    return true;
  struct evf_event_fields f;
  parse_event(event, len, &f);
  return fields_match(filter, &f);
}

/* ---- state ---- */

static const struct evf_config *config_of(const struct tp_hub *hub) { return hub->server->config; }

static bool over_buffer(struct tp_sub *sub) {
  return sub->sink->unsent(sub) >= config_of(sub->hub)->subscription_buffer;
}

static uint64_t bucket_of(const char *stream, size_t len) {
  return evf_hash_fnv1a64(stream, len) % TP_HUB_BUCKETS;
}

static void start_work(struct tp_hub *hub);

/* Queues a behind subscription for its next storage page. */
static void schedule(struct tp_sub *sub) {
  struct tp_hub *hub = sub->hub;
  if (sub->ready || sub->live || hub->closed)
    return;
  sub->ready = true;
  TAILQ_INSERT_TAIL(&hub->ready, sub, ready_link);
  start_work(hub);
}

static void unschedule(struct tp_sub *sub) {
  if (sub->ready) {
    sub->ready = false;
    TAILQ_REMOVE(&sub->hub->ready, sub, ready_link);
  }
}

static void go_live(struct tp_sub *sub) {
  struct tp_hub *hub = sub->hub;
  unschedule(sub);
  sub->live = true;
  hub->live_count++;
  if (sub->one_stream) {
    hub->live_streams++;
    LIST_INSERT_HEAD(&hub->buckets[bucket_of(sub->stream, strlen(sub->stream))], sub, live_link);
  } else {
    LIST_INSERT_HEAD(&hub->live_all, sub, live_link);
  }
}

static void fall_behind(struct tp_sub *sub) {
  struct tp_hub *hub = sub->hub;
  sub->live = false;
  hub->live_count--;
  if (sub->one_stream)
    hub->live_streams--;
  LIST_REMOVE(sub, live_link);
}

/* ---- sending ---- */

static void end_with(struct tp_sub *sub, int status) {
  const struct tp_sub_sink *sink = sub->sink;
  tp_sub_stop(sub);
  sink->end(sub, status);
}

/*
 * Whether the sink took a message (rc 0); if not, the subscription ends
 * with the status the sink failed with. The send_* below say the same.
 */
static bool sent(struct tp_sub *sub, int rc) {
  if (rc != 0)
    end_with(sub, rc);
  return rc == 0;
}

static bool send_event(struct tp_sub *sub, const uint8_t *event, size_t len, uint64_t position,
                       uint32_t version) {
  if (!sent(sub, sub->sink->event(sub, event, len, position, version)))
    return false;
  tp_metrics_delivered(&sub->hub->server->metrics, 1);
  return true;
}

static bool send_checkpoint(struct tp_sub *sub) {
  if (!sent(sub, sub->sink->checkpoint(sub, sub->position)))
    return false;
  sub->reported = sub->position;
  sub->scanned = 0;
  return true;
}

/* A checkpoint once enough events were scanned without telling the consumer. */
static bool checkpoint_if_due(struct tp_sub *sub) {
  uint32_t every = sub->checkpoint_every ? sub->checkpoint_every
                                         : config_of(sub->hub)->checkpoint_events;
  if (sub->scanned >= every && sub->position > sub->reported)
    return send_checkpoint(sub);
  return true;
}

static bool send_caught_up(struct tp_sub *sub) {
  if (sub->caught_up_sent)
    return true;
  sub->caught_up_sent = true;
  return sent(sub, sub->sink->caught_up(sub, sub->position, sub->next_version));
}

/* Scans one event of the global order: delivers it if it matches. */
static bool scan_event(struct tp_sub *sub, const uint8_t *event, size_t len, uint64_t position) {
  sub->scanned++;
  if (tp_sub_filter_match(&sub->filter, event, len) &&
      !send_event(sub, event, len, position, 0))
    return false;
  sub->position = position;
  return checkpoint_if_due(sub);
}

/* ---- catching up from storage ---- */

struct page {
  struct tp_sub *sub;
  int error;        /* the read failed: the subscription cannot go on */
  unsigned events;
  bool held_back;   /* the consumer's buffer is full */
  bool at_tail;     /* the rest comes with the live ranges */
  bool failed;      /* the subscription ended */
};

static int page_all_event(const uint8_t *event, size_t len, uint64_t position, void *arg) {
  struct page *pg = arg;
  if (over_buffer(pg->sub)) {
    pg->held_back = true;
    return 1;
  }
  pg->events++;
  if (!scan_event(pg->sub, event, len, position)) {
    pg->failed = true;
    return 1;
  }
  return 0;
}

static int page_stream_event(const uint8_t *event, size_t len, uint64_t position, void *arg) {
  struct page *pg = arg;
  struct tp_sub *sub = pg->sub;
  if (position > sub->hub->tail) {
    pg->at_tail = true;
    return 1;
  }
  if (over_buffer(sub)) {
    pg->held_back = true;
    return 1;
  }
  pg->events++;
  struct evf_event_fields f;
  parse_event(event, len, &f);
  if (!send_event(sub, event, len, position, f.version)) {
    pg->failed = true;
    return 1;
  }
  sub->next_version = f.version + 1;
  return 0;
}

/* Reads the next storage page of a subscription; returns whether it reached the live tail. */
static bool read_page(struct tp_sub *sub, struct page *pg) {
  struct tp_hub *hub = sub->hub;
  unsigned page_size = config_of(hub)->page_size;
  if (sub->one_stream) {
    pg->error = store_read_stream(hub->store, sub->stream, strlen(sub->stream), sub->next_version,
                                  0, page_stream_event, pg);
    return pg->error == 0 && !pg->failed &&
           (pg->at_tail || (!pg->held_back && pg->events < page_size));
  }
  uint64_t watermark = store_watermark(hub->store), checkpoint;
  pg->error = store_read_global(hub->store, sub->position, 0, page_all_event, pg, &checkpoint);
  if (pg->error != 0 || pg->failed)
    return false;
  /* A short page that was not held back scanned everything up to the watermark. */
  if (!pg->held_back && pg->events < page_size && watermark > sub->position)
    sub->position = watermark;
  if (!checkpoint_if_due(sub)) {
    pg->failed = true;
    return false;
  }
  return sub->position >= hub->tail;
}

static void catch_up(struct tp_sub *sub) {
  struct page pg = {.sub = sub};
  bool reached = read_page(sub, &pg);
  if (pg.error != 0) {
    /* Read again, a damaged store would fail every loop turn: the consumer learns why instead. */
    end_with(sub, pg.error);
    return;
  }
  if (pg.failed)
    return;
  if (reached) {
    go_live(sub);
    if (!send_caught_up(sub))
      return;
  } else if (!pg.held_back) {
    schedule(sub); /* more pages */
  }
  sub->sink->flush(sub);
}

/* ---- serving the live ones: each committed range read once ---- */

/* Room for one more event of len bytes in the chunk and its list. */
static bool reserve_event(struct tp_hub *hub, size_t len) {
  if (hub->n_events == hub->cap_events) {
    size_t cap = hub->cap_events ? hub->cap_events * 2 : 256;
    struct tp_hub_event *grown = realloc(hub->events, cap * sizeof(*grown));
    if (grown == NULL)
      return false;
    hub->events = grown;
    hub->cap_events = cap;
  }
  return tp_buf_reserve(&hub->chunk, len) == 0;
}

/*
 * Room in the chunk for the next event of the range, written there by the
 * read. NULL cuts the range there: the rest is read again from that event.
 */
static uint8_t *collect_room(size_t len, uint64_t position, void *arg) {
  struct tp_hub *hub = arg;
  if ((hub->n_events > 0 && hub->chunk.len + len > CHUNK_MAX_BYTES) || !reserve_event(hub, len)) {
    hub->range_cut = true;
    return NULL;
  }
  hub->events[hub->n_events++] =
      (struct tp_hub_event){.offset = hub->chunk.len, .len = len, .position = position};
  uint8_t *room = hub->chunk.data + hub->chunk.len;
  hub->chunk.len += len;
  return room;
}

/* Reads the next committed range after the tail; *to is where it ends. 0 or the read's error. */
static int read_range(struct tp_hub *hub, uint64_t *to) {
  uint64_t watermark = store_watermark(hub->store), checkpoint;
  unsigned page_size = config_of(hub)->page_size;
  hub->chunk.len = 0;
  hub->n_events = 0;
  hub->range_cut = false;
  int rc = store_read_global_into(hub->store, hub->tail, 0, collect_room, hub, &checkpoint);
  if (rc != 0)
    return rc;
  bool whole = !hub->range_cut && hub->n_events < page_size;
  if (hub->n_events > 0)
    checkpoint = hub->events[hub->n_events - 1].position;
  *to = whole && watermark > checkpoint ? watermark : checkpoint;
  return 0;
}

static const uint8_t *event_bytes(const struct tp_hub *hub, const struct tp_hub_event *e) {
  return hub->chunk.data + e->offset;
}

/* Hands the range (tail, to] to a live SubscribeToAll. */
static void serve_all(struct tp_sub *sub, uint64_t to) {
  struct tp_hub *hub = sub->hub;
  for (size_t i = 0; i < hub->n_events; i++) {
    const struct tp_hub_event *e = &hub->events[i];
    if (e->position <= sub->position)
      continue;
    if (!scan_event(sub, event_bytes(hub, e), e->len, e->position))
      return;
    if (over_buffer(sub)) {
      fall_behind(sub); /* tp_sub_drained schedules it */
      sub->sink->flush(sub);
      return;
    }
  }
  if (to > sub->position)
    sub->position = to;
  if (checkpoint_if_due(sub))
    sub->sink->flush(sub);
}

/*
 * Hands one event of the range to the live subscriptions of its stream,
 * flushing each at once: a sink that fails may free its subscription, so
 * none is remembered past the event.
 */
static void serve_streams(struct tp_hub *hub, const struct tp_hub_event *e) {
  struct evf_event_fields f;
  const uint8_t *bytes = event_bytes(hub, e);
  parse_event(bytes, e->len, &f);
  struct tp_sub *sub, *next;
  LIST_FOREACH_SAFE_(sub, &hub->buckets[evf_hash_fnv1a64(f.stream, f.stream_len) % TP_HUB_BUCKETS],
                     live_link, next) {
    if (strlen(sub->stream) != f.stream_len || memcmp(sub->stream, f.stream, f.stream_len) != 0 ||
        f.version < sub->next_version)
      continue; /* another stream, or delivered while catching up */
    if (f.version > sub->next_version) {
      evf_error("subscription to %s expected version %u, got %u: reading it again",
                sub->stream, sub->next_version, f.version);
      fall_behind(sub);
      schedule(sub);
      continue;
    }
    if (!send_event(sub, bytes, e->len, e->position, f.version))
      continue;
    sub->next_version = f.version + 1;
    if (over_buffer(sub))
      fall_behind(sub);
    sub->sink->flush(sub);
  }
}

/* A range the live subscriptions cannot have: they end, and their consumers learn why. */
static void end_live(struct tp_hub *hub, int status) {
  struct tp_sub *sub, *next;
  LIST_FOREACH_SAFE_(sub, &hub->subs, every, next) {
    if (sub->live)
      end_with(sub, status);
  }
}

/* Serves the next committed range; returns whether more was left (the range was cut). */
static bool serve_tail(struct tp_hub *hub) {
  uint64_t to;
  int rc = read_range(hub, &to);
  if (rc == 0 && to == hub->tail && hub->range_cut)
    rc = -ENOMEM; /* no room for the range's first event: read again, it would spin the loop */
  if (rc != 0) {
    end_live(hub, rc);
    return false;
  }
  if (to == hub->tail)
    return false;
  struct tp_sub *sub, *next;
  LIST_FOREACH_SAFE_(sub, &hub->live_all, live_link, next)
    serve_all(sub, to);
  for (size_t i = 0; hub->live_streams > 0 && i < hub->n_events; i++)
    serve_streams(hub, &hub->events[i]);
  hub->tail = to;
  if (hub->chunk.cap > CHUNK_MAX_BYTES * 2)
    tp_buf_free(&hub->chunk); /* one outsized event: do not keep its buffer */
  return hub->range_cut || hub->n_events >= config_of(hub)->page_size;
}

/* ---- the loop's work ---- */

/*
 * The idle handle runs only while there is work: catch-up pages, or the
 * rest of a range too large for one read. New commits are served from the
 * watermark hook, so a loop whose subscribers are all live sleeps between
 * commits.
 */
static void work_cb(uv_idle_t *handle) {
  struct tp_hub *hub = handle->data;
  if (hub->live_count == 0) {
    hub->tail_cut = false;
    hub->tail = store_watermark(hub->store);
  } else if (hub->tail_cut) {
    hub->tail_cut = serve_tail(hub);
  }
  for (int i = 0; i < PAGES_PER_TURN && !TAILQ_EMPTY(&hub->ready); i++) {
    struct tp_sub *sub = TAILQ_FIRST(&hub->ready);
    unschedule(sub);
    catch_up(sub);
  }
  if (TAILQ_EMPTY(&hub->ready) && !hub->tail_cut) {
    hub->working = false;
    uv_idle_stop(&hub->worker);
  }
}

static void start_work(struct tp_hub *hub) {
  if (!hub->working && !hub->closed) {
    hub->working = true;
    uv_idle_start(&hub->worker, work_cb);
  }
}

void tp_hub_watermark(struct evf_store *store, unsigned shard, uint64_t watermark, void *servers) {
  struct tp_hub *hub = &((struct tp_server *)servers)[shard].hub;
  (void)store;
  if (hub->live_count == 0) {
    hub->tail = watermark; /* nobody to serve: behind ones read storage up to here */
  } else if (!hub->tail_cut && serve_tail(hub)) {
    hub->tail_cut = true;
    start_work(hub);
  }
}

/* The age of the first event after a position, from its added_at (0 when none). */
static int first_added_at(const uint8_t *event, size_t len, uint64_t position, void *arg) {
  struct evf_event_fields f;
  (void)position;
  parse_event(event, len, &f);
  *(int64_t *)arg = f.added_at;
  return 0;
}

static void observe_lag(struct tp_sub *sub, uint64_t watermark) {
  if (sub->one_stream && sub->live) {
    tp_metrics_subscription_lag(&sub->hub->server->metrics, 0, 0);
    return;
  }
  if (sub->one_stream)
    return; /* its position in the global order is not known */
  uint64_t lag = watermark > sub->position ? watermark - sub->position : 0, age_ns = 0, unused;
  int64_t added_at = 0, now = evf_now_ms();
  if (lag > 0 &&
      store_read_global(sub->hub->store, sub->position, 1, first_added_at, &added_at, &unused) == 0 &&
      added_at > 0 && now > added_at)
    age_ns = (uint64_t)(now - added_at) * 1000000;
  tp_metrics_subscription_lag(&sub->hub->server->metrics, lag, age_ns);
}

/* Checkpoints for positions that moved without one, and the lag metrics. */
static void tick_cb(uv_timer_t *timer) {
  struct tp_hub *hub = timer->data;
  uint64_t watermark = store_watermark(hub->store);
  struct tp_sub *sub, *next;
  LIST_FOREACH_SAFE_(sub, &hub->subs, every, next) {
    observe_lag(sub, watermark);
    if (!sub->one_stream && sub->position > sub->reported && !over_buffer(sub) &&
        send_checkpoint(sub))
      sub->sink->flush(sub);
  }
}

static void beat_cb(uv_timer_t *timer) {
  struct tp_hub *hub = timer->data;
  struct tp_sub *sub, *next;
  LIST_FOREACH_SAFE_(sub, &hub->subs, every, next) {
    if (sub->sink->heartbeat == NULL)
      continue;
    if (sent(sub, sub->sink->heartbeat(sub)))
      sub->sink->flush(sub);
  }
}

/* ---- subscribing ---- */

void tp_hub_init(struct tp_hub *hub, struct tp_server *server) {
  hub->server = server;
  hub->store = server->store;
  LIST_INIT(&hub->subs);
  LIST_INIT(&hub->live_all);
  for (size_t i = 0; i < TP_HUB_BUCKETS; i++)
    LIST_INIT(&hub->buckets[i]);
  TAILQ_INIT(&hub->ready);
  uv_idle_init(server->loop, &hub->worker);
  uv_timer_init(server->loop, &hub->ticker);
  uv_timer_init(server->loop, &hub->beater);
  hub->worker.data = hub;
  hub->ticker.data = hub;
  hub->beater.data = hub;
  hub->started = true;
}

/* The first subscription starts watching the watermark and the timer; the last stops them. */
static void watch(struct tp_hub *hub, bool on) {
  store_watch_watermark(hub->store, hub->server->shard, on);
  if (on) {
    hub->tail = store_watermark(hub->store);
    unsigned ms = config_of(hub)->checkpoint_ms, beat = config_of(hub)->heartbeat_ms;
    uv_timer_start(&hub->ticker, tick_cb, ms, ms);
    uv_timer_start(&hub->beater, beat_cb, beat, beat);
  } else {
    uv_timer_stop(&hub->ticker);
    uv_timer_stop(&hub->beater);
  }
}

void tp_sub_start(struct tp_hub *hub, struct tp_sub *sub) {
  sub->hub = hub;
  if (hub->closed) {
    sub->hub = NULL;
    sub->sink->end(sub, EVF_ESHUTDOWN);
    return;
  }
  sub->reported = sub->position;
  if (hub->count++ == 0)
    watch(hub, true);
  LIST_INSERT_HEAD(&hub->subs, sub, every);
  tp_metrics_subscriptions(&hub->server->metrics, sub->transport, 1);
  schedule(sub);
}

void tp_sub_stop(struct tp_sub *sub) {
  struct tp_hub *hub = sub->hub;
  if (hub == NULL)
    return;
  unschedule(sub);
  if (sub->live)
    fall_behind(sub);
  LIST_REMOVE(sub, every);
  tp_metrics_subscriptions(&hub->server->metrics, sub->transport, -1);
  if (--hub->count == 0 && !hub->closed)
    watch(hub, false);
  sub->hub = NULL;
}

void tp_sub_drained(struct tp_sub *sub) {
  if (sub->hub != NULL && !sub->live && !over_buffer(sub))
    schedule(sub);
}

void tp_hub_close(struct tp_hub *hub) {
  if (!hub->started || hub->closed)
    return;
  while (!LIST_EMPTY(&hub->subs)) {
    struct tp_sub *sub = LIST_FIRST(&hub->subs);
    const struct tp_sub_sink *sink = sub->sink;
    tp_sub_stop(sub);
    sink->end(sub, EVF_ESHUTDOWN);
  }
  hub->closed = true;
  store_watch_watermark(hub->store, hub->server->shard, false);
  uv_close((uv_handle_t *)&hub->worker, NULL);
  uv_close((uv_handle_t *)&hub->ticker, NULL);
  uv_close((uv_handle_t *)&hub->beater, NULL);
  tp_buf_free(&hub->chunk);
  free(hub->events);
  hub->events = NULL;
  hub->cap_events = hub->n_events = 0;
}
