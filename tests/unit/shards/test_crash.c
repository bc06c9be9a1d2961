/*
 * Crash safety: a child process appends under load with SYNC=full and
 * reports every acknowledged event on a pipe; the parent kills it with
 * SIGKILL at a random moment, reopens the folder itself and checks that
 * everything acknowledged survived, that the stored state is consistent,
 * and that positions are never reused. Several rounds on one folder.
 *
 * The child never calls cmocka (its assertions would longjmp into the copy
 * of the test runner): it reports trouble with _exit codes, which the
 * parent turns into failures.
 */
#include "harness.h"

#include "evf/clock.h"
#include "evf/status.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define SHARDS 2
#define WRITERS 2        /* child threads, each on its own external port */
#define IN_FLIGHT 8      /* appends each writer keeps submitted */
#define MAX_BATCH 3
#define STREAMS 8
#define ROUNDS 5
#define MIN_DELAY_MS 50
#define MAX_DELAY_MS 400
#define CHILD_LIFETIME_S 30 /* a child never killed ends itself (SIGALRM) */
#define STARTUP_MS 20000    /* bound on the child's first acknowledgement */
#define DRAIN_MS 10000      /* bound on the pipe closing after the kill */

/* Why a child ended by itself. */
enum child_exit {
  CHILD_OPEN = 10,
  CHILD_BIND,
  CHILD_SUBMIT,
  CHILD_APPEND,
  CHILD_PIPE,
  CHILD_ENDED,
};

/* One acknowledged event, as the child writes it on the pipe. */
struct ack {
  struct evf_uuid id;
  uint64_t position;
  uint32_t version;
  uint32_t stream;
};

static struct harness_options store_options(void) {
  return (struct harness_options){.shards = SHARDS, .external_ports = WRITERS,
                                  .sync_full = true, .page_size = 1000};
}

static void stream_name(uint32_t stream, char out[32]) { snprintf(out, 32, "crash-%u", stream); }

/* ---- the child ---- */

struct slot {
  struct store_append req;
  struct harness_request request;
  char stream[32];
  uint32_t stream_index;
  struct writer *writer;
};

struct writer {
  struct evf_store *store;
  struct store_port *port;
  int fd;
  unsigned seed;
  uv_loop_t loop;
  struct slot slots[IN_FLIGHT];
};

static void ack_cb(struct store_append *req, int status);

static void submit(struct slot *s) {
  struct writer *w = s->writer;
  s->stream_index = (uint32_t)rand_r(&w->seed) % STREAMS;
  stream_name(s->stream_index, s->stream);
  size_t n = 1 + (size_t)rand_r(&w->seed) % MAX_BATCH;
  harness_request(&s->request, s->stream, -1, n, "Ticked", "{\"tick\":1}", NULL);
  s->req = (struct store_append){.request = &s->request.request, .cb = ack_cb, .data = s};
  if (store_append(w->port, &s->req) != 0)
    _exit(CHILD_SUBMIT);
}

/* Reports the events of one append in one write: a pipe write this small is atomic. */
static void report(struct slot *s) {
  struct ack acks[MAX_BATCH];
  size_t n = s->request.request.n_events;
  for (size_t i = 0; i < n; i++)
    acks[i] = (struct ack){.id = s->req.ids[i], .position = s->req.first_position + i,
                           .version = s->req.first_version + (uint32_t)i,
                           .stream = s->stream_index};
  ssize_t written = write(s->writer->fd, acks, n * sizeof(acks[0]));
  if (written != (ssize_t)(n * sizeof(acks[0])))
    _exit(CHILD_PIPE);
}

/* Acknowledged: report it at once, then keep the slot busy with the next append. */
static void ack_cb(struct store_append *req, int status) {
  struct slot *s = req->data;
  if (status != 0)
    _exit(CHILD_APPEND);
  report(s);
  store_append_deinit(req);
  submit(s);
}

static void *writer_main(void *arg) {
  struct writer *w = arg;
  if (uv_loop_init(&w->loop) != 0 || store_port_bind(w->port, &w->loop) != 0)
    _exit(CHILD_BIND);
  for (unsigned i = 0; i < IN_FLIGHT; i++) {
    w->slots[i].writer = w;
    submit(&w->slots[i]);
  }
  /* The bound port keeps the loop alive: this runs until the parent kills us. */
  uv_run(&w->loop, UV_RUN_DEFAULT);
  return NULL;
}

static void child_main(const char *dir, int fd, unsigned seed) {
  alarm(CHILD_LIFETIME_S);
  struct harness_options o = store_options();
  struct evf_store *store;
  if (harness_try_open(dir, &o, &store) != 0)
    _exit(CHILD_OPEN);
  static struct writer writers[WRITERS];
  pthread_t threads[WRITERS];
  for (unsigned i = 0; i < WRITERS; i++) {
    writers[i] = (struct writer){.store = store, .port = store_external_port(store, i), .fd = fd,
                                 .seed = seed + i};
    if (pthread_create(&threads[i], NULL, writer_main, &writers[i]) != 0)
      _exit(CHILD_BIND);
  }
  for (unsigned i = 0; i < WRITERS; i++)
    pthread_join(threads[i], NULL);
  _exit(CHILD_ENDED);
}

