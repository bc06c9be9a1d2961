/*
 * store-bench: the storage engine's throughput and latency, through its
 * public header only (evf/store.h), without any network in the way.
 *
 * DESIGN
 * The main thread opens a store and starts --clients threads. Each client
 * thread binds one external port to a uv loop of its own and keeps
 * --inflight appends in flight: every completion callback records the
 * append's latency (submit to callback, on the client's loop) and submits
 * the next one from the same slot, so the pipeline stays full. Slots,
 * histograms and counters belong to their client thread; the main thread
 * reads them only after joining it. The first --warmup seconds are not
 * measured. After the append phase the main thread checks the store's
 * event count against the acknowledged appends and, with --read-global,
 * pages through the whole global stream from 0 (limit 1000 per page),
 * timing only the reads and checking positions rise strictly.
 */
#define _GNU_SOURCE /* getopt_long, nftw, mkdtemp */
#include "evf/clock.h"
#include "evf/status.h"
#include "evf/store.h"
#include "loadgen/rng.h"

#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define READ_LIMIT 1000          /* events per global read page */
#define WATERMARK_WAIT_S 30      /* bound on waiting for the watermark after the appends */
#define MAX_EVENTS_PER_APPEND 100000

/* ---- A log-bucketed histogram: 8 buckets per power of two (within 12.5%). ---- */

#define HIST_SUB_BITS 3
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

struct histogram {
  uint64_t counts[HIST_BUCKETS];
  uint64_t total;
  uint64_t max;
};

static unsigned hist_index(uint64_t v) {
  if (v < HIST_SUB)
    return (unsigned)v;
  unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= HIST_SUB_BITS */
  unsigned sub = (unsigned)(v >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1);
  return (e - HIST_SUB_BITS + 1) * HIST_SUB + sub;
}

/* The highest value a bucket holds. */
static uint64_t hist_bucket_high(unsigned i) {
  if (i < HIST_SUB)
    return i;
  unsigned e = i / HIST_SUB + HIST_SUB_BITS - 1, sub = i % HIST_SUB;
  uint64_t low = (uint64_t)(HIST_SUB + sub) << (e - HIST_SUB_BITS);
  return low + (1ull << (e - HIST_SUB_BITS)) - 1;
}

static void hist_record(struct histogram *h, uint64_t v) {
  h->counts[hist_index(v)]++;
  h->total++;
  if (v > h->max)
    h->max = v;
}

static void hist_merge(struct histogram *into, const struct histogram *from) {
  for (unsigned i = 0; i < HIST_BUCKETS; i++)
    into->counts[i] += from->counts[i];
  into->total += from->total;
  if (from->max > into->max)
    into->max = from->max;
}

/* The value at or below which a fraction q of the samples fall (bucket's high end). */
static uint64_t hist_quantile(const struct histogram *h, double q) {
  if (h->total == 0)
    return 0;
  uint64_t rank = (uint64_t)(q * (double)h->total + 0.5);
  if (rank < 1)
    rank = 1;
  uint64_t seen = 0;
  for (unsigned i = 0; i < HIST_BUCKETS; i++) {
    seen += h->counts[i];
    if (seen >= rank)
      return hist_bucket_high(i) < h->max ? hist_bucket_high(i) : h->max;
  }
  return h->max;
}

/* ---- Configuration ---- */

enum pick { PICK_ROUND_ROBIN, PICK_RANDOM };

struct config {
  const char *data_dir;        /* NULL: a fresh temporary folder, removed at the end */
  unsigned shards;             /* 0: the store's default (online CPUs for a new folder) */
  bool sync_full;
  unsigned events_per_append;
  size_t event_size;
  unsigned streams;
  double duration_s;
  uint64_t appends;            /* measured appends in total; 0 with appends_set: none */
  bool appends_set;
  double warmup_s;
  unsigned clients;
  unsigned inflight;
  enum pick pick;
  bool read_global;
  const char *json_path;
  uint64_t map_size;
};

