#include "evf/config.h"

#include "evf/status.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* How a setting's text becomes its field. */
enum kind {
  KIND_PATH,  /* char[]: min to max bytes */
  KIND_UINT,  /* unsigned: an integer from min to max */
  KIND_SIZE,  /* uint64_t: evf_parse_size(), at least min */
  KIND_SYNC,  /* bool sync_full: "full" or "none" */
  KIND_LEVEL, /* enum evf_log_level: evf_log_parse_level() */
};

/*
 * One row per setting. The same rows drive the environment, the flags and
 * the help, so a setting is added here and nowhere else.
 */
struct setting {
  const char *env;      /* environment variable */
  const char *flag;     /* flag, without its leading "--" */
  const char *metavar;  /* the value's name in the help */
  const char *def;      /* default, parsed like any value; NULL: the field stays 0 */
  const char *def_help; /* the help's words for a NULL default */
  const char *help;     /* lines, without indentation or final newline */
  enum kind kind;
  size_t offset; /* of the field in struct evf_config */
  uint64_t min, max;
};

#define FIELD(name) offsetof(struct evf_config, name)
/* The data folder's path leaves 64 bytes of data_dir for the names of files under it. */
#define DATA_DIR_MAX (sizeof(((struct evf_config *)0)->data_dir) - 65)

static const struct setting settings[] = {
    {.env = "DATA", .flag = "data", .metavar = "PATH", .def = "./data",
     .help = "Folder of the store's files; one server at a time may use it.",
     .kind = KIND_PATH, .offset = FIELD(data_dir), .min = 1, .max = DATA_DIR_MAX},
    {.env = "SHARDS", .flag = "shards", .metavar = "N",
     .def_help = "the data folder's count, else one per CPU",
     .help = "Number of shards. A data folder keeps the count it was created with;\n"
             "starting it with another count is refused.",
     .kind = KIND_UINT, .offset = FIELD(shards), .min = 1, .max = 256},
    {.env = "SYNC", .flag = "sync", .metavar = "MODE", .def = "full",
     .help = "full: an append is acknowledged once synced to disk.\n"
             "none: no sync, for benchmarks only; a power loss loses acknowledged\n"
             "appends.",
     .kind = KIND_SYNC, .offset = FIELD(sync_full)},
    {.env = "MAP_SIZE", .flag = "map-size", .metavar = "SIZE", .def = "16G",
     .help = "LMDB map size of each shard's log (the most events a shard holds) and of\n"
             "its index (about a quarter of the log's size). Once one is full, appends\n"
             "fail with a storage-full error; reads go on.",
     .kind = KIND_SIZE, .offset = FIELD(map_size), .min = (uint64_t)1 << 20},
    {.env = "PAGE_SIZE", .flag = "page-size", .metavar = "N", .def = "1000",
     .help = "Most events or stream names one read returns; a read limit of 0 or\n"
             "above it means this.",
     .kind = KIND_UINT, .offset = FIELD(page_size), .min = 1, .max = 100000},
    {.env = "MAX_MESSAGE_SIZE", .flag = "max-message-size", .metavar = "SIZE", .def = "4M",
     .help = "Largest message; an event that could not fit alone in a read response\n"
             "is refused.",
     .kind = KIND_SIZE, .offset = FIELD(max_message_size), .min = 4096},
    {.env = "GRPC_PORT", .flag = "grpc-port", .metavar = "PORT", .def = "6543",
     .help = "TCP port of the gRPC API.",
     .kind = KIND_UINT, .offset = FIELD(grpc_port), .min = 1, .max = 65535},
    {.env = "HTTP_PORT", .flag = "http-port", .metavar = "PORT", .def = "16543",
     .help = "TCP port of the HTTP/JSON API.",
     .kind = KIND_UINT, .offset = FIELD(http_port), .min = 1, .max = 65535},
    {.env = "PROM_PORT", .flag = "prom-port", .metavar = "PORT", .def = "26543",
     .help = "TCP port of the Prometheus metrics endpoint.",
     .kind = KIND_UINT, .offset = FIELD(prom_port), .min = 1, .max = 65535},
    {.env = "SUBSCRIPTION_BUFFER", .flag = "subscription-buffer", .metavar = "SIZE", .def = "1M",
     .help = "Most bytes one subscription holds for a consumer that reads slower than\n"
             "events commit; past it the subscription reads from storage later instead.",
     .kind = KIND_SIZE, .offset = FIELD(subscription_buffer), .min = 64 << 10},
    {.env = "SUBSCRIPTION_CHECKPOINT_EVENTS", .flag = "subscription-checkpoint-events",
     .metavar = "N", .def = "1000",
     .help = "A subscription sends a checkpoint after at most this many events scanned\n"
             "without one (a request may ask for fewer).",
     .kind = KIND_UINT, .offset = FIELD(checkpoint_events), .min = 1, .max = 1000000000},
    {.env = "SUBSCRIPTION_CHECKPOINT_MS", .flag = "subscription-checkpoint-ms", .metavar = "MS",
     .def = "1000",
     .help = "A subscription whose position moved sends a checkpoint at least this\n"
             "often; subscription lag is measured as often.",
     .kind = KIND_UINT, .offset = FIELD(checkpoint_ms), .min = 10, .max = 3600000},
    {.env = "SSE_HEARTBEAT_MS", .flag = "sse-heartbeat-ms", .metavar = "MS", .def = "15000",
     .help = "Interval of the comment lines that keep idle Server-Sent Events streams\n"
             "open through proxies.",
     .kind = KIND_UINT, .offset = FIELD(heartbeat_ms), .min = 10, .max = 3600000},
    {.env = "BATCH_APPEND_IN_FLIGHT", .flag = "batch-append-in-flight", .metavar = "N",
     .def = "1024",
     .help = "Appends of one BatchAppend call in flight; past it the server stops\n"
             "reading the call (HTTP/2 flow control) until some complete.",
     .kind = KIND_UINT, .offset = FIELD(batch_append_in_flight), .min = 1, .max = 65536},
    {.env = "HTTP_REQUEST_TIMEOUT_MS", .flag = "http-request-timeout-ms", .metavar = "MS",
     .def = "30000",
     .help = "An HTTP/1.1 request's head must arrive whole within this time, and its\n"
             "body may stall no longer; past it the request is answered 408 and its\n"
             "connection closes. A gRPC request of one message (all but BatchAppend)\n"
             "may stall no longer before it is whole, or is answered DEADLINE_EXCEEDED.",
     .kind = KIND_UINT, .offset = FIELD(http_request_timeout_ms), .min = 10, .max = 86400000},
    {.env = "HTTP_IDLE_TIMEOUT_MS", .flag = "http-idle-timeout-ms", .metavar = "MS",
     .def = "120000",
     .help = "An HTTP/1.1 connection that waits this long for its next request, or for\n"
             "its client to read an answer, is closed.",
     .kind = KIND_UINT, .offset = FIELD(http_idle_timeout_ms), .min = 10, .max = 86400000},
    {.env = "LOG_LEVEL", .flag = "log-level", .metavar = "LEVEL", .def = "info",
     .help = "Lowest level of the log lines written to stderr, one JSON object a line.",
     .kind = KIND_LEVEL, .offset = FIELD(log_level)},
};

