/*
 * The streaming methods: SubscribeToAll and SubscribeToStream (a
 * subscription of the shard's hub, subs.h, whose sink is the call's
 * response stream), and BatchAppend (appends through this shard's port,
 * each answered on the response stream once durable).
 */
#include "api.pb-c.h"
#include "arena.h"
#include "rpc.h"
#include "server.h"
#include "subs.h"

#include "evf/pbwire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- subscriptions ---- */

struct subscription {
  struct tp_sub sub;           /* first: the hub hands it back */
  struct tp_grpc_call *call;
  ProtobufCMessage *request;   /* owns the names the sub borrows */
};

static struct tp_grpc_call *call_of(struct tp_sub *sub) {
  return ((struct subscription *)sub)->call;
}

static int send_message(struct tp_sub *sub, const uint8_t *head, size_t head_len,
                        const uint8_t *body, size_t body_len) {
  struct tp_grpc_call *call = call_of(sub);
  if (!tp_grpc_open(call))
    return -ENOTCONN; /* answered (deadline) or gone: the hub stops it */
  return tp_grpc_send(call, head, head_len, body, body_len);
}

/* SubscriptionResponse.event: the stored event bytes are the field's value as they are. */
static int sink_event(struct tp_sub *sub, const uint8_t *event, size_t len, uint64_t position,
                      uint32_t version) {
  uint8_t head[11] = {TP_PB_TAG(1, TP_PB_BYTES)};
  (void)position;
  (void)version;
  return send_message(sub, head, 1 + evf_pb_put_varint(head + 1, len), event, len);
}

/* A SubscriptionResponse whose field `field` is a message of up to two varint fields. */
static int send_marker(struct tp_sub *sub, unsigned field, uint64_t first, uint64_t second) {
  uint8_t inner[24], outer[28];
  size_t n = 0;
  if (first != 0) {
    inner[n++] = TP_PB_TAG(1, TP_PB_VARINT);
    n += evf_pb_put_varint(inner + n, first);
  }
  if (second != 0) {
    inner[n++] = TP_PB_TAG(2, TP_PB_VARINT);
    n += evf_pb_put_varint(inner + n, second);
  }
  outer[0] = TP_PB_TAG(field, TP_PB_BYTES);
  outer[1] = (uint8_t)n; /* under 128 */
  memcpy(outer + 2, inner, n);
  return send_message(sub, outer, 2 + n, NULL, 0);
}

static int sink_caught_up(struct tp_sub *sub, uint64_t position, uint32_t version) {
  return sub->one_stream ? send_marker(sub, 2, 0, version) : send_marker(sub, 2, position, 0);
}

static int sink_checkpoint(struct tp_sub *sub, uint64_t position) {
  return send_marker(sub, 3, position, 0);
}

static size_t sink_unsent(struct tp_sub *sub) { return tp_grpc_unsent(call_of(sub)); }

static void sink_flush(struct tp_sub *sub) { tp_grpc_flush(call_of(sub)); }

static void sink_end(struct tp_sub *sub, int status) {
  if (status == EVF_ESHUTDOWN)
    tp_grpc_fail(call_of(sub), EVF_GRPC_UNAVAILABLE, "the server is shutting down");
  else
    tp_grpc_fail(call_of(sub), evf_err_grpc_status(status), "the subscription ended: %s",
                 evf_strerror(status));
}

static const struct tp_sub_sink grpc_sink = {
    .event = sink_event,
    .caught_up = sink_caught_up,
    .checkpoint = sink_checkpoint,
    .unsent = sink_unsent,
    .flush = sink_flush,
    .end = sink_end,
};

static void free_subscription(void *state) {
  struct subscription *s = state;
  tp_sub_stop(&s->sub);
  if (s->request)
    protobuf_c_message_free_unpacked(s->request, NULL);
}

/* The consumer's connection took bytes (inside nghttp2: only schedules). */
static void drained(struct tp_grpc_call *call) {
  struct subscription *s = tp_grpc_state(call, sizeof(*s), free_subscription);
  tp_sub_drained(&s->sub);
}

