#ifndef EVF_LOG_H
#define EVF_LOG_H

/*
 * Structured logs: one JSON object per line on stderr,
 *
 *   {"time":"2026-11-26T17:06:37.249Z","level":"info","msg":"listening","port":6543}
 *
 * time is UTC with milliseconds; fields, if any, follow msg. Strings are
 * JSON-escaped: '"', '\' and control characters (as \u00XX); valid UTF-8
 * is kept as it is, other bytes become U+FFFD. A line is at most
 * EVF_LOG_LINE_MAX bytes and is written with one write(2), so lines from
 * different threads (or processes sharing a pipe) never interleave. A
 * longer line is cut between characters, never inside an escape, and ends
 * with "truncated":true.
 */

#include <stddef.h>
#include <stdint.h>

enum evf_log_level { EVF_LOG_DEBUG, EVF_LOG_INFO, EVF_LOG_WARN, EVF_LOG_ERROR };

/** The longest line written, newline included (PIPE_BUF on Linux). */
#define EVF_LOG_LINE_MAX 4096

/** Sets the lowest level written. Call once from main() before threads start. */
void evf_log_set_level(enum evf_log_level level);

/** Parses "debug", "info", "warn" or "error". Returns 0 or EVF_EINVAL. */
int evf_log_parse_level(const char *text, enum evf_log_level *level);

/** Writes one line to stderr: time, level, message. Any thread; errno is preserved. */
void evf_log(enum evf_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define evf_debug(...) evf_log(EVF_LOG_DEBUG, __VA_ARGS__)
#define evf_info(...) evf_log(EVF_LOG_INFO, __VA_ARGS__)
#define evf_warn(...) evf_log(EVF_LOG_WARN, __VA_ARGS__)
#define evf_error(...) evf_log(EVF_LOG_ERROR, __VA_ARGS__)

enum evf_log_field_type { EVF_LOG_FIELD_STR, EVF_LOG_FIELD_INT, EVF_LOG_FIELD_UINT };

/** A key and a value added to a log line; build it with EVF_LOG_STR/INT/UINT. */
struct evf_log_field {
  const char *key;
  enum evf_log_field_type type;
  union {
    const char *str; /* NULL is written as null */
    int64_t i;
    uint64_t u;
  } value;
};

#define EVF_LOG_STR(k, v) \
  ((struct evf_log_field){.key = (k), .type = EVF_LOG_FIELD_STR, .value = {.str = (v)}})
#define EVF_LOG_INT(k, v) \
  ((struct evf_log_field){.key = (k), .type = EVF_LOG_FIELD_INT, .value = {.i = (v)}})
#define EVF_LOG_UINT(k, v) \
  ((struct evf_log_field){.key = (k), .type = EVF_LOG_FIELD_UINT, .value = {.u = (v)}})

/**
 * The fields and count arguments of evf_log_fields() from a list of
 * EVF_LOG_STR/INT/UINT; each argument is evaluated once.
 */
#define EVF_LOG_FIELDS(...)                        \
  (const struct evf_log_field[]){__VA_ARGS__},     \
      sizeof((const struct evf_log_field[]){__VA_ARGS__}) / sizeof(struct evf_log_field)

/**
 * evf_log() with fields after the message, in order:
 *
 *   evf_log_fields(EVF_LOG_WARN, EVF_LOG_FIELDS(EVF_LOG_STR("stream", name),
 *                  EVF_LOG_UINT("shard", i)), "append failed: %s", evf_strerror(rc));
 *
 * Keys should differ from each other and from "time", "level", "msg" and
 * "truncated". Fields that do not fit in the line are left out. Any
 * thread; fields and their strings are borrowed for the call.
 */
void evf_log_fields(enum evf_log_level level, const struct evf_log_field *fields, size_t count,
                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
