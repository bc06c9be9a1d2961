/*
 * Tests for evf/log.h. Lines are captured by pointing fd 2 at a temporary
 * file (or a pipe, for the threaded test) and parsed by a strict JSON
 * reader below, independent of log.c.
 */
#define _GNU_SOURCE /* strptime, timegm */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "evf/log.h"
#include "evf/utf8.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- Capturing stderr ---- */

static FILE *capture_file;
static int saved_stderr = -1;

/* From here to capture_end(), what is written to fd 2 goes to a temporary file. */
static void capture_begin(void) {
  fflush(stderr);
  capture_file = tmpfile();
  assert_non_null(capture_file);
  saved_stderr = dup(STDERR_FILENO);
  assert_true(saved_stderr >= 0);
  assert_true(dup2(fileno(capture_file), STDERR_FILENO) >= 0);
}

/* Restores fd 2 and returns what was written, NUL-terminated; free() it. */
static char *capture_end(size_t *len_out) {
  assert_true(dup2(saved_stderr, STDERR_FILENO) >= 0);
  close(saved_stderr);
  saved_stderr = -1;
  assert_int_equal(fseek(capture_file, 0, SEEK_END), 0);
  long size = ftell(capture_file);
  assert_true(size >= 0);
  rewind(capture_file);
  char *text = malloc((size_t)size + 1);
  assert_non_null(text);
  assert_int_equal(fread(text, 1, (size_t)size, capture_file), (size_t)size);
  text[size] = '\0';
  fclose(capture_file);
  capture_file = NULL;
  if (len_out != NULL)
    *len_out = (size_t)size;
  return text;
}

/* ---- A strict reader for one flat JSON object ---- */

struct member {
  char key[64];
  bool is_string;
  size_t len;                    /* of value */
  char value[EVF_LOG_LINE_MAX];  /* decoded string, or the literal's text */
};

struct object {
  size_t count;
  struct member members[12];
};

static struct object parsed; /* large; the tests are single-threaded */

static int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

static bool read_hex4(const char **p, const char *end, unsigned *out) {
  if (end - *p < 4)
    return false;
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    int h = hex_value((*p)[i]);
    if (h < 0)
      return false;
    v = v << 4 | (unsigned)h;
  }
  *p += 4;
  *out = v;
  return true;
}