/* What every client shares, read-only once the clients start. */
struct shared {
  const struct config *cfg;
  struct evf_store *store;
  char **stream_names;
  uint8_t *payload;
  uint64_t t_start;            /* ns: clients start */
  uint64_t t_measure;          /* ns: warmup ends */
  uint64_t t_end;              /* ns: duration mode only */
};

struct client;

/* One append kept in flight, reused for every submission. */
struct slot {
  struct store_append req;
  Api__AppendToStreamRequest request;
  Api__EventData **event_ptrs;
  Api__EventData *events;
  struct client *client;
  uint64_t submit_ns;
  bool measured;               /* appends mode: submitted after the warmup */
};

struct client {
  const struct shared *sh;
  unsigned index;
  uv_thread_t thread;
  uv_loop_t loop;
  struct store_port *port;
  struct slot *slots;
  uint64_t rng;
  unsigned next_stream;

  /* Results, read by main after the join. */
  int setup_error;
  unsigned inflight;
  uint64_t quota;              /* appends mode: measured appends to submit */
  uint64_t measured_submitted;
  uint64_t measured_appends;   /* completed and measured, status 0 or not */
  uint64_t measured_ok;
  uint64_t acked_events;       /* all phases: events of appends with status 0 */
  uint64_t errors;             /* all phases */
  int first_error;
  uint64_t last_position;      /* highest position acknowledged */
  uint64_t last_measured_ns;   /* completion time of the last measured append */
  struct histogram latency;    /* ns, measured appends */
};

/* ---- Client threads ---- */

static unsigned choose_stream(struct client *c) {
  unsigned n = c->sh->cfg->streams;
  if (c->sh->cfg->pick == PICK_RANDOM)
    return (unsigned)(lg_xorshift64(&c->rng) % n);
  unsigned i = c->next_stream;
  c->next_stream = (i + 1) % n;
  return i;
}

static bool duration_mode(const struct config *cfg) { return !cfg->appends_set; }

static bool may_submit(const struct client *c, uint64_t now) {
  const struct shared *sh = c->sh;
  if (duration_mode(sh->cfg))
    return now < sh->t_end;
  return now < sh->t_measure || c->measured_submitted < c->quota;
}

static void note_error(struct client *c, int code) {
  if (c->errors++ == 0)
    c->first_error = code;
}

static void append_cb(struct store_append *req, int status);

static void submit(struct client *c, struct slot *s, uint64_t now) {
  s->request.stream = c->sh->stream_names[choose_stream(c)];
  s->req = (struct store_append){.request = &s->request, .cb = append_cb, .data = s};
  s->submit_ns = now;
  s->measured = !duration_mode(c->sh->cfg) && now >= c->sh->t_measure;
  int rc = store_append(c->port, &s->req);
  if (rc != 0) {
    store_append_deinit(&s->req);
    note_error(c, rc);
    return;
  }
  if (s->measured)
    c->measured_submitted++;
  c->inflight++;
}

static void append_cb(struct store_append *req, int status) {
  struct slot *s = req->data;
  struct client *c = s->client;
  const struct shared *sh = c->sh;
  uint64_t now = evf_monotonic_ns();
  size_t n = s->request.n_events;
  c->inflight--;
  if (status == 0) {
    c->acked_events += n;
    if (req->first_position + n - 1 > c->last_position)
      c->last_position = req->first_position + n - 1;
  } else {
    note_error(c, status);
  }
  store_append_deinit(req);

  bool measured = duration_mode(sh->cfg) ? now >= sh->t_measure && now <= sh->t_end : s->measured;
  if (measured) {
    c->measured_appends++;
    if (status == 0)
      c->measured_ok++;
    hist_record(&c->latency, now - s->submit_ns);
    c->last_measured_ns = now;
  }
  if (may_submit(c, now))
    submit(c, s, now);
}

