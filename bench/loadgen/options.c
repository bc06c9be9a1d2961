/* The command line of eventflowdb-bench. */
#define _GNU_SOURCE /* getopt_long */
#include "options.h"

#include "wire.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_GRPC_TARGET "127.0.0.1:6543"
#define DEFAULT_HTTP_TARGET "127.0.0.1:16543"

void lg_options_usage(FILE *f) {
  fprintf(f,
          "Usage: eventflowdb-bench [--OPTION VALUE | --OPTION=VALUE]...\n"
          "\n"
          "Drives a running EventflowDB server with many concurrent requests and reports\n"
          "throughput and latency. Latency is from each request's send (with --rate, its\n"
          "intended send) to its answer. Results of the warmup are not counted.\n"
          "\n"
          "Scenarios (--scenario):\n");
  for (unsigned i = 0; i < lg_scenario_count; i++)
    fprintf(f, "  %-18s %s\n", lg_scenarios[i].name, lg_scenarios[i].help);
  fprintf(f,
          "\n"
          "Options:\n"
          "  --target HOST:PORT       the server (default " DEFAULT_GRPC_TARGET ", gRPC;\n"
          "                           http-read: " DEFAULT_HTTP_TARGET ", HTTP/JSON)\n"
          "  --scenario NAME          one of the scenarios above (default append)\n"
          "  --connections N          TCP connections (default 4)\n"
          "  --concurrency N          calls in flight per HTTP/2 connection, 1 to 1024\n"
          "                           (default 16; http-read: 1 per connection;\n"
          "                           batch-append: BatchAppend calls per connection)\n"
          "  --batch-window N         batch-append: appends in flight on each call\n"
          "                           (default 256)\n"
          "  --subscribers N          subscribe, subscribe-catch-up: SubscribeToAll\n"
          "                           calls, spread over the connections (default 1).\n"
          "                           subscribe opens them at the end of the store and\n"
          "                           waits until they are caught up, then appends\n"
          "                           (each event carries its send time; with --rate,\n"
          "                           its due time): delivery latency counts events\n"
          "                           due in the measured time, and every subscriber\n"
          "                           must deliver every one of them that was\n"
          "                           acknowledged (waited for up to --timeout after\n"
          "                           the run). subscribe-catch-up reads the store from\n"
          "                           position 0 until caught up (an empty store first\n"
          "                           gets --streams x --prefill events); no --duration\n"
          "                           or --rate\n"
          "  --threads N              threads, each with its own event loop and its\n"
          "                           share of the connections (default 1)\n"
          "  --duration SECONDS       measured time (default 10)\n"
          "  --requests N             measure N requests in all instead, then stop\n"
          "  --warmup SECONDS         unmeasured time first (default 1)\n"
          "  --event-size BYTES       data size of each event (default 200)\n"
          "  --events-per-append N    events in each append (default 1)\n"
          "  --client-ids             append, append-occ: every event carries a new\n"
          "                           client-given id, which the server checks for\n"
          "                           reuse (default: the server generates ids)\n"
          "  --streams N              streams written or read (default 1000)\n"
          "  --rate N                 offered load, requests/s over all connections,\n"
          "                           sent on schedule; latency counts from when a\n"
          "                           request was due, so queueing shows (default 0:\n"
          "                           closed loop, each answer sends the next request)\n"
          "  --limit N                read page size (default 1000 for global reads,\n"
          "                           100 for stream reads)\n"
          "  --prefill N              events written to each stream before stream\n"
          "                           reads, not measured (default 100); global reads\n"
          "                           of an empty store first write --streams x N\n"
          "  --mix SHARES             mixed: shares of append, read-stream, read-global\n"
          "                           (default append=70,read-stream=20,read-global=10)\n"
          "  --http-mode MODE         http-read: global (GET /api/v1/stream/all) or\n"
          "                           stream (GET /api/v1/stream/{id}) (default global)\n"
          "  --stream-prefix P        stream names: P and a zero-padded index (default\n"
          "                           bench-PID-TIME-, new for every run)\n"
          "  --timeout SECONDS        bound on connecting, on each request and on a\n"
          "                           silent server (default 10)\n"
          "  --max-time SECONDS       deadline of the whole run, prefill included: then\n"
          "                           it stops, reports and exits 1 (default with\n"
          "                           --requests: 3600; 0: none)\n"
          "  --json FILE              also write every figure as JSON to FILE\n"
          "  --max-error-rate F       exit 1 when errors / requests is above F\n"
          "                           (default 0.01)\n"
          "  --quiet                  no progress line, no summary (use with --json)\n"
          "  -h, --help               print this help and exit\n"
          "\n"
          "Exit codes: 0 ok; 1 error rate above --max-error-rate, a connection failure,\n"
          "a server that stopped answering, or no request completed; 2 bad usage.\n"
          "Ctrl-C ends the run early and still prints the results.\n");
}

