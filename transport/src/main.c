/*
 * eventflowdb: the server. Reads the configuration from the environment,
 * opens the store and runs until SIGINT or SIGTERM, then closes it cleanly.
 * The network layer (gRPC, HTTP, metrics) is not built yet: for now the
 * server runs the storage engine only, and says so.
 */
#include "evf/config.h"
#include "evf/log.h"
#include "evf/status.h"
#include "evf/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
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

/* Each shard commits on the libuv pool: give every shard a pool thread. */
static void size_threadpool(unsigned shards) {
  unsigned want = shards;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  if (cpus > (long)want)
    want = (unsigned)cpus;
  if (want <= 4 || getenv("UV_THREADPOOL_SIZE") != NULL)
    return;
  char value[16];
  snprintf(value, sizeof(value), "%u", want);
  setenv("UV_THREADPOOL_SIZE", value, 0);
}

int main(void) {
  struct evf_config cfg;
  char err[512];
  if (evf_config_from_env(&cfg, err, sizeof(err)) != 0) {
    fprintf(stderr, "eventflowdb: %s\n", err);
    return 2;
  }
  evf_log_set_level(cfg.log_level);
  size_threadpool(cfg.shards);

  struct store_options options = {
      .data_dir = cfg.data_dir,
      .shards = cfg.shards,
      .sync_full = cfg.sync_full,
      .map_size = cfg.map_size,
      .page_size = cfg.page_size,
      /* An event must fit alone in the largest read response: a GetGlobalStream
       * with one event costs a tag, a length and the checkpoint field besides. */
      .max_event_size = cfg.max_message_size - 17,
  };
  struct evf_store *store;
  int rc = store_open(&options, &store, err, sizeof(err));
  if (rc != 0) {
    evf_error("cannot open the store: %s (%s)", err[0] ? err : evf_strerror(rc), evf_err_name(rc));
    return 1;
  }
  if (!cfg.sync_full)
    evf_warn("SYNC=none: acknowledged appends are NOT synced to disk; a power loss loses them. "
             "Use this for benchmarks only.");
  evf_info("eventflowdb %s: storage engine running with %u shards in %s "
           "(the gRPC and HTTP APIs are not implemented yet)",
           EVF_VERSION, store_shard_count(store), cfg.data_dir);
  rc = wait_for_signal();
  store_close(store);
  evf_info("stopped");
  return rc == 0 ? 0 : 1;
}