#define SETTING_COUNT (sizeof(settings) / sizeof(settings[0]))

int evf_parse_size(const char *text, uint64_t *out) {
  if (!isdigit((unsigned char)text[0]))
    return EVF_EINVAL;
  errno = 0;
  char *end;
  unsigned long long value = strtoull(text, &end, 10);
  if (errno != 0)
    return EVF_EINVAL;
  unsigned shift = 0;
  switch (toupper((unsigned char)*end)) {
  case 'K': shift = 10; end++; break;
  case 'M': shift = 20; end++; break;
  case 'G': shift = 30; end++; break;
  case 'T': shift = 40; end++; break;
  }
  if (shift && (strcasecmp(end, "iB") == 0 || strcasecmp(end, "B") == 0))
    end += strlen(end);
  else if (!shift && strcasecmp(end, "B") == 0)
    end++;
  if (*end != '\0' || (shift && value > (UINT64_MAX >> shift)))
    return EVF_EINVAL;
  *out = (uint64_t)value << shift;
  return 0;
}

/* Digits only: strtoull alone would take a sign or leading spaces. */
static int parse_uint(const char *text, uint64_t min, uint64_t max, uint64_t *out) {
  if (!isdigit((unsigned char)text[0]))
    return EVF_EINVAL;
  errno = 0;
  char *end;
  unsigned long long value = strtoull(text, &end, 10);
  if (errno != 0 || *end != '\0' || value < min || value > max)
    return EVF_EINVAL;
  *out = value;
  return 0;
}

