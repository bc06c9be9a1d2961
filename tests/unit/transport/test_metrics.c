/*
 * The metrics: counting, the engine's statistics, and the exposition text,
 * rendered from a real store and checked with promtool when it is on PATH.
 */
#include "../shards/harness.h"
#include "evf/status.h"
#include "grpc.h"
#include "metrics.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#define SHARDS 2
#define MS 1000000ull

struct fixture {
  char *dir;
  struct evf_store *store;
  struct tp_metrics *metrics[SHARDS];
  struct tp_buf text;
};

static int setup(void **state) {
  struct fixture *f = calloc(1, sizeof(*f));
  f->dir = harness_make_dir();
  struct harness_options o = {.shards = SHARDS, .external_ports = 2, .map_size = 64u << 20};
  f->store = harness_open(f->dir, &o);
  for (unsigned s = 0; s < SHARDS; s++) {
    f->metrics[s] = malloc(sizeof(*f->metrics[s]));
    tp_metrics_init(f->metrics[s]);
  }
  *state = f;
  return 0;
}

static int teardown(void **state) {
  struct fixture *f = *state;
  store_close(f->store);
  harness_remove_dir(f->dir);
  for (unsigned s = 0; s < SHARDS; s++)
    free(f->metrics[s]);
  tp_buf_free(&f->text);
  free(f);
  return 0;
}

/* Renders into f->text, NUL-terminated. */
static const char *render(struct fixture *f) {
  f->text.len = 0;
  assert_int_equal(tp_metrics_render(&f->text, f->store,
                                     (const struct tp_metrics *const *)f->metrics, SHARDS),
                   0);
  assert_int_equal(tp_buf_append(&f->text, "", 1), 0);
  return (const char *)f->text.data;
}

/* The value of one series ("name{labels}" exactly as written), or -1 when absent. */
static double value(const char *text, const char *series) {
  size_t n = strlen(series);
  for (const char *line = text; line && *line; line = strchr(line, '\n')) {
    if (*line == '\n')
      line++;
    if (strncmp(line, series, n) == 0 && line[n] == ' ')
      return strtod(line + n + 1, NULL);
  }
  return -1;
}

static double shard_value(const char *text, const char *name, unsigned shard) {
  char series[128];
  snprintf(series, sizeof(series), "%s{shard=\"%u\"}", name, shard);
  return value(text, series);
}

static bool have_promtool(void) { return system("command -v promtool >/dev/null 2>&1") == 0; }

/* promtool check metrics: parses the text and lints names, types and help. */
static void assert_promtool_clean(const char *text) {
  if (!have_promtool()) {
    print_message("promtool not on PATH: format check skipped\n");
    return;
  }
  char path[] = "/tmp/evf-metrics-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  size_t len = strlen(text);
  assert_int_equal(write(fd, text, len), (ssize_t)len);
  close(fd);
  char command[128];
  snprintf(command, sizeof(command), "promtool check metrics < %s", path);
  int rc = system(command);
  unlink(path);
  if (rc != 0)
    fputs(text, stderr);
  assert_int_equal(rc, 0);
}

