#include "evf/log.h"

#include "evf/status.h"
#include "evf/utf8.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Written once by main() before any thread starts, read-only afterwards. */
static enum evf_log_level min_level = EVF_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

/* What a line may still need once full: the end of a string, the marker, the end. */
static const char line_end[] = "\",\"truncated\":true}\n";

/*
 * A line being built. Every write keeps sizeof(line_end) - 1 bytes free, so
 * a cut line can always be closed into valid JSON.
 */
struct line {
  char buf[EVF_LOG_LINE_MAX];
  size_t len;
  bool truncated;
};

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

/* Appends n bytes if they fit, all or nothing. */
static bool put(struct line *l, const char *text, size_t n) {
  if (l->len + n > sizeof(l->buf) - (sizeof(line_end) - 1)) {
    l->truncated = true;
    return false;
  }
  memcpy(l->buf + l->len, text, n);
  l->len += n;
  return true;
}

/*
 * Appends text as a JSON string. Characters are added whole, each with its
 * escape, until one does not fit; once the opening quote fits, the closing
 * one does too. Writes nothing if the opening quote does not fit. Returns
 * whether all of text was written.
 */
static bool put_string(struct line *l, const char *text, size_t len) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)text, *end = p + len;
  if (!put(l, "\"", 1))
    return false;
  while (p < end) {
    char esc[6];
    const char *out = esc;
    size_t n, used = 1;
    if (*p == '"' || *p == '\\') {
      esc[0] = '\\';
      esc[1] = (char)*p;
      n = 2;
    } else if (*p < 0x20 || *p == 0x7f) {
      memcpy(esc, "\\u00", 4);
      esc[4] = hex[*p >> 4];
      esc[5] = hex[*p & 0xf];
      n = 6;
    } else if (*p < 0x80) {
      out = (const char *)p;
      n = 1;
    } else {
      size_t k = evf_utf8_char_len((const char *)p, (size_t)(end - p));
      if (k != 0) {
        out = (const char *)p;
        n = used = k;
      } else {
        out = "\\ufffd";
        n = 6;
      }
    }
    if (!put(l, out, n))
      break;
    p += used;
  }
  /* Room for the quote was kept free by put(). */
  l->buf[l->len++] = '"';
  return p == end;
}

/* Appends ,"key":value, or nothing if it does not fit whole (a string value may be cut). */
static void put_field(struct line *l, const struct evf_log_field *f) {
  size_t start = l->len;
  char number[24];
  if (!put(l, ",", 1) || !put_string(l, f->key, strlen(f->key)) || !put(l, ":", 1))
    goto undo;
  switch (f->type) {
  case EVF_LOG_FIELD_STR:
    if (f->value.str == NULL) {
      if (!put(l, "null", 4))
        goto undo;
      return;
    }
    size_t before = l->len;
    put_string(l, f->value.str, strlen(f->value.str));
    if (l->len == before)
      goto undo; /* not even the opening quote fit */
    return;
  case EVF_LOG_FIELD_INT:
    snprintf(number, sizeof(number), "%" PRId64, f->value.i);
    break;
  case EVF_LOG_FIELD_UINT:
    snprintf(number, sizeof(number), "%" PRIu64, f->value.u);
    break;
  }
  if (put(l, number, strlen(number)))
    return;
undo:
  l->len = start;
  l->truncated = true;
}

static void write_all(const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(STDERR_FILENO, buf, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return; /* nowhere left to report it */
    buf += n;
    len -= (size_t)n;
  }
}

static void vlog(enum evf_log_level level, const struct evf_log_field *fields, size_t count,
                 const char *fmt, va_list args) {
  int saved_errno = errno;
  struct line l = {.len = 0, .truncated = false};
  char msg[EVF_LOG_LINE_MAX];
  char stamp[32];
  struct timespec now;
  struct tm tm;

  int n = vsnprintf(msg, sizeof(msg), fmt, args);
  bool msg_cut = n >= (int)sizeof(msg);
  size_t msg_len = n < 0 ? 0 : msg_cut ? sizeof(msg) - 1 : (size_t)n;

  clock_gettime(CLOCK_REALTIME, &now);
  gmtime_r(&now.tv_sec, &tm);
  size_t stamp_len = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(stamp + stamp_len, sizeof(stamp) - stamp_len, ".%03dZ",
           (int)(now.tv_nsec / 1000000));
  const char *name = (unsigned)level < sizeof(level_names) / sizeof(level_names[0])
                         ? level_names[level]
                         : "error";

  l.len = (size_t)snprintf(l.buf, sizeof(l.buf), "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":",
                           stamp, name);
  /* msg is no longer than a line: if vsnprintf cut it, put_string() cuts it again earlier. */
  if (!put_string(&l, msg, msg_len) || msg_cut)
    l.truncated = true;
  for (size_t i = 0; i < count && !l.truncated; i++)
    put_field(&l, &fields[i]);
  /* The strings are closed: line_end from its comma, or just its "}\n". put() kept room. */
  const char *tail = l.truncated ? line_end + 1 : line_end + sizeof(line_end) - 3;
  size_t tail_len = strlen(tail);
  memcpy(l.buf + l.len, tail, tail_len);
  l.len += tail_len;

  write_all(l.buf, l.len);
  errno = saved_errno;
}

void evf_log(enum evf_log_level level, const char *fmt, ...) {
  if (level < min_level)
    return;
  va_list args;
  va_start(args, fmt);
  vlog(level, NULL, 0, fmt, args);
  va_end(args);
}

void evf_log_fields(enum evf_log_level level, const struct evf_log_field *fields, size_t count,
                    const char *fmt, ...) {
  if (level < min_level)
    return;
  va_list args;
  va_start(args, fmt);
  vlog(level, fields, count, fmt, args);
  va_end(args);
}
