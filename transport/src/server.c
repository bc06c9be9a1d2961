/* The per-shard server: listening on the three ports, and shutting down gracefully. */
#include "server.h"

#include "evf/clock.h"
#include "evf/log.h"
#include "grpc.h"
#include "h2.h"
#include "http1.h"
#include "listener.h"
#include "rpc.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char *const port_names[TP_PORTS] = {"GRPC_PORT", "HTTP_PORT", "PROM_PORT"};

static unsigned port_number(const struct evf_config *config, enum tp_port port) {
  return port == TP_PORT_GRPC ? config->grpc_port
         : port == TP_PORT_HTTP ? config->http_port
                                : config->prom_port;
}

void tp_servers_init(struct tp_server *servers, unsigned count, const struct evf_config *config) {
  uint64_t now = evf_monotonic_ns();
  for (unsigned i = 0; i < count; i++) {
    struct tp_server *s = &servers[i];
    s->config = config;
    s->shard = i;
    s->all = servers;
    s->count = count;
    s->started_ns = now;
    for (int p = 0; p < TP_PORTS; p++)
      s->listeners[p] = (struct tp_listener){.fd = -1, .port = (enum tp_port)p, .server = s};
    /* Before any thread runs: another shard may render these metrics at any time. */
    tp_metrics_init(&s->metrics);
  }
}

int tp_servers_bind(struct tp_server *servers, unsigned count, char *err, size_t err_len) {
  for (int p = 0; p < TP_PORTS; p++) {
    unsigned port = port_number(servers[0].config, (enum tp_port)p);
    int rc = tp_listener_check_free(port);
    for (unsigned i = 0; rc == 0 && i < count; i++)
      rc = tp_listener_bind(port, &servers[i].listeners[p].fd);
    if (rc != 0) {
      snprintf(err, err_len, "%s=%u cannot be used: %s", port_names[p], port, strerror(-rc));
      return rc;
    }
  }
  return 0;
}

static void refuse(struct tp_listener *l);

static void refused_cb(uv_handle_t *handle) {
  struct tp_listener *l = handle->data;
  l->refusing = false;
  if (l->refusal_waits && l->listening) {
    l->refusal_waits = false;
    refuse(l);
  }
}

/*
 * A connection there is no memory to serve is accepted and closed at once:
 * libuv stops watching a listener until its pending connection is taken,
 * so leaving it would keep that client waiting and stop the shard taking
 * connections for good. The listener's one handle for this may still be
 * closing: the connection then waits for it.
 */
static void refuse(struct tp_listener *l) {
  if (l->refusing) {
    l->refusal_waits = true;
    return;
  }
  uv_tcp_init(l->tcp.loop, &l->refused);
  l->refused.data = l;
  l->refusing = true;
  (void)uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)&l->refused); /* closed either way */
  uv_close((uv_handle_t *)&l->refused, refused_cb);
}

static void on_connection(uv_stream_t *stream, int status) {
  struct tp_listener *l = stream->data;
  struct tp_server *server = l->server;
  if (status != 0) {
    evf_warn("accept failed on shard %u: %s", server->shard, uv_strerror(status));
    return;
  }
  int rc;
  if (l->port == TP_PORT_GRPC)
    rc = tp_conn_accept(server, stream, &tp_grpc_protocol);
  else if (l->port == TP_PORT_HTTP)
    rc = tp_h1_accept(server, stream, tp_http_api_route, true);
  else
    rc = tp_h1_accept(server, stream, tp_http_metrics_route, false);
  if (rc == -ENOMEM)
    refuse(l);
}

void tp_server_start(struct evf_store *store, unsigned shard, uv_loop_t *loop, void *servers) {
  struct tp_server *server = &((struct tp_server *)servers)[shard];
  server->store = store;
  server->loop = loop;
  tp_h2_writer_init(server);
  tp_grpc_server_init(server);
  tp_h1_server_init(server);
  server->handles_open = true;
  tp_hub_init(&server->hub, server);
  for (int p = 0; p < TP_PORTS; p++) {
    struct tp_listener *l = &server->listeners[p];
    l->tcp.data = l;
    int rc = tp_listener_start(&l->tcp, loop, l->fd, on_connection);
    if (rc != 0) {
      evf_error("shard %u cannot listen on %s=%u: %s", shard, port_names[p],
                port_number(server->config, (enum tp_port)p), uv_strerror(rc));
      continue;
    }
    l->listening = true;
  }
}

/* The server's own handles close once its last connection went. */
static void close_server_handles(struct tp_server *server) {
  if (server->grace_running) {
    server->grace_running = false;
    uv_close((uv_handle_t *)&server->grace, NULL);
  }
  if (server->handles_open) {
    server->handles_open = false;
    tp_h2_writer_close(server);
    tp_grpc_server_close(server);
    tp_h1_server_close(server);
  }
}

/* Clients that kept their streams open past the grace period are cut off. */
static void grace_over_cb(uv_timer_t *timer) {
  struct tp_server *server = timer->data;
  size_t busy = server->conn_count + server->http_conn_count;
  if (busy > 0)
    evf_warn("shard %u: closing %zu connections still busy after %d ms", server->shard, busy,
             TP_SHUTDOWN_GRACE_MS);
  struct tp_conn *next;
  for (struct tp_conn *conn = server->conns; conn; conn = next) {
    next = tp_conn_next(conn); /* closing frees the connection later, in its close callback */
    tp_conn_close(conn);
  }
  tp_h1_close_all(server);
  close_server_handles(server);
}

void tp_server_stop(struct evf_store *store, unsigned shard, uv_loop_t *loop, void *servers) {
  struct tp_server *server = &((struct tp_server *)servers)[shard];
  (void)store;
  server->stopping = true;
  for (int p = 0; p < TP_PORTS; p++) {
    if (server->listeners[p].listening) {
      server->listeners[p].listening = false;
      uv_close((uv_handle_t *)&server->listeners[p].tcp, NULL);
    }
  }
  for (struct tp_conn *conn = server->conns; conn; conn = tp_conn_next(conn))
    tp_conn_drain(conn);
  tp_h1_drain_all(server);
  tp_hub_close(&server->hub); /* after the GOAWAYs: subscriptions end with UNAVAILABLE */
  tp_rpc__batch_append_shutdown(server);
  if (server->conn_count + server->http_conn_count == 0) {
    close_server_handles(server);
    return;
  }
  uv_timer_init(loop, &server->grace);
  server->grace.data = server;
  server->grace_running = true;
  uv_timer_start(&server->grace, grace_over_cb, TP_SHUTDOWN_GRACE_MS, 0);
}

uv_buf_t tp_server__read_buffer(struct tp_server *server) {
  return uv_buf_init(server->read_buffer, sizeof(server->read_buffer));
}

void tp_server__conn_gone(struct tp_server *server) {
  if (server->stopping && server->conn_count + server->http_conn_count == 0)
    close_server_handles(server);
}
