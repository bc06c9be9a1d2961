/*
 * The methods: api.EventStore mapped onto the store, and grpc.health.v1.
 * Reads run here, on the connection's thread; appends go to the owning
 * shard through this shard's port and answer when durable.
 *
 * Read responses are written straight from the stored bytes: an event is
 * stored as an encoded api.Event, so a repeated Event field is the tag, the
 * length and those bytes. A page stops before the event that would take the
 * response past MAX_MESSAGE_SIZE.
 */
#include "api.pb-c.h"
#include "append_decode.h"
#include "arena.h"
#include "evf/pbwire.h"
#include "evf/store.h"
#include "grpc.h"
#include "health.pb-c.h"
#include "rpc.h"
#include "server.h"
#include "unpack.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>


static uint64_t max_message(struct tp_grpc_call *call) {
  return tp_grpc_server(call)->config->max_message_size;
}

static struct evf_store *store_of(struct tp_grpc_call *call) { return tp_grpc_server(call)->store; }

/* Fails a call with the status of an engine error. */
static void fail_with(struct tp_grpc_call *call, int err, const char *detail) {
  tp_grpc_fail(call, evf_err_grpc_status(err), "%s", detail ? detail : evf_strerror(err));
}

bool tp_rpc__has_nul_in_strings(const ProtobufCMessageDescriptor *desc, const uint8_t *p,
                                 size_t len) {
  struct evf_pb_reader r = {p, p + len};
  struct evf_pb_field field;
  while (r.p < r.end && evf_pb_read_field(&r, &field)) {
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field(desc, field.number);
    if (f == NULL || field.wire != EVF_PB_LEN)
      continue;
    if (f->type == PROTOBUF_C_TYPE_STRING && memchr(field.data, 0, field.len) != NULL)
      return true;
    if (f->type == PROTOBUF_C_TYPE_MESSAGE &&
        tp_rpc__has_nul_in_strings(f->descriptor, field.data, field.len))
      return true;
  }
  return false;
}

ProtobufCMessage *tp_rpc__unpack(struct tp_grpc_call *call, const ProtobufCMessageDescriptor *desc,
                                 const uint8_t *msg, size_t len, ProtobufCAllocator *allocator) {
  if (tp_rpc__has_nul_in_strings(desc, msg, len)) {
    tp_grpc_fail(call, EVF_GRPC_INVALID_ARGUMENT, "a string field of the request holds a NUL");
    return NULL;
  }
  ProtobufCMessage *request = NULL;
  int rc = tp_unpack(desc, allocator, msg, len, &request);
  if (rc == -ENOMEM)
    tp_grpc_fail(call, EVF_GRPC_RESOURCE_EXHAUSTED, "out of memory");
  else if (rc != 0)
    tp_grpc_fail(call, EVF_GRPC_INVALID_ARGUMENT, "cannot decode the request message");
  return request;
}

