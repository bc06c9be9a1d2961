/*
 * eventflowdb: the server. Reads the configuration, opens the store, binds
 * the gRPC port on every shard, and runs until SIGINT or SIGTERM; then
 * stops accepting, sends GOAWAY, lets in-flight calls finish (appends are
 * synced) and closes the store.
 */
#include "evf/config.h"
#include "evf/log.h"
#include "evf/status.h"
#include "evf/store.h"
#include "server.h"

#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <uv.h>

static void on_signal(uv_signal_t *handle, int signum) {
  evf_info("received signal %d, shutting down", signum);
  uv_stop(handle->loop);
}

static int wait_for_signal(void) {
  uv_loop_t loop;
  uv_signal_t sigint, sigterm;
  int rc = uv_loop_init(&loop);
  if (rc != 0)
    return rc;
  uv_signal_init(&loop, &sigint);
  uv_signal_init(&loop, &sigterm);
  uv_signal_start(&sigint, on_signal, SIGINT);
  uv_signal_start(&sigterm, on_signal, SIGTERM);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&sigint, NULL);
  uv_close((uv_handle_t *)&sigterm, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  return uv_loop_close(&loop);
}

/* Every connection is a file descriptor: allow as many as the hard limit. */
static void raise_fd_limit(void) {
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

/*
 * Read responses are built in buffers of up to MAX_MESSAGE_SIZE, one per
 * call. glibc would map and unmap each large one, or trim its heap after
 * freeing it, and the next call would pay page faults to get the memory
 * back: global catch-up reads ran at about 0.8x of what they do with the
 * memory kept (bench/RESULTS.md). Keep blocks below 32 MiB in the heap and
 * give free heap memory back only beyond 64 MiB; glibc applies that per
 * arena, so each busy thread may keep up to 64 MiB it no longer uses.
 * Only a server on glibc's malloc (EVF_MIMALLOC=OFF) is affected: mimalloc
 * keeps freed large blocks in its segments by itself.
 */
static void keep_buffer_memory(void) {
#ifdef __GLIBC__
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
#endif
}

/* The hooks are set once the servers exist (store_set_hooks). */
static struct store_options store_options(const struct evf_config *cfg) {
  return (struct store_options){
      .data_dir = cfg->data_dir,
      .shards = cfg->shards,
      .sync_full = cfg->sync_full,
      .map_size = cfg->map_size,
      .page_size = cfg->page_size,
      /* An event must fit alone in the largest read response: a GetGlobalStream
       * with one event costs a tag, a length and the checkpoint field besides. */
      .max_event_size = cfg->max_message_size - 17,
  };
}

/* Opens the store and binds the ports: the failures an operator must fix. Exit code 2. */
static int open_server(const struct evf_config *cfg, struct tp_server **servers_out,
                       struct evf_store **store_out) {
  char err[512] = "";
  struct evf_store *store;
  struct tp_server *servers = NULL;
  struct store_options options = store_options(cfg);
  int rc = store_open(&options, &store, err, sizeof(err));
  if (rc != 0) {
    evf_error("cannot open the data folder: %s", err[0] ? err : evf_strerror(rc));
    return rc;
  }
  unsigned shards = store_shard_count(store);
  servers = calloc(shards, sizeof(*servers));
  if (servers == NULL) {
    store_close(store);
    return -ENOMEM;
  }
  tp_servers_init(servers, shards, cfg);
  if ((rc = tp_servers_bind(servers, shards, err, sizeof(err))) != 0) {
    evf_error("%s", err);
    store_close(store);
    free(servers);
    return rc;
  }
  *servers_out = servers;
  *store_out = store;
  return 0;
}

int main(int argc, char **argv) {
  struct evf_config cfg;
  char err[512];
  int rc = evf_config_load(&cfg, argc, argv, err, sizeof(err));
  if (rc == EVF_CONFIG_HELP) {
    evf_config_print_help(stdout);
    return 0;
  }
  if (rc != 0) {
    evf_error("bad configuration: %s", err);
    return 2;
  }
  evf_log_set_level(cfg.log_level);
  raise_fd_limit();
  keep_buffer_memory();
  /* A peer that vanishes must fail a write with EPIPE, not kill the server. */
  signal(SIGPIPE, SIG_IGN);

  struct tp_server *servers;
  struct evf_store *store;
  if (open_server(&cfg, &servers, &store) != 0)
    return 2;
  /* The hooks need the servers, which need the shard count the store decided. */
  store_set_hooks(store, tp_server_start, tp_server_stop, servers);
  store_set_watermark_hook(store, tp_hub_watermark);
  rc = store_start(store);
  if (rc != 0) {
    evf_error("cannot start the shard threads: %s", uv_strerror(rc));
    store_close(store);
    free(servers);
    return 1;
  }
  if (!cfg.sync_full)
    evf_warn("SYNC=none: acknowledged appends are NOT synced to disk; a power loss loses them. "
             "Use this for benchmarks only.");
  evf_info("eventflowdb %s listening: gRPC on port %u, HTTP on port %u, metrics on port %u, "
           "%u shards, data in %s",
           EVF_VERSION, cfg.grpc_port, cfg.http_port, cfg.prom_port, store_shard_count(store),
           cfg.data_dir);
  rc = wait_for_signal();
  store_close(store);
  free(servers);
  evf_info("stopped");
  return rc == 0 ? 0 : 1;
}