static int client_setup(struct client *c) {
  const struct config *cfg = c->sh->cfg;
  c->slots = calloc(cfg->inflight, sizeof(*c->slots));
  if (c->slots == NULL)
    return -ENOMEM;
  for (unsigned i = 0; i < cfg->inflight; i++) {
    struct slot *s = &c->slots[i];
    s->client = c;
    s->event_ptrs = calloc(cfg->events_per_append, sizeof(*s->event_ptrs));
    s->events = calloc(cfg->events_per_append, sizeof(*s->events));
    if (s->event_ptrs == NULL || s->events == NULL)
      return -ENOMEM;
    api__append_to_stream_request__init(&s->request);
    s->request.version = -1;
    s->request.n_events = cfg->events_per_append;
    s->request.events = s->event_ptrs;
    for (unsigned e = 0; e < cfg->events_per_append; e++) {
      api__event_data__init(&s->events[e]);
      s->events[e].type = "BenchEvent";
      s->events[e].data.data = c->sh->payload;
      s->events[e].data.len = cfg->event_size;
      s->event_ptrs[e] = &s->events[e];
    }
  }
  return 0;
}

static void client_free(struct client *c) {
  for (unsigned i = 0; c->slots != NULL && i < c->sh->cfg->inflight; i++) {
    free(c->slots[i].event_ptrs);
    free(c->slots[i].events);
  }
  free(c->slots);
}

static void client_run(void *arg) {
  struct client *c = arg;
  int rc = client_setup(c);
  if (rc == 0)
    rc = uv_loop_init(&c->loop);
  if (rc != 0) {
    c->setup_error = rc;
    return;
  }
  c->port = store_external_port(c->sh->store, c->index);
  if ((rc = store_port_bind(c->port, &c->loop)) != 0) {
    c->setup_error = rc;
    uv_loop_close(&c->loop);
    return;
  }
  uint64_t now = evf_monotonic_ns();
  for (unsigned i = 0; i < c->sh->cfg->inflight && may_submit(c, now); i++)
    submit(c, &c->slots[i], now);
  /* The bound port keeps the loop alive: run until every append is back. */
  while (c->inflight > 0)
    uv_run(&c->loop, UV_RUN_ONCE);
  store_port_unbind(c->port);
  uv_run(&c->loop, UV_RUN_DEFAULT);
  uv_loop_close(&c->loop);
}

/* ---- Global read ---- */

struct read_state {
  uint64_t events;
  uint64_t bytes;
  uint64_t last_position;
  uint64_t out_of_order;
  uint8_t *scratch;            /* stands in for a response buffer: every event is copied */
  size_t scratch_len;
  size_t scratch_used;
};

static int read_cb(const uint8_t *event, size_t len, uint64_t position, void *arg) {
  struct read_state *r = arg;
  if (position <= r->last_position)
    r->out_of_order++;
  r->last_position = position;
  if (r->scratch_used + len > r->scratch_len)
    r->scratch_used = 0;
  if (len <= r->scratch_len) {
    memcpy(r->scratch + r->scratch_used, event, len);
    r->scratch_used += len;
  }
  r->events++;
  r->bytes += len;
  return 0;
}

struct read_result {
  bool done;
  int rc;
  uint64_t events;
  uint64_t bytes;
  uint64_t pages;
  uint64_t out_of_order;
  double seconds;
};

static void read_global(struct evf_store *store, struct read_result *out) {
  struct read_state r = {.scratch_len = 4u << 20};
  r.scratch = malloc(r.scratch_len);
  if (r.scratch == NULL) {
    out->rc = -ENOMEM;
    return;
  }
  uint64_t offset = 0, pages = 0, elapsed = 0;
  int rc = 0;
  for (;;) {
    uint64_t before = r.events, checkpoint, t0 = evf_monotonic_ns();
    rc = store_read_global(store, offset, READ_LIMIT, read_cb, &r, &checkpoint);
    elapsed += evf_monotonic_ns() - t0;
    if (rc != 0 || r.events == before)
      break;
    pages++;
    offset = checkpoint;
  }
  free(r.scratch);
  *out = (struct read_result){.done = true, .rc = rc, .events = r.events, .bytes = r.bytes,
                              .pages = pages, .out_of_order = r.out_of_order,
                              .seconds = (double)elapsed / 1e9};
}

