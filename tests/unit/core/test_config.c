/*
 * Tests for evf/config.h. Every test starts from an environment with none
 * of the server's variables set; the program is single-threaded, so
 * setenv()/unsetenv() are safe here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "evf/config.h"
#include "evf/status.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static const char *const variables[] = {
    "DATA",      "SHARDS",           "SYNC",     "MAP_SIZE",  "PAGE_SIZE", "GRPC_PORT",
    "HTTP_PORT", "PROM_PORT", "MAX_MESSAGE_SIZE", "LOG_LEVEL",
};

static int clear_env(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(variables) / sizeof(variables[0]); i++)
    unsetenv(variables[i]);
  return 0;
}

static void set(const char *name, const char *value) {
  assert_int_equal(setenv(name, value, 1), 0);
}

/* Loads the configuration, which must succeed. */
static void load(struct evf_config *cfg) {
  char err[256] = "";
  int rc = evf_config_from_env(cfg, err, sizeof(err));
  if (rc != 0)
    fail_msg("evf_config_from_env: %d (%s)", rc, err);
}

static bool is_name_char(char c) { return isupper((unsigned char)c) || c == '_'; }

/* Whether err mentions name as a whole word ("PORT" is not "HTTP_PORT"). */
static bool names_variable(const char *err, const char *name) {
  size_t len = strlen(name);
  for (const char *p = strstr(err, name); p != NULL; p = strstr(p + 1, name)) {
    if ((p == err || !is_name_char(p[-1])) && !is_name_char(p[len]))
      return true;
  }
  return false;
}

/*
 * Sets name=value alone and checks that loading fails with EVF_EINVAL, an
 * error naming the variable and quoting the value, and cfg untouched.
 */
static void expect_rejected(const char *name, const char *value) {
  struct evf_config cfg, before;
  char err[8192];
  clear_env(NULL);
  set(name, value);
  memset(&cfg, 0xA5, sizeof(cfg));
  memcpy(&before, &cfg, sizeof(cfg)); /* padding too, which = may skip */
  memset(err, 0, sizeof(err));
  int rc = evf_config_from_env(&cfg, err, sizeof(err));
  if (rc != EVF_EINVAL)
    fail_msg("%s=\"%s\": returned %d, expected EVF_EINVAL", name, value, rc);
  if (!names_variable(err, name))
    fail_msg("%s=\"%s\": error does not name the variable: %s", name, value, err);
  if (strstr(err, value) == NULL)
    fail_msg("%s=\"%s\": error does not quote the value: %s", name, value, err);
  if (memcmp(&cfg, &before, sizeof(cfg)) != 0)
    fail_msg("%s=\"%s\": cfg was modified on failure", name, value);
  unsetenv(name);
}

static void defaults(void **state) {
  (void)state;
  struct evf_config cfg;
  memset(&cfg, 0xA5, sizeof(cfg));
  load(&cfg);
  assert_string_equal(cfg.data_dir, "./data");
  assert_int_equal(cfg.shards, 0);
  assert_true(cfg.sync_full);
  assert_int_equal(cfg.map_size, (uint64_t)16 << 30);
  assert_int_equal(cfg.page_size, 1000);
  assert_int_equal(cfg.grpc_port, 6543);
  assert_int_equal(cfg.http_port, 16543);
  assert_int_equal(cfg.prom_port, 26543);
  assert_int_equal(cfg.max_message_size, (uint64_t)4 << 20);
  assert_int_equal(cfg.log_level, EVF_LOG_INFO);
}

static void empty_values_mean_default(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(variables) / sizeof(variables[0]); i++)
    set(variables[i], "");
  struct evf_config cfg;
  load(&cfg);
  assert_string_equal(cfg.data_dir, "./data");
  assert_int_equal(cfg.shards, 0);
  assert_true(cfg.sync_full);
  assert_int_equal(cfg.map_size, (uint64_t)16 << 30);
  assert_int_equal(cfg.page_size, 1000);
  assert_int_equal(cfg.grpc_port, 6543);
  assert_int_equal(cfg.http_port, 16543);
  assert_int_equal(cfg.prom_port, 26543);
  assert_int_equal(cfg.max_message_size, (uint64_t)4 << 20);
  assert_int_equal(cfg.log_level, EVF_LOG_INFO);
}