static int parse_value(const struct setting *s, const char *text, struct evf_config *cfg) {
  char *field = (char *)cfg + s->offset;
  uint64_t number;
  switch (s->kind) {
  case KIND_PATH: {
    size_t len = strlen(text);
    if (len < s->min || len > s->max)
      return EVF_EINVAL;
    memcpy(field, text, len + 1);
    return 0;
  }
  case KIND_UINT:
    if (parse_uint(text, s->min, s->max, &number) != 0)
      return EVF_EINVAL;
    *(unsigned *)(void *)field = (unsigned)number;
    return 0;
  case KIND_SIZE:
    if (evf_parse_size(text, &number) != 0 || number < s->min)
      return EVF_EINVAL;
    *(uint64_t *)(void *)field = number;
    return 0;
  case KIND_SYNC:
    if (strcmp(text, "full") != 0 && strcmp(text, "none") != 0)
      return EVF_EINVAL;
    *(bool *)(void *)field = strcmp(text, "full") == 0;
    return 0;
  case KIND_LEVEL:
    return evf_log_parse_level(text, (enum evf_log_level *)(void *)field);
  }
  return EVF_EINVAL;
}

/* A size in its largest exact binary unit: 1048576 is "1M". */
static void format_size(uint64_t size, char *buf, size_t len) {
  static const char units[] = "KMGT";
  int unit = -1;
  while (unit < 3 && size != 0 && size % 1024 == 0) {
    size /= 1024;
    unit++;
  }
  if (unit < 0)
    snprintf(buf, len, "%" PRIu64, size);
  else
    snprintf(buf, len, "%" PRIu64 "%c", size, units[unit]);
}

/* What a setting accepts, completing "expected ...". */
static void describe(const struct setting *s, char *buf, size_t len) {
  char min[32];
  switch (s->kind) {
  case KIND_PATH:
    snprintf(buf, len, "a path of %" PRIu64 " to %" PRIu64 " bytes", s->min, s->max);
    return;
  case KIND_UINT:
    snprintf(buf, len, "an integer from %" PRIu64 " to %" PRIu64, s->min, s->max);
    return;
  case KIND_SIZE:
    format_size(s->min, min, sizeof(min));
    snprintf(buf, len, "a byte size of at least %s, such as 4194304, 512K, 64M or 16G", min);
    return;
  case KIND_SYNC:
    snprintf(buf, len, "full or none");
    return;
  case KIND_LEVEL:
    snprintf(buf, len, "debug, info, warn or error");
    return;
  }
}

/* An error message being written into the caller's buffer, truncated as snprintf does. */
struct msg {
  char *buf;
  size_t size;
  size_t len;
};

static void msg_put(struct msg *m, const char *text, size_t n) {
  if (m->size == 0)
    return;
  size_t room = m->size - 1 - m->len;
  if (n > room)
    n = room;
  memcpy(m->buf + m->len, text, n);
  m->len += n;
  m->buf[m->len] = '\0';
}

