/* The operations and the scenarios, as tables. */
#include "scenario.h"

#include "options.h"
#include "worker.h"

#include "evf/clock.h"
#include "evf/pbwire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define METHOD(name) "/api.EventStore/" name

bool lg_reply_ok(const struct lg_reply *r) {
  return (r->kind == LG_REPLY_GRPC && r->status == 0) ||
         (r->kind == LG_REPLY_HTTP && r->status == 200);
}

static void point_call(struct lg_slot *s, const struct lg_tmpl *t) {
  s->call.path = lg_ops[s->op].grpc_path;
  s->call.path_len = strlen(s->call.path);
  s->call.body = t->data;
  s->call.len = t->len;
}

static int copy_template(struct lg_slot *s, enum lg_op_id op) {
  return lg_tmpl_copy(&s->req[op], &s->worker->run->proto_req[op]);
}

static enum lg_outcome count_events(struct lg_slot *s, const struct lg_reply *r, uint64_t *events) {
  (void)s;
  if (!lg_reply_ok(r))
    return LG_OUTCOME_ERROR;
  *events = r->count;
  return LG_OUTCOME_OK;
}

/* ---- append: version -1, streams round robin ---- */

static int append_init(struct lg_slot *s) { return copy_template(s, LG_OP_APPEND); }

/* --client-ids: ids no send of this run used before. */
static void number_ids(struct lg_worker *w, struct lg_tmpl *t) {
  if (t->id_count == 0)
    return;
  lg_tmpl_set_ids(t, w->next_id);
  w->next_id += t->id_count;
}

static void append_prepare(struct lg_slot *s) {
  struct lg_worker *w = s->worker;
  struct lg_tmpl *t = &s->req[LG_OP_APPEND];
  s->stream = w->next_stream;
  w->next_stream = w->next_stream + 1 == w->run->opt->streams ? 0 : w->next_stream + 1;
  lg_tmpl_set_name(t, w->run->name_width, s->stream);
  number_ids(w, t);
  if (t->stamp_at)
    lg_tmpl_set_stamp(t, s->intended_ns); /* subscribe: when it was due, as its latency counts */
  point_call(s, t);
}

/* ---- append-occ: one writer per stream, exact expected versions ---- */

/* Slot g of S owns streams g, g + S, g + 2S, ...: no two slots write one stream. */
static int occ_init(struct lg_slot *s) {
  const struct lg_run *run = s->worker->run;
  uint32_t streams = run->opt->streams;
  s->occ_count = s->index < streams ? (streams - s->index + run->total_slots - 1) / run->total_slots : 0;
  if (s->occ_count == 0) {
    s->unused = true;
    return 0;
  }
  s->occ_versions = calloc(s->occ_count, sizeof(*s->occ_versions));
  if (s->occ_versions == NULL)
    return -1;
  return copy_template(s, LG_OP_APPEND_OCC);
}

static void occ_prepare(struct lg_slot *s) {
  const struct lg_run *run = s->worker->run;
  struct lg_tmpl *t = &s->req[LG_OP_APPEND_OCC];
  uint32_t k = s->occ_next;
  s->occ_current = k;
  s->occ_next = k + 1 == s->occ_count ? 0 : k + 1;
  s->stream = s->index + (uint64_t)k * run->total_slots;
  lg_tmpl_set_name(t, run->name_width, s->stream);
  number_ids(s->worker, t);
  lg_tmpl_set_tail(t, s->occ_versions[k]);
  point_call(s, t);
}

/* "wrong expected version for stream S: expected E, actual A": A, or -1. */
static long long actual_version(const char *message) {
  const char *at = strstr(message, "actual ");
  if (at == NULL)
    return -1;
  char *end;
  long long v = strtoll(at + 7, &end, 10);
  return end == at + 7 || v < 0 || v > INT32_MAX ? -1 : v;
}

static enum lg_outcome occ_complete(struct lg_slot *s, const struct lg_reply *r, uint64_t *events) {
  if (lg_reply_ok(r)) {
    s->occ_versions[s->occ_current] += (uint32_t)r->count;
    *events = r->count;
    return LG_OUTCOME_OK;
  }
  if (r->kind == LG_REPLY_GRPC && r->status == 10 /* ABORTED */) {
    long long actual = actual_version(r->message);
    if (actual >= 0) {
      s->occ_versions[s->occ_current] = (uint32_t)actual; /* resync, go on */
      return LG_OUTCOME_CONFLICT;
    }
  }
  return LG_OUTCOME_ERROR;
}