static void bad(const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  fputs("eventflowdb-bench: ", stderr);
  vfprintf(stderr, fmt, args);
  fputs(" (see --help)\n", stderr);
  va_end(args);
}

static bool parse_u64(const char *text, uint64_t min, uint64_t max, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || text[0] == '+' || v < min ||
      v > max)
    return false;
  *out = v;
  return true;
}

static bool parse_double(const char *text, double min, double max, double *out) {
  char *end;
  errno = 0;
  double v = strtod(text, &end);
  if (errno != 0 || end == text || *end != '\0' || !(v >= min) || !(v <= max))
    return false;
  *out = v;
  return true;
}

/* "append=70,read-stream=20,read-global=10": shares of the operations --mix accepts. */
static bool parse_mix(const char *text, unsigned mix[LG_OP_COUNT]) {
  char buf[256];
  if (strlen(text) >= sizeof(buf))
    return false;
  strcpy(buf, text);
  memset(mix, 0, sizeof(unsigned) * LG_OP_COUNT);
  unsigned total = 0;
  char *save = NULL;
  for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(item, '=');
    uint64_t v;
    if (eq == NULL)
      return false;
    *eq = '\0';
    int op = lg_op_find_mixable(item);
    if (op < 0 || !parse_u64(eq + 1, 0, 1000000, &v))
      return false;
    mix[op] = (unsigned)v;
    total += (unsigned)v;
  }
  return total > 0;
}

/* HOST:PORT or [V6]:PORT. */
static bool parse_target(const char *text, struct lg_options *o) {
  const char *colon = strrchr(text, ':');
  if (colon == NULL || strlen(text) >= sizeof(o->target))
    return false;
  const char *host = text;
  size_t host_len = (size_t)(colon - text);
  if (host_len >= 2 && host[0] == '[' && host[host_len - 1] == ']') {
    host++;
    host_len -= 2;
  } else if (memchr(host, ':', host_len) != NULL) {
    return false; /* an IPv6 address needs brackets */
  }
  uint64_t port;
  if (host_len == 0 || host_len >= sizeof(o->host) || !parse_u64(colon + 1, 1, 65535, &port))
    return false;
  memcpy(o->host, host, host_len);
  o->host[host_len] = '\0';
  snprintf(o->port, sizeof(o->port), "%u", (unsigned)port);
  snprintf(o->target, sizeof(o->target), "%s", text);
  return true;
}

unsigned lg_options_name_width(const struct lg_options *o) {
  return lg_digits_count(o->streams > 0 ? o->streams - 1 : 0);
}