static void data_dir(void **state) {
  (void)state;
  struct evf_config cfg;
  set("DATA", "/var/lib/eventflowdb");
  load(&cfg);
  assert_string_equal(cfg.data_dir, "/var/lib/eventflowdb");

  /* The longest path accepted leaves 64 bytes for file names under it. */
  char path[sizeof(cfg.data_dir)];
  size_t longest = sizeof(cfg.data_dir) - 65;
  memset(path, 'd', longest);
  path[0] = '/';
  path[longest] = '\0';
  set("DATA", path);
  load(&cfg);
  assert_string_equal(cfg.data_dir, path);
}

static void shards(void **state) {
  (void)state;
  struct evf_config cfg;
  set("SHARDS", "1");
  load(&cfg);
  assert_int_equal(cfg.shards, 1);
  set("SHARDS", "8");
  load(&cfg);
  assert_int_equal(cfg.shards, 8);
  set("SHARDS", "256");
  load(&cfg);
  assert_int_equal(cfg.shards, 256);
}

static void sync_mode(void **state) {
  (void)state;
  struct evf_config cfg;
  set("SYNC", "none");
  load(&cfg);
  assert_false(cfg.sync_full);
  set("SYNC", "full");
  load(&cfg);
  assert_true(cfg.sync_full);
}

static void map_size(void **state) {
  (void)state;
  struct evf_config cfg;
  set("MAP_SIZE", "64G");
  load(&cfg);
  assert_int_equal(cfg.map_size, (uint64_t)64 << 30);
  set("MAP_SIZE", "1M");
  load(&cfg);
  assert_int_equal(cfg.map_size, (uint64_t)1 << 20);
  set("MAP_SIZE", "1048576");
  load(&cfg);
  assert_int_equal(cfg.map_size, 1048576);
  set("MAP_SIZE", "1T");
  load(&cfg);
  assert_int_equal(cfg.map_size, (uint64_t)1 << 40);
}

static void page_size(void **state) {
  (void)state;
  struct evf_config cfg;
  set("PAGE_SIZE", "1");
  load(&cfg);
  assert_int_equal(cfg.page_size, 1);
  set("PAGE_SIZE", "250");
  load(&cfg);
  assert_int_equal(cfg.page_size, 250);
  set("PAGE_SIZE", "100000");
  load(&cfg);
  assert_int_equal(cfg.page_size, 100000);
}

static void ports(void **state) {
  (void)state;
  struct evf_config cfg;
  set("GRPC_PORT", "2113");
  set("HTTP_PORT", "1");
  set("PROM_PORT", "65535");
  load(&cfg);
  assert_int_equal(cfg.grpc_port, 2113);
  assert_int_equal(cfg.http_port, 1);
  assert_int_equal(cfg.prom_port, 65535);
}

static void max_message_size(void **state) {
  (void)state;
  struct evf_config cfg;
  set("MAX_MESSAGE_SIZE", "16M");
  load(&cfg);
  assert_int_equal(cfg.max_message_size, (uint64_t)16 << 20);
  set("MAX_MESSAGE_SIZE", "4096");
  load(&cfg);
  assert_int_equal(cfg.max_message_size, 4096);
  set("MAX_MESSAGE_SIZE", "4KiB");
  load(&cfg);
  assert_int_equal(cfg.max_message_size, 4096);
}

static void log_level(void **state) {
  (void)state;
  static const struct {
    const char *text;
    enum evf_log_level level;
  } levels[] = {
      {"debug", EVF_LOG_DEBUG},
      {"info", EVF_LOG_INFO},
      {"warn", EVF_LOG_WARN},
      {"error", EVF_LOG_ERROR},
  };
  struct evf_config cfg;
  for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
    set("LOG_LEVEL", levels[i].text);
    load(&cfg);
    assert_int_equal(cfg.log_level, levels[i].level);
  }
}

static void all_variables_together(void **state) {
  (void)state;
  set("DATA", "/srv/evf");
  set("SHARDS", "4");
  set("SYNC", "none");
  set("MAP_SIZE", "2G");
  set("PAGE_SIZE", "500");
  set("GRPC_PORT", "7001");
  set("HTTP_PORT", "7002");
  set("PROM_PORT", "7003");
  set("MAX_MESSAGE_SIZE", "8M");
  set("LOG_LEVEL", "warn");
  struct evf_config cfg;
  load(&cfg);
  assert_string_equal(cfg.data_dir, "/srv/evf");
  assert_int_equal(cfg.shards, 4);
  assert_false(cfg.sync_full);
  assert_int_equal(cfg.map_size, (uint64_t)2 << 30);
  assert_int_equal(cfg.page_size, 500);
  assert_int_equal(cfg.grpc_port, 7001);
  assert_int_equal(cfg.http_port, 7002);
  assert_int_equal(cfg.prom_port, 7003);
  assert_int_equal(cfg.max_message_size, (uint64_t)8 << 20);
  assert_int_equal(cfg.log_level, EVF_LOG_WARN);
}