/* ---- read-stream: a random stream from version 0 ---- */

static int read_stream_init(struct lg_slot *s) { return copy_template(s, LG_OP_READ_STREAM); }

static void read_stream_prepare(struct lg_slot *s) {
  struct lg_worker *w = s->worker;
  struct lg_tmpl *t = &s->req[LG_OP_READ_STREAM];
  uint64_t x = w->rng;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  w->rng = x;
  s->stream = x % w->run->opt->streams;
  lg_tmpl_set_name(t, w->run->name_width, s->stream);
  point_call(s, t);
}

/* ---- read-global: each slot a catch-up reader, from 0 again at the end ---- */

static int read_global_init(struct lg_slot *s) { return copy_template(s, LG_OP_READ_GLOBAL); }

static void read_global_prepare(struct lg_slot *s) {
  struct lg_tmpl *t = &s->req[LG_OP_READ_GLOBAL];
  lg_tmpl_set_tail(t, s->global_offset);
  point_call(s, t);
}

static enum lg_outcome read_global_complete(struct lg_slot *s, const struct lg_reply *r,
                                            uint64_t *events) {
  if (!lg_reply_ok(r))
    return LG_OUTCOME_ERROR;
  *events = r->count;
  if (r->count == 0)
    s->global_offset = 0;
  else if (r->has_checkpoint && r->checkpoint > s->global_offset)
    s->global_offset = r->checkpoint;
  else
    return LG_OUTCOME_ERROR; /* a page that does not move on: the reader would spin */
  return LG_OUTCOME_OK;
}

/* ---- prefill: each stream gets --prefill events in chunks ---- */

static int prefill_init(struct lg_slot *s) {
  const struct lg_run *run = s->worker->run;
  int rc = copy_template(s, LG_OP_PREFILL);
  if (rc == 0 && run->prefill_last != run->prefill_chunk)
    rc = lg_tmpl_copy(&s->req_last, &run->proto_prefill_last);
  return rc;
}

static void prefill_prepare(struct lg_slot *s) {
  const struct lg_run *run = s->worker->run;
  uint64_t k = s->item % run->prefill_per_stream;
  bool last = k + 1 == run->prefill_per_stream;
  struct lg_tmpl *t = last && run->prefill_last != run->prefill_chunk ? &s->req_last
                                                                       : &s->req[LG_OP_PREFILL];
  s->stream = s->item / run->prefill_per_stream;
  s->events = last ? run->prefill_last : run->prefill_chunk;
  lg_tmpl_set_name(t, run->name_width, s->stream);
  point_call(s, t);
}

static enum lg_outcome prefill_complete(struct lg_slot *s, const struct lg_reply *r,
                                        uint64_t *events) {
  if (!lg_reply_ok(r))
    return LG_OUTCOME_ERROR;
  *events = s->events;
  return LG_OUTCOME_OK;
}

/* ---- batch-append: a BatchAppend call per slot, a window of appends in flight ---- */

/* correlation_id = sequence * window + entry: the answer names its window entry. */
static int batch_init(struct lg_slot *s) {
  const struct lg_run *run = s->worker->run;
  uint32_t n = run->opt->batch_window;
  s->window = n;
  s->win_free = calloc(n, sizeof(*s->win_free));
  s->win_sent_ns = calloc(n, sizeof(*s->win_sent_ns));
  s->win_measured = calloc(n, sizeof(*s->win_measured));
  if (s->win_free == NULL || s->win_sent_ns == NULL || s->win_measured == NULL)
    return -1;
  for (uint32_t i = 0; i < n; i++)
    s->win_free[i] = n - 1 - i;
  s->win_nfree = n;
  return copy_template(s, LG_OP_BATCH_APPEND);
}

