/* Human and JSON reports. */
#include "report.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

static double per_s(uint64_t n, double s) { return s > 0 ? (double)n / s : 0; }

double lg_report_error_rate(const struct lg_result *result) {
  struct lg_op_stats t;
  lg_stats_total(result->stats, &t);
  uint64_t done = t.ok + t.conflicts + t.errors;
  return done ? (double)t.errors / (double)done : 0;
}

static const char *mode_text(const struct lg_options *o, char *buf, size_t len) {
  if (o->rate > 0)
    snprintf(buf, len, "offered %.0f req/s", o->rate);
  else
    snprintf(buf, len, "closed loop");
  return buf;
}

static void print_error(const char *name, uint64_t count, void *arg) {
  fprintf(arg, " %s %" PRIu64, name, count);
}

static void print_latency(FILE *f, const char *label, const struct lg_hist *h) {
  fprintf(f,
          "%-12s p50 %" PRIu64 "  p90 %" PRIu64 "  p99 %" PRIu64 "  p99.9 %" PRIu64
          "  max %" PRIu64 "  mean %.1f  (us)\n",
          label, lg_hist_percentile(h, 0.50), lg_hist_percentile(h, 0.90),
          lg_hist_percentile(h, 0.99), lg_hist_percentile(h, 0.999), h->max, lg_hist_mean(h));
}

static void print_delivery(FILE *f, const struct lg_report *r) {
  const struct lg_options *o = r->opt;
  const struct lg_result *res = r->result;
  const struct lg_stats *st = res->stats;
  bool live = o->scenario->subs == LG_SUBS_LIVE;
  fprintf(f, "subscribers  %u, %s\n", o->subscribers,
          live ? "live from the end of the store" : "from position 0 until caught up");
  fprintf(f, "delivered    %" PRIu64 " events (of %u x %" PRIu64 " %s)  %.1f/s  %.2f MB/s\n",
          st->delivered, o->subscribers, r->delivery_owed,
          live ? "appended in the measured time" : "stored", per_s(st->delivered, res->duration_s),
          per_s(st->delivered_bytes, res->duration_s) / 1e6);
  if (live)
    print_latency(f, "delivery", &st->delivery);
}

void lg_report_print(FILE *f, const struct lg_report *r) {
  const struct lg_options *o = r->opt;
  const struct lg_result *res = r->result;
  struct lg_op_stats t;
  lg_stats_total(res->stats, &t);
  char mode[64];
  bool http = o->scenario->proto == LG_PROTO_HTTP;
  fprintf(f, "eventflowdb-bench: scenario %s%s%s, target %s\n", o->scenario->name,
          http ? ", http-mode " : "", http ? (o->http_mode == LG_HTTP_STREAM ? "stream" : "global") : "",
          o->target);
  if (o->scenario->subs == LG_SUBS_CATCH_UP) {
    fprintf(f, "  %u connections, %u thread%s, until caught up\n", o->connections, o->threads,
            o->threads == 1 ? "" : "s");
  } else {
    fprintf(f, "  %u connections x %u in flight, %u thread%s, %s, warmup %.1f s, ", o->connections,
            http ? 1 : o->concurrency, o->threads, o->threads == 1 ? "" : "s",
            mode_text(o, mode, sizeof(mode)), o->warmup_s);
    if (o->requests)
      fprintf(f, "%" PRIu64 " requests\n", o->requests);
    else
      fprintf(f, "%.1f s\n", o->duration_s);
  }
  fprintf(f, "  %u streams (%s*), %u event%s of %u B per append", o->streams, o->stream_prefix,
          o->events_per_append, o->events_per_append == 1 ? "" : "s", o->event_size);
  if (r->weights[LG_OP_READ_STREAM] || r->weights[LG_OP_READ_GLOBAL])
    fprintf(f, ", read limit %u (stream) %u (global)", o->limit_stream, o->limit_global);
  fputc('\n', f);
  if (r->prefill_events)
    fprintf(f, "prefill      %" PRIu64 " events in %.2f s (not measured)\n", r->prefill_events,
            r->prefill_s);
  fprintf(f, "measured     %.3f s%s\n", res->duration_s,
          res->interrupted ? " (interrupted)" : "");
  fprintf(f, "requests     %" PRIu64 " ok  %.1f/s\n", t.ok, per_s(t.ok, res->duration_s));
  fprintf(f, "events       %" PRIu64 "  %.1f/s\n", t.events, per_s(t.events, res->duration_s));
  if (r->weights[LG_OP_READ_STREAM] || r->weights[LG_OP_READ_GLOBAL])
    fprintf(f, "read bytes   %" PRIu64 "  %.2f MB/s\n", t.bytes,
            per_s(t.bytes, res->duration_s) / 1e6);
  fprintf(f, "errors       %" PRIu64 " (%.3f%% of requests)", t.errors,
          100 * lg_report_error_rate(res));
  if (r->weights[LG_OP_APPEND_OCC])
    fprintf(f, "  conflicts %" PRIu64, t.conflicts);
  fputc('\n', f);
  if (t.errors) {
    fprintf(f, "  by status: ");
    lg_stats_each_error(res->stats, print_error, f);
    fprintf(f, "\n  first: %s\n", res->stats->first_error);
  }
  print_latency(f, "latency", &t.latency);
  if (o->scenario->subs != LG_SUBS_NONE)
    print_delivery(f, r);
  unsigned kinds = 0;
  for (unsigned op = 0; op < LG_OP_COUNT; op++)
    kinds += r->weights[op] > 0;
  for (unsigned op = 0; kinds > 1 && op < LG_OP_COUNT; op++) {
    const struct lg_op_stats *s = &res->stats->op[op];
    if (!r->weights[op])
      continue;
    fprintf(f, "  %-11s %" PRIu64 " ok %.1f/s, %" PRIu64 " events, %" PRIu64 " errors\n",
            lg_ops[op].name, s->ok, per_s(s->ok, res->duration_s), s->events, s->errors);
    print_latency(f, "", &s->latency);
  }
  if (res->rate_missed)
    fprintf(f, "rate         %" PRIu64 " requests due were never sent: all slots were busy "
               "(raise --concurrency or --connections)\n",
            res->rate_missed);
  if (r->failure)
    fprintf(f, "FAILED       %s\n", r->failure);
}

