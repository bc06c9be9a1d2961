#define _GNU_SOURCE /* nftw */
#include "harness.h"

#include "evf/clock.h"
#include "evf/hash.h"

#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

char *harness_make_dir(void) {
  char templ[] = "/tmp/evf-test-XXXXXX";
  char *dir = mkdtemp(templ);
  assert_non_null(dir);
  return strdup(dir);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

void harness_remove_dir(char *dir) {
  nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  free(dir);
}

int harness_try_open(const char *dir, const struct harness_options *o, struct evf_store **out) {
  struct harness_options d = {.shards = 2, .external_ports = 4, .map_size = HARNESS_MAP_SIZE,
                              .page_size = 1000};
  if (o != NULL)
    d = *o;
  struct store_options options = {
      .data_dir = dir,
      .shards = d.shards,
      .sync_full = d.sync_full,
      .map_size = d.map_size ? d.map_size : HARNESS_MAP_SIZE,
      .page_size = d.page_size ? d.page_size : 1000,
      .max_event_size = d.max_event_size,
      .external_ports = d.external_ports,
  };
  char err[512];
  int rc = store_open(&options, out, err, sizeof(err));
  if (rc == 0 && (rc = store_start(*out)) != 0)
    store_close(*out);
  return rc;
}

struct evf_store *harness_open(const char *dir, const struct harness_options *o) {
  struct evf_store *s = NULL;
  assert_int_equal(harness_try_open(dir, o, &s), 0);
  return s;
}

void harness_client_init(struct harness_client *c, struct evf_store *store, unsigned port) {
  c->store = store;
  c->port = store_external_port(store, port);
  assert_non_null(c->port);
  assert_int_equal(uv_loop_init(&c->loop), 0);
  assert_int_equal(store_port_bind(c->port, &c->loop), 0);
}

void harness_client_deinit(struct harness_client *c) {
  store_port_unbind(c->port);
  uv_run(&c->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&c->loop), 0);
}

void harness_fixture_open(struct harness_fixture *f) {
  f->store = harness_open(f->dir, NULL);
  harness_client_init(&f->client, f->store, 0);
}

void harness_fixture_close(struct harness_fixture *f) {
  harness_client_deinit(&f->client);
  store_close(f->store);
  f->store = NULL;
}

void harness_fixture_reopen(struct harness_fixture *f) {
  harness_fixture_close(f);
  harness_fixture_open(f);
}

int harness_fixture_append(struct harness_fixture *f, const char *stream, int32_t version,
                           size_t n, const char *const *ids, struct harness_result *result) {
  struct harness_request req;
  harness_request(&req, stream, version, n, "Deposited", "{\"amount\":1}", ids);
  return harness_append(&f->client, &req.request, result);
}

int harness_fixture_setup(void **state) {
  struct harness_fixture *f = calloc(1, sizeof(*f));
  assert_non_null(f);
  f->dir = harness_make_dir();
  harness_fixture_open(f);
  *state = f;
  return 0;
}

int harness_fixture_teardown(void **state) {
  struct harness_fixture *f = *state;
  if (f->store != NULL)
    harness_fixture_close(f);
  harness_remove_dir(f->dir);
  free(f);
  return 0;
}

struct wait_state {
  bool done;
  struct evf_store *store;
  struct harness_result *result;
};

static void append_cb(struct store_append *req, int status) {
  struct wait_state *w = req->data;
  w->done = true;
  struct harness_result *r = w->result;
  r->status = status;
  r->first_version = req->first_version;
  r->first_position = req->first_position;
  r->actual_version = req->actual_version;
  r->watermark_at_ack = store_watermark(w->store);
  r->n_ids = req->request->n_events < 128 ? req->request->n_events : 128;
  memcpy(r->ids, req->ids, r->n_ids * sizeof(r->ids[0]));
}

static void wake_only_cb(uv_timer_t *timer) { (void)timer; }

/* Runs the client's loop until every flag is set; aborts past HARNESS_WAIT_MS. */
static void run_until_done(struct harness_client *c, bool *const *done, size_t n) {
  /* The timer ends a wait in uv_run even if an append's callback never comes. */
  uv_timer_t bound;
  uv_timer_init(&c->loop, &bound);
  uv_update_time(&c->loop); /* the loop may have been idle: count from now */
  uv_timer_start(&bound, wake_only_cb, HARNESS_WAIT_MS, 0);
  uint64_t deadline = evf_monotonic_ns() + (uint64_t)HARNESS_WAIT_MS * 1000000u;
  for (size_t i = 0; i < n; i++) {
    while (!*done[i]) {
      uv_run(&c->loop, UV_RUN_ONCE);
      if (evf_monotonic_ns() > deadline) {
        /* Not fail_msg: it longjmps, this may be a worker thread, and the store still has req. */
        fprintf(stderr, "append did not complete within %d ms\n", HARNESS_WAIT_MS);
        abort();
      }
    }
  }
  uv_close((uv_handle_t *)&bound, NULL);
  uv_run(&c->loop, UV_RUN_NOWAIT); /* the close completes */
}

