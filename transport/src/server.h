#ifndef TRANSPORT_SERVER_H
#define TRANSPORT_SERVER_H

/*
 * DESIGN
 * One tp_server per shard, created by main() and run on that shard's
 * thread through the store's hooks: tp_server_start (listen) and
 * tp_server_stop (shutdown: close the listener, GOAWAY every connection,
 * let in-flight RPCs finish, force-close what is left after the grace
 * period). Everything in it belongs to the shard's loop thread; main()
 * only initializes it before and frees it after the threads run.
 */

#include "evf/config.h"
#include "evf/store.h"
#include "metrics.h"
#include "subs.h"

#include <stdbool.h>
#include <uv.h>

struct tp_conn;
struct tp_grpc_call;

#define TP_READ_BUFFER_SIZE (64 * 1024)
#define TP_SHUTDOWN_GRACE_MS 5000

struct tp_h1_conn;

/* The three ports every shard listens on. */
enum tp_port { TP_PORT_GRPC, TP_PORT_HTTP, TP_PORT_PROM, TP_PORTS };

struct tp_listener {
  int fd;                       /* bound by main, listened on by the shard */
  uv_tcp_t tcp;
  bool listening;
  uv_tcp_t refused;             /* takes a connection there is no memory for, and closes it */
  bool refusing;                /* refused is closing */
  bool refusal_waits;           /* another such connection waits for it */
  enum tp_port port;
  struct tp_server *server;
};

struct tp_server {
  const struct evf_config *config;
  struct evf_store *store;
  unsigned shard;
  uv_loop_t *loop;
  struct tp_server *all;        /* every shard's server (read-only here but for metrics) */
  unsigned count;
  uint64_t started_ns;          /* monotonic start of the process, for uptime */
  struct tp_listener listeners[TP_PORTS];
  bool stopping;
  uv_timer_t grace;
  bool grace_running;
  struct tp_conn *conns;        /* HTTP/2: gRPC and h2c */
  bool handles_open;            /* h2_writer and deadlines, from start to the last connection */
  uv_prepare_t h2_writer;       /* starts their queued writes before the loop polls (h2.c) */
  struct tp_conn *h2_write_queue;
  uv_timer_t deadlines;         /* armed for the earliest gRPC call deadline (grpc.c) */
  struct tp_grpc_call **deadline_heap; /* calls with deadlines, a binary min-heap */
  size_t deadline_count, deadline_cap;
  size_t conn_count;
  struct tp_h1_conn *http_conns; /* HTTP/1.1: JSON API and metrics */
  size_t http_conn_count;
  uv_timer_t http_sweep;         /* their timeouts, while there are some (http1.c) */
  uint64_t http_sweep_ms;
  struct tp_metrics metrics;     /* written by this shard, read by any (metrics.h) */
  struct tp_hub hub;             /* live subscriptions (subs.h) */
  struct tp_batch_call *batch_calls; /* open BatchAppend calls (rpc_stream.c) */
  char read_buffer[TP_READ_BUFFER_SIZE]; /* nghttp2 consumes reads at once: one per thread */
};

/** Initializes the servers of every shard. Main thread, before the shards start. */
void tp_servers_init(struct tp_server *servers, unsigned count, const struct evf_config *config);

/** Binds the listening sockets of every shard. Main thread. Returns 0 or -errno; err names the port. */
int tp_servers_bind(struct tp_server *servers, unsigned count, char *err, size_t err_len);

/** Store hooks (options.on_shard_start/on_shard_stop with hook_arg = the servers array). */
void tp_server_start(struct evf_store *store, unsigned shard, uv_loop_t *loop, void *servers);
void tp_server_stop(struct evf_store *store, unsigned shard, uv_loop_t *loop, void *servers);

/* For the connections (h2.c). */
uv_buf_t tp_server__read_buffer(struct tp_server *server);
void tp_server__conn_gone(struct tp_server *server);

#endif