/* ---- JSON ---- */

static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p < 0x20)
      fprintf(f, "\\u%04x", *p);
    else
      fputc(*p, f);
  }
  fputc('"', f);
}

static void json_latency(FILE *f, const struct lg_hist *h) {
  fprintf(f,
          "{\"p50\": %" PRIu64 ", \"p90\": %" PRIu64 ", \"p99\": %" PRIu64 ", \"p999\": %" PRIu64
          ", \"max\": %" PRIu64 ", \"min\": %" PRIu64 ", \"mean\": %.3f, \"count\": %" PRIu64
          ", \"clamped\": %" PRIu64 "}",
          lg_hist_percentile(h, 0.50), lg_hist_percentile(h, 0.90), lg_hist_percentile(h, 0.99),
          lg_hist_percentile(h, 0.999), h->max, h->min, lg_hist_mean(h), h->count, h->clamped);
}

struct json_errors {
  FILE *f;
  bool first;
};

static void json_error(const char *name, uint64_t count, void *arg) {
  struct json_errors *e = arg;
  fprintf(e->f, "%s\"%s\": %" PRIu64, e->first ? "" : ", ", name, count);
  e->first = false;
}

int lg_report_json(const char *path, const struct lg_report *r) {
  const struct lg_options *o = r->opt;
  const struct lg_result *res = r->result;
  FILE *f = fopen(path, "w");
  if (f == NULL)
    return -errno;
  struct lg_op_stats t;
  lg_stats_total(res->stats, &t);
  double s = res->duration_s;
  fprintf(f, "{\n  \"tool\": \"eventflowdb-bench\",\n  \"scenario\": ");
  json_string(f, o->scenario->name);
  fprintf(f, ",\n  \"target\": ");
  json_string(f, o->target);
  fprintf(f,
          ",\n  \"config\": {\"connections\": %u, \"concurrency\": %u, \"threads\": %u, "
          "\"duration_s\": %.3f, \"requests\": %" PRIu64 ", \"warmup_s\": %.3f, "
          "\"event_size\": %u, \"events_per_append\": %u, \"streams\": %u, \"rate\": %.3f, "
          "\"limit_stream\": %u, \"limit_global\": %u, \"prefill\": %u, \"http_mode\": \"%s\", "
          "\"timeout_s\": %.3f, \"max_error_rate\": %g, \"subscribers\": %u, "
          "\"stream_prefix\": ",
          o->connections, o->scenario->proto == LG_PROTO_HTTP ? 1 : o->concurrency, o->threads,
          o->requests ? 0 : o->duration_s, o->requests, o->warmup_s, o->event_size,
          o->events_per_append, o->streams, o->rate, o->limit_stream, o->limit_global, o->prefill,
          o->http_mode == LG_HTTP_STREAM ? "stream" : "global", o->timeout_s, o->max_error_rate,
          o->scenario->subs != LG_SUBS_NONE ? o->subscribers : 0);
  json_string(f, o->stream_prefix);
  fprintf(f, ", \"mix\": {");
  bool first = true;
  for (unsigned op = 0; op < LG_OP_COUNT; op++) {
    if (r->weights[op]) {
      fprintf(f, "%s\"%s\": %u", first ? "" : ", ", lg_ops[op].name, r->weights[op]);
      first = false;
    }
  }
  fprintf(f, "}},\n");
  fprintf(f,
          "  \"duration_s\": %.6f,\n  \"requests\": %" PRIu64 ",\n  \"events\": %" PRIu64
          ",\n  \"bytes\": %" PRIu64 ",\n  \"requests_per_second\": %.3f,\n"
          "  \"events_per_second\": %.3f,\n  \"bytes_per_second\": %.3f,\n"
          "  \"errors\": %" PRIu64 ",\n  \"error_rate\": %.6f,\n  \"errors_by_status\": {",
          s, t.ok, t.events, t.bytes, per_s(t.ok, s), per_s(t.events, s), per_s(t.bytes, s),
          t.errors, lg_report_error_rate(res));
  struct json_errors e = {f, true};
  lg_stats_each_error(res->stats, json_error, &e);
  fprintf(f, "},\n  \"first_error\": ");
  if (t.errors)
    json_string(f, res->stats->first_error);
  else
    fputs("null", f);
  fprintf(f, ",\n  \"conflicts\": %" PRIu64 ",\n  \"latency_us\": ", t.conflicts);
  json_latency(f, &t.latency);
  fprintf(f, ",\n  \"ops\": {");
  first = true;
  for (unsigned op = 0; op < LG_OP_COUNT; op++) {
    const struct lg_op_stats *st = &res->stats->op[op];
    if (!r->weights[op])
      continue;
    fprintf(f,
            "%s\n    \"%s\": {\"requests\": %" PRIu64 ", \"events\": %" PRIu64
            ", \"bytes\": %" PRIu64 ", \"conflicts\": %" PRIu64 ", \"errors\": %" PRIu64
            ", \"requests_per_second\": %.3f, \"events_per_second\": %.3f, \"latency_us\": ",
            first ? "" : ",", lg_ops[op].name, st->ok, st->events, st->bytes, st->conflicts,
            st->errors, per_s(st->ok, s), per_s(st->events, s));
    json_latency(f, &st->latency);
    fputc('}', f);
    first = false;
  }
  unsigned subscribers = o->scenario->subs != LG_SUBS_NONE ? o->subscribers : 0;
  const struct lg_stats *st = res->stats;
  fprintf(f,
          "\n  },\n  \"subscribers\": %u,\n  \"delivered\": %" PRIu64
          ",\n  \"delivery_expected\": %" PRIu64 ",\n  \"delivered_per_second\": %.3f,\n"
          "  \"delivered_bytes\": %" PRIu64 ",\n  \"delivered_bytes_per_second\": %.3f,\n"
          "  \"measured_window_ns\": [%" PRIu64 ", %" PRIu64 "],\n  \"delivery_latency_us\": ",
          subscribers, st->delivered, r->delivery_owed * subscribers, per_s(st->delivered, s),
          st->delivered_bytes, per_s(st->delivered_bytes, s), res->window_from_ns,
          res->window_to_ns);
  json_latency(f, &st->delivery);
  fprintf(f,
          ",\n  \"appended_events_all_phases\": %" PRIu64 ",\n  \"prefill_events\": %" PRIu64
          ",\n  \"rate_missed\": %" PRIu64 ",\n  \"interrupted\": %s,\n  \"failure\": ",
          res->appended_events, r->prefill_events, res->rate_missed,
          res->interrupted ? "true" : "false");
  if (r->failure)
    json_string(f, r->failure);
  else
    fputs("null", f);
  fprintf(f, ",\n  \"exit_code\": %d\n}\n", r->exit_code);
  int rc = ferror(f) ? -EIO : 0;
  if (fclose(f) != 0 && rc == 0)
    rc = -errno;
  return rc;
}
