/*
 * Prometheus metrics: per-shard counters (metrics.h) and the text
 * exposition format 0.0.4. Counting is a relaxed load and store by the
 * shard's own thread; rendering sums the shards with relaxed loads.
 */
#include "metrics.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))
#define NS_PER_US UINT64_C(1000)
#define NS_PER_S UINT64_C(1000000000)

/* In the order of rpc.c's table; the label is the path without its '/'. */
static const char *const grpc_methods[TP_METRICS_GRPC_METHODS] = {
    "/api.EventStore/AppendToStream", "/api.EventStore/GetStream",
    "/api.EventStore/GetGlobalStream", "/api.EventStore/GetEvent",
    "/api.EventStore/EventCount",     "/api.EventStore/StreamCount",
    "/api.EventStore/ListStreams",    "/api.EventStore/Version",
    "/grpc.health.v1.Health/Check",   "/api.EventStore/SubscribeToAll",
    "/api.EventStore/SubscribeToStream", "/api.EventStore/BatchAppend", "/unknown"};

static const char *const routes[TP_METRICS_ROUTES] = {
    "version",     "uptime",      "list_streams", "stream_count", "event_count",
    "read_global", "read_stream", "append",       "get_event",    "healthz",
    "readyz",      "metrics",     "subscribe_all", "subscribe_stream", "unknown"};

static const char *const append_results[TP_METRICS_APPEND_RESULTS] = {
    "ok", "wrong_version", "already_exists", "invalid", "too_large", "storage_full", "error"};

static const char *const transports[TP_METRICS_TRANSPORTS] = {"grpc", "http"};

static const uint64_t duration_bounds[TP_METRICS_DURATION_BOUNDS] = {
    100 * NS_PER_US,     250 * NS_PER_US,     500 * NS_PER_US,     1000 * NS_PER_US,
    2500 * NS_PER_US,    5000 * NS_PER_US,    10000 * NS_PER_US,   25000 * NS_PER_US,
    50000 * NS_PER_US,   100000 * NS_PER_US,  250000 * NS_PER_US,  500000 * NS_PER_US,
    1000000 * NS_PER_US, 2500000 * NS_PER_US, 5000000 * NS_PER_US, 10000000 * NS_PER_US};

static const uint64_t lag_event_bounds[TP_METRICS_LAG_BOUNDS] = {
    0, 10, 100, 1000, 10000, 100000, 1000000, 10000000};

static const uint64_t lag_second_bounds[TP_METRICS_LAG_BOUNDS] = {
    NS_PER_S / 1000, NS_PER_S / 100, NS_PER_S / 10, NS_PER_S,
    10 * NS_PER_S,   60 * NS_PER_S,  600 * NS_PER_S, 3600 * NS_PER_S};

_Static_assert(TP_METRICS_DURATION_BOUNDS <= STORE_HISTOGRAM_MAX_BOUNDS, "too many bounds");
_Static_assert(TP_METRICS_LAG_BOUNDS <= TP_METRICS_DURATION_BOUNDS, "lag buckets do not fit");
_Static_assert(TP_METRICS_GRPC_CODES == EVF_GRPC_UNAUTHENTICATED + 1, "a gRPC status is missing");

/* ---- counting: the owner's thread ---- */

/* The one writer adds without a read-modify-write instruction. */
static void add(atomic_uint_least64_t *x, uint64_t n) {
  atomic_store_explicit(x, atomic_load_explicit(x, memory_order_relaxed) + n,
                        memory_order_relaxed);
}

static uint64_t load(const atomic_uint_least64_t *x) {
  return atomic_load_explicit(x, memory_order_relaxed);
}

static void init_histogram(struct tp_metrics_histogram *h) {
  for (size_t i = 0; i < COUNT_OF(h->buckets); i++)
    atomic_init(&h->buckets[i], 0);
  atomic_init(&h->sum_ns, 0);
}