static void test_empty_store(void **state) {
  struct fixture *f = *state;
  const char *text = render(f);
  assert_promtool_clean(text);
  assert_true(value(text, "eventflowdb_build_info{version=\"" EVF_VERSION "\"}") == 1);
  assert_true(value(text, "process_cpu_seconds_total") >= 0);
  assert_true(value(text, "process_resident_memory_bytes") > 0);
  assert_true(value(text, "process_open_fds") > 0);
  assert_true(value(text, "process_start_time_seconds") > 1e9);
  assert_true(value(text, "eventflowdb_events") == 0);
  assert_true(value(text, "eventflowdb_streams") == 0);
  assert_true(value(text, "eventflowdb_global_position") == 0);
  assert_true(value(text, "eventflowdb_events_appended_total") == 0);
  assert_true(value(text, "eventflowdb_bytes_appended_total") == 0);
  assert_true(value(text, "eventflowdb_appends_total{result=\"storage_full\"}") == 0);
  assert_true(value(text, "eventflowdb_connections{transport=\"grpc\"}") == 0);
  assert_true(value(text, "eventflowdb_connections{transport=\"http\"}") == 0);
  for (unsigned s = 0; s < SHARDS; s++) {
    assert_true(shard_value(text, "eventflowdb_commit_batch_events_count", s) == 0);
    assert_true(shard_value(text, "eventflowdb_commit_duration_seconds_count", s) == 0);
    assert_true(shard_value(text, "eventflowdb_shard_queue_depth", s) == 0);
    assert_true(shard_value(text, "eventflowdb_storage_used_bytes", s) > 0);
    assert_true(shard_value(text, "eventflowdb_storage_map_bytes", s) == 64u << 20);
    assert_true(shard_value(text, "eventflowdb_index_used_bytes", s) > 0);
    assert_true(shard_value(text, "eventflowdb_index_map_bytes", s) == 64u << 20);
  }
  /* No request yet: the families are announced, without series. */
  assert_non_null(strstr(text, "# TYPE eventflowdb_requests_total counter\n"));
  assert_non_null(strstr(text, "# TYPE eventflowdb_request_duration_seconds histogram\n"));
  assert_null(strstr(text, "eventflowdb_requests_total{"));
}

static void test_engine_figures(void **state) {
  struct fixture *f = *state;
  struct harness_client c;
  harness_client_init(&c, f->store, 0);
  static const char *const streams[] = {"account-1", "account-2", "account-3", "account-4",
                                        "account-5", "account-6", "account-7", "account-8"};
  size_t events = 0;
  for (size_t i = 0; i < 8; i++) {
    struct harness_request r;
    harness_request(&r, streams[i], -1, i + 1, "Deposited", "{\"amount\":1}", NULL);
    assert_int_equal(harness_append(&c, &r.request, NULL), 0);
    events += i + 1;
  }
  assert_true(harness_wait_watermark(f->store, events));
  harness_client_deinit(&c);

  const char *text = render(f);
  assert_promtool_clean(text);
  assert_true(value(text, "eventflowdb_events") == (double)events);
  assert_true(value(text, "eventflowdb_streams") == 8);
  assert_true(value(text, "eventflowdb_global_position") == (double)events);
  double batches = 0, batched_events = 0;
  for (unsigned s = 0; s < SHARDS; s++) {
    double n = shard_value(text, "eventflowdb_commit_batch_events_count", s);
    char inf[96];
    snprintf(inf, sizeof(inf), "eventflowdb_commit_batch_events_bucket{shard=\"%u\",le=\"+Inf\"}", s);
    assert_true(value(text, inf) == n);
    assert_true(shard_value(text, "eventflowdb_commit_duration_seconds_count", s) == n);
    assert_true(shard_value(text, "eventflowdb_commit_duration_seconds_sum", s) > 0 || n == 0);
    assert_true(shard_value(text, "eventflowdb_shard_queue_depth", s) == 0);
    batches += n;
    batched_events += shard_value(text, "eventflowdb_commit_batch_events_sum", s);
  }
  /* One append at a time: one batch each, and every event in one. */
  assert_true(batches == 8);
  assert_true(batched_events == (double)events);

  /* A batch of 8 events lies above the bound 5, within 10. */
  struct store_shard_stats stats[SHARDS];
  uint64_t within5 = 0, within10 = 0;
  for (unsigned s = 0; s < SHARDS; s++) {
    store_shard_stats(f->store, s, &stats[s]);
    assert_int_equal(stats[s].batch_events.bounds[2], 5);
    within5 += stats[s].batch_events.cumulative[2];
    within10 += stats[s].batch_events.cumulative[3];
    assert_true(stats[s].storage_used_bytes <= stats[s].storage_map_bytes);
  }
  assert_int_equal(within5, 5);
  assert_int_equal(within10, 8);
}

