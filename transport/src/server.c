/* The per-shard server: listening, and shutting down gracefully. */
#include "server.h"

#include "evf/log.h"
#include "grpc.h"
#include "h2.h"
#include "listener.h"

#include <stdio.h>
#include <string.h>

int tp_servers_bind(struct tp_server *servers, unsigned count, const struct evf_config *config,
                    char *err, size_t err_len) {
  int rc = tp_listener_check_free(config->grpc_port);
  for (unsigned i = 0; rc == 0 && i < count; i++)
    rc = tp_listener_bind(config->grpc_port, &servers[i].grpc_fd);
  if (rc != 0) {
    snprintf(err, err_len, "GRPC_PORT=%u cannot be used: %s", config->grpc_port, strerror(-rc));
    return rc;
  }
  return 0;
}

static void on_grpc_connection(uv_stream_t *listener, int status) {
  struct tp_server *server = listener->data;
  if (status != 0) {
    evf_warn("accept failed on shard %u: %s", server->shard, uv_strerror(status));
    return;
  }
  tp_conn_accept(server, listener, &tp_grpc_protocol);
}

void tp_server_start(struct evf_store *store, unsigned shard, uv_loop_t *loop, void *servers) {
  struct tp_server *server = &((struct tp_server *)servers)[shard];
  server->store = store;
  server->shard = shard;
  server->loop = loop;
  server->grpc_listener.data = server;
  int rc = tp_listener_start(&server->grpc_listener, loop, server->grpc_fd, on_grpc_connection);
  if (rc != 0) {
    evf_error("shard %u cannot listen on GRPC_PORT=%u: %s", shard, server->config->grpc_port,
              uv_strerror(rc));
    return;
  }
  server->listening = true;
}

static void grace_closed_cb(uv_handle_t *handle) { (void)handle; }

static void stop_grace_timer(struct tp_server *server) {
  if (server->grace_running) {
    server->grace_running = false;
    uv_close((uv_handle_t *)&server->grace, grace_closed_cb);
  }
}

/* Clients that kept their streams open past the grace period are cut off. */
static void grace_over_cb(uv_timer_t *timer) {
  struct tp_server *server = timer->data;
  if (server->conn_count > 0)
    evf_warn("shard %u: closing %zu connections still busy after %d ms", server->shard,
             server->conn_count, TP_SHUTDOWN_GRACE_MS);
  struct tp_conn *next;
  for (struct tp_conn *conn = server->conns; conn; conn = next) {
    next = tp_conn_next(conn); /* closing frees the connection later, in its close callback */
    tp_conn_close(conn);
  }
  stop_grace_timer(server);
}

void tp_server_stop(struct evf_store *store, unsigned shard, uv_loop_t *loop, void *servers) {
  struct tp_server *server = &((struct tp_server *)servers)[shard];
  (void)store;
  server->stopping = true;
  if (server->listening) {
    server->listening = false;
    uv_close((uv_handle_t *)&server->grpc_listener, NULL);
  }
  for (struct tp_conn *conn = server->conns; conn; conn = tp_conn_next(conn))
    tp_conn_drain(conn);
  if (server->conn_count == 0)
    return;
  uv_timer_init(loop, &server->grace);
  server->grace.data = server;
  server->grace_running = true;
  uv_timer_start(&server->grace, grace_over_cb, TP_SHUTDOWN_GRACE_MS, 0);
}

uv_buf_t tp_server__read_buffer(struct tp_server *server) {
  return uv_buf_init(server->read_buffer, sizeof(server->read_buffer));
}

void tp_server__conn_gone(struct tp_server *server) {
  if (server->stopping && server->conn_count == 0)
    stop_grace_timer(server);
}
