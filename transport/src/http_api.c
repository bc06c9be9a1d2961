/*
 * The HTTP/JSON API: the routes of the original EventflowDB over the store,
 * with the JSON mapping of json.h. Reads run on the connection's thread;
 * appends go to the owning shard and answer when durable. Read pages stop
 * before the event whose JSON would take the body past MAX_MESSAGE_SIZE,
 * but always hold at least one event.
 */
#include "api.pb-c.h"
#include "evf/clock.h"
#include "evf/status.h"
#include "evf/store.h"
#include "evf/utf8.h"
#include "http.h"
#include "json.h"
#include "server.h"
#include "subs.h"
#include "unpack.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct tp_http_header json_type[] = {{"content-type", "application/json"}};

/* ---- the request target ---- */

struct target {
  const char *path;
  size_t path_len;
  const char *query;          /* after '?', or "" */
  size_t query_len;
};

static struct target split_target(struct tp_http_exchange *ex) {
  const char *t = (const char *)ex->target.data;
  size_t len = ex->target.len;
  const char *q = t ? memchr(t, '?', len) : NULL;
  struct target out = {t ? t : "", q ? (size_t)(q - t) : len, q ? q + 1 : "",
                       q ? len - (size_t)(q - t) - 1 : 0};
  return out;
}

static int hex_digit(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  c = (char)tolower((unsigned char)c);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes into out (NUL-terminated). '+' stays a plus. Returns the length, or -1. */
static ssize_t percent_decode(const char *in, size_t len, char *out, size_t out_size) {
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    if (o + 1 >= out_size)
      return -1;
    if (in[i] == '%') {
      int hi = i + 2 < len ? hex_digit(in[i + 1]) : -1, lo = i + 2 < len ? hex_digit(in[i + 2]) : -1;
      if (hi < 0 || lo < 0)
        return -1;
      out[o++] = (char)(hi << 4 | lo);
      i += 2;
    } else {
      out[o++] = in[i];
    }
  }
  out[o] = '\0';
  return (ssize_t)o;
}

/* The value of a query parameter, decoded; returns false when absent. */
static bool query_param(const struct target *t, const char *name, char *out, size_t out_size,
                        bool *bad) {
  size_t name_len = strlen(name);
  const char *p = t->query, *end = t->query + t->query_len;
  while (p < end) {
    const char *amp = memchr(p, '&', (size_t)(end - p));
    const char *item_end = amp ? amp : end;
    const char *eq = memchr(p, '=', (size_t)(item_end - p));
    const char *key_end = eq ? eq : item_end;
    if ((size_t)(key_end - p) == name_len && memcmp(p, name, name_len) == 0) {
      const char *v = eq ? eq + 1 : item_end;
      *bad = percent_decode(v, (size_t)(item_end - v), out, out_size) < 0;
      return true;
    }
    p = item_end + 1;
  }
  return false;
}

/* Decimal digits only, at most max. Returns false otherwise. */
static bool parse_uint(const char *text, uint64_t max, uint64_t *value) {
  char *end = NULL;
  errno = 0;
  unsigned long long v = isdigit((unsigned char)text[0]) ? strtoull(text, &end, 10) : 0;
  if (end == NULL || *end != '\0' || errno != 0 || v > max)
    return false;
  *value = v;
  return true;
}

/* An unsigned query parameter (absent: *value untouched). Answers 400 and returns false if bad. */
static bool query_uint(struct tp_http_exchange *ex, const struct target *t, const char *name,
                       uint64_t max, uint64_t *value) {
  char text[32];
  bool bad = false;
  if (!query_param(t, name, text, sizeof(text), &bad))
    return true;
  if (bad || !parse_uint(text, max, value)) {
    tp_http_error(ex, 400, "INVALID_ARGUMENT",
                  "query parameter %s must be an integer from 0 to %" PRIu64, name, max);
    return false;
  }
  return true;
}

/* ---- responses ---- */

static void respond_json(struct tp_http_exchange *ex, struct tp_buf *body) {
  tp_http_respond(ex, 200, json_type, 1, body);
  tp_buf_free(body);
}

static void respond_message(struct tp_http_exchange *ex, const ProtobufCMessage *msg) {
  struct tp_buf body = {0};
  if (tp_json_encode(msg, &body) != 0) {
    tp_buf_free(&body);
    tp_http_error(ex, 503, "RESOURCE_EXHAUSTED", "out of memory");
    return;
  }
  respond_json(ex, &body);
}