static void batch_fill(struct lg_slot *s) {
  struct lg_worker *w = s->worker;
  struct lg_tmpl *t = &s->req[LG_OP_BATCH_APPEND];
  uint64_t now = evf_monotonic_ns();
  while (s->win_nfree > 0 && s->stream_open && lg_worker_may_send(s, now)) {
    uint32_t entry = s->win_free[s->win_nfree - 1];
    uint64_t corr = s->win_seq * s->window + entry;
    s->stream = w->next_stream;
    w->next_stream = w->next_stream + 1 == w->run->opt->streams ? 0 : w->next_stream + 1;
    lg_tmpl_set_name(t, w->run->name_width, s->stream);
    const uint8_t *append = t->data + 5; /* the framed AppendToStreamRequest, unframed */
    size_t append_len = t->len - 5;
    uint8_t head[1 + EVF_PB_VARINT_MAX + 1 + EVF_PB_VARINT_MAX];
    size_t n = 0;
    head[n++] = 1 << 3 | 0;
    n += evf_pb_put_varint(head + n, corr);
    head[n++] = 2 << 3 | 2;
    n += evf_pb_put_varint(head + n, append_len);
    s->scratch.len = 0;
    if (lg_buf_append(&s->scratch, head, n) != 0 ||
        lg_buf_append(&s->scratch, append, append_len) != 0 ||
        lg_grpc_stream_send(&s->grpc_stream, s->scratch.data, s->scratch.len) != 0)
      return; /* the call is failing: its closed_cb follows */
    s->win_nfree--;
    s->win_seq++;
    s->win_sent_ns[entry] = now;
    s->win_measured[entry] = lg_worker_sent(s, now);
  }
}

static void batch_message_cb(struct lg_grpc_stream *st, const uint8_t *msg, size_t len) {
  struct lg_slot *s = st->data;
  const uint8_t *p = msg, *end = msg + len;
  struct lg_pb_field f;
  uint64_t corr = 0; /* proto3 leaves a zero correlation_id out */
  struct lg_reply reply = {.kind = LG_REPLY_GRPC};
  bool result = false;
  int rc;
  while ((rc = lg_pb_next(&p, end, &f)) == 1) {
    if (f.number == 1 && f.wire_type == 0) {
      corr = f.value;
    } else if (f.number == 2 && f.wire_type == 2) {
      result = true;
    } else if (f.number == 3 && f.wire_type == 2) {
      result = true;
      reply.status = 2; /* UNKNOWN unless the error says */
      const uint8_t *q = f.data, *qend = f.data + f.len;
      struct lg_pb_field g;
      while (lg_pb_next(&q, qend, &g) == 1) {
        if (g.number == 1 && g.wire_type == 0)
          reply.status = (int)(int32_t)g.value;
        else if (g.number == 2 && g.wire_type == 2)
          snprintf(reply.message, sizeof(reply.message), "%.*s", (int)g.len, (const char *)g.data);
      }
    }
  }
  uint64_t entry = corr % s->window;
  if (rc < 0 || !result || s->win_sent_ns[entry] == 0) {
    /* Nothing to match it with: an error that answers no request of ours. */
    reply.kind = LG_REPLY_BAD;
    snprintf(reply.message, sizeof(reply.message), "a BatchAppendResponse that matches no request");
    lg_worker_count(s, LG_OUTCOME_ERROR, 0, len, &reply, evf_monotonic_ns(), false, false);
    return;
  }
  uint64_t sent = s->win_sent_ns[entry];
  bool measured = s->win_measured[entry];
  s->win_sent_ns[entry] = 0;
  s->win_free[s->win_nfree++] = (uint32_t)entry;
  bool ok = reply.status == 0;
  lg_worker_count(s, ok ? LG_OUTCOME_OK : LG_OUTCOME_ERROR,
                  ok ? s->worker->run->opt->events_per_append : 0, len, &reply, sent, measured,
                  true);
  batch_fill(s);
}

static void batch_closed_cb(struct lg_grpc_stream *st) {
  struct lg_slot *s = st->data;
  s->stream_open = false;
  uint64_t lost = s->window - s->win_nfree;
  for (uint32_t i = 0; i < s->window; i++)
    s->win_sent_ns[i] = 0;
  lg_worker_call_ended(s, &st->reply, lost);
}