/* Values no integer variable accepts. */
static const char *const not_integers[] = {
    "abc", "-1", "+1", " 1", "1 ", "1.0", "0x10", "1e3", "1O", "99999999999999999999999",
};

static void rejects_data(void **state) {
  (void)state;
  char path[5000];
  memset(path, 'd', sizeof(path) - 1);
  path[0] = '/';
  path[sizeof(path) - 1] = '\0';
  expect_rejected("DATA", path);
  /* One byte past the longest path accepted. */
  path[4096 - 64] = '\0';
  expect_rejected("DATA", path);
}

static void rejects_shards(void **state) {
  (void)state;
  expect_rejected("SHARDS", "0");
  expect_rejected("SHARDS", "257");
  expect_rejected("SHARDS", "4294967297"); /* 2^32 + 1: must not wrap to 1 */
  expect_rejected("SHARDS", "4K");
  for (size_t i = 0; i < sizeof(not_integers) / sizeof(not_integers[0]); i++)
    expect_rejected("SHARDS", not_integers[i]);
}

static void rejects_sync(void **state) {
  (void)state;
  expect_rejected("SYNC", "fsync");
  expect_rejected("SYNC", "yes");
  expect_rejected("SYNC", "0");
  expect_rejected("SYNC", "full ");
}

static void rejects_map_size(void **state) {
  (void)state;
  expect_rejected("MAP_SIZE", "1023K"); /* below the 1 MiB minimum */
  expect_rejected("MAP_SIZE", "1048575");
  expect_rejected("MAP_SIZE", "0");
  expect_rejected("MAP_SIZE", "16Q");
  expect_rejected("MAP_SIZE", "16 G");
  expect_rejected("MAP_SIZE", "-16G");
  expect_rejected("MAP_SIZE", "16777216T"); /* 2^64 */
  expect_rejected("MAP_SIZE", "lots");
}

static void rejects_page_size(void **state) {
  (void)state;
  expect_rejected("PAGE_SIZE", "0");
  expect_rejected("PAGE_SIZE", "100001");
  expect_rejected("PAGE_SIZE", "1K");
  for (size_t i = 0; i < sizeof(not_integers) / sizeof(not_integers[0]); i++)
    expect_rejected("PAGE_SIZE", not_integers[i]);
}

static void rejects_ports(void **state) {
  (void)state;
  static const char *const names[] = {"GRPC_PORT", "HTTP_PORT", "PROM_PORT"};
  for (size_t n = 0; n < sizeof(names) / sizeof(names[0]); n++) {
    expect_rejected(names[n], "0");
    expect_rejected(names[n], "65536");
    expect_rejected(names[n], "4294967297");
    expect_rejected(names[n], "80a");
    expect_rejected(names[n], ":80");
    for (size_t i = 0; i < sizeof(not_integers) / sizeof(not_integers[0]); i++)
      expect_rejected(names[n], not_integers[i]);
  }
}

static void rejects_max_message_size(void **state) {
  (void)state;
  expect_rejected("MAX_MESSAGE_SIZE", "4095"); /* below the 4 KiB minimum */
  expect_rejected("MAX_MESSAGE_SIZE", "3K");
  expect_rejected("MAX_MESSAGE_SIZE", "0");
  expect_rejected("MAX_MESSAGE_SIZE", "4M!");
  expect_rejected("MAX_MESSAGE_SIZE", "four megabytes");
  expect_rejected("MAX_MESSAGE_SIZE", "99999999999999999999999");
}

static void rejects_log_level(void **state) {
  (void)state;
  expect_rejected("LOG_LEVEL", "verbose");
  expect_rejected("LOG_LEVEL", "trace");
  expect_rejected("LOG_LEVEL", "3");
  expect_rejected("LOG_LEVEL", "info ");
}

static void first_error_leaves_cfg_untouched(void **state) {
  (void)state;
  /* Variables read before the bad one must not leak into cfg either. */
  set("DATA", "/srv/evf");
  set("SHARDS", "4");
  set("LOG_LEVEL", "loud");
  struct evf_config cfg, before;
  char err[256] = "";
  memset(&cfg, 0x5A, sizeof(cfg));
  memcpy(&before, &cfg, sizeof(cfg));
  assert_int_equal(evf_config_from_env(&cfg, err, sizeof(err)), EVF_EINVAL);
  assert_true(names_variable(err, "LOG_LEVEL"));
  assert_memory_equal(&cfg, &before, sizeof(cfg));
}