/* An engine error as its HTTP status and gRPC code name. */
static void respond_store_error(struct tp_http_exchange *ex, int rc, const char *message) {
  tp_http_error(ex, evf_err_http_status(rc), evf_grpc_status_name(evf_err_grpc_status(rc)), "%s",
                message ? message : evf_strerror(rc));
}

static void method_not_allowed(struct tp_http_exchange *ex, const char *allow) {
  const struct tp_http_header headers[] = {{"content-type", "application/json"}, {"allow", allow}};
  struct tp_buf body = {0};
  char text[160];
  int n = snprintf(text, sizeof(text),
                   "{\"error\":\"method %s is not allowed here; allowed: %s\",\"code\":\"UNIMPLEMENTED\"}",
                   ex->method, allow);
  tp_buf_append(&body, text, (size_t)n);
  tp_http_respond(ex, 405, headers, 2, &body);
  tp_buf_free(&body);
}

static struct evf_store *store_of(struct tp_http_exchange *ex) { return ex->server->store; }

/* ---- pages of events ---- */

struct json_page {
  struct tp_buf *out;
  size_t budget;
  size_t count;
  int error;
};

/* Appends one stored event as JSON; cuts the page before it would pass the budget. */
static int add_event(const uint8_t *event, size_t len, uint64_t position, void *arg) {
  struct json_page *p = arg;
  (void)position;
  Api__Event *e;
  int rc = tp_unpack_event(event, len, &e);
  if (rc != 0) {
    p->error = rc;
    return 1;
  }
  size_t before = p->out->len;
  rc = p->count > 0 ? tp_buf_append(p->out, ",", 1) : 0;
  if (rc == 0)
    rc = tp_json_encode(&e->base, p->out);
  api__event__free_unpacked(e, NULL);
  if (rc != 0) {
    p->error = rc;
    return 1;
  }
  if (p->out->len > p->budget && p->count > 0) {
    p->out->len = before;
    return 1;
  }
  p->count++;
  return 0;
}

/* Room left for the closing of a global page: "],\"checkpoint\":" and 20 digits and "}". */
#define PAGE_TAIL 40

static void read_global(struct tp_http_exchange *ex, const struct target *t) {
  uint64_t offset = 0, limit = 0;
  if (!query_uint(ex, t, "offset", UINT64_MAX, &offset) ||
      !query_uint(ex, t, "limit", UINT32_MAX, &limit))
    return;
  struct tp_buf body = {0};
  struct json_page page = {.out = &body, .budget = ex->server->config->max_message_size - PAGE_TAIL};
  uint64_t checkpoint;
  /* Each part is checked: one left out would answer 200 with no JSON document. */
  int rc = tp_buf_append(&body, "{\"events\":[", 11);
  if (rc == 0)
    rc = store_read_global(store_of(ex), offset, (uint32_t)limit, add_event, &page, &checkpoint);
  if (rc == 0)
    rc = page.error;
  if (rc == 0) {
    char tail[48];
    int n = snprintf(tail, sizeof(tail), "],\"checkpoint\":%" PRIu64 "}", checkpoint);
    rc = tp_buf_append(&body, tail, (size_t)n);
  }
  if (rc != 0) {
    tp_buf_free(&body);
    respond_store_error(ex, rc, NULL);
    return;
  }
  respond_json(ex, &body);
}

static void read_stream(struct tp_http_exchange *ex, const struct target *t, const char *stream,
                        size_t stream_len) {
  uint64_t version = 0, limit = 0;
  if (!query_uint(ex, t, "version", UINT32_MAX, &version) ||
      !query_uint(ex, t, "limit", UINT32_MAX, &limit))
    return;
  struct tp_buf body = {0};
  struct json_page page = {.out = &body, .budget = ex->server->config->max_message_size - 2};
  /* Each part is checked: one left out would answer 200 with no JSON document. */
  int rc = tp_buf_append(&body, "{\"events\":[", 11);
  if (rc == 0)
    rc = store_read_stream(store_of(ex), stream, stream_len, (uint32_t)version, (uint32_t)limit,
                           add_event, &page);
  if (rc == 0)
    rc = page.error;
  if (rc == 0)
    rc = tp_buf_append(&body, "]}", 2);
  if (rc != 0) {
    tp_buf_free(&body);
    respond_store_error(ex, rc,
                        rc == EVF_EINVAL ? "a stream name must be 1 to 200 bytes of UTF-8, not all "
                                           "or count, and not start with $"
                                         : NULL);
    return;
  }
  respond_json(ex, &body);
}

