/* Ports: submitting appends, the request and reply rings, completions. */
#include "internal.h"

#include "evf/hash.h"
#include "evf/status.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void append_queue_push(struct append_queue *q, struct store_append *req) {
  req->next = NULL;
  if (q->tail)
    q->tail->next = req;
  else
    q->head = req;
  q->tail = req;
  q->length++;
}

struct store_append *append_queue_pop(struct append_queue *q) {
  struct store_append *req = q->head;
  if (req == NULL)
    return NULL;
  q->head = req->next;
  if (q->head == NULL)
    q->tail = NULL;
  q->length--;
  req->next = NULL;
  return req;
}

void append_queue_prepend(struct append_queue *q, struct append_queue *other) {
  if (other->head == NULL)
    return;
  other->tail->next = q->head;
  if (q->tail == NULL)
    q->tail = other->tail;
  q->head = other->head;
  q->length += other->length;
  *other = (struct append_queue){0};
}

int port__init(struct store_port *port, struct evf_store *store, unsigned id) {
  port->store = store;
  port->id = id;
  port->dests = calloc(store->shard_count, sizeof(*port->dests));
  if (port->dests == NULL)
    return -ENOMEM;
  if (id < store->shard_count) {
    port->wake = &store->shards[id].wake;
    return 0;
  }
  port->wake = &port->external_wake;
  return waker_open(&port->external_wake);
}

void port__deinit(struct store_port *port) {
  waker_destroy(&port->external_wake);
  free(port->dests);
}

static void send_to_ring(struct store_port *port, unsigned owner, struct store_append *req) {
  struct ring *r = store__request_ring(port->store, port->id, owner);
  /* Credit: in_flight < ring capacity, so this cannot fail. */
  ring_push(r, req);
  port->dests[owner].in_flight++;
}

static void wake_shard(struct evf_store *store, unsigned shard) {
  ck_pr_fence_memory();
  waker_send(&store->shards[shard].wake);
}

/* Sends parked requests while credit lasts. */
static void send_parked(struct store_port *port, unsigned owner) {
  struct port_dest *d = &port->dests[owner];
  bool sent = false;
  while (d->parked.head != NULL && d->in_flight < REQ_RING_SIZE - 1) {
    send_to_ring(port, owner, append_queue_pop(&d->parked));
    sent = true;
  }
  if (sent)
    wake_shard(port->store, owner);
}

static void send_remote(struct store_port *port, struct store_append *req) {
  struct port_dest *d = &port->dests[req->owner];
  if (d->parked.head != NULL || d->in_flight >= REQ_RING_SIZE - 1) {
    append_queue_push(&d->parked, req); /* backpressure: keep order, send on replies */
    return;
  }
  send_to_ring(port, req->owner, req);
  wake_shard(port->store, req->owner);
}

static void release_outstanding(struct evf_store *store) {
  if (atomic_fetch_sub(&store->outstanding, 1) == 1 && atomic_load(&store->closing))
    store__wake_all(store);
}

int store_append(struct store_port *port, struct store_append *req) {
  struct evf_store *store = port->store;
  req->ids = NULL;
  req->next = NULL;
  req->origin = port;
  req->status = 0;
  req->alone = false;
  req->claimed_ids = 0;
  req->detail = NULL;
  /* Counted before the closing check, so that close never misses it. */
  atomic_fetch_add(&store->outstanding, 1);
  int rc = atomic_load(&store->closing) ? EVF_ESHUTDOWN : validate__append(&store->options, req);
  if (rc != 0) {
    release_outstanding(store);
    return rc;
  }
  const char *stream = req->request->stream;
  req->stream_hash = evf_hash_fnv1a64(stream, strlen(stream));
  req->owner = evf_shard_of(req->stream_hash, store->shard_count);
  if (port->id == req->owner)
    shard__enqueue_local(&store->shards[req->owner], req);
  else
    send_remote(port, req);
  return 0;
}

void store_append_deinit(struct store_append *req) {
  if (req->ids != &req->single_id)
    free(req->ids);
  req->ids = NULL;
}

static void complete(struct store_append *req) {
  struct evf_store *store = req->origin->store;
  req->cb(req, req->status); /* req may be gone after this */
  release_outstanding(store);
}

void port__drain_replies(struct store_port *port) {
  struct evf_store *store = port->store;
  for (unsigned s = 0; s < store->shard_count; s++) {
    struct ring *r = store__reply_ring(store, s, port->id);
    struct store_append *req;
    bool any = false;
    while (ring_pop(r, &req)) {
      port->dests[s].in_flight--;
      complete(req);
      any = true;
    }
    if (any)
      send_parked(port, s);
  }
}

void port__reply(struct shard *owner, struct store_append *req) {
  unsigned origin = req->origin->id;
  if (origin == owner->index) {
    complete(req);
    return;
  }
  struct ring *r = store__reply_ring(owner->store, owner->index, origin);
  /* A reply ring holds at most what its request ring held: never full. */
  ring_push(r, req);
  owner->reply_dirty[origin] = true;
}

void port__flush_replies(struct shard *owner) {
  struct evf_store *store = owner->store;
  bool fenced = false;
  for (unsigned p = 0; p < store->port_count; p++) {
    if (!owner->reply_dirty[p])
      continue;
    if (!fenced) {
      ck_pr_fence_memory();
      fenced = true;
    }
    owner->reply_dirty[p] = false;
    waker_send(store->ports[p].wake);
  }
}

static void external_wake_cb(struct waker *w) { port__drain_replies(w->data); }

struct store_port *store_shard_port(struct evf_store *store, unsigned shard) {
  return &store->ports[shard];
}

struct store_port *store_external_port(struct evf_store *store, unsigned k) {
  return k < store->port_count - store->shard_count ? &store->ports[store->shard_count + k] : NULL;
}

int store_port_bind(struct store_port *port, uv_loop_t *loop) {
  int rc = waker_start(&port->external_wake, loop, external_wake_cb, port);
  if (rc != 0)
    return rc;
  port->bound = true;
  return 0;
}

void store_port_unbind(struct store_port *port) {
  if (port->bound)
    waker_stop(&port->external_wake);
  port->bound = false;
}