/* ---- the parent: running a round ---- */

struct bytes {
  uint8_t *data;
  size_t len;
  size_t capacity;
};

/* Reads what is available; returns false at the end of the pipe. */
static bool read_some(int fd, struct bytes *b) {
  uint8_t chunk[4096];
  ssize_t n = read(fd, chunk, sizeof(chunk));
  if (n < 0 && errno == EINTR)
    return true;
  assert_true(n >= 0);
  if (n == 0)
    return false;
  if (b->len + (size_t)n > b->capacity) {
    b->capacity = 2 * (b->len + (size_t)n);
    b->data = realloc(b->data, b->capacity);
  }
  memcpy(b->data + b->len, chunk, (size_t)n);
  b->len += (size_t)n;
  return true;
}

/*
 * Reads the pipe until deadline (monotonic ns), its end, or until it has
 * given at least `enough` bytes in all; returns false at its end.
 */
static bool read_until(int fd, uint64_t deadline, size_t enough, struct bytes *b) {
  for (;;) {
    uint64_t now = evf_monotonic_ns();
    if (now >= deadline || b->len >= enough)
      return true;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int ready = poll(&p, 1, (int)((deadline - now + 999999) / 1000000));
    assert_true(ready >= 0 || errno == EINTR);
    if (ready > 0 && !read_some(fd, b))
      return false;
  }
}

static uint64_t ms_from_now(unsigned ms) { return evf_monotonic_ns() + (uint64_t)ms * 1000000u; }

static const char *child_exit_name(int code) {
  static const char *const names[] = {"cannot open the store", "cannot bind a port",
                                      "store_append refused", "an append failed",
                                      "cannot write the pipe", "writers ended"};
  return code >= CHILD_OPEN && code <= CHILD_ENDED ? names[code - CHILD_OPEN] : "unknown";
}

/*
 * Runs a child and kills it delay_ms after its first acknowledgement, so
 * that every round dies under load however slowly the child starts.
 */
static void run_child(const char *dir, unsigned delay_ms, unsigned seed, struct bytes *out) {
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  fflush(NULL); /* nothing buffered may be written twice */
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    child_main(dir, fds[1], seed);
  }
  close(fds[1]);
  bool alive = read_until(fds[0], ms_from_now(STARTUP_MS), 1, out);
  if (alive && out->len > 0)
    alive = read_until(fds[0], ms_from_now(delay_ms), SIZE_MAX, out);
  kill(pid, SIGKILL);
  /* The rest of what it wrote before dying; the pipe ends with the process. */
  if (alive)
    assert_false(read_until(fds[0], ms_from_now(DRAIN_MS), SIZE_MAX, out));
  close(fds[0]);
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (WIFEXITED(status))
    fail_msg("the child exited with %d (%s) before the kill", WEXITSTATUS(status),
             child_exit_name(WEXITSTATUS(status)));
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGKILL);
  if (out->len == 0)
    fail_msg("the child acknowledged nothing within %d ms", STARTUP_MS);
}

/* ---- the parent: checking the folder ---- */

struct ack_list {
  struct ack *items;
  size_t count;
  size_t capacity;
};

static void ack_list_add(struct ack_list *l, const struct ack *items, size_t n) {
  if (n == 0)
    return;
  if (l->count + n > l->capacity) {
    l->capacity = 2 * (l->count + n);
    l->items = realloc(l->items, l->capacity * sizeof(*l->items));
  }
  memcpy(l->items + l->count, items, n * sizeof(*items));
  l->count += n;
}

struct event_check {
  const struct ack *want;
  bool visited;
};

static int check_event_cb(const uint8_t *event, size_t len, uint64_t position, void *arg) {
  struct event_check *c = arg;
  Api__Event *e = api__event__unpack(NULL, len, event);
  char id[EVF_UUID_TEXT_LEN + 1], stream[32];
  assert_non_null(e);
  evf_uuid_format(&c->want->id, id);
  stream_name(c->want->stream, stream);
  assert_string_equal(e->id, id);
  assert_string_equal(e->stream, stream);
  assert_int_equal(e->version, c->want->version);
  assert_int_equal(e->position, c->want->position);
  assert_int_equal(position, c->want->position);
  api__event__free_unpacked(e, NULL);
  c->visited = true;
  return 0;
}

/* Every acknowledged event, of this round and all before, is there as acknowledged. */
static void assert_acks_durable(struct evf_store *store, const struct ack_list *acks) {
  for (size_t i = 0; i < acks->count; i++) {
    char id[EVF_UUID_TEXT_LEN + 1];
    struct event_check c = {.want = &acks->items[i]};
    evf_uuid_format(&acks->items[i].id, id);
    assert_int_equal(store_get_event(store, id, strlen(id), check_event_cb, &c), 0);
    assert_true(c.visited);
  }
}

static int by_id(const void *a, const void *b) {
  return memcmp(&((const struct ack *)a)->id, &((const struct ack *)b)->id,
                sizeof(struct evf_uuid));
}