void tp_metrics_init(struct tp_metrics *m) {
  for (size_t i = 0; i < TP_METRICS_GRPC_METHODS; i++) {
    for (size_t c = 0; c < TP_METRICS_GRPC_CODES; c++)
      atomic_init(&m->grpc_requests[i][c], 0);
    init_histogram(&m->grpc_duration[i]);
  }
  for (size_t r = 0; r < TP_METRICS_ROUTES; r++) {
    for (size_t c = 0; c < TP_METRICS_HTTP_CODES; c++)
      atomic_init(&m->http_requests[r][c], 0);
    init_histogram(&m->http_duration[r]);
  }
  for (size_t i = 0; i < TP_METRICS_APPEND_RESULTS; i++)
    atomic_init(&m->appends[i], 0);
  atomic_init(&m->events_appended, 0);
  atomic_init(&m->bytes_appended, 0);
  for (size_t t = 0; t < TP_METRICS_TRANSPORTS; t++) {
    atomic_init(&m->connections[t], 0);
    atomic_init(&m->subscriptions[t], 0);
  }
  atomic_init(&m->events_delivered, 0);
  init_histogram(&m->lag_events);
  init_histogram(&m->lag_seconds);
}

unsigned tp_metrics_grpc_method(const char *path, size_t len) {
  for (unsigned i = 0; i < TP_METRICS_GRPC_UNKNOWN; i++) {
    if (strlen(grpc_methods[i]) == len && memcmp(grpc_methods[i], path, len) == 0)
      return i;
  }
  return TP_METRICS_GRPC_UNKNOWN;
}

static void observe_in(struct tp_metrics_histogram *h, const uint64_t *bounds, unsigned n,
                       uint64_t value) {
  unsigned i = 0;
  while (i < n && value > bounds[i])
    i++;
  add(&h->buckets[i], 1);
  add(&h->sum_ns, value);
}

static void observe(struct tp_metrics_histogram *h, uint64_t ns) {
  observe_in(h, duration_bounds, TP_METRICS_DURATION_BOUNDS, ns);
}

void tp_metrics_grpc_request(struct tp_metrics *m, unsigned method, enum evf_grpc_status status,
                             uint64_t duration_ns) {
  if (method >= TP_METRICS_GRPC_METHODS)
    method = TP_METRICS_GRPC_UNKNOWN;
  unsigned code = (unsigned)status < TP_METRICS_GRPC_CODES ? (unsigned)status : EVF_GRPC_UNKNOWN;
  add(&m->grpc_requests[method][code], 1);
  observe(&m->grpc_duration[method], duration_ns);
}

void tp_metrics_http_request(struct tp_metrics *m, enum tp_metrics_route route, int http_status,
                             uint64_t duration_ns) {
  if ((unsigned)route >= TP_METRICS_ROUTES)
    route = TP_METRICS_ROUTE_UNKNOWN;
  if (http_status < TP_METRICS_HTTP_MIN_CODE ||
      http_status >= TP_METRICS_HTTP_MIN_CODE + TP_METRICS_HTTP_CODES)
    http_status = 500;
  add(&m->http_requests[route][http_status - TP_METRICS_HTTP_MIN_CODE], 1);
  observe(&m->http_duration[route], duration_ns);
}

static unsigned append_result(int status) {
  switch (status) {
  case 0: return 0;
  case EVF_EVERSION: return 1;
  case EVF_EEXIST: return 2;
  case EVF_EINVAL: return 3;
  case EVF_ETOOBIG: return 4;
  case EVF_EFULL:
  case -ENOSPC: return 5;
  default: return 6;
  }
}

void tp_metrics_append(struct tp_metrics *m, int status, uint64_t events, uint64_t bytes) {
  add(&m->appends[append_result(status)], 1);
  if (status == 0) {
    add(&m->events_appended, events);
    add(&m->bytes_appended, bytes);
  }
}

static void add_signed(atomic_int_least64_t *x, int delta) {
  atomic_store_explicit(x, atomic_load_explicit(x, memory_order_relaxed) + delta,
                        memory_order_relaxed);
}

