#ifndef EVF_CONFIG_H
#define EVF_CONFIG_H

#include "evf/log.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The server's configuration; every field comes from one environment variable. */
struct evf_config {
  char data_dir[4096];       /* DATA, default "./data" */
  unsigned shards;           /* SHARDS, 0 (unset): recorded count, or one per CPU */
  bool sync_full;            /* SYNC: "full" (default) or "none" */
  uint64_t map_size;         /* MAP_SIZE, bytes per shard, default 16 GiB */
  unsigned page_size;        /* PAGE_SIZE, most events or names per read, default 1000 */
  unsigned grpc_port;        /* GRPC_PORT, default 6543 */
  unsigned http_port;        /* HTTP_PORT, default 16543 */
  unsigned prom_port;        /* PROM_PORT, default 26543 */
  uint64_t max_message_size; /* MAX_MESSAGE_SIZE, bytes, default 4 MiB */
  enum evf_log_level log_level; /* LOG_LEVEL, default info */
};

/**
 * Fills cfg from the environment. Returns 0, or EVF_EINVAL with a message
 * naming the variable and the value in err.
 */
int evf_config_from_env(struct evf_config *cfg, char *err, size_t err_len);

/**
 * Parses a byte size: digits with an optional binary suffix K, M, G or T
 * (KiB, ...; "B" and "iB" may follow). Returns 0 or EVF_EINVAL.
 */
int evf_parse_size(const char *text, uint64_t *out);

#endif