enum lg_parse_result lg_options_parse(int argc, char **argv, struct lg_options *o) {
  enum {
    OPT_TARGET = 256, OPT_SCENARIO, OPT_CONNECTIONS, OPT_CONCURRENCY, OPT_THREADS, OPT_DURATION,
    OPT_REQUESTS, OPT_WARMUP, OPT_EVENT_SIZE, OPT_EPA, OPT_STREAMS, OPT_RATE, OPT_LIMIT,
    OPT_PREFILL, OPT_MIX, OPT_HTTP_MODE, OPT_PREFIX, OPT_TIMEOUT, OPT_MAX_TIME, OPT_JSON, OPT_MAX_ERROR_RATE,
    OPT_BATCH_WINDOW, OPT_SUBSCRIBERS, OPT_CLIENT_IDS, OPT_QUIET, OPT_HELP
  };
  static const struct option options[] = {
      {"target", required_argument, NULL, OPT_TARGET},
      {"scenario", required_argument, NULL, OPT_SCENARIO},
      {"connections", required_argument, NULL, OPT_CONNECTIONS},
      {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
      {"threads", required_argument, NULL, OPT_THREADS},
      {"duration", required_argument, NULL, OPT_DURATION},
      {"requests", required_argument, NULL, OPT_REQUESTS},
      {"warmup", required_argument, NULL, OPT_WARMUP},
      {"event-size", required_argument, NULL, OPT_EVENT_SIZE},
      {"events-per-append", required_argument, NULL, OPT_EPA},
      {"streams", required_argument, NULL, OPT_STREAMS},
      {"rate", required_argument, NULL, OPT_RATE},
      {"limit", required_argument, NULL, OPT_LIMIT},
      {"prefill", required_argument, NULL, OPT_PREFILL},
      {"mix", required_argument, NULL, OPT_MIX},
      {"http-mode", required_argument, NULL, OPT_HTTP_MODE},
      {"stream-prefix", required_argument, NULL, OPT_PREFIX},
      {"timeout", required_argument, NULL, OPT_TIMEOUT},
      {"max-time", required_argument, NULL, OPT_MAX_TIME},
      {"json", required_argument, NULL, OPT_JSON},
      {"max-error-rate", required_argument, NULL, OPT_MAX_ERROR_RATE},
      {"batch-window", required_argument, NULL, OPT_BATCH_WINDOW},
      {"subscribers", required_argument, NULL, OPT_SUBSCRIBERS},
      {"client-ids", no_argument, NULL, OPT_CLIENT_IDS},
      {"quiet", no_argument, NULL, OPT_QUIET},
      {"help", no_argument, NULL, OPT_HELP},
      {NULL, 0, NULL, 0},
  };
  *o = (struct lg_options){
      .scenario = lg_scenario_find("append"),
      .connections = 4,
      .concurrency = 16,
      .threads = 1,
      .duration_s = 10,
      .warmup_s = 1,
      .event_size = 200,
      .events_per_append = 1,
      .streams = 1000,
      .limit_stream = 100,
      .limit_global = 1000,
      .prefill = 100,
      .batch_window = 256,
      .subscribers = 1,
      .http_mode = LG_HTTP_GLOBAL,
      .max_error_rate = 0.01,
      .timeout_s = 10,
  };
  o->mix[LG_OP_APPEND] = 70;
  o->mix[LG_OP_READ_STREAM] = 20;
  o->mix[LG_OP_READ_GLOBAL] = 10;
  const char *target = NULL, *prefix = NULL;
  bool duration_set = false, mix_set = false, http_mode_set = false, max_time_set = false;
  bool batch_window_set = false, subscribers_set = false;
  uint64_t v;
  int opt;
  opterr = 0;
  optind = 1;
  while ((opt = getopt_long(argc, argv, ":h", options, NULL)) != -1) {
    bool ok = true;
    switch (opt) {
    case OPT_TARGET:
      target = optarg;
      break;
    case OPT_SCENARIO:
      ok = (o->scenario = lg_scenario_find(optarg)) != NULL;
      break;
    case OPT_CONNECTIONS:
      if ((ok = parse_u64(optarg, 1, 10000, &v)))
        o->connections = (unsigned)v;
      break;
    case OPT_CONCURRENCY:
      if ((ok = parse_u64(optarg, 1, 1024, &v)))
        o->concurrency = (unsigned)v;
      break;
    case OPT_THREADS:
      if ((ok = parse_u64(optarg, 1, 256, &v)))
        o->threads = (unsigned)v;
      break;
    case OPT_DURATION:
      ok = parse_double(optarg, 0.001, 86400 * 7, &o->duration_s);
      duration_set = true;
      break;
    case OPT_REQUESTS:
      ok = parse_u64(optarg, 1, UINT64_C(1) << 48, &o->requests);
      break;
    case OPT_WARMUP:
      ok = parse_double(optarg, 0, 3600, &o->warmup_s);
      break;
    case OPT_EVENT_SIZE:
      if ((ok = parse_u64(optarg, 0, 16u << 20, &v)))
        o->event_size = (uint32_t)v;
      break;
    case OPT_EPA:
      if ((ok = parse_u64(optarg, 1, 100000, &v)))
        o->events_per_append = (uint32_t)v;
      break;
    case OPT_STREAMS:
      if ((ok = parse_u64(optarg, 1, 100000000, &v)))
        o->streams = (uint32_t)v;
      break;
    case OPT_RATE:
      ok = parse_double(optarg, 0, 1e9, &o->rate);
      break;
    case OPT_LIMIT:
      if ((ok = parse_u64(optarg, 0, 1000000, &v)))
        o->limit_stream = o->limit_global = (uint32_t)v;
      break;
    case OPT_PREFILL:
      if ((ok = parse_u64(optarg, 0, 10000000, &v)))
        o->prefill = (uint32_t)v;
      break;
    case OPT_MIX:
      ok = parse_mix(optarg, o->mix);
      mix_set = true;
      break;
    case OPT_HTTP_MODE:
      ok = strcmp(optarg, "global") == 0 || strcmp(optarg, "stream") == 0;
      o->http_mode = strcmp(optarg, "stream") == 0 ? LG_HTTP_STREAM : LG_HTTP_GLOBAL;
      http_mode_set = true;
      break;
    case OPT_PREFIX:
      prefix = optarg;
      break;
    case OPT_TIMEOUT:
      ok = parse_double(optarg, 0.01, 3600, &o->timeout_s);
      break;
    case OPT_MAX_TIME:
      ok = parse_double(optarg, 0, 86400 * 30, &o->max_time_s);
      max_time_set = true;
      break;
    case OPT_JSON:
      ok = optarg[0] != '\0';
      o->json_path = optarg;
      break;
    case OPT_MAX_ERROR_RATE:
      ok = parse_double(optarg, 0, 1, &o->max_error_rate);
      break;
    case OPT_BATCH_WINDOW:
      if ((ok = parse_u64(optarg, 1, 65536, &v)))
        o->batch_window = (uint32_t)v;
      batch_window_set = true;
      break;
    case OPT_SUBSCRIBERS:
      if ((ok = parse_u64(optarg, 1, 10000, &v)))
        o->subscribers = (unsigned)v;
      subscribers_set = true;
      break;
    case OPT_CLIENT_IDS:
      o->client_ids = true;
      break;
    case OPT_QUIET:
      o->quiet = true;
      break;
    case OPT_HELP:
    case 'h':
      return LG_PARSE_HELP;
    case ':':
      bad("%s needs a value", argv[optind - 1]);
      return LG_PARSE_BAD;
    default:
      bad("unknown option %s", argv[optind - 1]);
      return LG_PARSE_BAD;
    }
    if (!ok) {
      bad("bad value for --%s: '%s'", options[opt - OPT_TARGET].name, optarg);
      return LG_PARSE_BAD;
    }
  }
  if (optind < argc) {
    bad("unexpected argument '%s'", argv[optind]);
    return LG_PARSE_BAD;
  }
  if (duration_set && o->requests) {
    bad("give --duration or --requests, not both");
    return LG_PARSE_BAD;
  }
  enum lg_subs subs = o->scenario->subs;
  bool catch_up = subs == LG_SUBS_CATCH_UP;
  if (subscribers_set && subs == LG_SUBS_NONE) {
    bad("--subscribers is for --scenario subscribe and subscribe-catch-up");
    return LG_PARSE_BAD;
  }
  if (subs != LG_SUBS_NONE && o->requests) {
    bad("--requests is not supported by --scenario %s (it runs for --duration, or until caught up)",
        o->scenario->name);
    return LG_PARSE_BAD;
  }
  if (catch_up && (duration_set || o->rate > 0)) {
    bad("--duration and --rate are not for --scenario subscribe-catch-up: it runs until caught up");
    return LG_PARSE_BAD;
  }
  if (subs == LG_SUBS_LIVE && o->event_size < 8) {
    bad("--scenario subscribe needs --event-size 8 or more: each event carries its send time");
    return LG_PARSE_BAD;
  }
  bool open_ended = o->requests || catch_up;
  if (!max_time_set)
    o->max_time_s = open_ended ? 3600 : 0; /* a --duration run is bounded by itself */
  if (o->max_time_s > 0 && !open_ended && o->max_time_s < o->warmup_s + o->duration_s) {
    bad("--max-time %g is shorter than --warmup + --duration", o->max_time_s);
    return LG_PARSE_BAD;
  }
  if (o->threads > o->connections) {
    bad("--threads %u is more than --connections %u: every thread needs a connection",
        o->threads, o->connections);
    return LG_PARSE_BAD;
  }
  bool mixed = strcmp(o->scenario->name, "mixed") == 0;
  bool http = o->scenario->proto == LG_PROTO_HTTP;
  if (mix_set && !mixed) {
    bad("--mix is for --scenario mixed");
    return LG_PARSE_BAD;
  }
  if (http_mode_set && !http) {
    bad("--http-mode is for --scenario http-read");
    return LG_PARSE_BAD;
  }
  if (o->client_ids && strcmp(o->scenario->name, "append") != 0 &&
      strcmp(o->scenario->name, "append-occ") != 0) {
    bad("--client-ids is for --scenario append and append-occ");
    return LG_PARSE_BAD;
  }
  bool batch = strcmp(o->scenario->name, "batch-append") == 0;
  if (batch_window_set && !batch) {
    bad("--batch-window is for --scenario batch-append");
    return LG_PARSE_BAD;
  }
  if (batch && o->rate > 0) {
    bad("--rate is not supported by --scenario batch-append (a closed window per call)");
    return LG_PARSE_BAD;
  }
  if ((uint64_t)o->events_per_append * ((uint64_t)o->event_size + 32) > (64u << 20)) {
    bad("--events-per-append x --event-size is over 64 MiB: no server takes such an append");
    return LG_PARSE_BAD;
  }
  if (!parse_target(target ? target : http ? DEFAULT_HTTP_TARGET : DEFAULT_GRPC_TARGET, o)) {
    bad("bad --target '%s': want HOST:PORT or [IPV6]:PORT", target ? target : "");
    return LG_PARSE_BAD;
  }
  unsigned width = lg_options_name_width(o);
  if (prefix != NULL) {
    if (prefix[0] == '\0' || prefix[0] == '$' || strlen(prefix) + width > LG_MAX_STREAM_NAME) {
      bad("bad --stream-prefix: 1 to %u bytes, not starting with '$'",
          LG_MAX_STREAM_NAME - width);
      return LG_PARSE_BAD;
    }
    snprintf(o->stream_prefix, sizeof(o->stream_prefix), "%s", prefix);
  } else {
    snprintf(o->stream_prefix, sizeof(o->stream_prefix), "bench-%ld-%lld-", (long)getpid(),
             (long long)time(NULL));
  }
  return LG_PARSE_OK;
}