static int batch_open(struct lg_slot *s) {
  if (s->conn->grpc == NULL)
    return -ENOTCONN;
  s->grpc_stream.path = METHOD("BatchAppend");
  s->grpc_stream.path_len = strlen(s->grpc_stream.path);
  s->grpc_stream.message_cb = batch_message_cb;
  s->grpc_stream.closed_cb = batch_closed_cb;
  s->grpc_stream.data = s;
  int rc = lg_grpc_stream_open(s->conn->grpc, &s->grpc_stream);
  if (rc != 0)
    return rc;
  s->stream_open = true;
  batch_fill(s);
  return 0;
}

static void batch_stop(struct lg_slot *s) {
  if (s->stream_open)
    lg_grpc_stream_half_close(&s->grpc_stream);
}

/* ---- subscribe: SubscribeToAll calls, live (subscribe) or from 0 (subscribe-catch-up) ---- */

static int subscribe_init(struct lg_slot *s) { return copy_template(s, LG_OP_SUBSCRIBE); }

static void subscribe_error(struct lg_slot *s, size_t len, const char *why) {
  struct lg_reply reply = {.kind = LG_REPLY_BAD};
  snprintf(reply.message, sizeof(reply.message), "%s", why);
  lg_worker_count(s, LG_OUTCOME_ERROR, 0, len, &reply, evf_monotonic_ns(), false, false);
}

/* Once stopping: end the call when it has every event it is owed (catch-up: at once). */
static void subscribe_check_end(struct lg_slot *s) {
  uint64_t owed;
  if (!s->sub_stopping || s->sub_cancelled || !lg_worker_delivery_owed(s, &owed) ||
      s->sub_events < owed)
    return;
  s->sub_cancelled = true;
  lg_grpc_stream_cancel(&s->grpc_stream);
}

/* One Event (msg_len: the whole SubscriptionResponse). */
static void subscribe_event(struct lg_slot *s, const uint8_t *p, size_t len, size_t msg_len) {
  const struct lg_run *run = s->worker->run;
  const uint8_t *end = p + len, *stream = NULL, *data = NULL;
  size_t stream_len = 0, data_len = 0;
  uint64_t position = 0;
  struct lg_pb_field f;
  int rc;
  while ((rc = lg_pb_next(&p, end, &f)) == 1) {
    if (f.number == 2 && f.wire_type == 2) {
      stream = f.data;
      stream_len = f.len;
    } else if (f.number == 5 && f.wire_type == 2) {
      data = f.data;
      data_len = f.len;
    } else if (f.number == 10 && f.wire_type == 0) {
      position = f.value;
    }
  }
  if (rc < 0 || position <= s->sub_position) {
    subscribe_error(s, msg_len, rc < 0 ? "an undecodable event" : "an event out of position order");
    return;
  }
  s->sub_position = position;
  if (run->subs == LG_SUBS_CATCH_UP) {
    if (!s->sub_live && lg_worker_delivered(s, 0, msg_len)) {
      s->sub_events++;
      s->sub_bytes += msg_len;
    }
    return;
  }
  /* Live: only our writers' events count, those of this run by their stream prefix. */
  size_t prefix_len = strlen(run->opt->stream_prefix);
  if (!s->sub_live || stream_len < prefix_len || memcmp(stream, run->opt->stream_prefix, prefix_len) ||
      data_len < 8 || !lg_worker_delivered(s, lg_stamp_get(data), msg_len))
    return;
  s->sub_events++;
  subscribe_check_end(s);
}

static void subscribe_caught_up(struct lg_slot *s) {
  if (s->sub_live)
    return;
  s->sub_live = true;
  if (s->worker->run->subs == LG_SUBS_LIVE)
    lg_worker_subscribed(s);
  else
    lg_worker_count(s, LG_OUTCOME_OK, s->sub_events, s->sub_bytes, NULL, s->sub_opened_ns, false,
                    true);
}

/* A SubscriptionResponse: an event, caught_up, or a checkpoint (nothing to do). */
static void subscribe_message_cb(struct lg_grpc_stream *st, const uint8_t *msg, size_t len) {
  struct lg_slot *s = st->data;
  const uint8_t *p = msg;
  struct lg_pb_field f;
  int rc = lg_pb_next(&p, msg + len, &f);
  if (rc < 0)
    subscribe_error(s, len, "an undecodable SubscriptionResponse");
  else if (rc == 1 && f.number == 1 && f.wire_type == 2)
    subscribe_event(s, f.data, f.len, len);
  else if (rc == 1 && f.number == 2 && f.wire_type == 2)
    subscribe_caught_up(s);
}