int harness_append(struct harness_client *c, const Api__AppendToStreamRequest *request,
                   struct harness_result *result) {
  struct harness_result local;
  struct wait_state w = {.store = c->store, .result = result ? result : &local};
  struct store_append req = {.request = request, .cb = append_cb, .data = &w};
  int rc = store_append(c->port, &req);
  if (rc != 0) {
    store_append_deinit(&req);
    return rc;
  }
  bool *done = &w.done;
  run_until_done(c, &done, 1);
  store_append_deinit(&req);
  /* Read-your-writes: an acknowledged append is already below the watermark. */
  if (w.result->status == 0)
    assert_true(w.result->watermark_at_ack >= w.result->first_position + request->n_events - 1);
  return w.result->status;
}

static void pending_done_cb(struct store_append *append, int status) {
  struct harness_pending *p = append->data;
  p->status = status;
  p->done = true;
}

void harness_send(struct harness_client *c, struct harness_pending *p,
                  const Api__AppendToStreamRequest *request) {
  *p = (struct harness_pending){
      .append = {.request = request, .cb = pending_done_cb, .data = p}};
  assert_int_equal(store_append(c->port, &p->append), 0);
}

void harness_await(struct harness_client *c, struct harness_pending *p, size_t n) {
  bool *done[n];
  for (size_t i = 0; i < n; i++)
    done[i] = &p[i].done;
  run_until_done(c, done, n);
  for (size_t i = 0; i < n; i++)
    store_append_deinit(&p[i].append);
}

void harness_name_in_shard(const char *prefix, unsigned shard, unsigned shard_count, unsigned skip,
                           char out[32]) {
  for (unsigned n = 0;; n++) {
    snprintf(out, 32, "%s%u", prefix, n);
    if (evf_stream_shard(out, strlen(out), shard_count) == shard && skip-- == 0)
      return;
  }
}

void harness_request(struct harness_request *r, const char *stream, int32_t version, size_t n,
                     const char *type, const char *payload, const char *const *ids) {
  assert_true(n <= 128);
  api__append_to_stream_request__init(&r->request);
  r->request.stream = (char *)stream;
  r->request.version = version;
  r->request.n_events = n;
  r->request.events = r->event_ptrs;
  for (size_t i = 0; i < n; i++) {
    api__event_data__init(&r->events[i]);
    r->events[i].type = (char *)type;
    r->events[i].data.data = (uint8_t *)payload;
    r->events[i].data.len = strlen(payload);
    if (ids != NULL)
      r->events[i].id = (char *)ids[i];
    r->event_ptrs[i] = &r->events[i];
  }
}

static int collect_cb(const uint8_t *event, size_t len, uint64_t position, void *arg) {
  struct harness_events *out = arg;
  Api__Event *e = api__event__unpack(NULL, len, event);
  assert_non_null(e);
  assert_int_equal(e->position, position);
  assert_true(out->count < sizeof(out->events) / sizeof(out->events[0]));
  out->events[out->count++] = e;
  return 0;
}

int harness_read_stream(struct evf_store *s, const char *stream, uint32_t from, uint32_t limit,
                        struct harness_events *out) {
  out->count = 0;
  return store_read_stream(s, stream, strlen(stream), from, limit, collect_cb, out);
}

int harness_read_global(struct evf_store *s, uint64_t offset, uint32_t limit,
                        struct harness_events *out, uint64_t *checkpoint) {
  out->count = 0;
  return store_read_global(s, offset, limit, collect_cb, out, checkpoint);
}

void harness_events_free(struct harness_events *e) {
  for (size_t i = 0; i < e->count; i++)
    api__event__free_unpacked(e->events[i], NULL);
  e->count = 0;
}

bool harness_wait_watermark(struct evf_store *s, uint64_t position) {
  uint64_t deadline = evf_monotonic_ns() + (uint64_t)HARNESS_WAIT_MS * 1000000u;
  while (store_watermark(s) < position) {
    if (evf_monotonic_ns() > deadline)
      return false;
    /* Another shard's settle may be what moves it. */
    struct timespec pause = {0, 100000};
    nanosleep(&pause, NULL);
  }
  return true;
}
