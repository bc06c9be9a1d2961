/* Per-thread counters, merged after the run. */
#include "stats.h"

#include "evf/status.h"

#include <stdio.h>
#include <string.h>

void lg_stats_init(struct lg_stats *s) {
  memset(s, 0, sizeof(*s));
  for (unsigned i = 0; i < LG_OP_COUNT; i++)
    lg_hist_init(&s->op[i].latency);
  lg_hist_init(&s->delivery);
}

/* The name errors of this reply are counted under (buf for HTTP statuses). */
static const char *error_name(const struct lg_reply *r, char *buf, size_t len) {
  switch (r->kind) {
  case LG_REPLY_GRPC:
    return evf_grpc_status_name((enum evf_grpc_status)r->status);
  case LG_REPLY_HTTP:
    snprintf(buf, len, "HTTP_%d", r->status);
    return buf;
  case LG_REPLY_TIMEOUT:
    return "TIMEOUT";
  case LG_REPLY_RESET:
    return "STREAM_RESET";
  case LG_REPLY_CLOSED:
    return "CONNECTION_LOST";
  case LG_REPLY_BAD:
    break;
  }
  return "BAD_RESPONSE";
}

void lg_stats_error(struct lg_stats *s, const struct lg_reply *r) {
  switch (r->kind) {
  case LG_REPLY_GRPC:
    s->grpc[r->status >= 0 && r->status < LG_GRPC_STATUSES ? r->status : LG_GRPC_STATUSES]++;
    break;
  case LG_REPLY_HTTP:
    s->http[r->status >= 0 && r->status < LG_HTTP_STATUSES ? r->status : 0]++;
    break;
  case LG_REPLY_TIMEOUT:
    s->timeouts++;
    break;
  case LG_REPLY_RESET:
    s->resets++;
    break;
  case LG_REPLY_CLOSED:
    s->closed++;
    break;
  case LG_REPLY_BAD:
    s->bad++;
    break;
  }
  if (s->first_error[0] == '\0') {
    char buf[16];
    snprintf(s->first_error, sizeof(s->first_error), "%s: %s", error_name(r, buf, sizeof(buf)),
             r->message[0] ? r->message : "(no message)");
  }
}

void lg_stats_merge(struct lg_stats *into, const struct lg_stats *from) {
  for (unsigned i = 0; i < LG_OP_COUNT; i++) {
    struct lg_op_stats *a = &into->op[i];
    const struct lg_op_stats *b = &from->op[i];
    a->ok += b->ok;
    a->events += b->events;
    a->bytes += b->bytes;
    a->conflicts += b->conflicts;
    a->errors += b->errors;
    lg_hist_merge(&a->latency, &b->latency);
  }
  for (unsigned i = 0; i <= LG_GRPC_STATUSES; i++)
    into->grpc[i] += from->grpc[i];
  for (unsigned i = 0; i < LG_HTTP_STATUSES; i++)
    into->http[i] += from->http[i];
  into->timeouts += from->timeouts;
  into->resets += from->resets;
  into->closed += from->closed;
  into->bad += from->bad;
  into->delivered += from->delivered;
  into->delivered_bytes += from->delivered_bytes;
  lg_hist_merge(&into->delivery, &from->delivery);
  if (into->first_error[0] == '\0')
    memcpy(into->first_error, from->first_error, sizeof(into->first_error));
}

void lg_stats_total(const struct lg_stats *s, struct lg_op_stats *t) {
  memset(t, 0, sizeof(*t));
  lg_hist_init(&t->latency);
  for (unsigned i = 0; i < LG_OP_COUNT; i++) {
    const struct lg_op_stats *o = &s->op[i];
    t->ok += o->ok;
    t->events += o->events;
    t->bytes += o->bytes;
    t->conflicts += o->conflicts;
    t->errors += o->errors;
    lg_hist_merge(&t->latency, &o->latency);
  }
}

void lg_stats_each_error(const struct lg_stats *s,
                         void (*fn)(const char *name, uint64_t count, void *arg), void *arg) {
  for (unsigned i = 0; i < LG_GRPC_STATUSES; i++)
    if (s->grpc[i])
      fn(evf_grpc_status_name((enum evf_grpc_status)i), s->grpc[i], arg);
  if (s->grpc[LG_GRPC_STATUSES])
    fn("GRPC_OTHER", s->grpc[LG_GRPC_STATUSES], arg);
  for (unsigned i = 0; i < LG_HTTP_STATUSES; i++) {
    if (s->http[i]) {
      char name[16];
      snprintf(name, sizeof(name), "HTTP_%u", i);
      fn(name, s->http[i], arg);
    }
  }
  if (s->timeouts)
    fn("TIMEOUT", s->timeouts, arg);
  if (s->resets)
    fn("STREAM_RESET", s->resets, arg);
  if (s->closed)
    fn("CONNECTION_LOST", s->closed, arg);
  if (s->bad)
    fn("BAD_RESPONSE", s->bad, arg);
}
