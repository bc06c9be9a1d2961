#ifndef TESTS_HARNESS_H
#define TESTS_HARNESS_H

/*
 * Helpers for engine tests: a store in a fresh temporary folder, and
 * blocking appends for test threads (each bound to its own external port
 * and loop, with a bounded wait).
 */

#include "evf/store.h"

#include <stdbool.h>
#include <stdint.h>

#define HARNESS_WAIT_MS 30000 /* bound on any single wait for the engine */
#define HARNESS_MAP_SIZE (256u << 20) /* default map size of each shard's log and index */

struct harness_options {
  unsigned shards;
  unsigned external_ports;
  bool sync_full;
  uint64_t map_size;
  unsigned page_size;
  uint64_t max_event_size;
};

/** Makes a temporary folder (freed by harness_remove_dir). Returns a malloc'd path. */
char *harness_make_dir(void);
void harness_remove_dir(char *dir);

/** Opens a store in dir; fails the test on error. Defaults: 2 shards, 4 ports, SYNC=none. */
struct evf_store *harness_open(const char *dir, const struct harness_options *o);
/** Like harness_open, but returns the error code instead of failing. */
int harness_try_open(const char *dir, const struct harness_options *o, struct evf_store **out);

/* A test thread's client: an external port bound to a loop of its own. */
struct harness_client {
  struct evf_store *store;
  struct store_port *port;
  uv_loop_t loop;
};

void harness_client_init(struct harness_client *c, struct evf_store *store, unsigned port);
void harness_client_deinit(struct harness_client *c);


/* The outcome of an append. */
struct harness_result {
  int status;
  uint32_t first_version;
  uint64_t first_position;
  uint32_t actual_version;
  uint64_t watermark_at_ack;  /* store_watermark() in the callback */
  size_t n_ids;
  struct evf_uuid ids[128];
};

/**
 * Appends and waits for the result. Returns the synchronous error of
 * store_append, or the status of the callback. result may be NULL.
 */
int harness_append(struct harness_client *c, const Api__AppendToStreamRequest *request,
                   struct harness_result *result);

/* An append whose result comes later: harness_send() it, then harness_await() it. */
struct harness_pending {
  struct store_append append; /* its outputs (first_position...) stay readable after the wait */
  bool done;
  int status;
};

/** Submits the append without waiting; fails the test if store_append refuses it. */
void harness_send(struct harness_client *c, struct harness_pending *p,
                  const Api__AppendToStreamRequest *request);

/** Runs the client's loop until the n appends answered (aborts past HARNESS_WAIT_MS); deinits. */
void harness_await(struct harness_client *c, struct harness_pending *p, size_t n);

/** The skip-th name "<prefix><n>" (n = 0, 1...) a store of shard_count shards puts in shard. */
void harness_name_in_shard(const char *prefix, unsigned shard, unsigned shard_count, unsigned skip,
                           char out[32]);

/* Builds requests: n events of one type with the given payload; ids NULL or n ids. */
struct harness_request {
  Api__AppendToStreamRequest request;
  Api__EventData *event_ptrs[128];
  Api__EventData events[128];
};
void harness_request(struct harness_request *r, const char *stream, int32_t version, size_t n,
                     const char *type, const char *payload, const char *const *ids);

/* Decoded reads (freed with harness_events_free). */
struct harness_events {
  size_t count;
  Api__Event *events[4096];
};
int harness_read_stream(struct evf_store *s, const char *stream, uint32_t from, uint32_t limit,
                        struct harness_events *out);
int harness_read_global(struct evf_store *s, uint64_t offset, uint32_t limit,
                        struct harness_events *out, uint64_t *checkpoint);
void harness_events_free(struct harness_events *e);

/** Waits (bounded) until the watermark reaches at least position. Returns true if it did. */
bool harness_wait_watermark(struct evf_store *s, uint64_t position);

/*
 * The usual test fixture: a store with default options in a temporary
 * folder, and a client on its external port 0. setup/teardown are cmocka's
 * (the state is the fixture); close and open let a test restart the store
 * on the same folder (teardown accepts a closed one).
 */
struct harness_fixture {
  char *dir;
  struct evf_store *store;
  struct harness_client client;
};
int harness_fixture_setup(void **state);
int harness_fixture_teardown(void **state);
void harness_fixture_open(struct harness_fixture *f);
void harness_fixture_close(struct harness_fixture *f);
void harness_fixture_reopen(struct harness_fixture *f);
/**
 * Appends n events of type "Deposited" with data {"amount":1} (ids NULL or
 * n client ids) through the fixture's client; as harness_append.
 */
int harness_fixture_append(struct harness_fixture *f, const char *stream, int32_t version,
                           size_t n, const char *const *ids, struct harness_result *result);

#endif
