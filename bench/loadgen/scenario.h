#ifndef LOADGEN_SCENARIO_H
#define LOADGEN_SCENARIO_H

/*
 * What the load generator sends, as two tables.
 *
 * Operations (lg_ops[]) are the request kinds: each knows how to give an
 * in-flight slot its request templates (init), patch the next request
 * (prepare) and read what came back (complete). They are protocol-neutral:
 * the run builds each operation's template for the scenario's protocol.
 *
 * Scenarios (lg_scenarios[]) are what users pick with --scenario: a
 * protocol and the share of each operation. A scenario that reads streams
 * gets them prefilled first; one that reads the global stream gets the
 * store prefilled when it is empty.
 *
 * To add one: an operation entry (and its template in run.c), then a
 * scenario entry naming it.
 *
 * A streaming operation (open and stop set, prepare and complete NULL)
 * keeps one streaming call per slot open for the whole run and drives it
 * itself: it asks lg_worker_may_send before each request, tells
 * lg_worker_sent after it, lg_worker_count for each answer, and
 * lg_worker_call_ended when its call is over.
 *
 * Subscriptions (LG_OP_SUBSCRIBE) are streaming calls on slots of their
 * own, next to the writers' (worker.h): a live one is opened, and caught
 * up, before the run starts, and tells lg_worker_subscribed; each event
 * goes to lg_worker_delivered; stop may come more than once (the events a
 * live subscriber is owed are known only once every writer is answered).
 */

#include "call.h"

#include <stdint.h>

struct lg_options;
struct lg_slot;

enum lg_op_id {
  LG_OP_APPEND,                 /* AppendToStream, version -1, round-robin streams */
  LG_OP_APPEND_OCC,             /* AppendToStream with the exact expected version */
  LG_OP_READ_STREAM,            /* GetStream from version 0, a random stream */
  LG_OP_READ_GLOBAL,            /* GetGlobalStream, paging from the slot's checkpoint */
  LG_OP_PREFILL,                /* AppendToStream of prefill chunks (setup, not measured) */
  LG_OP_BATCH_APPEND,           /* BatchAppend calls, a window of appends in flight on each */
  LG_OP_SUBSCRIBE,              /* SubscribeToAll calls, counting what they deliver */
  LG_OP_EVENT_COUNT,            /* EventCount (setup: where live subscriptions start) */
  LG_OP_COUNT
};

enum lg_outcome { LG_OUTCOME_OK, LG_OUTCOME_CONFLICT, LG_OUTCOME_ERROR };

enum lg_proto { LG_PROTO_GRPC, LG_PROTO_HTTP };

/* What a scenario's subscribers do. */
enum lg_subs {
  LG_SUBS_NONE,
  LG_SUBS_LIVE,                 /* from the end of the store, while writers append */
  LG_SUBS_CATCH_UP,             /* from position 0 until caught up, no writers */
};

struct lg_op {
  const char *name;             /* as in --mix and the JSON "ops" object */
  const char *grpc_path;
  bool appends;                 /* acknowledged events are written ones */
  /** Gives the slot its templates; returns 0 or -ENOMEM. */
  int (*init)(struct lg_slot *slot);
  /** Patches the slot's next request and points slot->call at it. */
  void (*prepare)(struct lg_slot *slot);
  /** Reads the reply; sets *events to the events written or read. */
  enum lg_outcome (*complete)(struct lg_slot *slot, const struct lg_reply *reply,
                              uint64_t *events);
  /** Streaming: opens the slot's call and starts sending; returns 0 or a negative errno. */
  int (*open)(struct lg_slot *slot);
  /** Streaming: no more requests; end the call once what is in flight is answered (or owed). */
  void (*stop)(struct lg_slot *slot);
};

extern const struct lg_op lg_ops[LG_OP_COUNT];

struct lg_scenario {
  const char *name;
  const char *help;             /* one line for --help */
  enum lg_proto proto;
  enum lg_subs subs;
  /** Fills weights[] (relative shares of each operation) from the options. */
  void (*weights)(const struct lg_options *o, unsigned weights[LG_OP_COUNT]);
};

extern const struct lg_scenario lg_scenarios[];
extern const unsigned lg_scenario_count;

/** The scenario named name, or NULL. */
const struct lg_scenario *lg_scenario_find(const char *name);

/** The operation named name that --mix accepts, or -1. */
int lg_op_find_mixable(const char *name);

/** True when the reply is a success (gRPC OK, HTTP 200). */
bool lg_reply_ok(const struct lg_reply *r);

#endif