static void test_requests_and_appends(void **state) {
  struct fixture *f = *state;
  const char *path = "/api.EventStore/GetStream";
  unsigned get_stream = tp_metrics_grpc_method(path, strlen(path));
  tp_metrics_grpc_request(f->metrics[0], get_stream, EVF_GRPC_OK, 300000);       /* 0.3 ms */
  tp_metrics_grpc_request(f->metrics[1], get_stream, EVF_GRPC_OK, 20 * MS);      /* 20 ms */
  tp_metrics_grpc_request(f->metrics[1], get_stream, EVF_GRPC_NOT_FOUND, 1 * MS);
  tp_metrics_grpc_request(f->metrics[0], TP_METRICS_GRPC_UNKNOWN, EVF_GRPC_UNIMPLEMENTED, 0);
  tp_metrics_grpc_request(f->metrics[0], get_stream, (enum evf_grpc_status)99, 0);
  tp_metrics_http_request(f->metrics[0], TP_METRICS_ROUTE_APPEND, 200, 2 * MS);
  tp_metrics_http_request(f->metrics[1], TP_METRICS_ROUTE_APPEND, 409, 3 * MS);
  tp_metrics_http_request(f->metrics[1], TP_METRICS_ROUTE_UNKNOWN, 404, 0);
  tp_metrics_http_request(f->metrics[1], TP_METRICS_ROUTE_METRICS, 42, 11000 * MS); /* > 10 s */
  tp_metrics_append(f->metrics[0], 0, 3, 100);
  tp_metrics_append(f->metrics[1], 0, 2, 50);
  tp_metrics_append(f->metrics[1], EVF_EVERSION, 4, 1000);
  tp_metrics_append(f->metrics[0], EVF_EEXIST, 1, 1);
  tp_metrics_append(f->metrics[0], EVF_EINVAL, 0, 0);
  tp_metrics_append(f->metrics[0], EVF_ETOOBIG, 1, 1);
  tp_metrics_append(f->metrics[1], EVF_EFULL, 1, 1);
  tp_metrics_append(f->metrics[1], EVF_ESHUTDOWN, 1, 1);
  tp_metrics_append(f->metrics[1], -ENOMEM, 1, 1);
  tp_metrics_connections(f->metrics[0], TP_METRICS_GRPC, 1);
  tp_metrics_connections(f->metrics[1], TP_METRICS_GRPC, 1);
  tp_metrics_connections(f->metrics[1], TP_METRICS_GRPC, 1);
  tp_metrics_connections(f->metrics[1], TP_METRICS_GRPC, -1);
  tp_metrics_connections(f->metrics[0], TP_METRICS_HTTP, 1);

  const char *text = render(f);
  assert_promtool_clean(text);
#define GS "transport=\"grpc\",method=\"api.EventStore/GetStream\""
  assert_true(value(text, "eventflowdb_requests_total{" GS ",code=\"OK\"}") == 2);
  assert_true(value(text, "eventflowdb_requests_total{" GS ",code=\"NOT_FOUND\"}") == 1);
  assert_true(value(text, "eventflowdb_requests_total{" GS ",code=\"UNKNOWN\"}") == 1);
  assert_true(value(text, "eventflowdb_requests_total{" GS ",code=\"INTERNAL\"}") == -1);
  assert_true(value(text, "eventflowdb_requests_total{transport=\"grpc\",method=\"unknown\","
                          "code=\"UNIMPLEMENTED\"}") == 1);
  assert_true(value(text, "eventflowdb_request_duration_seconds_count{" GS "}") == 4);
  assert_true(value(text, "eventflowdb_request_duration_seconds_bucket{" GS ",le=\"0.00025\"}") ==
              1);
  assert_true(value(text, "eventflowdb_request_duration_seconds_bucket{" GS ",le=\"0.0005\"}") ==
              2);
  assert_true(value(text, "eventflowdb_request_duration_seconds_bucket{" GS ",le=\"0.001\"}") == 3);
  assert_true(value(text, "eventflowdb_request_duration_seconds_bucket{" GS ",le=\"0.01\"}") == 3);
  assert_true(value(text, "eventflowdb_request_duration_seconds_bucket{" GS ",le=\"0.025\"}") ==
              4);
  assert_true(value(text, "eventflowdb_request_duration_seconds_bucket{" GS ",le=\"+Inf\"}") == 4);
  assert_true(value(text, "eventflowdb_request_duration_seconds_sum{" GS "}") == 0.0213);
#undef GS
  assert_true(value(text, "eventflowdb_requests_total{transport=\"http\",method=\"append\","
                          "code=\"200\"}") == 1);
  assert_true(value(text, "eventflowdb_requests_total{transport=\"http\",method=\"append\","
                          "code=\"409\"}") == 1);
  assert_true(value(text, "eventflowdb_requests_total{transport=\"http\",method=\"unknown\","
                          "code=\"404\"}") == 1);
  /* A status out of range counts as 500. */
  assert_true(value(text, "eventflowdb_requests_total{transport=\"http\",method=\"metrics\","
                          "code=\"500\"}") == 1);
  assert_true(value(text, "eventflowdb_request_duration_seconds_bucket{transport=\"http\","
                          "method=\"metrics\",le=\"10\"}") == 0);
  assert_true(value(text, "eventflowdb_request_duration_seconds_bucket{transport=\"http\","
                          "method=\"metrics\",le=\"+Inf\"}") == 1);
  assert_true(value(text, "eventflowdb_request_duration_seconds_count{transport=\"http\","
                          "method=\"readyz\"}") == -1);

  assert_true(value(text, "eventflowdb_appends_total{result=\"ok\"}") == 2);
  assert_true(value(text, "eventflowdb_appends_total{result=\"wrong_version\"}") == 1);
  assert_true(value(text, "eventflowdb_appends_total{result=\"already_exists\"}") == 1);
  assert_true(value(text, "eventflowdb_appends_total{result=\"invalid\"}") == 1);
  assert_true(value(text, "eventflowdb_appends_total{result=\"too_large\"}") == 1);
  assert_true(value(text, "eventflowdb_appends_total{result=\"storage_full\"}") == 1);
  assert_true(value(text, "eventflowdb_appends_total{result=\"error\"}") == 2);
  assert_true(value(text, "eventflowdb_events_appended_total") == 5);
  assert_true(value(text, "eventflowdb_bytes_appended_total") == 150);
  assert_true(value(text, "eventflowdb_connections{transport=\"grpc\"}") == 2);
  assert_true(value(text, "eventflowdb_connections{transport=\"http\"}") == 1);
}