void tp_metrics_connections(struct tp_metrics *m, enum tp_metrics_transport transport, int delta) {
  add_signed(&m->connections[transport], delta);
}

void tp_metrics_subscriptions(struct tp_metrics *m, enum tp_metrics_transport transport,
                              int delta) {
  add_signed(&m->subscriptions[transport], delta);
}

void tp_metrics_delivered(struct tp_metrics *m, uint64_t events) {
  add(&m->events_delivered, events);
}

void tp_metrics_subscription_lag(struct tp_metrics *m, uint64_t events, uint64_t age_ns) {
  observe_in(&m->lag_events, lag_event_bounds, TP_METRICS_LAG_BOUNDS, events);
  observe_in(&m->lag_seconds, lag_second_bounds, TP_METRICS_LAG_BOUNDS, age_ns);
}

/* ---- the text ---- */

struct out {
  struct tp_buf *buf;
  int error;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct out *o, const char *fmt, ...) {
  /* A second try, after making room, always fits. */
  for (int try = 0; try < 2 && o->error == 0; try++) {
    size_t room = o->buf->cap - o->buf->len;
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(room ? (char *)o->buf->data + o->buf->len : NULL, room, fmt, args);
    va_end(args);
    if (n < 0) {
      o->error = -EINVAL;
    } else if ((size_t)n < room) {
      o->buf->len += (size_t)n;
      return;
    } else {
      o->error = tp_buf_reserve(o->buf, (size_t)n + 1);
    }
  }
}

