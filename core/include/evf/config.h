#ifndef EVF_CONFIG_H
#define EVF_CONFIG_H

#include "evf/log.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/*
 * The server's configuration. Every field has an environment variable and a
 * command-line flag of the same meaning; the flag wins. One table in
 * config.c lists the settings: names, defaults, accepted values and help.
 */
struct evf_config {
  char data_dir[4096];       /* DATA, --data, default "./data" */
  unsigned shards;           /* SHARDS, --shards, 0 (unset): recorded count, or one per CPU */
  bool sync_full;            /* SYNC, --sync: "full" (default) or "none" */
  uint64_t map_size;         /* MAP_SIZE, --map-size, bytes per shard, default 16 GiB */
  unsigned page_size;        /* PAGE_SIZE, --page-size, most events or names per read, default 1000 */
  unsigned grpc_port;        /* GRPC_PORT, --grpc-port, default 6543 */
  unsigned http_port;        /* HTTP_PORT, --http-port, default 16543 */
  unsigned prom_port;        /* PROM_PORT, --prom-port, default 26543 */
  uint64_t max_message_size; /* MAX_MESSAGE_SIZE, --max-message-size, bytes, default 4 MiB */
  enum evf_log_level log_level; /* LOG_LEVEL, --log-level, default info */
  uint64_t subscription_buffer; /* SUBSCRIPTION_BUFFER, bytes one subscription may hold unsent, default 1 MiB */
  unsigned checkpoint_events;   /* SUBSCRIPTION_CHECKPOINT_EVENTS, events scanned between checkpoints, default 1000 */
  unsigned checkpoint_ms;       /* SUBSCRIPTION_CHECKPOINT_MS, most ms between checkpoints, default 1000 */
  unsigned heartbeat_ms;        /* SSE_HEARTBEAT_MS, ms between Server-Sent Events comments, default 15000 */
  unsigned batch_append_in_flight; /* BATCH_APPEND_IN_FLIGHT, appends of one call in flight, default 1024 */
  unsigned http_request_timeout_ms; /* HTTP_REQUEST_TIMEOUT_MS, default 30000 */
  unsigned http_idle_timeout_ms;    /* HTTP_IDLE_TIMEOUT_MS, default 120000 */
};

/** evf_config_load() result: --help (or -h) was given; nothing was loaded. */
#define EVF_CONFIG_HELP 1

/**
 * Fills cfg from the environment and the command line (argc and argv as
 * main() receives them: argv[0], the program name, is skipped; argc may be
 * 0 and argv NULL). For each setting the value is, in order of precedence:
 * its flag (the last one if repeated), its environment variable unless
 * empty, its default. Flags take their value as "--flag VALUE" or
 * "--flag=VALUE"; a value that begins with "--" must use the second form.
 * An environment value overridden by a flag is not checked.
 *
 * Returns:
 * - 0: cfg is filled.
 * - EVF_CONFIG_HELP (positive): --help or -h was among the arguments,
 *   whatever else they hold; the caller should call evf_config_print_help().
 * - EVF_EINVAL: an unknown flag, a flag without its value, an argument that
 *   is not a flag, or a value that is not accepted. err receives one line
 *   (no newline) naming the flag or variable and quoting the value, e.g.
 *   `SHARDS="0" is invalid: expected an integer from 1 to 256`.
 *
 * On anything but 0, cfg is left untouched. err is truncated to err_len
 * bytes and always terminated (err may be NULL if err_len is 0). Reads the
 * environment: call from main() before starting threads.
 */
int evf_config_load(struct evf_config *cfg, int argc, char **argv, char *err, size_t err_len);

/** evf_config_load() with no command-line arguments. Returns 0 or EVF_EINVAL. */
int evf_config_from_env(struct evf_config *cfg, char *err, size_t err_len);

/**
 * Writes the usage text to out: every flag with its environment variable,
 * default, meaning and accepted values. Any thread.
 */
void evf_config_print_help(FILE *out);

/**
 * Parses a byte size: digits with an optional binary suffix K, M, G or T
 * (KiB, ...; "B" and "iB" may follow). Returns 0 or EVF_EINVAL, leaving
 * out untouched on failure.
 */
int evf_parse_size(const char *text, uint64_t *out);

#endif