/* ---- Options ---- */

static void usage(FILE *f) {
  fprintf(f,
          "usage: store-bench [options]\n"
          "  --data DIR               data folder (default: a fresh temporary one, removed after)\n"
          "  --shards N               shards of a new folder (default: online CPUs)\n"
          "  --sync full|none         sync each group commit or not (default full)\n"
          "  --events-per-append N    events in one append (default 1)\n"
          "  --event-size BYTES       payload (data) of each event (default 200)\n"
          "  --streams N              streams appended to (default 1000)\n"
          "  --pick rr|random         how each append picks its stream (default rr)\n"
          "  --duration SECONDS       measured time (default 5)\n"
          "  --appends N              measure N appends instead of a duration (0: none)\n"
          "  --warmup SECONDS         unmeasured time before measuring (default 1)\n"
          "  --clients N              client threads, one external port each (default 2)\n"
          "  --inflight N             appends in flight per client (default 256)\n"
          "  --read-global            then time a read of the whole global stream from 0\n"
          "  --map-size MIB           LMDB map size per shard (default 16384)\n"
          "  --json FILE              also write the results as JSON\n");
}

static bool parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || v < min || v > max)
    return false;
  *out = v;
  return true;
}

static bool parse_seconds(const char *text, double *out) {
  char *end;
  double v = strtod(text, &end);
  if (end == text || *end != '\0' || !(v >= 0) || v > 86400)
    return false;
  *out = v;
  return true;
}

/* Returns 0, 1 (bad usage) or 2 (--help). */
static int parse_options(int argc, char **argv, struct config *cfg) {
  /* In the order of options[], which is indexed by value - OPT_DATA. */
  enum { OPT_DATA = 256, OPT_SHARDS, OPT_SYNC, OPT_EPA, OPT_SIZE, OPT_STREAMS, OPT_PICK,
         OPT_DURATION, OPT_APPENDS, OPT_WARMUP, OPT_CLIENTS, OPT_INFLIGHT, OPT_READ, OPT_MAP,
         OPT_JSON, OPT_HELP };
  static const struct option options[] = {
      {"data", required_argument, NULL, OPT_DATA},
      {"shards", required_argument, NULL, OPT_SHARDS},
      {"sync", required_argument, NULL, OPT_SYNC},
      {"events-per-append", required_argument, NULL, OPT_EPA},
      {"event-size", required_argument, NULL, OPT_SIZE},
      {"streams", required_argument, NULL, OPT_STREAMS},
      {"pick", required_argument, NULL, OPT_PICK},
      {"duration", required_argument, NULL, OPT_DURATION},
      {"appends", required_argument, NULL, OPT_APPENDS},
      {"warmup", required_argument, NULL, OPT_WARMUP},
      {"clients", required_argument, NULL, OPT_CLIENTS},
      {"inflight", required_argument, NULL, OPT_INFLIGHT},
      {"read-global", no_argument, NULL, OPT_READ},
      {"map-size", required_argument, NULL, OPT_MAP},
      {"json", required_argument, NULL, OPT_JSON},
      {"help", no_argument, NULL, OPT_HELP},
      {NULL, 0, NULL, 0},
  };
  uint64_t v;
  int opt;
  bool duration_set = false;
  while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
    bool ok = true;
    switch (opt) {
    case OPT_DATA:
      cfg->data_dir = optarg;
      break;
    case OPT_SHARDS:
      if ((ok = parse_u64(optarg, 1, 1024, &v)))
        cfg->shards = (unsigned)v;
      break;
    case OPT_SYNC:
      ok = strcmp(optarg, "full") == 0 || strcmp(optarg, "none") == 0;
      cfg->sync_full = strcmp(optarg, "full") == 0;
      break;
    case OPT_EPA:
      if ((ok = parse_u64(optarg, 1, MAX_EVENTS_PER_APPEND, &v)))
        cfg->events_per_append = (unsigned)v;
      break;
    case OPT_SIZE:
      if ((ok = parse_u64(optarg, 0, 16u << 20, &v)))
        cfg->event_size = (size_t)v;
      break;
    case OPT_STREAMS:
      if ((ok = parse_u64(optarg, 1, 10000000, &v)))
        cfg->streams = (unsigned)v;
      break;
    case OPT_PICK:
      ok = strcmp(optarg, "rr") == 0 || strcmp(optarg, "random") == 0;
      cfg->pick = strcmp(optarg, "random") == 0 ? PICK_RANDOM : PICK_ROUND_ROBIN;
      break;
    case OPT_DURATION:
      ok = parse_seconds(optarg, &cfg->duration_s) && cfg->duration_s > 0;
      duration_set = true;
      break;
    case OPT_APPENDS:
      ok = parse_u64(optarg, 0, UINT64_MAX / 2, &cfg->appends);
      cfg->appends_set = true;
      break;
    case OPT_WARMUP:
      ok = parse_seconds(optarg, &cfg->warmup_s);
      break;
    case OPT_CLIENTS:
      if ((ok = parse_u64(optarg, 1, 256, &v)))
        cfg->clients = (unsigned)v;
      break;
    case OPT_INFLIGHT:
      if ((ok = parse_u64(optarg, 1, 1000000, &v)))
        cfg->inflight = (unsigned)v;
      break;
    case OPT_READ:
      cfg->read_global = true;
      break;
    case OPT_MAP:
      if ((ok = parse_u64(optarg, 1, 1u << 30, &v)))
        cfg->map_size = v << 20;
      break;
    case OPT_JSON:
      cfg->json_path = optarg;
      break;
    case OPT_HELP:
      return 2;
    default:
      return 1;
    }
    if (!ok) {
      fprintf(stderr, "store-bench: bad value for --%s: %s\n", options[opt - OPT_DATA].name,
              optarg);
      return 1;
    }
  }
  if (optind != argc) {
    fprintf(stderr, "store-bench: unexpected argument %s\n", argv[optind]);
    return 1;
  }
  if (duration_set && cfg->appends_set) {
    fprintf(stderr, "store-bench: give --duration or --appends, not both\n");
    return 1;
  }
  return 0;
}

