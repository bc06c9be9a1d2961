#ifndef EVF_LOG_H
#define EVF_LOG_H

enum evf_log_level { EVF_LOG_DEBUG, EVF_LOG_INFO, EVF_LOG_WARN, EVF_LOG_ERROR };

/** Sets the lowest level written. Call once from main() before threads start. */
void evf_log_set_level(enum evf_log_level level);

/** Parses "debug", "info", "warn" or "error". Returns 0 or EVF_EINVAL. */
int evf_log_parse_level(const char *text, enum evf_log_level *level);

/** Writes one line to stderr: time, level, message. Any thread. */
void evf_log(enum evf_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define evf_debug(...) evf_log(EVF_LOG_DEBUG, __VA_ARGS__)
#define evf_info(...) evf_log(EVF_LOG_INFO, __VA_ARGS__)
#define evf_warn(...) evf_log(EVF_LOG_WARN, __VA_ARGS__)
#define evf_error(...) evf_log(EVF_LOG_ERROR, __VA_ARGS__)

#endif