/* ---- subscriptions: Server-Sent Events (http_sse.c) ---- */

#define LIST_TEXT_MAX (TP_SUB_FILTER_MAX_NAMES * (TP_SUB_FILTER_MAX_NAME + 1) + 1)

static void free_list(char **names, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(names[i]);
  free(names);
}

/* Splits "a,b,c" into names the caller owns. Returns 0 or -ENOMEM. */
static int split_list(const char *text, char ***out, size_t *n) {
  size_t count = 1;
  for (const char *p = text; *p; p++)
    count += *p == ',';
  char **names = calloc(count, sizeof(*names));
  if (names == NULL)
    return -ENOMEM;
  const char *start = text;
  for (size_t i = 0; i < count; i++) {
    const char *comma = strchr(start, ',');
    size_t len = comma ? (size_t)(comma - start) : strlen(start);
    if ((names[i] = strndup(start, len)) == NULL) {
      free_list(names, i);
      return -ENOMEM;
    }
    start += len + 1;
  }
  *out = names;
  *n = count;
  return 0;
}

/* A comma-separated query list (absent: none). Answers and returns false if bad. */
static bool query_list(struct tp_http_exchange *ex, const struct target *t, const char *name,
                       char ***out, size_t *n) {
  char *text = malloc(LIST_TEXT_MAX);
  bool bad = false, ok = true;
  if (text == NULL) {
    tp_http_error(ex, 503, "RESOURCE_EXHAUSTED", "out of memory");
    return false;
  }
  if (query_param(t, name, text, LIST_TEXT_MAX, &bad)) {
    if (bad) {
      tp_http_error(ex, 400, "INVALID_ARGUMENT",
                    "query parameter %s: bad percent-encoding, or over %d names of %d bytes", name,
                    TP_SUB_FILTER_MAX_NAMES, TP_SUB_FILTER_MAX_NAME);
      ok = false;
    } else if (text[0] != '\0' && split_list(text, out, n) != 0) {
      tp_http_error(ex, 503, "RESOURCE_EXHAUSTED", "out of memory");
      ok = false;
    }
  }
  free(text);
  return ok;
}

/* The Last-Event-ID header, if any, as a number. Answers 400 and returns false if bad. */
static bool last_event_id(struct tp_http_exchange *ex, uint64_t max, bool *present,
                          uint64_t *value) {
  *present = ex->last_event_id[0] != '\0';
  if (*present && !parse_uint(ex->last_event_id, max, value)) {
    tp_http_error(ex, 400, "INVALID_ARGUMENT",
                  "Last-Event-ID must be an integer from 0 to %" PRIu64, max);
    return false;
  }
  return true;
}

static void subscribe_all(struct tp_http_exchange *ex, const struct target *t) {
  struct tp_sse_request r = {0};
  uint64_t interval = 0, id;
  bool resume;
  if (!query_uint(ex, t, "offset", UINT64_MAX, &r.offset) ||
      !query_uint(ex, t, "checkpoint_interval", UINT32_MAX, &interval) ||
      !last_event_id(ex, UINT64_MAX, &resume, &id))
    return;
  if (resume)
    r.offset = id; /* the client's EventSource reconnects after what it saw */
  r.checkpoint_interval = (uint32_t)interval;
  if (!query_list(ex, t, "types", &r.types, &r.n_types) ||
      !query_list(ex, t, "prefixes", &r.prefixes, &r.n_prefixes)) {
    free_list(r.types, r.n_types);
    return;
  }
  struct tp_sub_filter filter = {r.types, r.n_types, r.prefixes, r.n_prefixes};
  const char *why = tp_sub_filter_check(&filter);
  if (why != NULL) {
    free_list(r.types, r.n_types);
    free_list(r.prefixes, r.n_prefixes);
    tp_http_error(ex, 400, "INVALID_ARGUMENT", "%s", why);
    return;
  }
  tp_http_sse_subscribe(ex, &r);
}