#define UNPACK_OR_FAIL(type, call, msg, len)                                                  \
  (void *)tp_rpc__unpack(call, &type##__descriptor, msg, len, NULL);                         \
  if (request == NULL)                                                                        \
    return;

/* ---- reads ---- */

/* Collects events as repeated field 1 of a response, within a size budget. */
struct page {
  struct tp_buf *out;
  size_t budget;       /* bytes the events may take */
  int error;
};

/* Room for one more entry of repeated field 1, or NULL to end the page. */
static uint8_t *page_room(struct page *p, size_t len) {
  size_t size = tp_pb_field_size(len);
  if (size > p->budget)
    return NULL;
  uint8_t *room = tp_buf_bytes_field_room(p->out, TP_PB_TAG(1, TP_PB_BYTES), len);
  if (room == NULL) {
    p->error = -ENOMEM;
    return NULL;
  }
  p->budget -= size;
  return room;
}

/* Adds one entry of repeated field 1; returns non-zero to end the page. */
static int add_to_page(struct page *p, const void *data, size_t len) {
  uint8_t *room = page_room(p, len);
  if (room != NULL && len > 0)
    memcpy(room, data, len);
  return room == NULL;
}

/* Room for one more event in the page: the read writes the event there. */
static uint8_t *event_room(size_t len, uint64_t position, void *arg) {
  (void)position;
  return page_room(arg, len);
}

static void get_stream(struct tp_grpc_call *call, const uint8_t *msg, size_t len) {
  Api__GetStreamRequest *request = UNPACK_OR_FAIL(api__get_stream_request, call, msg, len);
  struct page page = {.out = tp_grpc_response(call), .budget = max_message(call)};
  int rc = store_read_stream_into(store_of(call), request->stream, strlen(request->stream),
                                  request->version, request->limit, event_room, &page);
  if (rc == EVF_EINVAL)
    tp_grpc_fail(call, EVF_GRPC_INVALID_ARGUMENT,
                 "a stream name must be 1 to 200 bytes of UTF-8, not all or count, and not "
                 "start with $");
  else if (rc != 0 || page.error != 0)
    fail_with(call, rc ? rc : page.error, NULL);
  else
    tp_grpc_reply(call);
  api__get_stream_request__free_unpacked(request, NULL);
}

/* The checkpoint field may take up to a tag and a 10-byte varint. */
#define CHECKPOINT_RESERVE 11

static void get_global_stream(struct tp_grpc_call *call, const uint8_t *msg, size_t len) {
  Api__GetGlobalStreamRequest *request =
      UNPACK_OR_FAIL(api__get_global_stream_request, call, msg, len);
  struct page page = {.out = tp_grpc_response(call),
                      .budget = max_message(call) - CHECKPOINT_RESERVE};
  uint64_t checkpoint;
  int rc = store_read_global_into(store_of(call), request->offset, request->limit, event_room,
                                  &page, &checkpoint);
  if (rc == 0 && page.error == 0)
    rc = tp_buf_put_varint_field(page.out, TP_PB_TAG(2, TP_PB_VARINT), checkpoint);
  if (rc != 0 || page.error != 0)
    fail_with(call, rc ? rc : page.error, NULL);
  else
    tp_grpc_reply(call);
  api__get_global_stream_request__free_unpacked(request, NULL);
}

/* GetEvent answers with the api.Event as the read hands it over, whole. */
static int copy_event(const uint8_t *event, size_t len, uint64_t position, void *arg) {
  (void)position;
  return tp_buf_append(arg, event, len);
}

static void get_event(struct tp_grpc_call *call, const uint8_t *msg, size_t len) {
  Api__GetEventRequest *request = UNPACK_OR_FAIL(api__get_event_request, call, msg, len);
  struct tp_buf *out = tp_grpc_response(call);
  int rc = store_get_event(store_of(call), request->id, strlen(request->id), copy_event, out);
  if (rc == EVF_EINVAL)
    tp_grpc_fail(call, EVF_GRPC_INVALID_ARGUMENT, "an event id must be a UUID (8-4-4-4-12 hex)");
  else if (rc == EVF_ENOTFOUND)
    tp_grpc_fail(call, EVF_GRPC_NOT_FOUND, "no event with id %s", request->id);
  else if (rc != 0)
    fail_with(call, rc, NULL);
  else
    tp_grpc_reply(call);
  api__get_event_request__free_unpacked(request, NULL);
}

static void reply_count(struct tp_grpc_call *call, int rc, int64_t count) {
  if (rc == 0)
    rc = tp_buf_put_varint_field(tp_grpc_response(call), TP_PB_TAG(1, TP_PB_VARINT), (uint64_t)count);
  if (rc != 0)
    fail_with(call, rc, NULL);
  else
    tp_grpc_reply(call);
}

/* EventCount and StreamCount: an empty request, a count from the store. */
static void answer_count(struct tp_grpc_call *call, const ProtobufCMessageDescriptor *desc,
                         const uint8_t *msg, size_t len,
                         int (*counter)(struct evf_store *, int64_t *)) {
  ProtobufCMessage *request = tp_rpc__unpack(call, desc, msg, len, NULL);
  if (request == NULL)
    return;
  protobuf_c_message_free_unpacked(request, NULL);
  int64_t count = 0;
  int rc = counter(store_of(call), &count);
  reply_count(call, rc, count);
}

static void event_count(struct tp_grpc_call *call, const uint8_t *msg, size_t len) {
  answer_count(call, &api__event_count_request__descriptor, msg, len, store_event_count);
}

static void stream_count(struct tp_grpc_call *call, const uint8_t *msg, size_t len) {
  answer_count(call, &api__stream_count_request__descriptor, msg, len, store_stream_count);
}

static int add_name(const char *name, size_t len, void *arg) { return add_to_page(arg, name, len); }

static void list_streams(struct tp_grpc_call *call, const uint8_t *msg, size_t len) {
  Api__ListStreamsRequest *request = UNPACK_OR_FAIL(api__list_streams_request, call, msg, len);
  struct page page = {.out = tp_grpc_response(call), .budget = max_message(call)};
  int rc = store_list_streams(store_of(call), request->skip, request->limit, add_name, &page);
  if (rc != 0 || page.error != 0)
    fail_with(call, rc ? rc : page.error, NULL);
  else
    tp_grpc_reply(call);
  api__list_streams_request__free_unpacked(request, NULL);
}

static void version(struct tp_grpc_call *call, const uint8_t *msg, size_t len) {
  Api__VersionRequest *request = UNPACK_OR_FAIL(api__version_request, call, msg, len);
  api__version_request__free_unpacked(request, NULL);
  if (tp_buf_put_bytes_field(tp_grpc_response(call), TP_PB_TAG(1, TP_PB_BYTES), EVF_VERSION,
                      strlen(EVF_VERSION)) != 0)
    tp_grpc_fail(call, EVF_GRPC_RESOURCE_EXHAUSTED, "out of memory");
  else
    tp_grpc_reply(call);
}

/* ---- appends ---- */

struct append_state {
  struct store_append append;
  Api__AppendToStreamRequest *request; /* in arena */
  struct tp_arena arena;
  struct tp_grpc_call *call;
};

static void free_append_state(void *state) {
  struct append_state *s = state;
  store_append_deinit(&s->append);
  tp_arena_release(&s->arena);
}

int tp_rpc__encode_append_response(struct tp_buf *out, const struct store_append *a) {
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < a->request->n_events; i++) {
    char id[EVF_UUID_TEXT_LEN + 1];
    evf_uuid_format(&a->ids[i], id);
    rc = tp_buf_put_bytes_field(out, TP_PB_TAG(1, TP_PB_BYTES), id, EVF_UUID_TEXT_LEN);
  }
  if (rc == 0)
    rc = tp_buf_put_varint_field(out, TP_PB_TAG(2, TP_PB_VARINT), a->first_version);
  return rc ? rc : tp_buf_put_varint_field(out, TP_PB_TAG(3, TP_PB_VARINT), a->first_position);
}