static void subscribe_closed_cb(struct lg_grpc_stream *st) {
  struct lg_slot *s = st->data;
  struct lg_reply ok = {.kind = LG_REPLY_GRPC};
  bool owed_answer = s->worker->run->subs == LG_SUBS_CATCH_UP && !s->sub_live;
  s->stream_open = false;
  lg_worker_call_ended(s, s->sub_cancelled ? &ok : &st->reply, owed_answer ? 1 : 0);
}

static int subscribe_open(struct lg_slot *s) {
  if (s->conn->grpc == NULL)
    return -ENOTCONN;
  struct lg_grpc_stream *st = &s->grpc_stream;
  st->path = METHOD("SubscribeToAll");
  st->path_len = strlen(st->path);
  st->message_cb = subscribe_message_cb;
  st->closed_cb = subscribe_closed_cb;
  st->data = s;
  int rc = lg_grpc_stream_open(s->conn->grpc, st);
  if (rc != 0)
    return rc;
  s->stream_open = true;
  s->sub_live = s->sub_stopping = s->sub_cancelled = false;
  s->sub_position = s->sub_events = s->sub_bytes = 0;
  s->sub_opened_ns = evf_monotonic_ns();
  const struct lg_tmpl *t = &s->req[LG_OP_SUBSCRIBE]; /* framed: the stream frames it again */
  if (lg_grpc_stream_send(st, t->data + 5, t->len - 5) != 0) {
    lg_grpc_stream_cancel(st); /* out of memory: the call ends, and its closed_cb fails the run */
    return 0;
  }
  lg_grpc_stream_half_close(st);
  if (s->worker->run->subs == LG_SUBS_CATCH_UP)
    lg_worker_sent(s, s->sub_opened_ns); /* answered by caught_up */
  return 0;
}

static void subscribe_stop(struct lg_slot *s) {
  if (!s->stream_open)
    return;
  s->sub_stopping = true;
  subscribe_check_end(s);
}

/* ---- event-count: EventCount, the store's size ---- */

static int event_count_init(struct lg_slot *s) { return copy_template(s, LG_OP_EVENT_COUNT); }

static void event_count_prepare(struct lg_slot *s) { point_call(s, &s->req[LG_OP_EVENT_COUNT]); }

static enum lg_outcome event_count_complete(struct lg_slot *s, const struct lg_reply *r,
                                            uint64_t *events) {
  (void)s;
  if (!lg_reply_ok(r))
    return LG_OUTCOME_ERROR;
  *events = r->number; /* proto3 leaves a count of 0 out */
  return LG_OUTCOME_OK;
}

const struct lg_op lg_ops[LG_OP_COUNT] = {
    [LG_OP_APPEND] = {.name = "append", .grpc_path = METHOD("AppendToStream"), .appends = true,
                      .init = append_init, .prepare = append_prepare, .complete = count_events},
    [LG_OP_APPEND_OCC] = {.name = "append-occ", .grpc_path = METHOD("AppendToStream"),
                          .appends = true, .init = occ_init, .prepare = occ_prepare,
                          .complete = occ_complete},
    [LG_OP_READ_STREAM] = {.name = "read-stream", .grpc_path = METHOD("GetStream"),
                           .init = read_stream_init, .prepare = read_stream_prepare,
                           .complete = count_events},
    [LG_OP_READ_GLOBAL] = {.name = "read-global", .grpc_path = METHOD("GetGlobalStream"),
                           .init = read_global_init, .prepare = read_global_prepare,
                           .complete = read_global_complete},
    [LG_OP_PREFILL] = {.name = "prefill", .grpc_path = METHOD("AppendToStream"), .appends = true,
                       .init = prefill_init, .prepare = prefill_prepare,
                       .complete = prefill_complete},
    [LG_OP_BATCH_APPEND] = {.name = "batch-append", .grpc_path = METHOD("BatchAppend"),
                            .appends = true, .init = batch_init, .open = batch_open,
                            .stop = batch_stop},
    [LG_OP_SUBSCRIBE] = {.name = "subscribe", .grpc_path = METHOD("SubscribeToAll"),
                         .init = subscribe_init, .open = subscribe_open, .stop = subscribe_stop},
    [LG_OP_EVENT_COUNT] = {.name = "event-count", .grpc_path = METHOD("EventCount"),
                           .init = event_count_init, .prepare = event_count_prepare,
                           .complete = event_count_complete},
};