/* ---- Output ---- */

struct results {
  unsigned shards;
  double seconds;
  uint64_t appends;            /* measured, completed */
  uint64_t appends_ok;
  uint64_t errors;             /* all phases */
  int first_error;
  uint64_t acked_events;       /* all phases, including warmup */
  int64_t stored_before;
  int64_t stored_after;
  bool count_ok;
  struct histogram latency;
  struct read_result read;
};

static double per_s(double n, double s) { return s > 0 ? n / s : 0; }

static void print_summary(const struct config *cfg, const struct results *r) {
  double events = (double)r->appends_ok * cfg->events_per_append;
  double mb = events * (double)cfg->event_size / 1e6;
  printf("store-bench: shards=%u sync=%s clients=%u inflight=%u events/append=%u event-size=%zu "
         "streams=%u pick=%s\n",
         r->shards, cfg->sync_full ? "full" : "none", cfg->clients, cfg->inflight,
         cfg->events_per_append, cfg->event_size, cfg->streams,
         cfg->pick == PICK_RANDOM ? "random" : "rr");
  printf("appends:  %" PRIu64 " ok in %.2f s: %.0f appends/s, %.0f events/s, %.2f MB/s payload\n",
         r->appends_ok, r->seconds, per_s((double)r->appends_ok, r->seconds),
         per_s(events, r->seconds), per_s(mb, r->seconds));
  printf("latency:  p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms (submit to callback)\n",
         (double)hist_quantile(&r->latency, 0.50) / 1e6,
         (double)hist_quantile(&r->latency, 0.99) / 1e6,
         (double)hist_quantile(&r->latency, 0.999) / 1e6, (double)r->latency.max / 1e6);
  printf("errors:   %" PRIu64 "%s%s\n", r->errors, r->errors ? ", first: " : "",
         r->errors ? evf_err_name(r->first_error) : "");
  printf("stored:   %" PRId64 " events (%" PRId64 " before + %" PRIu64 " acknowledged, warmup "
         "included): %s\n",
         r->stored_after, r->stored_before, r->acked_events, r->count_ok ? "ok" : "MISMATCH");
  if (r->read.done) {
    printf("global read: %" PRIu64 " events in %" PRIu64 " pages, %.3f s: %.0f events/s, "
           "%.1f MB/s stored bytes%s%s\n",
           r->read.events, r->read.pages, r->read.seconds,
           per_s((double)r->read.events, r->read.seconds),
           per_s((double)r->read.bytes / 1e6, r->read.seconds),
           r->read.out_of_order ? ", POSITIONS OUT OF ORDER" : "",
           r->read.rc ? ", READ ERROR" : "");
  }
}