static void subscribe_stream(struct tp_http_exchange *ex, const struct target *t,
                             const char *stream, size_t stream_len) {
  uint64_t version = 0, id;
  bool resume;
  if (!query_uint(ex, t, "version", UINT32_MAX, &version) ||
      !last_event_id(ex, UINT32_MAX - 1, &resume, &id))
    return;
  if (!store_stream_name_valid(stream, stream_len)) {
    tp_http_error(ex, 400, "INVALID_ARGUMENT",
                  "a stream name must be 1 to 200 bytes of UTF-8, not all or count, and not "
                  "start with $");
    return;
  }
  struct tp_sse_request r = {.one_stream = true, .stream = stream,
                             .version = resume ? (uint32_t)id + 1 : (uint32_t)version};
  tp_http_sse_subscribe(ex, &r);
}

/* ---- single answers ---- */

struct found_event {
  Api__Event *event;
  int status; /* of decoding it */
};

static int copy_event(const uint8_t *event, size_t len, uint64_t position, void *arg) {
  (void)position;
  struct found_event *found = arg;
  found->status = tp_unpack_event(event, len, &found->event);
  return 0;
}

static void get_event(struct tp_http_exchange *ex, const char *id, size_t len) {
  struct found_event found = {.status = EVF_EINTERNAL}; /* until the store hands it over */
  int rc = store_get_event(store_of(ex), id, len, copy_event, &found);
  if (rc == 0)
    rc = found.status;
  if (rc == EVF_ENOTFOUND)
    tp_http_error(ex, 404, "NOT_FOUND", "no event with id %.*s", (int)len, id);
  else if (rc == EVF_EINVAL)
    tp_http_error(ex, 400, "INVALID_ARGUMENT", "an event id must be a UUID (8-4-4-4-12 hex)");
  else if (rc != 0)
    respond_store_error(ex, rc, NULL);
  else
    respond_message(ex, &found.event->base);
  if (found.event)
    api__event__free_unpacked(found.event, NULL);
}

static void count(struct tp_http_exchange *ex, int (*counter)(struct evf_store *, int64_t *)) {
  /* EventCountResponse and StreamCountResponse have the same shape. */
  Api__EventCountResponse response = API__EVENT_COUNT_RESPONSE__INIT;
  int rc = counter(store_of(ex), &response.count);
  if (rc != 0)
    respond_store_error(ex, rc, NULL);
  else
    respond_message(ex, &response.base);
}

struct name_list {
  char **names;
  size_t count;
  size_t cap;
};

static int collect_name(const char *name, size_t len, void *arg) {
  struct name_list *l = arg;
  if (l->count == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    char **grown = realloc(l->names, cap * sizeof(*grown));
    if (grown == NULL)
      return 1;
    l->names = grown;
    l->cap = cap;
  }
  if ((l->names[l->count] = strndup(name, len)) == NULL)
    return 1;
  l->count++;
  return 0;
}

static void list_streams(struct tp_http_exchange *ex, const struct target *t) {
  uint64_t offset = 0, limit = 0;
  if (!query_uint(ex, t, "skip", UINT32_MAX, &offset) ||
      !query_uint(ex, t, "offset", UINT32_MAX, &offset) ||
      !query_uint(ex, t, "limit", UINT32_MAX, &limit))
    return;
  struct name_list list = {0};
  int rc = store_list_streams(store_of(ex), (uint32_t)offset, (uint32_t)limit, collect_name, &list);
  Api__ListStreamsReponse response = API__LIST_STREAMS_REPONSE__INIT;
  response.n_streams = list.count;
  response.streams = list.names;
  if (rc != 0)
    respond_store_error(ex, rc, NULL);
  else
    respond_message(ex, &response.base);
  for (size_t i = 0; i < list.count; i++)
    free(list.names[i]);
  free(list.names);
}

static void version(struct tp_http_exchange *ex, const struct target *t) {
  (void)t;
  Api__VersionResponse response = API__VERSION_RESPONSE__INIT;
  response.version = EVF_VERSION;
  respond_message(ex, &response.base);
}