/* Subscriptions: a gauge per transport, a counter, two lag histograms, summed over shards. */
static void test_subscriptions(void **state) {
  struct fixture *f = *state;
  tp_metrics_subscriptions(f->metrics[0], TP_METRICS_GRPC, 1);
  tp_metrics_subscriptions(f->metrics[1], TP_METRICS_GRPC, 1);
  tp_metrics_subscriptions(f->metrics[1], TP_METRICS_HTTP, 1);
  tp_metrics_subscriptions(f->metrics[1], TP_METRICS_GRPC, -1);
  tp_metrics_delivered(f->metrics[0], 5);
  tp_metrics_delivered(f->metrics[1], 7);
  tp_metrics_subscription_lag(f->metrics[0], 0, 0);
  tp_metrics_subscription_lag(f->metrics[1], 50, 20 * MS);
  tp_metrics_subscription_lag(f->metrics[1], 20000000, 7200000 * MS); /* past the last bounds */

  const char *text = render(f);
  assert_promtool_clean(text);
  assert_true(value(text, "eventflowdb_subscriptions{transport=\"grpc\"}") == 1);
  assert_true(value(text, "eventflowdb_subscriptions{transport=\"http\"}") == 1);
  assert_true(value(text, "eventflowdb_subscription_events_delivered_total") == 12);
  assert_true(value(text, "eventflowdb_subscription_lag_events_bucket{le=\"0\"}") == 1);
  assert_true(value(text, "eventflowdb_subscription_lag_events_bucket{le=\"100\"}") == 2);
  assert_true(value(text, "eventflowdb_subscription_lag_events_bucket{le=\"10000000\"}") == 2);
  assert_true(value(text, "eventflowdb_subscription_lag_events_bucket{le=\"+Inf\"}") == 3);
  assert_true(value(text, "eventflowdb_subscription_lag_events_sum") == 20000050);
  assert_true(value(text, "eventflowdb_subscription_lag_seconds_bucket{le=\"0.001\"}") == 1);
  assert_true(value(text, "eventflowdb_subscription_lag_seconds_bucket{le=\"0.1\"}") == 2);
  assert_true(value(text, "eventflowdb_subscription_lag_seconds_bucket{le=\"3600\"}") == 2);
  assert_true(value(text, "eventflowdb_subscription_lag_seconds_count") == 3);
}