static int write_json(const char *path, const struct config *cfg, const struct results *r) {
  FILE *f = fopen(path, "w");
  if (f == NULL)
    return -errno;
  double events = (double)r->appends_ok * cfg->events_per_append;
  fprintf(f, "{\n  \"config\": {\"shards\": %u, \"sync\": \"%s\", \"clients\": %u, "
             "\"inflight\": %u, \"events_per_append\": %u, \"event_size\": %zu, "
             "\"streams\": %u, \"pick\": \"%s\", \"warmup_s\": %.3f, ",
          r->shards, cfg->sync_full ? "full" : "none", cfg->clients, cfg->inflight,
          cfg->events_per_append, cfg->event_size, cfg->streams,
          cfg->pick == PICK_RANDOM ? "random" : "rr", cfg->warmup_s);
  if (cfg->appends_set)
    fprintf(f, "\"appends\": %" PRIu64 "},\n", cfg->appends);
  else
    fprintf(f, "\"duration_s\": %.3f},\n", cfg->duration_s);
  fprintf(f,
          "  \"append\": {\"seconds\": %.6f, \"appends\": %" PRIu64 ", \"appends_ok\": %" PRIu64
          ", \"appends_per_s\": %.1f, \"events_per_s\": %.1f, \"payload_mb_per_s\": %.3f, "
          "\"latency_ms\": {\"p50\": %.4f, \"p99\": %.4f, \"p999\": %.4f, \"max\": %.4f}, "
          "\"errors\": %" PRIu64 ", \"first_error\": \"%s\", \"acked_events\": %" PRIu64
          ", \"stored_events\": %" PRId64 ", \"count_ok\": %s}",
          r->seconds, r->appends, r->appends_ok, per_s((double)r->appends_ok, r->seconds),
          per_s(events, r->seconds), per_s(events * (double)cfg->event_size / 1e6, r->seconds),
          (double)hist_quantile(&r->latency, 0.50) / 1e6,
          (double)hist_quantile(&r->latency, 0.99) / 1e6,
          (double)hist_quantile(&r->latency, 0.999) / 1e6, (double)r->latency.max / 1e6,
          r->errors, r->errors ? evf_err_name(r->first_error) : "", r->acked_events,
          r->stored_after, r->count_ok ? "true" : "false");
  if (r->read.done)
    fprintf(f,
            ",\n  \"read_global\": {\"seconds\": %.6f, \"events\": %" PRIu64 ", \"pages\": %" PRIu64
            ", \"bytes\": %" PRIu64 ", \"events_per_s\": %.1f, \"mb_per_s\": %.3f, "
            "\"out_of_order\": %" PRIu64 ", \"error\": \"%s\"}",
            r->read.seconds, r->read.events, r->read.pages, r->read.bytes,
            per_s((double)r->read.events, r->read.seconds),
            per_s((double)r->read.bytes / 1e6, r->read.seconds), r->read.out_of_order,
            r->read.rc ? evf_err_name(r->read.rc) : "");
  fprintf(f, "\n}\n");
  return fclose(f) == 0 ? 0 : -errno;
}