static void uptime(struct tp_http_exchange *ex, const struct target *t) {
  (void)t;
  uint64_t ms = (evf_monotonic_ns() - ex->server->started_ns) / 1000000;
  uint64_t s = ms / 1000;
  char body[160];
  int n = snprintf(body, sizeof(body),
                   "{\"uptime\":%" PRIu64 ",\"uptime_human\":\"%" PRIu64 "d %" PRIu64 "h %" PRIu64
                   "m %" PRIu64 "s\"}",
                   ms, s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
  struct tp_buf out = {0};
  if (tp_buf_append(&out, body, (size_t)n) != 0) {
    tp_http_error(ex, 503, "RESOURCE_EXHAUSTED", "out of memory");
    return;
  }
  respond_json(ex, &out);
}

static void probe(struct tp_http_exchange *ex, bool ready) {
  struct tp_buf out = {0};
  const char *text = ready ? "{\"status\":\"ok\"}" : "{\"status\":\"shutting down\"}";
  tp_buf_append(&out, text, strlen(text));
  tp_http_respond(ex, ready ? 200 : 503, json_type, 1, &out);
  tp_buf_free(&out);
}

/* ---- appends ---- */

struct append_state {
  struct store_append append;
  Api__AppendToStreamRequest *request;
  struct tp_http_exchange *ex;
};

static void free_append_state(void *state) {
  struct append_state *s = state;
  store_append_deinit(&s->append);
  if (s->request)
    protobuf_c_message_free_unpacked(&s->request->base, NULL);
}

/*
 * The append is stored: out of memory now is no 503, which tells the
 * client (and proxies, which retry it) that nothing was done.
 */
static void stored_without_answer(struct tp_http_exchange *ex) {
  tp_http_error(ex, 500, "INTERNAL", "the append is stored; out of memory building its response");
}

static void answer_append(struct tp_http_exchange *ex, const struct store_append *a) {
  size_t n = a->request->n_events;
  char (*texts)[EVF_UUID_TEXT_LEN + 1] = malloc(n * sizeof(*texts));
  char **ids = malloc(n * sizeof(*ids));
  if (texts == NULL || ids == NULL) {
    free(texts);
    free(ids);
    stored_without_answer(ex);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    evf_uuid_format(&a->ids[i], texts[i]);
    ids[i] = texts[i];
  }
  Api__AppendToStreamResponse response = API__APPEND_TO_STREAM_RESPONSE__INIT;
  response.n_events = n;
  response.events = ids;
  response.first_version = a->first_version;
  response.first_position = a->first_position;
  struct tp_buf body = {0};
  if (tp_json_encode(&response.base, &body) != 0) {
    tp_buf_free(&body);
    stored_without_answer(ex);
  } else {
    respond_json(ex, &body);
  }
  free(ids);
  free(texts);
}

/* Counts an append's outcome: its events and their data and metadata bytes. */
static void count_append(struct tp_http_exchange *ex, const Api__AppendToStreamRequest *r,
                         int status) {
  uint64_t bytes = 0;
  size_t events = r ? r->n_events : 0;
  for (size_t i = 0; i < events; i++)
    bytes += r->events[i]->data.len + r->events[i]->metadata.len;
  tp_metrics_append(&ex->server->metrics, status, events, bytes);
}

static void append_done(struct store_append *append, int status) {
  struct append_state *s = append->data;
  count_append(s->ex, s->request, status);
  if (status == EVF_EVERSION)
    tp_http_error(s->ex, 409, "ABORTED",
                  "wrong expected version for stream %s: expected %d, actual %u",
                  s->request->stream, s->request->version, append->actual_version);
  else if (status == EVF_EEXIST)
    tp_http_error(s->ex, 409, "ALREADY_EXISTS",
                  "an event id of this append is already used by another event");
  else if (status != 0)
    respond_store_error(s->ex, status, NULL);
  else
    answer_append(s->ex, append);
  tp_http_unhold(s->ex);
}

/* The stream comes from the path; a "stream" in the body is replaced by it. */
static int set_stream(Api__AppendToStreamRequest *request, const char *stream) {
  char *copy = strdup(stream);
  if (copy == NULL)
    return -ENOMEM;
  if (request->stream != protobuf_c_empty_string)
    free(request->stream);
  request->stream = copy;
  return 0;
}

static void append(struct tp_http_exchange *ex, const char *stream) {
  struct append_state *s = calloc(1, sizeof(*s));
  if (s == NULL) {
    count_append(ex, NULL, -ENOMEM);
    tp_http_error(ex, 503, "RESOURCE_EXHAUSTED", "out of memory");
    return;
  }
  ex->state = s;
  ex->free_state = free_append_state;
  s->ex = ex;
  char err[256];
  ProtobufCMessage *msg = NULL;
  int rc = tp_json_decode(&api__append_to_stream_request__descriptor,
                          (const char *)ex->body.data, ex->body.len, &msg, err, sizeof(err));
  if (rc != 0) {
    count_append(ex, NULL, rc);
    tp_http_error(ex, rc == EVF_EINVAL ? 400 : 503,
                  rc == EVF_EINVAL ? "INVALID_ARGUMENT" : "RESOURCE_EXHAUSTED", "%s",
                  rc == EVF_EINVAL ? err : "out of memory");
    return;
  }
  s->request = (Api__AppendToStreamRequest *)msg;
  if (set_stream(s->request, stream) != 0) {
    count_append(ex, s->request, -ENOMEM);
    tp_http_error(ex, 503, "RESOURCE_EXHAUSTED", "out of memory");
    return;
  }
  s->append = (struct store_append){.request = s->request, .cb = append_done, .data = s};
  rc = store_append(store_shard_port(store_of(ex), ex->server->shard), &s->append);
  if (rc != 0) {
    count_append(ex, s->request, rc);
    respond_store_error(ex, rc, s->append.detail);
    return;
  }
  tp_http_hold(ex);
}

/* ---- routing ---- */

static bool is(const struct target *t, const char *path) {
  return t->path_len == strlen(path) && memcmp(t->path, path, t->path_len) == 0;
}

/* The decoded {id} of prefix{id}, a single path segment; false if the path is not that. */
static bool segment_after(const struct target *t, const char *prefix, char *out, size_t out_size,
                          ssize_t *len) {
  size_t n = strlen(prefix);
  if (t->path_len <= n || memcmp(t->path, prefix, n) != 0 ||
      memchr(t->path + n, '/', t->path_len - n) != NULL)
    return false;
  *len = percent_decode(t->path + n, t->path_len - n, out, out_size);
  if (*len > 0 && memchr(out, '\0', (size_t)*len) != NULL)
    *len = -1; /* names and ids are text: a NUL would cut them short */
  return true;
}

static bool method_is(const struct tp_http_exchange *ex, const char *m) {
  return strcmp(ex->method, m) == 0;
}

typedef void (*fixed_handler)(struct tp_http_exchange *ex, const struct target *t);

static void stream_count(struct tp_http_exchange *ex, const struct target *t) {
  (void)t;
  count(ex, store_stream_count);
}

static void event_count(struct tp_http_exchange *ex, const struct target *t) {
  (void)t;
  count(ex, store_event_count);
}

/* Routes without a path parameter; all are GET. */
static const struct {
  const char *path;
  fixed_handler handler;
  enum tp_metrics_route route;
} fixed_routes[] = {
    {"/api/v1/version", version, TP_METRICS_ROUTE_VERSION},
    {"/api/v1/uptime", uptime, TP_METRICS_ROUTE_UPTIME},
    {"/api/v1/stream", list_streams, TP_METRICS_ROUTE_LIST_STREAMS},
    {"/api/v1/stream/count", stream_count, TP_METRICS_ROUTE_STREAM_COUNT},
    {"/api/v1/event/count", event_count, TP_METRICS_ROUTE_EVENT_COUNT},
    {"/api/v1/stream/all", read_global, TP_METRICS_ROUTE_READ_GLOBAL},
    {"/api/v1/stream/all/subscribe", subscribe_all, TP_METRICS_ROUTE_SUBSCRIBE_ALL},
};

static bool route_fixed(struct tp_http_exchange *ex, const struct target *t) {
  for (size_t i = 0; i < sizeof(fixed_routes) / sizeof(fixed_routes[0]); i++) {
    if (!is(t, fixed_routes[i].path))
      continue;
    ex->route = fixed_routes[i].route;
    if (method_is(ex, "GET"))
      fixed_routes[i].handler(ex, t);
    else
      method_not_allowed(ex, "GET");
    return true;
  }
  if (is(t, "/healthz") || is(t, "/readyz")) {
    ex->route = is(t, "/healthz") ? TP_METRICS_ROUTE_HEALTHZ : TP_METRICS_ROUTE_READYZ;
    if (method_is(ex, "GET"))
      probe(ex, is(t, "/healthz") || !ex->server->stopping);
    else
      method_not_allowed(ex, "GET");
    return true;
  }
  return false;
}

/* The decoded {id} of /api/v1/stream/{id}/subscribe; false if the path is not that. */
static bool subscribe_segment(const struct target *t, char *out, size_t out_size, ssize_t *len) {
  static const char prefix[] = "/api/v1/stream/", suffix[] = "/subscribe";
  size_t p = sizeof(prefix) - 1, s = sizeof(suffix) - 1;
  if (t->path_len <= p + s || memcmp(t->path, prefix, p) != 0 ||
      memcmp(t->path + t->path_len - s, suffix, s) != 0 ||
      memchr(t->path + p, '/', t->path_len - p - s) != NULL)
    return false;
  *len = percent_decode(t->path + p, t->path_len - p - s, out, out_size);
  if (*len > 0 && memchr(out, '\0', (size_t)*len) != NULL)
    *len = -1;
  return true;
}

/* /api/v1/stream/{id} (GET, POST), /api/v1/stream/{id}/subscribe and /api/v1/event/{id} (GET). */
static bool route_segment(struct tp_http_exchange *ex, const struct target *t) {
  char id[1024];
  ssize_t len;
  if (subscribe_segment(t, id, sizeof(id), &len)) {
    ex->route = TP_METRICS_ROUTE_SUBSCRIBE_STREAM;
    if (len < 0)
      tp_http_error(ex, 400, "INVALID_ARGUMENT", "bad percent-encoding (or %%00) in the stream name");
    else if (method_is(ex, "GET"))
      subscribe_stream(ex, t, id, (size_t)len);
    else
      method_not_allowed(ex, "GET");
    return true;
  }
  if (segment_after(t, "/api/v1/stream/", id, sizeof(id), &len)) {
    ex->route = method_is(ex, "POST") ? TP_METRICS_ROUTE_APPEND : TP_METRICS_ROUTE_READ_STREAM;
    if (len < 0)
      tp_http_error(ex, 400, "INVALID_ARGUMENT", "bad percent-encoding (or %%00) in the stream name");
    else if (method_is(ex, "GET"))
      read_stream(ex, t, id, (size_t)len);
    else if (method_is(ex, "POST"))
      append(ex, id);
    else
      method_not_allowed(ex, "GET, POST");
    return true;
  }
  if (segment_after(t, "/api/v1/event/", id, sizeof(id), &len)) {
    ex->route = TP_METRICS_ROUTE_GET_EVENT;
    if (len < 0)
      tp_http_error(ex, 400, "INVALID_ARGUMENT", "bad percent-encoding (or %%00) in the event id");
    else if (method_is(ex, "GET"))
      get_event(ex, id, (size_t)len);
    else
      method_not_allowed(ex, "GET");
    return true;
  }
  return false;
}

/* Names the path, up to 200 bytes of it, cut between characters. */
static void not_found(struct tp_http_exchange *ex, const struct target *t) {
  size_t len = t->path_len > 200 ? evf_utf8_cut(t->path, 200) : t->path_len;
  tp_http_error(ex, 404, "NOT_FOUND", "no route for %.*s", (int)len, t->path);
}

void tp_http_api_route(struct tp_http_exchange *ex) {
  struct target t = split_target(ex);
  if (ex->server->stopping && !is(&t, "/healthz") && !is(&t, "/readyz")) {
    tp_http_error(ex, 503, "UNAVAILABLE", "the server is shutting down");
    return;
  }
  if (!route_fixed(ex, &t) && !route_segment(ex, &t))
    not_found(ex, &t);
}

/* PROM_PORT: GET /metrics, summed over every shard's counters at scrape time. */
void tp_http_metrics_route(struct tp_http_exchange *ex) {
  struct target t = split_target(ex);
  if (!is(&t, "/metrics")) {
    tp_http_error(ex, 404, "NOT_FOUND", "metrics are at /metrics");
    return;
  }
  ex->route = TP_METRICS_ROUTE_METRICS;
  if (!method_is(ex, "GET")) {
    method_not_allowed(ex, "GET");
    return;
  }
  struct tp_server *server = ex->server;
  const struct tp_metrics *shards[server->count];
  for (unsigned i = 0; i < server->count; i++)
    shards[i] = &server->all[i].metrics;
  struct tp_buf body = {0};
  if (tp_metrics_render(&body, server->store, shards, server->count) != 0) {
    tp_buf_free(&body);
    tp_http_error(ex, 503, "RESOURCE_EXHAUSTED", "out of memory");
    return;
  }
  static const struct tp_http_header type[] = {{"content-type", TP_METRICS_CONTENT_TYPE}};
  tp_http_respond(ex, 200, type, 1, &body);
  tp_buf_free(&body);
}
