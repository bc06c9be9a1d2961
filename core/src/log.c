#include "evf/log.h"

#include "evf/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Written once by main() before any thread starts, read-only afterwards. */
static enum evf_log_level min_level = EVF_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void evf_log_set_level(enum evf_log_level level) { min_level = level; }

int evf_log_parse_level(const char *text, enum evf_log_level *level) {
  for (unsigned i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
    if (strcmp(text, level_names[i]) == 0) {
      *level = (enum evf_log_level)i;
      return 0;
    }
  }
  return EVF_EINVAL;
}

void evf_log(enum evf_log_level level, const char *fmt, ...) {
  if (level < min_level)
    return;
  struct timespec now;
  struct tm tm;
  char stamp[32];
  char line[1024];
  clock_gettime(CLOCK_REALTIME, &now);
  gmtime_r(&now.tv_sec, &tm);
  strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);

  va_list args;
  va_start(args, fmt);
  vsnprintf(line, sizeof(line), fmt, args);
  va_end(args);
  /* One fprintf per line so lines from different threads do not interleave. */
  fprintf(stderr, "%s.%03ldZ %-5s %s\n", stamp, now.tv_nsec / 1000000, level_names[level], line);
}