/* ---- Main ---- */

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* Commits run on the libuv pool, one per shard at a time: a pool thread per shard, as the server. */
static void size_threadpool(unsigned shards) {
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  unsigned want = shards ? shards : cpus > 0 ? (unsigned)cpus : 1;
  if (want <= 4 || getenv("UV_THREADPOOL_SIZE") != NULL)
    return;
  char value[16];
  snprintf(value, sizeof(value), "%u", want);
  setenv("UV_THREADPOOL_SIZE", value, 0);
}

static bool wait_watermark(struct evf_store *store, uint64_t position) {
  uint64_t deadline = evf_monotonic_ns() + (uint64_t)WATERMARK_WAIT_S * 1000000000u;
  while (store_watermark(store) < position) {
    if (evf_monotonic_ns() > deadline)
      return false;
    struct timespec pause = {0, 100000};
    nanosleep(&pause, NULL);
  }
  return true;
}

static char **make_stream_names(unsigned n) {
  char **names = calloc(n, sizeof(*names));
  for (unsigned i = 0; names != NULL && i < n; i++) {
    if ((names[i] = malloc(32)) == NULL)
      return NULL; /* main exits */
    snprintf(names[i], 32, "bench-%07u", i);
  }
  return names;
}

/* Runs the clients; fills the append part of r. Returns 0 or a setup error. */
static int run_appends(struct shared *sh, struct results *r) {
  const struct config *cfg = sh->cfg;
  struct client *clients = calloc(cfg->clients, sizeof(*clients));
  if (clients == NULL)
    return -ENOMEM;
  sh->t_start = evf_monotonic_ns();
  sh->t_measure = sh->t_start + (uint64_t)(cfg->warmup_s * 1e9);
  sh->t_end = sh->t_measure + (uint64_t)(cfg->duration_s * 1e9);
  unsigned started = 0;
  int rc = 0;
  for (unsigned k = 0; k < cfg->clients; k++) {
    struct client *c = &clients[k];
    c->sh = sh;
    c->index = k;
    c->rng = 0x9E3779B97F4A7C15ull * (k + 1);
    c->next_stream = (unsigned)((uint64_t)k * cfg->streams / cfg->clients);
    c->quota = cfg->appends / cfg->clients + (k < cfg->appends % cfg->clients);
    if ((rc = uv_thread_create(&c->thread, client_run, c)) != 0)
      break;
    started++;
  }
  uint64_t last_position = 0, last_done = sh->t_measure;
  for (unsigned k = 0; k < started; k++) {
    struct client *c = &clients[k];
    uv_thread_join(&c->thread);
    if (c->setup_error != 0 && rc == 0)
      rc = c->setup_error;
    r->appends += c->measured_appends;
    r->appends_ok += c->measured_ok;
    r->acked_events += c->acked_events;
    if (c->errors != 0 && r->errors == 0)
      r->first_error = c->first_error;
    r->errors += c->errors;
    hist_merge(&r->latency, &c->latency);
    if (c->last_position > last_position)
      last_position = c->last_position;
    if (c->last_measured_ns > last_done)
      last_done = c->last_measured_ns;
    client_free(c);
  }
  free(clients);
  r->seconds = duration_mode(cfg) ? cfg->duration_s : (double)(last_done - sh->t_measure) / 1e9;
  /* Acknowledged appends are covered by the watermark: checked, bounded in time. */
  if (!wait_watermark(sh->store, last_position)) {
    fprintf(stderr, "store-bench: the watermark stayed at %" PRIu64 " below %" PRIu64
                    " acknowledged for %d s\n",
            store_watermark(sh->store), last_position, WATERMARK_WAIT_S);
    r->errors++;
  }
  return rc;
}