int lg_op_find_mixable(const char *name) {
  static const enum lg_op_id mixable[] = {LG_OP_APPEND, LG_OP_READ_STREAM, LG_OP_READ_GLOBAL};
  for (unsigned i = 0; i < sizeof(mixable) / sizeof(mixable[0]); i++)
    if (strcmp(lg_ops[mixable[i]].name, name) == 0)
      return (int)mixable[i];
  return -1;
}

/* ---- scenarios ---- */

static void only_append(const struct lg_options *o, unsigned w[LG_OP_COUNT]) {
  (void)o;
  w[LG_OP_APPEND] = 1;
}

static void only_occ(const struct lg_options *o, unsigned w[LG_OP_COUNT]) {
  (void)o;
  w[LG_OP_APPEND_OCC] = 1;
}

static void only_read_stream(const struct lg_options *o, unsigned w[LG_OP_COUNT]) {
  (void)o;
  w[LG_OP_READ_STREAM] = 1;
}

static void only_read_global(const struct lg_options *o, unsigned w[LG_OP_COUNT]) {
  (void)o;
  w[LG_OP_READ_GLOBAL] = 1;
}

static void only_batch_append(const struct lg_options *o, unsigned w[LG_OP_COUNT]) {
  (void)o;
  w[LG_OP_BATCH_APPEND] = 1;
}

static void from_mix(const struct lg_options *o, unsigned w[LG_OP_COUNT]) {
  memcpy(w, o->mix, sizeof(o->mix));
}

static void http_reads(const struct lg_options *o, unsigned w[LG_OP_COUNT]) {
  w[o->http_mode == LG_HTTP_STREAM ? LG_OP_READ_STREAM : LG_OP_READ_GLOBAL] = 1;
}

static void only_subscribe(const struct lg_options *o, unsigned w[LG_OP_COUNT]) {
  (void)o;
  w[LG_OP_SUBSCRIBE] = 1;
}

const struct lg_scenario lg_scenarios[] = {
    {.name = "append", .help = "AppendToStream, version -1, streams in turn",
     .proto = LG_PROTO_GRPC, .weights = only_append},
    {.name = "append-occ", .help = "AppendToStream, exact expected version, one writer per stream",
     .proto = LG_PROTO_GRPC, .weights = only_occ},
    {.name = "read-stream", .help = "GetStream of a random prefilled stream, from version 0",
     .proto = LG_PROTO_GRPC, .weights = only_read_stream},
    {.name = "read-global", .help = "GetGlobalStream, a catch-up reader per call in flight",
     .proto = LG_PROTO_GRPC, .weights = only_read_global},
    {.name = "batch-append", .help = "BatchAppend calls, --batch-window appends in flight on each",
     .proto = LG_PROTO_GRPC, .weights = only_batch_append},
    {.name = "mixed", .help = "appends and reads in the --mix shares, on the same connections",
     .proto = LG_PROTO_GRPC, .weights = from_mix},
    {.name = "http-read", .help = "reads over the HTTP/JSON API, HTTP/1.1 keep-alive (--http-mode)",
     .proto = LG_PROTO_HTTP, .weights = http_reads},
    {.name = "subscribe",
     .help = "SubscribeToAll while appends run: append-to-delivery latency",
     .proto = LG_PROTO_GRPC, .subs = LG_SUBS_LIVE, .weights = only_append},
    {.name = "subscribe-catch-up",
     .help = "SubscribeToAll from 0 until caught up: delivery throughput",
     .proto = LG_PROTO_GRPC, .subs = LG_SUBS_CATCH_UP, .weights = only_subscribe},
};

const unsigned lg_scenario_count = sizeof(lg_scenarios) / sizeof(lg_scenarios[0]);

const struct lg_scenario *lg_scenario_find(const char *name) {
  for (unsigned i = 0; i < lg_scenario_count; i++)
    if (strcmp(lg_scenarios[i].name, name) == 0)
      return &lg_scenarios[i];
  return NULL;
}