static void short_error_buffer(void **state) {
  (void)state;
  set("GRPC_PORT", "not-a-port");
  struct evf_config cfg;
  char err[16];
  memset(err, 'X', sizeof(err));
  assert_int_equal(evf_config_from_env(&cfg, err, 8), EVF_EINVAL);
  /* Truncated to the length given and terminated, nothing written past it. */
  assert_int_equal(strlen(err), 7);
  assert_memory_equal(err, "GRPC_PO", 7);
  assert_int_equal(err[8], 'X');
}

struct size_case {
  const char *text;
  uint64_t value;
};

static void parse_size_accepts(void **state) {
  (void)state;
  static const struct size_case cases[] = {
      {"0", 0},
      {"1", 1},
      {"4096", 4096},
      {"000123", 123},
      {"1B", 1},
      {"1b", 1},
      {"1K", (uint64_t)1 << 10},
      {"1k", (uint64_t)1 << 10},
      {"1KB", (uint64_t)1 << 10},
      {"1kb", (uint64_t)1 << 10},
      {"1KiB", (uint64_t)1 << 10},
      {"1kib", (uint64_t)1 << 10},
      {"1KIB", (uint64_t)1 << 10},
      {"512K", (uint64_t)512 << 10},
      {"1M", (uint64_t)1 << 20},
      {"64m", (uint64_t)64 << 20},
      {"64MB", (uint64_t)64 << 20},
      {"64MiB", (uint64_t)64 << 20},
      {"64mib", (uint64_t)64 << 20},
      {"16G", (uint64_t)16 << 30},
      {"16g", (uint64_t)16 << 30},
      {"16GiB", (uint64_t)16 << 30},
      {"16GB", (uint64_t)16 << 30},
      {"1T", (uint64_t)1 << 40},
      {"2tib", (uint64_t)2 << 40},
      {"3TB", (uint64_t)3 << 40},
      {"18446744073709551615", UINT64_MAX},
      {"18446744073709551615B", UINT64_MAX},
      {"16777215T", (uint64_t)16777215 << 40},
      {"17179869183G", (uint64_t)17179869183 << 30},
      {"18014398509481983K", (uint64_t)18014398509481983 << 10},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    uint64_t out = 0xDEADBEEF;
    int rc = evf_parse_size(cases[i].text, &out);
    if (rc != 0)
      fail_msg("\"%s\": returned %d", cases[i].text, rc);
    if (out != cases[i].value)
      fail_msg("\"%s\": %ju, expected %ju", cases[i].text, (uintmax_t)out,
               (uintmax_t)cases[i].value);
  }
}

static void parse_size_rejects(void **state) {
  (void)state;
  static const char *const bad[] = {
      "",
      "K",
      "KiB",
      "B",
      "-1",
      "+1",
      " 1",
      "1 ",
      "1 K",
      "\t1",
      "1.5K",
      "1,5K",
      "0x10",
      "1e3",
      "1KX",
      "1KiBs",
      "1KBB",
      "1KK",
      "1iB",  /* "iB" only after a suffix */
      "1i",
      "1Ki",
      "1P",
      "1E",
      "1KiB ",
      "abc",
      "one",
      "18446744073709551616",      /* 2^64 */
      "99999999999999999999999",
      "16777216T",                 /* 2^64 */
      "17179869184G",              /* 2^64 */
      "18014398509481984K",        /* 2^64 */
      "18446744073709551615K",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    uint64_t out = 0xDEADBEEF;
    int rc = evf_parse_size(bad[i], &out);
    if (rc != EVF_EINVAL)
      fail_msg("\"%s\": returned %d (value %ju), expected EVF_EINVAL", bad[i], rc,
               (uintmax_t)out);
    if (out != 0xDEADBEEF)
      fail_msg("\"%s\": out modified on failure", bad[i]);
  }
}

#define T(f) cmocka_unit_test_setup(f, clear_env)

int main(void) {
  const struct CMUnitTest tests[] = {
      T(defaults),
      T(empty_values_mean_default),
      T(data_dir),
      T(shards),
      T(sync_mode),
      T(map_size),
      T(page_size),
      T(ports),
      T(max_message_size),
      T(log_level),
      T(all_variables_together),
      T(rejects_data),
      T(rejects_shards),
      T(rejects_sync),
      T(rejects_map_size),
      T(rejects_page_size),
      T(rejects_ports),
      T(rejects_max_message_size),
      T(rejects_log_level),
      T(first_error_leaves_cfg_untouched),
      T(short_error_buffer),
      T(parse_size_accepts),
      T(parse_size_rejects),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