size_t tp_rpc__append_response_max(size_t n_events) {
  /*
   * Each id: tag, length, the text; then two varint fields. The field
   * writers reserve a length's longest varint, one byte of which is used.
   */
  return n_events * (2 + EVF_UUID_TEXT_LEN) + (EVF_PB_VARINT_MAX - 1) +
         2 * (1 + EVF_PB_VARINT_MAX);
}

void tp_rpc__count_append(struct tp_grpc_call *call, const Api__AppendToStreamRequest *r,
                          int status) {
  uint64_t bytes = 0;
  size_t events = r ? r->n_events : 0;
  for (size_t i = 0; status == 0 && i < events; i++)
    bytes += r->events[i]->data.len + r->events[i]->metadata.len;
  tp_metrics_append(&tp_grpc_server(call)->metrics, status, events, bytes);
}

enum evf_grpc_status tp_rpc__append_failure(const struct store_append *append, int status,
                                            char *message, size_t size) {
  const Api__AppendToStreamRequest *r = append->request;
  if (status == EVF_EVERSION)
    snprintf(message, size, "wrong expected version for stream %s: expected %d, actual %u",
             r->stream, r->version, append->actual_version);
  else if (status == EVF_EEXIST)
    snprintf(message, size, "an event id of this append is already used by another event");
  else
    snprintf(message, size, "%s", append->detail ? append->detail : evf_strerror(status));
  return evf_err_grpc_status(status);
}

static void append_done(struct store_append *append, int status) {
  struct append_state *s = append->data;
  struct tp_grpc_call *call = s->call;
  tp_rpc__count_append(call, s->request, status);
  char message[512];
  if (status != 0)
    tp_grpc_fail(call, tp_rpc__append_failure(append, status, message, sizeof(message)), "%s",
                 message);
  else if (tp_rpc__encode_append_response(tp_grpc_response(call), append) != 0)
    tp_grpc_fail(call, EVF_GRPC_INTERNAL, "the append is stored; its response cannot be made");
  else
    tp_grpc_reply(call);
  tp_grpc_release(call);
}

