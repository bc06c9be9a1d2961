#ifndef LOADGEN_OPTIONS_H
#define LOADGEN_OPTIONS_H

/* eventflowdb-bench's command line: parsing, validation, defaults, --help. */

#include "scenario.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define LG_MAX_STREAM_NAME 200  /* the server's limit, in bytes */

enum lg_http_mode { LG_HTTP_GLOBAL, LG_HTTP_STREAM };

struct lg_options {
  char target[262];             /* host:port, as given or defaulted */
  char host[256];               /* without brackets */
  char port[6];
  const struct lg_scenario *scenario;
  unsigned connections;
  unsigned concurrency;         /* calls in flight per connection (HTTP/1.1: always 1) */
  unsigned threads;
  double duration_s;            /* measured time; with requests != 0, unused */
  uint64_t requests;            /* measured requests in total; 0: run for duration_s */
  double warmup_s;
  uint32_t event_size;
  uint32_t events_per_append;
  uint32_t streams;
  double rate;                  /* requests/s offered across all connections; 0: closed loop */
  uint32_t limit_stream;        /* read page sizes */
  uint32_t limit_global;
  uint32_t prefill;             /* events per stream written before stream reads */
  uint32_t batch_window;        /* batch-append: requests in flight on each call */
  unsigned subscribers;         /* subscribe scenarios: SubscribeToAll calls */
  unsigned mix[LG_OP_COUNT];    /* --mix shares */
  enum lg_http_mode http_mode;
  char stream_prefix[LG_MAX_STREAM_NAME + 1];
  const char *json_path;
  double max_error_rate;
  double timeout_s;
  double max_time_s;            /* deadline of the whole run, setup included; 0: none */
  bool client_ids;              /* append, append-occ: every event carries a new client id */
  bool quiet;
};

enum lg_parse_result { LG_PARSE_OK, LG_PARSE_HELP, LG_PARSE_BAD };

/**
 * Fills o from argv with every default applied. LG_PARSE_BAD: a one-line
 * reason went to stderr. LG_PARSE_HELP: --help was asked for (nothing
 * printed yet). Borrows argv (o->json_path points into it).
 */
enum lg_parse_result lg_options_parse(int argc, char **argv, struct lg_options *o);

/** Writes the --help text. */
void lg_options_usage(FILE *f);

/** The number of digits that end every stream name (enough for streams - 1). */
unsigned lg_options_name_width(const struct lg_options *o);

#endif