static void msg_printf(struct msg *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void msg_printf(struct msg *m, const char *fmt, ...) {
  if (m->size == 0)
    return;
  va_list args;
  va_start(args, fmt);
  int n = vsnprintf(m->buf + m->len, m->size - m->len, fmt, args);
  va_end(args);
  if (n < 0)
    n = 0;
  m->len += (size_t)n < m->size - m->len ? (size_t)n : m->size - m->len - 1;
}

/* Text from the user, kept on one line: quotes, backslashes and control bytes escaped. */
static void msg_put_escaped(struct msg *m, const char *text) {
  for (const unsigned char *p = (const unsigned char *)text; *p != '\0'; p++) {
    if (*p == '"' || *p == '\\')
      msg_printf(m, "\\%c", *p);
    else if (*p < 0x20 || *p == 0x7f)
      msg_printf(m, "\\x%02x", *p);
    else
      msg_put(m, (const char *)p, 1);
  }
}

static int invalid(struct msg *m, const struct setting *s, bool from_flag, const char *text) {
  char want[128];
  describe(s, want, sizeof(want));
  msg_printf(m, "%s%s=\"", from_flag ? "--" : "", from_flag ? s->flag : s->env);
  msg_put_escaped(m, text);
  msg_printf(m, "\" is invalid: expected %s", want);
  return EVF_EINVAL;
}

static const struct setting *find_flag(const char *name, size_t len) {
  for (size_t i = 0; i < SETTING_COUNT; i++) {
    if (strlen(settings[i].flag) == len && memcmp(settings[i].flag, name, len) == 0)
      return &settings[i];
  }
  return NULL;
}

/*
 * Finds each setting's flag value in argv. The first error is kept, but the
 * scan goes on: --help anywhere wins over a mistake before it.
 */
static int scan_args(int argc, char **argv, const char **values, struct msg *m) {
  int rc = 0;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)
      return EVF_CONFIG_HELP;
    if (arg[0] != '-' || strcmp(arg, "-") == 0 || strcmp(arg, "--") == 0) {
      if (rc == 0) {
        msg_printf(m, "unexpected argument \"");
        msg_put_escaped(m, arg);
        msg_printf(m, "\": settings are given as --flag VALUE or --flag=VALUE");
        rc = EVF_EINVAL;
      }
      continue;
    }
    const char *name = arg + (arg[1] == '-' ? 2 : 1);
    const char *eq = strchr(name, '=');
    const struct setting *s = NULL;
    if (arg[1] == '-')
      s = find_flag(name, eq != NULL ? (size_t)(eq - name) : strlen(name));
    if (s == NULL) {
      if (rc == 0) {
        char flag[128];
        snprintf(flag, sizeof(flag), "%.*s", eq != NULL ? (int)(eq - arg) : (int)strlen(arg),
                 arg);
        msg_printf(m, "unknown flag ");
        msg_put_escaped(m, flag);
        msg_printf(m, " (--help lists the flags)");
        rc = EVF_EINVAL;
      }
      continue;
    }
    /* "--data --shards 4" lacks a value: it does not make "--shards" the data folder. */
    if (eq != NULL) {
      values[s - settings] = eq + 1;
    } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
      values[s - settings] = argv[++i];
    } else if (rc == 0) {
      char want[128];
      describe(s, want, sizeof(want));
      msg_printf(m, "missing value for --%s: expected %s", s->flag, want);
      rc = EVF_EINVAL;
    }
  }
  return rc;
}

int evf_config_load(struct evf_config *cfg, int argc, char **argv, char *err, size_t err_len) {
  struct msg m = {.buf = err, .size = err_len, .len = 0};
  const char *flag_values[SETTING_COUNT] = {0};
  if (err_len > 0)
    err[0] = '\0';
  int rc = scan_args(argc, argv, flag_values, &m);
  if (rc != 0)
    return rc;

  struct evf_config c;
  memset(&c, 0, sizeof(c));
  for (size_t i = 0; i < SETTING_COUNT; i++) {
    const struct setting *s = &settings[i];
    const char *text = flag_values[i];
    bool from_flag = text != NULL;
    if (!from_flag) {
      text = getenv(s->env);
      if (text != NULL && text[0] == '\0')
        text = NULL;
    }
    if (text == NULL)
      text = s->def;
    if (text != NULL && parse_value(s, text, &c) != 0)
      return invalid(&m, s, from_flag, text);
  }
  *cfg = c;
  return 0;
}

int evf_config_from_env(struct evf_config *cfg, char *err, size_t err_len) {
  return evf_config_load(cfg, 0, NULL, err, err_len);
}

/* Writes text with every line indented. */
static void print_indented(FILE *out, const char *text) {
  for (const char *line = text; line != NULL;) {
    const char *nl = strchr(line, '\n');
    int len = nl != NULL ? (int)(nl - line) : (int)strlen(line);
    fprintf(out, "      %.*s\n", len, line);
    line = nl != NULL ? nl + 1 : NULL;
  }
}

void evf_config_print_help(FILE *out) {
  fputs("Usage: eventflowdb [--FLAG VALUE | --FLAG=VALUE]...\n"
        "\n"
        "Runs the EventflowDB server. Every setting is read from an environment\n"
        "variable; its flag, if given, overrides it. An empty variable counts as\n"
        "unset. Sizes are bytes, with an optional binary suffix K, M, G or T.\n"
        "\n",
        out);
  for (size_t i = 0; i < SETTING_COUNT; i++) {
    const struct setting *s = &settings[i];
    char want[128];
    describe(s, want, sizeof(want));
    fprintf(out, "  --%s %s\n", s->flag, s->metavar);
    fprintf(out, "      environment: %s; default: %s\n", s->env,
            s->def != NULL ? s->def : s->def_help);
    print_indented(out, s->help);
    fprintf(out, "      Accepts %s.\n", want);
  }
  fputs("  -h, --help\n"
        "      Prints this help and exits.\n",
        out);
}