/* The global stream, read in full: strictly increasing positions, no id twice. */
static void read_global(struct evf_store *store, struct ack_list *out) {
  struct harness_events *page = malloc(sizeof(*page));
  uint64_t checkpoint = 0;
  size_t got;
  do {
    assert_int_equal(harness_read_global(store, checkpoint, 1000, page, &checkpoint), 0);
    got = page->count;
    for (size_t i = 0; i < got; i++) {
      const Api__Event *e = page->events[i];
      struct ack a = {.position = e->position, .version = e->version};
      assert_int_equal(evf_uuid_parse(e->id, strlen(e->id), &a.id), 0);
      assert_int_equal(sscanf(e->stream, "crash-%u", &a.stream), 1);
      if (out->count > 0)
        assert_true(a.position > out->items[out->count - 1].position);
      ack_list_add(out, &a, 1);
    }
    harness_events_free(page);
  } while (got > 0);
  free(page);

  struct ack *sorted = malloc((out->count + 1) * sizeof(*sorted));
  if (out->count > 0)
    memcpy(sorted, out->items, out->count * sizeof(*sorted));
  qsort(sorted, out->count, sizeof(*sorted), by_id);
  for (size_t i = 1; i < out->count; i++)
    assert_true(by_id(&sorted[i - 1], &sorted[i]) < 0);
  free(sorted);
  int64_t count;
  assert_int_equal(store_event_count(store, &count), 0);
  assert_int_equal(count, (int64_t)out->count);
}

/* Each stream's versions run 0..n-1 without a gap; returns n. */
static size_t assert_stream_gapless(struct evf_store *store, uint32_t stream) {
  struct harness_events *page = malloc(sizeof(*page));
  char name[32];
  stream_name(stream, name);
  uint32_t version = 0;
  size_t got;
  do {
    assert_int_equal(harness_read_stream(store, name, version, 1000, page), 0);
    got = page->count;
    for (size_t i = 0; i < got; i++, version++)
      assert_int_equal(page->events[i]->version, version);
    harness_events_free(page);
  } while (got > 0);
  free(page);
  return version;
}

/* What survived the previous round survives this one, at the same positions. */
static void assert_prefix(const struct ack_list *before, const struct ack_list *now) {
  assert_true(before->count <= now->count);
  for (size_t i = 0; i < before->count; i++) {
    assert_int_equal(now->items[i].position, before->items[i].position);
    assert_memory_equal(&now->items[i].id, &before->items[i].id, sizeof(struct evf_uuid));
  }
}

/*
 * Reopens the folder after a kill and checks it against the acknowledgements
 * (all rounds) and the previous round's global stream, which it replaces.
 */
static void check_folder(const char *dir, const struct ack_list *acks, struct ack_list *global) {
  struct harness_options o = store_options();
  struct evf_store *store = harness_open(dir, &o);
  uint64_t last = global->count ? global->items[global->count - 1].position : 0;
  uint64_t highest_ack = 0;
  for (size_t i = 0; i < acks->count; i++)
    highest_ack = acks->items[i].position > highest_ack ? acks->items[i].position : highest_ack;
  assert_true(harness_wait_watermark(store, highest_ack));
  assert_acks_durable(store, acks);

  struct ack_list now = {0};
  read_global(store, &now);
  assert_prefix(global, &now);
  for (size_t i = global->count; i < now.count; i++)
    assert_true(now.items[i].position > last);
  size_t total = 0;
  for (uint32_t s = 0; s < STREAMS; s++)
    total += assert_stream_gapless(store, s);
  assert_int_equal(total, now.count);
  store_close(store);
  free(global->items);
  *global = now;
}

static void acknowledged_appends_survive_kills(void **state) {
  (void)state;
  char *dir = harness_make_dir();
  /* Kill moments are random; EVF_TEST_SEED replays a run. */
  const char *given = getenv("EVF_TEST_SEED");
  unsigned seed = given ? (unsigned)strtoul(given, NULL, 10)
                        : (unsigned)time(NULL) ^ (unsigned)getpid();
  print_message("seed %u (EVF_TEST_SEED)\n", seed);
  struct ack_list acks = {0}, global = {0};
  for (unsigned round = 0; round < ROUNDS; round++) {
    unsigned delay = MIN_DELAY_MS + (unsigned)rand_r(&seed) % (MAX_DELAY_MS - MIN_DELAY_MS + 1);
    struct bytes b = {0};
    run_child(dir, delay, seed + round * WRITERS, &b);
    /* A kill may cut the last record short: ignore the partial tail. */
    size_t n = b.len / sizeof(struct ack);
    assert_true(n > 0);
    uint64_t last = global.count ? global.items[global.count - 1].position : 0;
    for (size_t i = 0; i < n; i++)
      assert_true(((const struct ack *)b.data)[i].position > last); /* never reused */
    ack_list_add(&acks, (const struct ack *)b.data, n);
    free(b.data);
    check_folder(dir, &acks, &global);
    print_message("round %u: killed %u ms into the load, %zu acknowledged, %zu stored\n", round,
                  delay, n, global.count);
  }
  free(acks.items);
  free(global.items);
  harness_remove_dir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(acknowledged_appends_survive_kills),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