static size_t put_utf8(char *out, unsigned cp) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xC0 | cp >> 6);
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xE0 | cp >> 12);
    out[1] = (char)(0x80 | (cp >> 6 & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | cp >> 18);
  out[1] = (char)(0x80 | (cp >> 12 & 0x3F));
  out[2] = (char)(0x80 | (cp >> 6 & 0x3F));
  out[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* Reads a JSON string at *p (its opening quote) into out, decoded. */
static bool read_string(const char **p, const char *end, char *out, size_t cap, size_t *len) {
  const char *s = *p;
  size_t n = 0;
  if (s >= end || *s++ != '"')
    return false;
  while (s < end && *s != '"') {
    char buf[4];
    size_t k;
    unsigned char c = (unsigned char)*s;
    if (c < 0x20)
      return false; /* control characters must be escaped */
    if (c != '\\') {
      buf[0] = *s++;
      k = 1;
    } else {
      if (++s >= end)
        return false;
      char e = *s++;
      unsigned cp;
      switch (e) {
      case '"': case '\\': case '/': buf[0] = e; k = 1; break;
      case 'b': buf[0] = '\b'; k = 1; break;
      case 'f': buf[0] = '\f'; k = 1; break;
      case 'n': buf[0] = '\n'; k = 1; break;
      case 'r': buf[0] = '\r'; k = 1; break;
      case 't': buf[0] = '\t'; k = 1; break;
      case 'u':
        if (!read_hex4(&s, end, &cp))
          return false;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          unsigned lo;
          if (end - s < 2 || s[0] != '\\' || s[1] != 'u')
            return false;
          s += 2;
          if (!read_hex4(&s, end, &lo) || lo < 0xDC00 || lo > 0xDFFF)
            return false;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          return false;
        }
        k = put_utf8(buf, cp);
        break;
      default:
        return false;
      }
    }
    if (n + k > cap)
      return false;
    memcpy(out + n, buf, k);
    n += k;
  }
  if (s >= end)
    return false;
  *p = s + 1;
  *len = n;
  return true;
}

/* A number, true, false or null, kept as text. */
static bool read_literal(const char **p, const char *end, char *out, size_t cap, size_t *len) {
  const char *s = *p;
  static const char *const words[] = {"true", "false", "null"};
  for (size_t i = 0; i < 3; i++) {
    size_t n = strlen(words[i]);
    if ((size_t)(end - s) >= n && memcmp(s, words[i], n) == 0) {
      s += n;
      goto done;
    }
  }
  if (s < end && *s == '-')
    s++;
  if (s >= end || *s < '0' || *s > '9')
    return false;
  if (*s == '0')
    s++;
  else
    while (s < end && *s >= '0' && *s <= '9')
      s++;
  /* The log writes integers only. */
done:
  if ((size_t)(s - *p) >= cap)
    return false;
  memcpy(out, *p, (size_t)(s - *p));
  *len = (size_t)(s - *p);
  out[*len] = '\0';
  *p = s;
  return true;
}

/*
 * Parses text[0, len) as exactly one JSON object with string, integer or
 * literal values, into `parsed`. Fails the test with why otherwise.
 */
static void parse_object(const char *text, size_t len) {
  const char *p = text, *end = text + len;
  memset(&parsed, 0, sizeof(parsed));
  if (!evf_utf8_valid(text, len))
    fail_msg("line is not valid UTF-8: %.*s", (int)len, text);
  if (p >= end || *p++ != '{')
    fail_msg("line does not start with {: %.*s", (int)len, text);
  while (p < end && *p != '}') {
    if (parsed.count > 0 && *p++ != ',')
      fail_msg("expected , at offset %td: %.*s", p - text - 1, (int)len, text);
    if (parsed.count == sizeof(parsed.members) / sizeof(parsed.members[0]))
      fail_msg("too many members: %.*s", (int)len, text);
    struct member *m = &parsed.members[parsed.count++];
    size_t key_len;
    if (!read_string(&p, end, m->key, sizeof(m->key) - 1, &key_len))
      fail_msg("bad key at offset %td: %.*s", p - text, (int)len, text);
    m->key[key_len] = '\0';
    if (p >= end || *p++ != ':')
      fail_msg("expected : at offset %td: %.*s", p - text - 1, (int)len, text);
    m->is_string = p < end && *p == '"';
    bool ok = m->is_string ? read_string(&p, end, m->value, sizeof(m->value) - 1, &m->len)
                           : read_literal(&p, end, m->value, sizeof(m->value), &m->len);
    if (!ok)
      fail_msg("bad value of %s at offset %td: %.*s", m->key, p - text, (int)len, text);
    m->value[m->len] = '\0';
  }
  if (p >= end || *p++ != '}' || p != end)
    fail_msg("line does not end with the object's }: %.*s", (int)len, text);
}

static const struct member *member(const char *key) {
  for (size_t i = 0; i < parsed.count; i++) {
    if (strcmp(parsed.members[i].key, key) == 0)
      return &parsed.members[i];
  }
  return NULL;
}

static const struct member *must_member(const char *key) {
  const struct member *m = member(key);
  if (m == NULL)
    fail_msg("no member %s", key);
  return m;
}

/*
 * Checks that text is exactly one line (ending in \n), at most
 * EVF_LOG_LINE_MAX bytes, holding one JSON object whose first members are
 * time, level and msg; leaves it in `parsed`.
 */
static void parse_line(const char *text, size_t len) {
  if (len == 0 || text[len - 1] != '\n')
    fail_msg("not one line ending in a newline (%zu bytes): %.*s", len, (int)len, text);
  if (memchr(text, '\n', len - 1) != NULL)
    fail_msg("more than one line: %.*s", (int)len, text);
  if (len > EVF_LOG_LINE_MAX)
    fail_msg("line of %zu bytes, more than %d", len, EVF_LOG_LINE_MAX);
  parse_object(text, len - 1);
  assert_true(parsed.count >= 3);
  assert_string_equal(parsed.members[0].key, "time");
  assert_string_equal(parsed.members[1].key, "level");
  assert_string_equal(parsed.members[2].key, "msg");
  for (size_t i = 0; i < 3; i++)
    assert_true(parsed.members[i].is_string);
}

/* Logs one message at info and parses the line it wrote. */
#define LOG_AND_PARSE(...)                      \
  do {                                          \
    size_t len_;                                \
    capture_begin();                            \
    evf_info(__VA_ARGS__);                      \
    char *text_ = capture_end(&len_);           \
    parse_line(text_, len_);                    \
    free(text_);                                \
  } while (0)

static int reset_level(void **state) {
  (void)state;
  evf_log_set_level(EVF_LOG_DEBUG);
  return 0;
}

static time_t realtime_seconds(void) {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return now.tv_sec;
}

/* ---- Tests ---- */

static void one_json_line(void **state) {
  (void)state;
  /* The logger's clock: time() may read a coarser one, a tick behind it. */
  time_t before = realtime_seconds();
  LOG_AND_PARSE("hello %d from %s", 42, "the test");
  time_t after = realtime_seconds();
  assert_int_equal(parsed.count, 3);
  assert_string_equal(must_member("level")->value, "info");
  assert_string_equal(must_member("msg")->value, "hello 42 from the test");

  /* 2026-11-26T17:06:37.249Z, UTC, between the clock readings around the call. */
  const char *stamp = must_member("time")->value;
  assert_int_equal(strlen(stamp), 24);
  struct tm tm;
  memset(&tm, 0, sizeof(tm));
  const char *rest = strptime(stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  assert_non_null(rest);
  assert_true(rest[0] == '.' && rest[1] >= '0' && rest[1] <= '9' && rest[2] >= '0' &&
              rest[2] <= '9' && rest[3] >= '0' && rest[3] <= '9' && rest[4] == 'Z' &&
              rest[5] == '\0');
  time_t logged = timegm(&tm);
  assert_true(logged >= before && logged <= after);
}

static void levels(void **state) {
  (void)state;
  static const char *const names[] = {"debug", "info", "warn", "error"};
  for (int min = EVF_LOG_DEBUG; min <= EVF_LOG_ERROR; min++) {
    evf_log_set_level((enum evf_log_level)min);
    for (int level = EVF_LOG_DEBUG; level <= EVF_LOG_ERROR; level++) {
      size_t len;
      capture_begin();
      evf_log((enum evf_log_level)level, "at %s", names[level]);
      char *text = capture_end(&len);
      if (level < min) {
        if (len != 0)
          fail_msg("level %s written with minimum %s: %s", names[level], names[min], text);
      } else {
        parse_line(text, len);
        assert_string_equal(must_member("level")->value, names[level]);
      }
      free(text);
    }
  }
  /* The macros log at their level. */
  evf_log_set_level(EVF_LOG_DEBUG);
  size_t len;
  capture_begin();
  evf_debug("d");
  evf_info("i");
  evf_warn("w");
  evf_error("e");
  char *text = capture_end(&len);
  char *line = text;
  for (int level = EVF_LOG_DEBUG; level <= EVF_LOG_ERROR; level++) {
    char *nl = strchr(line, '\n');
    assert_non_null(nl);
    parse_line(line, (size_t)(nl - line + 1));
    assert_string_equal(must_member("level")->value, names[level]);
    line = nl + 1;
  }
  assert_string_equal(line, "");
  free(text);
}

static void parse_level(void **state) {
  (void)state;
  enum evf_log_level level = EVF_LOG_ERROR;
  assert_int_equal(evf_log_parse_level("debug", &level), 0);
  assert_int_equal(level, EVF_LOG_DEBUG);
  assert_int_equal(evf_log_parse_level("warn", &level), 0);
  assert_int_equal(level, EVF_LOG_WARN);
  assert_int_not_equal(evf_log_parse_level("WARN", &level), 0);
  assert_int_not_equal(evf_log_parse_level("", &level), 0);
  assert_int_equal(level, EVF_LOG_WARN);
}

static void escapes_specials(void **state) {
  (void)state;
  size_t len;
  capture_begin();
  evf_info("q\"b\\s/n\nr\rt\tc%c%c%cend", 0x01, 0x1f, 0x7f);
  char *text = capture_end(&len);
  /* Exact bytes: quote and backslash escaped, every control as \u00XX. */
  const char *want = "\"msg\":\"q\\\"b\\\\s/n\\u000ar\\u000dt\\u0009c\\u0001\\u001f\\u007fend\"}\n";
  if (strstr(text, want) == NULL)
    fail_msg("escaping: want ...%s got %s", want, text);
  parse_line(text, len);
  assert_string_equal(must_member("msg")->value, "q\"b\\s/n\nr\rt\tc\x01\x1f\x7f" "end");
  free(text);
}

static void escapes_every_control_byte(void **state) {
  (void)state;
  for (int c = 0; c < 0x20; c++) {
    size_t len;
    capture_begin();
    evf_info("<%c>", c);
    char *text = capture_end(&len);
    char want[32];
    snprintf(want, sizeof(want), "\"<\\u%04x>\"", c);
    if (strstr(text, want) == NULL)
      fail_msg("byte 0x%02x: want %s in %s", c, want, text);
    parse_line(text, len);
    assert_int_equal(must_member("msg")->len, 3);
    assert_int_equal(must_member("msg")->value[1], c);
    free(text);
  }
}

static void keeps_utf8(void **state) {
  (void)state;
  const char *words = "h\xc3\xa9llo \xe2\x86\x92 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80";
  size_t len;
  capture_begin();
  evf_info("%s", words);
  char *text = capture_end(&len);
  char want[64];
  snprintf(want, sizeof(want), "\"msg\":\"%s\"}", words);
  if (strstr(text, want) == NULL)
    fail_msg("UTF-8 not kept as is: %s", text);
  parse_line(text, len);
  assert_string_equal(must_member("msg")->value, words);
  free(text);
}

static void replaces_invalid_utf8(void **state) {
  (void)state;
  static const struct {
    const char *in, *out;
  } cases[] = {
      {"a\xff" "b", "a\xef\xbf\xbd" "b"},                     /* not a lead byte */
      {"a\x80" "b", "a\xef\xbf\xbd" "b"},                     /* lone continuation */
      {"a\xc3", "a\xef\xbf\xbd"},                             /* cut at the end */
      {"a\xe2\x82" "b", "a\xef\xbf\xbd\xef\xbf\xbd" "b"},     /* cut in the middle */
      {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},               /* overlong */
      {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* surrogate */
      {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* > U+10FFFF */
      {"\xc3\xa9\xff\xc3\xa9", "\xc3\xa9\xef\xbf\xbd\xc3\xa9"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    size_t len;
    capture_begin();
    evf_info("%s", cases[i].in);
    char *text = capture_end(&len);
    parse_line(text, len);
    if (strcmp(must_member("msg")->value, cases[i].out) != 0)
      fail_msg("case %zu: got %s", i, text);
    free(text);
  }
}

/* Logs prefix then count copies of unit; returns the line, parsed. */
static char *log_repeated(const char *prefix, const char *unit, size_t count, size_t *len) {
  size_t unit_len = strlen(unit), prefix_len = strlen(prefix);
  char *msg = malloc(prefix_len + unit_len * count + 1);
  assert_non_null(msg);
  memcpy(msg, prefix, prefix_len);
  for (size_t i = 0; i < count; i++)
    memcpy(msg + prefix_len + i * unit_len, unit, unit_len);
  msg[prefix_len + unit_len * count] = '\0';
  capture_begin();
  evf_info("%s", msg);
  char *text = capture_end(len);
  free(msg);
  parse_line(text, *len);
  return text;
}

static void short_line_not_truncated(void **state) {
  (void)state;
  size_t len;
  char *text = log_repeated("", "x", 3000, &len);
  assert_int_equal(must_member("msg")->len, 3000);
  assert_null(member("truncated"));
  free(text);
}

/*
 * Long messages are cut between whole characters: for every alignment of
 * an escape or a UTF-8 sequence against the end of the line, the line is
 * valid JSON and msg holds the prefix and whole units only.
 */
static void truncates_cleanly(void **state) {
  (void)state;
  static const struct {
    const char *unit;    /* what is logged */
    const char *decoded; /* what msg must then hold per unit */
  } units[] = {
      {"x", "x"},
      {"\"", "\""},
      {"\\", "\\"},
      {"\x01", "\x01"},
      {"\xe2\x82\xac", "\xe2\x82\xac"},         /* 3-byte UTF-8 */
      {"\xf0\x9f\x98\x80", "\xf0\x9f\x98\x80"}, /* 4-byte UTF-8 */
      {"\xff", "\xef\xbf\xbd"},                 /* 1 byte, 6 escaped */
  };
  for (size_t u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
    for (size_t shift = 0; shift < 8; shift++) {
      char prefix[9] = "abcdefgh";
      prefix[shift] = '\0';
      size_t len;
      char *text = log_repeated(prefix, units[u].unit, 6000, &len);
      const struct member *t = member("truncated");
      if (t == NULL || strcmp(t->value, "true") != 0 || t->is_string)
        fail_msg("unit %zu shift %zu: no \"truncated\":true: %s", u, shift, text);
      assert_int_equal(parsed.count, 4);
      /* Near the limit: at most one escaped unit (6 bytes) short of it. */
      assert_true(len > EVF_LOG_LINE_MAX - 6);
      const struct member *m = must_member("msg");
      assert_memory_equal(m->value, prefix, shift);
      size_t dlen = strlen(units[u].decoded);
      size_t body = m->len - shift;
      if (body % dlen != 0)
        fail_msg("unit %zu shift %zu: msg body of %zu bytes is not whole units", u, shift, body);
      for (size_t i = 0; i < body; i += dlen)
        assert_memory_equal(m->value + shift + i, units[u].decoded, dlen);
      free(text);
    }
  }
}

static void fields(void **state) {
  (void)state;
  size_t len;
  capture_begin();
  evf_log_fields(EVF_LOG_WARN,
                 EVF_LOG_FIELDS(EVF_LOG_STR("stream", "orders-\"1\"\n"),
                                EVF_LOG_INT("delta", -42), EVF_LOG_UINT("position", UINT64_MAX),
                                EVF_LOG_INT("min", INT64_MIN), EVF_LOG_STR("none", NULL),
                                EVF_LOG_STR("k\xc3\xa9y\t", "v\xc3\xa9")),
                 "append %s", "failed");
  char *text = capture_end(&len);
  parse_line(text, len);
  assert_string_equal(must_member("level")->value, "warn");
  assert_string_equal(must_member("msg")->value, "append failed");
  assert_int_equal(parsed.count, 9);
  static const char *const keys[] = {"stream", "delta", "position", "min", "none", "k\xc3\xa9y\t"};
  for (size_t i = 0; i < 6; i++)
    assert_string_equal(parsed.members[3 + i].key, keys[i]);
  assert_true(must_member("stream")->is_string);
  assert_string_equal(must_member("stream")->value, "orders-\"1\"\n");
  assert_false(must_member("delta")->is_string);
  assert_string_equal(must_member("delta")->value, "-42");
  assert_string_equal(must_member("position")->value, "18446744073709551615");
  assert_string_equal(must_member("min")->value, "-9223372036854775808");
  assert_false(must_member("none")->is_string);
  assert_string_equal(must_member("none")->value, "null");
  assert_string_equal(must_member("k\xc3\xa9y\t")->value, "v\xc3\xa9");
  assert_null(member("truncated"));
  free(text);

  /* No fields at all is a plain line. */
  capture_begin();
  evf_log_fields(EVF_LOG_INFO, NULL, 0, "plain");
  text = capture_end(&len);
  parse_line(text, len);
  assert_int_equal(parsed.count, 3);
  free(text);

  /* Below the level, nothing. */
  evf_log_set_level(EVF_LOG_ERROR);
  capture_begin();
  evf_log_fields(EVF_LOG_WARN, EVF_LOG_FIELDS(EVF_LOG_INT("n", 1)), "hidden");
  text = capture_end(&len);
  assert_int_equal(len, 0);
  free(text);
}

static void fields_truncated(void **state) {
  (void)state;
  char *big = malloc(8000);
  assert_non_null(big);
  memset(big, '"', 7999);
  big[7999] = '\0';
  size_t len;

  /* A long string field is cut like msg; the fields after it are left out. */
  capture_begin();
  evf_log_fields(EVF_LOG_INFO,
                 EVF_LOG_FIELDS(EVF_LOG_UINT("before", 7), EVF_LOG_STR("big", big),
                                EVF_LOG_UINT("after", 8)),
                 "m");
  char *text = capture_end(&len);
  parse_line(text, len);
  assert_string_equal(must_member("before")->value, "7");
  const struct member *m = must_member("big");
  assert_true(m->len > 1000);
  for (size_t i = 0; i < m->len; i++)
    assert_int_equal(m->value[i], '"');
  assert_null(member("after"));
  assert_string_equal(must_member("truncated")->value, "true");
  free(text);

  /* A message filling the line leaves no room for fields. */
  for (size_t shift = 0; shift < 40; shift++) {
    big[EVF_LOG_LINE_MAX - 100 - shift] = '\0';
    memset(big, 'x', EVF_LOG_LINE_MAX - 100 - shift);
    capture_begin();
    evf_log_fields(EVF_LOG_INFO,
                   EVF_LOG_FIELDS(EVF_LOG_STR("key", "value"), EVF_LOG_INT("n", -1234567)),
                   "%s", big);
    text = capture_end(&len);
    parse_line(text, len);
    /* Either a field fits whole or it is absent, and then the line says so. */
    const struct member *k = member("key"), *n = member("n");
    if (k != NULL)
      assert_string_equal(k->value, "value");
    if (n != NULL)
      assert_string_equal(n->value, "-1234567");
    if (k == NULL || n == NULL)
      assert_non_null(member("truncated"));
    else
      assert_null(member("truncated"));
    free(text);
  }
  free(big);
}

static void preserves_errno(void **state) {
  (void)state;
  capture_begin();
  errno = ENOSPC;
  evf_info("errno is kept");
  int after = errno;
  free(capture_end(NULL));
  assert_int_equal(after, ENOSPC);
}

/* ---- Threads: lines never interleave ---- */

enum { WRITERS = 8, LINES_PER_WRITER = 200 };

struct writer {
  pthread_t thread;
  char letter;
};

static void *writer_main(void *arg) {
  struct writer *w = arg;
  char msg[EVF_LOG_LINE_MAX];
  /* Long enough to be truncated: every write is a full-size line. */
  memset(msg, w->letter, sizeof(msg) - 1);
  msg[sizeof(msg) - 1] = '\0';
  for (int i = 0; i < LINES_PER_WRITER; i++)
    evf_info("%s", msg);
  return NULL;
}

struct reader {
  pthread_t thread;
  int fd;
  char *buf;
  size_t len, cap;
};

static void *reader_main(void *arg) {
  struct reader *r = arg;
  for (;;) {
    if (r->cap - r->len < 65536) {
      r->cap = r->cap * 2 + 65536;
      r->buf = realloc(r->buf, r->cap);
      if (r->buf == NULL)
        return NULL;
    }
    ssize_t n = read(r->fd, r->buf + r->len, r->cap - r->len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return NULL;
    r->len += (size_t)n;
  }
}

static void threads_do_not_interleave(void **state) {
  (void)state;
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  struct reader r = {.fd = fds[0]};
  assert_int_equal(pthread_create(&r.thread, NULL, reader_main, &r), 0);
  fflush(stderr);
  int saved = dup(STDERR_FILENO);
  assert_true(saved >= 0);
  assert_true(dup2(fds[1], STDERR_FILENO) >= 0);
  close(fds[1]);

  struct writer writers[WRITERS];
  for (int i = 0; i < WRITERS; i++) {
    writers[i].letter = (char)('a' + i);
    assert_int_equal(pthread_create(&writers[i].thread, NULL, writer_main, &writers[i]), 0);
  }
  for (int i = 0; i < WRITERS; i++)
    pthread_join(writers[i].thread, NULL);
  /* Closing the last write end lets the reader see the end of the pipe. */
  assert_true(dup2(saved, STDERR_FILENO) >= 0);
  close(saved);
  pthread_join(r.thread, NULL);
  close(fds[0]);
  assert_non_null(r.buf);

  size_t counts[WRITERS] = {0};
  size_t lines = 0;
  for (size_t at = 0; at < r.len;) {
    char *nl = memchr(r.buf + at, '\n', r.len - at);
    assert_non_null(nl);
    size_t len = (size_t)(nl - (r.buf + at)) + 1;
    parse_line(r.buf + at, len);
    const struct member *m = must_member("msg");
    char letter = m->value[0];
    assert_true(letter >= 'a' && letter < 'a' + WRITERS);
    for (size_t i = 0; i < m->len; i++) {
      if (m->value[i] != letter)
        fail_msg("line %zu mixes writers %c and %c", lines, letter, m->value[i]);
    }
    counts[letter - 'a']++;
    lines++;
    at += len;
  }
  assert_int_equal(lines, WRITERS * LINES_PER_WRITER);
  for (int i = 0; i < WRITERS; i++)
    assert_int_equal(counts[i], LINES_PER_WRITER);
  free(r.buf);
}

#define T(f) cmocka_unit_test_setup(f, reset_level)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(one_json_line),
      T(levels),
      T(parse_level),
      T(escapes_specials),
      T(escapes_every_control_byte),
      T(keeps_utf8),
      T(replaces_invalid_utf8),
      T(short_line_not_truncated),
      T(truncates_cleanly),
      T(fields),
      T(fields_truncated),
      T(preserves_errno),
      T(threads_do_not_interleave),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