/* The call's subscription state with its request decoded, or NULL after failing the call. */
static struct subscription *open_subscription(struct tp_grpc_call *call,
                                              const ProtobufCMessageDescriptor *desc,
                                              const uint8_t *msg, size_t len) {
  struct subscription *s = tp_grpc_state(call, sizeof(*s), free_subscription);
  if (s == NULL) {
    tp_grpc_fail(call, EVF_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return NULL;
  }
  s->request = tp_rpc__unpack(call, desc, msg, len, NULL);
  if (s->request == NULL)
    return NULL;
  s->call = call;
  s->sub.sink = &grpc_sink;
  s->sub.transport = TP_METRICS_GRPC;
  return s;
}

static void start(struct subscription *s) {
  struct tp_server *server = tp_grpc_server(s->call);
  tp_grpc_on_drain(s->call, drained, server->config->subscription_buffer / 2);
  tp_sub_start(&server->hub, &s->sub);
}

void tp_rpc__subscribe_to_all(struct tp_grpc_call *call, const uint8_t *msg, size_t len) {
  struct subscription *s =
      open_subscription(call, &api__subscribe_to_all_request__descriptor, msg, len);
  if (s == NULL)
    return;
  Api__SubscribeToAllRequest *r = (Api__SubscribeToAllRequest *)s->request;
  s->sub.position = r->offset;
  s->sub.filter = (struct tp_sub_filter){.types = r->event_types, .n_types = r->n_event_types,
                                         .prefixes = r->stream_prefixes,
                                         .n_prefixes = r->n_stream_prefixes};
  s->sub.checkpoint_every = r->checkpoint_interval;
  const char *why = tp_sub_filter_check(&s->sub.filter);
  if (why != NULL) {
    tp_grpc_fail(call, EVF_GRPC_INVALID_ARGUMENT, "%s", why);
    return;
  }
  start(s);
}

void tp_rpc__subscribe_to_stream(struct tp_grpc_call *call, const uint8_t *msg, size_t len) {
  struct subscription *s =
      open_subscription(call, &api__subscribe_to_stream_request__descriptor, msg, len);
  if (s == NULL)
    return;
  Api__SubscribeToStreamRequest *r = (Api__SubscribeToStreamRequest *)s->request;
  if (!store_stream_name_valid(r->stream, strlen(r->stream))) {
    tp_grpc_fail(call, EVF_GRPC_INVALID_ARGUMENT,
                 "a stream name must be 1 to 200 bytes of UTF-8, not all or count, and not "
                 "start with $");
    return;
  }
  s->sub.one_stream = true;
  s->sub.stream = r->stream;
  s->sub.next_version = r->version;
  start(s);
}

/* ---- BatchAppend ---- */

struct tp_batch_call {
  struct tp_grpc_call *call;
  struct tp_batch_call *prev, *next; /* the server's open BatchAppend calls */
  size_t in_flight;
  bool ended;                  /* the client half-closed */
  bool shutting_down;          /* reads no more; ends UNAVAILABLE once all are answered */
  struct tp_buf inner, outer;  /* encoding responses */
};

struct batch_append {
  struct store_append append;
  Api__BatchAppendRequest *request; /* in arena */
  struct tp_arena arena;
  struct tp_batch_call *batch;
};

/* Runs while the call is freed; the state was listed when the call opened. */
static void free_batch_call(void *state) {
  struct tp_batch_call *b = state;
  if (b->prev != NULL)
    b->prev->next = b->next;
  else
    tp_grpc_server(b->call)->batch_calls = b->next;
  if (b->next != NULL)
    b->next->prev = b->prev;
  tp_buf_free(&b->inner);
  tp_buf_free(&b->outer);
}

/* The call's state, made and listed in its server when the call opened. */
static struct tp_batch_call *batch_call_of(struct tp_grpc_call *call) {
  return tp_grpc_state(call, sizeof(struct tp_batch_call), free_batch_call);
}

/* One BatchAppendResponse: the correlation id and inner as field 2 (success) or 3 (error). */
static void send_result(struct tp_batch_call *b, uint64_t correlation_id, unsigned field) {
  b->outer.len = 0;
  if (tp_buf_put_varint_field(&b->outer, TP_PB_TAG(1, TP_PB_VARINT), correlation_id) != 0 ||
      tp_buf_put_bytes_field(&b->outer, TP_PB_TAG(field, TP_PB_BYTES), b->inner.data,
                             b->inner.len) != 0) {
    tp_grpc_fail(b->call, EVF_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  tp_grpc_send(b->call, b->outer.data, b->outer.len, NULL, 0);
}

static void send_error(struct tp_batch_call *b, uint64_t correlation_id,
                       enum evf_grpc_status code, const char *message) {
  b->inner.len = 0;
  if (tp_buf_put_varint_field(&b->inner, TP_PB_TAG(1, TP_PB_VARINT), (uint64_t)code) != 0 ||
      tp_buf_put_bytes_field(&b->inner, TP_PB_TAG(2, TP_PB_BYTES), message, strlen(message)) != 0) {
    tp_grpc_fail(b->call, EVF_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  send_result(b, correlation_id, 3);
}

static void send_success(struct tp_batch_call *b, uint64_t correlation_id,
                         const struct store_append *append) {
  b->inner.len = 0;
  if (tp_rpc__encode_append_response(&b->inner, append) != 0) {
    tp_grpc_fail(b->call, EVF_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  send_result(b, correlation_id, 2);
}

static void free_batch_append(struct batch_append *a) {
  store_append_deinit(&a->append);
  tp_arena_release(&a->arena);
  free(a);
}

/*
 * The call ends once every append is answered: with OK if the client
 * half-closed (it sent nothing more: every request has its result), else
 * with UNAVAILABLE if the server is shutting down, so the client knows the
 * requests it got no result for were never read and may send them again.
 */
static void finish_if_done(struct tp_batch_call *b) {
  if (b->in_flight > 0)
    return;
  if (b->ended)
    tp_grpc_finish(b->call);
  else if (b->shutting_down)
    tp_grpc_finish_with(b->call, EVF_GRPC_UNAVAILABLE, "the server is shutting down");
}

static void stop_reading(struct tp_batch_call *b) {
  b->shutting_down = true;
  tp_grpc_pause(b->call);
}

void tp_rpc__batch_append_open(struct tp_grpc_call *call) {
  struct tp_batch_call *b = batch_call_of(call);
  if (b == NULL) {
    tp_grpc_fail(call, EVF_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  struct tp_server *server = tp_grpc_server(call);
  b->call = call;
  b->next = server->batch_calls;
  if (b->next != NULL)
    b->next->prev = b;
  server->batch_calls = b;
  if (server->stopping) { /* opened during the shutdown grace: nothing will be read */
    stop_reading(b);
    finish_if_done(b);
  }
}

void tp_rpc__batch_append_shutdown(struct tp_server *server) {
  /*
   * Calls with appends in flight are held already; the others are held
   * through the second loop, since finishing one call could close its
   * connection and free the calls on it.
   */
  for (struct tp_batch_call *b = server->batch_calls; b != NULL; b = b->next) {
    stop_reading(b);
    if (b->in_flight == 0)
      tp_grpc_hold(b->call);
  }
  struct tp_batch_call *next;
  for (struct tp_batch_call *b = server->batch_calls; b != NULL; b = next) {
    next = b->next;
    if (b->in_flight == 0) {
      finish_if_done(b);
      tp_grpc_release(b->call); /* may free the call and b */
    }
  }
}

static void batch_append_done(struct store_append *append, int status) {
  struct batch_append *a = append->data;
  struct tp_batch_call *b = a->batch;
  struct tp_grpc_call *call = b->call;
  tp_rpc__count_append(call, a->request->append, status);
  if (status == 0) {
    send_success(b, a->request->correlation_id, append);
  } else {
    char message[512];
    enum evf_grpc_status code = tp_rpc__append_failure(append, status, message, sizeof(message));
    send_error(b, a->request->correlation_id, code, message);
  }
  free_batch_append(a);
  b->in_flight--;
  finish_if_done(b);
  tp_grpc_flush(call);
  if (!b->shutting_down && b->in_flight < tp_grpc_server(call)->config->batch_append_in_flight)
    tp_grpc_resume(call);
  if (b->in_flight == 0)
    tp_grpc_release(call); /* may free the call: last */
}

/* Submits one decoded request; answers at once what the store refuses. */
static void submit(struct tp_batch_call *b, struct batch_append *a) {
  struct tp_grpc_call *call = b->call;
  struct tp_server *server = tp_grpc_server(call);
  a->batch = b;
  a->append = (struct store_append){.request = a->request->append, .cb = batch_append_done,
                                    .data = a};
  int rc = store_append(store_shard_port(server->store, server->shard), &a->append);
  if (rc != 0) {
    char message[512];
    tp_rpc__count_append(call, a->request->append, rc);
    enum evf_grpc_status code = tp_rpc__append_failure(&a->append, rc, message, sizeof(message));
    send_error(b, a->request->correlation_id, code, message);
    free_batch_append(a);
    return;
  }
  if (b->in_flight++ == 0)
    tp_grpc_hold(call);
  if (b->in_flight >= server->config->batch_append_in_flight)
    tp_grpc_pause(call); /* HTTP/2 flow control holds the client back */
}

void tp_rpc__batch_append_message(struct tp_grpc_call *call, const uint8_t *msg, size_t len) {
  struct tp_batch_call *b = batch_call_of(call);
  struct batch_append *a = calloc(1, sizeof(*a));
  if (a == NULL) {
    tp_grpc_fail(call, EVF_GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  tp_arena_init(&a->arena, len + 1024);
  a->request = (Api__BatchAppendRequest *)tp_rpc__unpack(
      call, &api__batch_append_request__descriptor, msg, len, &a->arena.allocator);
  if (a->request == NULL) {
    tp_arena_release(&a->arena);
    free(a);
    return; /* the whole call failed: its messages cannot be told apart any more */
  }
  if (a->request->append == NULL) {
    tp_rpc__count_append(call, NULL, EVF_EINVAL);
    send_error(b, a->request->correlation_id, EVF_GRPC_INVALID_ARGUMENT,
               "the request has no append");
    free_batch_append(a);
    return;
  }
  submit(b, a);
}

void tp_rpc__batch_append_end(struct tp_grpc_call *call) {
  struct tp_batch_call *b = batch_call_of(call);
  b->ended = true;
  finish_if_done(b);
  tp_grpc_flush(call);
}