/* Decodes the request; fails the call and returns EVF_EINVAL or -ENOMEM unless it decodes. */
static int decode_append(struct tp_grpc_call *call, const uint8_t *msg, size_t len,
                         ProtobufCAllocator *allocator, Api__AppendToStreamRequest **out) {
  switch (tp_append_decode(msg, len, allocator, out)) {
  case TP_APPEND_DECODED:
    return 0;
  case TP_APPEND_NUL:
    tp_grpc_fail(call, EVF_GRPC_INVALID_ARGUMENT, "a string field of the request holds a NUL");
    return EVF_EINVAL;
  case TP_APPEND_NOMEM:
    tp_grpc_fail(call, EVF_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return -ENOMEM;
  default:
    tp_grpc_fail(call, EVF_GRPC_INVALID_ARGUMENT, "cannot decode the request message");
    return EVF_EINVAL;
  }
}

static void append_to_stream(struct tp_grpc_call *call, const uint8_t *msg, size_t len) {
  struct append_state *s = tp_grpc_state(call, sizeof(*s), free_append_state);
  if (s == NULL) {
    tp_rpc__count_append(call, NULL, -ENOMEM);
    tp_grpc_fail(call, EVF_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  tp_arena_init(&s->arena, len + 1024);
  int rc = decode_append(call, msg, len, &s->arena.allocator, &s->request);
  if (rc != 0) {
    s->request = NULL; /* a partly decoded request is never used */
    tp_rpc__count_append(call, NULL, rc);
    return;
  }
  /*
   * Room for the response before the store: once the append is stored, an
   * answer of out of memory would tell the client it was not.
   */
  struct tp_buf *response = tp_grpc_response(call);
  if (response->len != TP_GRPC_PREFIX ||
      tp_buf_reserve(response, tp_rpc__append_response_max(s->request->n_events)) != 0) {
    tp_rpc__count_append(call, s->request, -ENOMEM);
    tp_grpc_fail(call, EVF_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  s->call = call;
  s->append = (struct store_append){.request = s->request, .cb = append_done, .data = s};
  struct tp_server *server = tp_grpc_server(call);
  rc = store_append(store_shard_port(server->store, server->shard), &s->append);
  if (rc != 0) {
    tp_rpc__count_append(call, s->request, rc);
    fail_with(call, rc, s->append.detail);
    return;
  }
  tp_grpc_hold(call);
}

/* ---- health ---- */

static void health_check(struct tp_grpc_call *call, const uint8_t *msg, size_t len) {
  Grpc__Health__V1__HealthCheckRequest *request =
      UNPACK_OR_FAIL(grpc__health__v1__health_check_request, call, msg, len);
  bool known = request->service[0] == '\0' || strcmp(request->service, "api.EventStore") == 0;
  if (!known) {
    tp_grpc_fail(call, EVF_GRPC_NOT_FOUND, "unknown service %s", request->service);
  } else {
    uint64_t status = tp_grpc_server(call)->stopping
                          ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
                          : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    if (tp_buf_put_varint_field(tp_grpc_response(call), TP_PB_TAG(1, TP_PB_VARINT), status) != 0)
      tp_grpc_fail(call, EVF_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    else
      tp_grpc_reply(call);
  }
  grpc__health__v1__health_check_request__free_unpacked(request, NULL);
}

static const struct tp_grpc_method methods[] = {
    {.path = "/api.EventStore/AppendToStream", .handler = append_to_stream},
    {.path = "/api.EventStore/GetStream", .handler = get_stream},
    {.path = "/api.EventStore/GetGlobalStream", .handler = get_global_stream},
    {.path = "/api.EventStore/GetEvent", .handler = get_event},
    {.path = "/api.EventStore/EventCount", .handler = event_count},
    {.path = "/api.EventStore/StreamCount", .handler = stream_count},
    {.path = "/api.EventStore/ListStreams", .handler = list_streams},
    {.path = "/api.EventStore/Version", .handler = version},
    {.path = "/grpc.health.v1.Health/Check", .handler = health_check},
    {.path = "/api.EventStore/SubscribeToAll", .handler = tp_rpc__subscribe_to_all},
    {.path = "/api.EventStore/SubscribeToStream", .handler = tp_rpc__subscribe_to_stream},
    {.path = "/api.EventStore/BatchAppend",
     .on_open = tp_rpc__batch_append_open,
     .on_message = tp_rpc__batch_append_message,
     .on_request_end = tp_rpc__batch_append_end},
};

const struct tp_grpc_method *tp_rpc_find(const char *path, size_t len) {
  for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
    if (strlen(methods[i].path) == len && memcmp(methods[i].path, path, len) == 0)
      return &methods[i];
  }
  return NULL;
}