/* Every method the metrics name is served, in the order of rpc.c's table. */
static void test_grpc_methods(void **state) {
  (void)state;
  static const char *const paths[] = {
      "/api.EventStore/AppendToStream", "/api.EventStore/GetStream",
      "/api.EventStore/GetGlobalStream", "/api.EventStore/GetEvent",
      "/api.EventStore/EventCount",     "/api.EventStore/StreamCount",
      "/api.EventStore/ListStreams",    "/api.EventStore/Version",
      "/grpc.health.v1.Health/Check",   "/api.EventStore/SubscribeToAll",
      "/api.EventStore/SubscribeToStream", "/api.EventStore/BatchAppend"};
  assert_int_equal(sizeof(paths) / sizeof(paths[0]), TP_METRICS_GRPC_UNKNOWN);
  for (unsigned i = 0; i < TP_METRICS_GRPC_UNKNOWN; i++) {
    assert_int_equal(tp_metrics_grpc_method(paths[i], strlen(paths[i])), i);
    assert_non_null(tp_rpc_find(paths[i], strlen(paths[i])));
  }
  assert_int_equal(tp_metrics_grpc_method("/api.EventStore/Nope", 20), TP_METRICS_GRPC_UNKNOWN);
  assert_int_equal(tp_metrics_grpc_method("/api.EventStore/GetStreamX", 26),
                   TP_METRICS_GRPC_UNKNOWN);
  assert_int_equal(tp_metrics_grpc_method("", 0), TP_METRICS_GRPC_UNKNOWN);
}

/* A shard counts while another thread renders: counts only grow, none is lost. */
#define WRITES 200000

struct writer {
  struct tp_metrics *m;
  atomic_bool done;
};

static void writer_run(void *arg) {
  struct writer *w = arg;
  for (unsigned i = 0; i < WRITES; i++) {
    tp_metrics_grpc_request(w->m, 1, EVF_GRPC_OK, i % 1000 * 1000);
    tp_metrics_append(w->m, 0, 1, 10);
  }
  atomic_store(&w->done, true);
}

static void test_render_while_counting(void **state) {
  struct fixture *f = *state;
  struct writer w = {.m = f->metrics[1]};
  uv_thread_t thread;
  assert_int_equal(uv_thread_create(&thread, writer_run, &w), 0);
  const char *series = "eventflowdb_request_duration_seconds_count{transport=\"grpc\","
                       "method=\"api.EventStore/GetStream\"}";
  const char *inf = "eventflowdb_request_duration_seconds_bucket{transport=\"grpc\","
                    "method=\"api.EventStore/GetStream\",le=\"+Inf\"}";
  double last = -1;
  unsigned renders = 0, inconsistent = 0, decreasing = 0;
  /* Asserts wait for the join: a failing one would leave the thread running. */
  while (!atomic_load(&w.done)) {
    const char *text = render(f);
    double n = value(text, series); /* -1 before the first count: no series yet */
    inconsistent += n != value(text, inf);
    decreasing += n < last;
    last = n > last ? n : last;
    renders++;
  }
  uv_thread_join(&thread);
  print_message("%u renders while counting\n", renders);
  assert_int_equal(inconsistent, 0);
  assert_int_equal(decreasing, 0);
  const char *text = render(f);
  assert_true(value(text, series) == WRITES);
  assert_true(value(text, "eventflowdb_events_appended_total") == WRITES);
  assert_true(value(text, "eventflowdb_bytes_appended_total") == WRITES * 10.0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_empty_store, setup, teardown),
      cmocka_unit_test_setup_teardown(test_engine_figures, setup, teardown),
      cmocka_unit_test_setup_teardown(test_requests_and_appends, setup, teardown),
      cmocka_unit_test_setup_teardown(test_subscriptions, setup, teardown),
      cmocka_unit_test(test_grpc_methods),
      cmocka_unit_test_setup_teardown(test_render_while_counting, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