static void family(struct out *o, const char *name, const char *type, const char *help) {
  put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Label values escape backslash, double quote and line feed. */
struct labels {
  char text[256];
  size_t len;
};

static void label(struct labels *l, const char *name, const char *value) {
  size_t room = sizeof(l->text) - 1;
  int n = snprintf(l->text + l->len, room - l->len, "%s%s=\"", l->len ? "," : "", name);
  l->len = n > 0 && (size_t)n < room - l->len ? l->len + (size_t)n : room;
  for (const char *p = value; *p && l->len + 3 < room; p++) {
    const char *esc = *p == '\\' ? "\\\\" : *p == '"' ? "\\\"" : *p == '\n' ? "\\n" : NULL;
    if (esc) {
      memcpy(l->text + l->len, esc, 2);
      l->len += 2;
    } else {
      l->text[l->len++] = *p;
    }
  }
  if (l->len < room)
    l->text[l->len++] = '"';
  l->text[l->len] = '\0';
}

static struct labels labels1(const char *name, const char *value) {
  struct labels l = {.len = 0};
  label(&l, name, value);
  return l;
}

static struct labels shard_label(unsigned shard) {
  char value[16];
  snprintf(value, sizeof(value), "%u", shard);
  return labels1("shard", value);
}

static void sample_u64(struct out *o, const char *name, const struct labels *l, uint64_t v) {
  if (l && l->len)
    put(o, "%s{%s} %" PRIu64 "\n", name, l->text, v);
  else
    put(o, "%s %" PRIu64 "\n", name, v);
}

/* Nanoseconds as seconds, exactly: "0.00025", "2.5", "10". */
static const char *seconds(uint64_t ns, char out[32]) {
  int n = snprintf(out, 32, "%" PRIu64 ".%09" PRIu64, ns / NS_PER_S, ns % NS_PER_S);
  while (n > 0 && out[n - 1] == '0')
    out[--n] = '\0';
  if (n > 0 && out[n - 1] == '.')
    out[--n] = '\0';
  return out;
}

static const char *value_text(uint64_t v, bool ns, char out[32]) {
  if (ns)
    return seconds(v, out);
  snprintf(out, 32, "%" PRIu64, v);
  return out;
}

/* The series of one histogram; ns: its values are nanoseconds, written as seconds. */
static void histogram(struct out *o, const char *name, const struct labels *l,
                      const struct store_histogram *h, bool ns) {
  const char *sep = l->len ? "," : "";
  char text[32];
  for (unsigned i = 0; i < h->n_bounds; i++)
    put(o, "%s_bucket{%s%sle=\"%s\"} %" PRIu64 "\n", name, l->text, sep,
        value_text(h->bounds[i], ns, text), h->cumulative[i]);
  put(o, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, l->text, sep, h->count);
  if (l->len) {
    put(o, "%s_sum{%s} %s\n", name, l->text, value_text(h->sum, ns, text));
    put(o, "%s_count{%s} %" PRIu64 "\n", name, l->text, h->count);
  } else {
    put(o, "%s_sum %s\n", name, value_text(h->sum, ns, text));
    put(o, "%s_count %" PRIu64 "\n", name, h->count);
  }
}

/* ---- the process, from /proc ---- */

static void process_metrics(struct out *o) {
  long ticks = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
  char stat[1024];
  FILE *f = fopen("/proc/self/stat", "r");
  size_t n = f ? fread(stat, 1, sizeof(stat) - 1, f) : 0;
  if (f)
    fclose(f);
  stat[n] = '\0';
  /* After the command name, which may hold spaces and parentheses: field 3 on. */
  const char *fields = strrchr(stat, ')');
  unsigned long long utime, stime, start, vsize, rss;
  bool have_stat =
      fields && ticks > 0 && page > 0 &&
      sscanf(fields + 1,
             " %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %llu %llu"
             " %*s %*s %*s %*s %*s %*s %llu %llu %llu",
             &utime, &stime, &start, &vsize, &rss) == 5;
  if (have_stat) {
    family(o, "process_cpu_seconds_total", "counter",
           "Total user and system CPU time spent in seconds.");
    put(o, "process_cpu_seconds_total %.2f\n", (double)(utime + stime) / (double)ticks);
    family(o, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    put(o, "process_resident_memory_bytes %llu\n", rss * (unsigned long long)page);
    family(o, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    put(o, "process_virtual_memory_bytes %llu\n", vsize);
  }

  DIR *dir = opendir("/proc/self/fd");
  if (dir) {
    long fds = -1; /* not the directory's own */
    for (struct dirent *e; (e = readdir(dir)) != NULL;)
      fds += e->d_name[0] != '.';
    closedir(dir);
    family(o, "process_open_fds", "gauge", "Number of open file descriptors.");
    put(o, "process_open_fds %ld\n", fds);
  }
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    family(o, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
    put(o, "process_max_fds %llu\n", (unsigned long long)limit.rlim_cur);
  }

  /* The start: boot time plus the process's start in ticks since boot. */
  unsigned long long boot = 0;
  char *line = NULL;
  size_t cap = 0;
  f = have_stat ? fopen("/proc/stat", "r") : NULL;
  while (f && getline(&line, &cap, f) > 0) {
    if (sscanf(line, "btime %llu", &boot) == 1)
      break;
  }
  free(line);
  if (f)
    fclose(f);
  if (boot > 0) {
    family(o, "process_start_time_seconds", "gauge",
           "Start time of the process since unix epoch in seconds.");
    put(o, "process_start_time_seconds %.2f\n", (double)boot + (double)start / (double)ticks);
  }
}

/* ---- requests and appends: summed over the shards ---- */

struct histogram_total {
  uint64_t buckets[TP_METRICS_DURATION_BOUNDS + 1];
  uint64_t sum_ns;
};

/* Every shard's counters added up, read once per scrape. */
struct totals {
  uint64_t grpc_requests[TP_METRICS_GRPC_METHODS][TP_METRICS_GRPC_CODES];
  uint64_t http_requests[TP_METRICS_ROUTES][TP_METRICS_HTTP_CODES];
  struct histogram_total grpc_duration[TP_METRICS_GRPC_METHODS];
  struct histogram_total http_duration[TP_METRICS_ROUTES];
  uint64_t appends[TP_METRICS_APPEND_RESULTS];
  uint64_t events_appended;
  uint64_t bytes_appended;
  int64_t connections[TP_METRICS_TRANSPORTS];
  int64_t subscriptions[TP_METRICS_TRANSPORTS];
  uint64_t events_delivered;
  struct histogram_total lag_events;
  struct histogram_total lag_seconds;
};

static void add_histogram(struct histogram_total *t, const struct tp_metrics_histogram *h) {
  for (unsigned i = 0; i <= TP_METRICS_DURATION_BOUNDS; i++)
    t->buckets[i] += load(&h->buckets[i]);
  t->sum_ns += load(&h->sum_ns);
}

static void add_shard(struct totals *t, const struct tp_metrics *m) {
  for (unsigned i = 0; i < TP_METRICS_GRPC_METHODS; i++) {
    for (unsigned c = 0; c < TP_METRICS_GRPC_CODES; c++)
      t->grpc_requests[i][c] += load(&m->grpc_requests[i][c]);
    add_histogram(&t->grpc_duration[i], &m->grpc_duration[i]);
  }
  for (unsigned r = 0; r < TP_METRICS_ROUTES; r++) {
    for (unsigned c = 0; c < TP_METRICS_HTTP_CODES; c++)
      t->http_requests[r][c] += load(&m->http_requests[r][c]);
    add_histogram(&t->http_duration[r], &m->http_duration[r]);
  }
  for (unsigned i = 0; i < TP_METRICS_APPEND_RESULTS; i++)
    t->appends[i] += load(&m->appends[i]);
  t->events_appended += load(&m->events_appended);
  t->bytes_appended += load(&m->bytes_appended);
  for (unsigned i = 0; i < TP_METRICS_TRANSPORTS; i++) {
    t->connections[i] += atomic_load_explicit(&m->connections[i], memory_order_relaxed);
    t->subscriptions[i] += atomic_load_explicit(&m->subscriptions[i], memory_order_relaxed);
  }
  t->events_delivered += load(&m->events_delivered);
  add_histogram(&t->lag_events, &m->lag_events);
  add_histogram(&t->lag_seconds, &m->lag_seconds);
}

/* Per-bucket counts made cumulative: the +Inf bucket is the count. */
static void cumulate_in(const struct histogram_total *t, const uint64_t *bounds, unsigned n,
                        struct store_histogram *out) {
  uint64_t total = 0;
  out->bounds = bounds;
  out->n_bounds = n;
  for (unsigned i = 0; i < n; i++) {
    total += t->buckets[i];
    out->cumulative[i] = total;
  }
  out->count = total + t->buckets[n];
  out->sum = t->sum_ns;
}

static void cumulate(const struct histogram_total *t, struct store_histogram *out) {
  cumulate_in(t, duration_bounds, TP_METRICS_DURATION_BOUNDS, out);
}

static struct labels request_labels(enum tp_metrics_transport t, const char *method) {
  struct labels l = labels1("transport", transports[t]);
  label(&l, "method", method);
  return l;
}

static const char *grpc_label(unsigned method) {
  return method == TP_METRICS_GRPC_UNKNOWN ? "unknown" : grpc_methods[method] + 1;
}

static void request_metrics(struct out *o, const struct totals *t) {
  family(o, "eventflowdb_requests_total", "counter",
         "Requests answered, by transport, method and code (gRPC status or HTTP status).");
  for (unsigned m = 0; m < TP_METRICS_GRPC_METHODS; m++) {
    for (unsigned c = 0; c < TP_METRICS_GRPC_CODES; c++) {
      if (t->grpc_requests[m][c] == 0)
        continue;
      struct labels l = request_labels(TP_METRICS_GRPC, grpc_label(m));
      label(&l, "code", evf_grpc_status_name((enum evf_grpc_status)c));
      sample_u64(o, "eventflowdb_requests_total", &l, t->grpc_requests[m][c]);
    }
  }
  for (unsigned r = 0; r < TP_METRICS_ROUTES; r++) {
    for (unsigned c = 0; c < TP_METRICS_HTTP_CODES; c++) {
      if (t->http_requests[r][c] == 0)
        continue;
      char code[8];
      snprintf(code, sizeof(code), "%u", c + TP_METRICS_HTTP_MIN_CODE);
      struct labels l = request_labels(TP_METRICS_HTTP, routes[r]);
      label(&l, "code", code);
      sample_u64(o, "eventflowdb_requests_total", &l, t->http_requests[r][c]);
    }
  }

  family(o, "eventflowdb_request_duration_seconds", "histogram",
         "Time from a request's arrival to its answer.");
  struct store_histogram h;
  for (unsigned m = 0; m < TP_METRICS_GRPC_METHODS; m++) {
    cumulate(&t->grpc_duration[m], &h);
    struct labels l = request_labels(TP_METRICS_GRPC, grpc_label(m));
    if (h.count > 0)
      histogram(o, "eventflowdb_request_duration_seconds", &l, &h, true);
  }
  for (unsigned r = 0; r < TP_METRICS_ROUTES; r++) {
    cumulate(&t->http_duration[r], &h);
    struct labels l = request_labels(TP_METRICS_HTTP, routes[r]);
    if (h.count > 0)
      histogram(o, "eventflowdb_request_duration_seconds", &l, &h, true);
  }
}

static void append_metrics(struct out *o, const struct totals *t) {
  family(o, "eventflowdb_appends_total", "counter", "Appends answered, by result.");
  for (unsigned r = 0; r < TP_METRICS_APPEND_RESULTS; r++) {
    struct labels l = labels1("result", append_results[r]);
    sample_u64(o, "eventflowdb_appends_total", &l, t->appends[r]);
  }
  family(o, "eventflowdb_events_appended_total", "counter",
         "Events of successful appends (an idempotent retry counts again).");
  sample_u64(o, "eventflowdb_events_appended_total", NULL, t->events_appended);
  family(o, "eventflowdb_bytes_appended_total", "counter",
         "Data plus metadata bytes of the events of successful appends.");
  sample_u64(o, "eventflowdb_bytes_appended_total", NULL, t->bytes_appended);
}

static void connection_metrics(struct out *o, const struct totals *t) {
  family(o, "eventflowdb_connections", "gauge", "Open client connections, by transport.");
  for (unsigned i = 0; i < TP_METRICS_TRANSPORTS; i++) {
    struct labels l = labels1("transport", transports[i]);
    sample_u64(o, "eventflowdb_connections", &l,
               t->connections[i] > 0 ? (uint64_t)t->connections[i] : 0);
  }
}

static void subscription_metrics(struct out *o, const struct totals *t) {
  family(o, "eventflowdb_subscriptions", "gauge", "Active subscriptions, by transport.");
  for (unsigned i = 0; i < TP_METRICS_TRANSPORTS; i++) {
    struct labels l = labels1("transport", transports[i]);
    sample_u64(o, "eventflowdb_subscriptions", &l,
               t->subscriptions[i] > 0 ? (uint64_t)t->subscriptions[i] : 0);
  }
  family(o, "eventflowdb_subscription_events_delivered_total", "counter",
         "Events sent to subscribers.");
  sample_u64(o, "eventflowdb_subscription_events_delivered_total", NULL, t->events_delivered);
  struct store_histogram h;
  struct labels none = {0};
  family(o, "eventflowdb_subscription_lag_events", "histogram",
         "Events between a subscription's position and the watermark, observed per "
         "subscription every SUBSCRIPTION_CHECKPOINT_MS.");
  cumulate_in(&t->lag_events, lag_event_bounds, TP_METRICS_LAG_BOUNDS, &h);
  histogram(o, "eventflowdb_subscription_lag_events", &none, &h, false);
  family(o, "eventflowdb_subscription_lag_seconds", "histogram",
         "Age of a subscription's oldest undelivered event (0 when caught up), observed "
         "with the lag in events.");
  cumulate_in(&t->lag_seconds, lag_second_bounds, TP_METRICS_LAG_BOUNDS, &h);
  histogram(o, "eventflowdb_subscription_lag_seconds", &none, &h, true);
}

/* ---- the engine ---- */

static void shard_metrics(struct out *o, const struct store_shard_stats *stats, unsigned count) {
  family(o, "eventflowdb_commit_batch_events", "histogram", "Events per committed batch.");
  for (unsigned s = 0; s < count; s++) {
    struct labels l = shard_label(s);
    histogram(o, "eventflowdb_commit_batch_events", &l, &stats[s].batch_events, false);
  }
  family(o, "eventflowdb_commit_duration_seconds", "histogram",
         "Time to write and commit a batch, its sync included.");
  for (unsigned s = 0; s < count; s++) {
    struct labels l = shard_label(s);
    histogram(o, "eventflowdb_commit_duration_seconds", &l, &stats[s].commit_ns, true);
  }
  static const struct {
    const char *name, *help;
    size_t offset;
  } gauges[] = {
      {"eventflowdb_shard_queue_depth", "Appends waiting on the shard for its next batch.",
       offsetof(struct store_shard_stats, queue_depth)},
      {"eventflowdb_storage_used_bytes",
       "Bytes of the map of the shard's log in use (its high-water mark).",
       offsetof(struct store_shard_stats, storage_used_bytes)},
      {"eventflowdb_storage_map_bytes", "The map size of the shard's log: the most it can store.",
       offsetof(struct store_shard_stats, storage_map_bytes)},
      {"eventflowdb_index_used_bytes",
       "Bytes of the map of the shard's index (derived from its log) in use.",
       offsetof(struct store_shard_stats, index_used_bytes)},
      {"eventflowdb_index_map_bytes", "The map size of the shard's index.",
       offsetof(struct store_shard_stats, index_map_bytes)},
  };
  for (size_t g = 0; g < COUNT_OF(gauges); g++) {
    family(o, gauges[g].name, "gauge", gauges[g].help);
    for (unsigned s = 0; s < count; s++) {
      struct labels l = shard_label(s);
      sample_u64(o, gauges[g].name, &l,
                 *(const uint64_t *)((const char *)&stats[s] + gauges[g].offset));
    }
  }
}

static void store_metrics(struct out *o, struct evf_store *store) {
  unsigned count = store_shard_count(store);
  struct store_shard_stats *stats = calloc(count, sizeof(*stats));
  if (stats == NULL) {
    o->error = -ENOMEM;
    return;
  }
  for (unsigned s = 0; s < count; s++)
    store_shard_stats(store, s, &stats[s]);
  shard_metrics(o, stats, count);
  free(stats);

  family(o, "eventflowdb_global_position", "gauge",
         "The watermark: every global position up to it is committed or abandoned.");
  sample_u64(o, "eventflowdb_global_position", NULL, store_watermark(store));
  int64_t n;
  if (store_event_count(store, &n) == 0) {
    family(o, "eventflowdb_events", "gauge", "Events stored.");
    sample_u64(o, "eventflowdb_events", NULL, (uint64_t)n);
  }
  if (store_stream_count(store, &n) == 0) {
    family(o, "eventflowdb_streams", "gauge", "Streams stored.");
    sample_u64(o, "eventflowdb_streams", NULL, (uint64_t)n);
  }
}

int tp_metrics_render(struct tp_buf *out, struct evf_store *store,
                      const struct tp_metrics *const *shards, unsigned shard_count) {
  struct totals *totals = calloc(1, sizeof(*totals)); /* tens of kilobytes: not on the stack */
  if (totals == NULL)
    return -ENOMEM;
  for (unsigned s = 0; s < shard_count; s++)
    add_shard(totals, shards[s]);
  struct out o = {.buf = out};
  struct labels version = labels1("version", EVF_VERSION);
  family(&o, "eventflowdb_build_info", "gauge", "Always 1; the version is in its label.");
  sample_u64(&o, "eventflowdb_build_info", &version, 1);
  process_metrics(&o);
  request_metrics(&o, totals);
  append_metrics(&o, totals);
  store_metrics(&o, store);
  connection_metrics(&o, totals);
  subscription_metrics(&o, totals);
  free(totals);
  return o.error;
}