int main(int argc, char **argv) {
  struct config cfg = {
      .sync_full = true,
      .events_per_append = 1,
      .event_size = 200,
      .streams = 1000,
      .duration_s = 5,
      .warmup_s = 1,
      .clients = 2,
      .inflight = 256,
      .map_size = 16ull << 30,
  };
  int prc = parse_options(argc, argv, &cfg);
  if (prc != 0) {
    usage(prc == 2 ? stdout : stderr);
    return prc == 2 ? 0 : 2;
  }

  char templ[4096];
  char *temp_dir = NULL;
  if (cfg.data_dir == NULL) {
    const char *tmp = getenv("TMPDIR");
    snprintf(templ, sizeof(templ), "%s/evf-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if ((temp_dir = mkdtemp(templ)) == NULL) {
      fprintf(stderr, "store-bench: mkdtemp: %s\n", strerror(errno));
      return 1;
    }
    cfg.data_dir = temp_dir;
  }

  size_threadpool(cfg.shards);
  struct store_options options = {
      .data_dir = cfg.data_dir,
      .shards = cfg.shards,
      .sync_full = cfg.sync_full,
      .map_size = cfg.map_size,
      .page_size = READ_LIMIT,
      .external_ports = cfg.clients,
  };
  struct evf_store *store = NULL;
  char err[512];
  int rc = store_open(&options, &store, err, sizeof(err));
  if (rc != 0) {
    fprintf(stderr, "store-bench: cannot open %s: %s (%s)\n", cfg.data_dir, err,
            evf_err_name(rc));
    if (temp_dir)
      nftw(temp_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 1;
  }
  if ((rc = store_start(store)) != 0) {
    fprintf(stderr, "store-bench: cannot start the store: %s\n", uv_strerror(rc));
    store_close(store);
    if (temp_dir)
      nftw(temp_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return 1;
  }

  struct results r = {.shards = store_shard_count(store)};
  struct shared sh = {.cfg = &cfg, .store = store};
  sh.stream_names = make_stream_names(cfg.streams);
  sh.payload = malloc(cfg.event_size ? cfg.event_size : 1);
  if (sh.stream_names == NULL || sh.payload == NULL) {
    fprintf(stderr, "store-bench: out of memory\n");
    return 1;
  }
  for (size_t i = 0; i < cfg.event_size; i++)
    sh.payload[i] = (uint8_t)('a' + i % 26);

  int status = 0;
  if ((rc = store_event_count(store, &r.stored_before)) != 0) {
    fprintf(stderr, "store-bench: store_event_count: %s\n", evf_strerror(rc));
    status = 1;
  }
  if (status == 0 && !(cfg.appends_set && cfg.appends == 0)) {
    if ((rc = run_appends(&sh, &r)) != 0) {
      fprintf(stderr, "store-bench: client setup failed: %s\n", evf_strerror(rc));
      status = 1;
    }
  }
  if ((rc = store_event_count(store, &r.stored_after)) != 0)
    fprintf(stderr, "store-bench: store_event_count: %s\n", evf_strerror(rc));
  r.count_ok = rc == 0 && (uint64_t)(r.stored_after - r.stored_before) == r.acked_events;
  if (cfg.read_global) {
    read_global(store, &r.read);
    if (r.read.rc != 0 || r.read.out_of_order != 0 ||
        r.read.events != (uint64_t)r.stored_after)
      status = 1;
  }
  store_close(store);

  print_summary(&cfg, &r);
  if (r.read.done && r.read.events != (uint64_t)r.stored_after)
    fprintf(stderr, "store-bench: the global read returned %" PRIu64 " events, %" PRId64
                    " are stored\n",
            r.read.events, r.stored_after);
  if (cfg.json_path && (rc = write_json(cfg.json_path, &cfg, &r)) != 0) {
    fprintf(stderr, "store-bench: cannot write %s: %s\n", cfg.json_path, strerror(-rc));
    status = 1;
  }
  if (r.errors != 0 || !r.count_ok)
    status = 1;

  for (unsigned i = 0; i < cfg.streams; i++)
    free(sh.stream_names[i]);
  free(sh.stream_names);
  free(sh.payload);
  if (temp_dir)
    nftw(temp_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  return status;
}
