/*
 * Tests for evf/config.h: the environment, the flags that override it, and
 * the help. Every test starts from an environment with none of the
 * server's variables set; the program is single-threaded, so
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
    "HTTP_PORT", "PROM_PORT", "MAX_MESSAGE_SIZE", "LOG_LEVEL", "HTTP_REQUEST_TIMEOUT_MS",
    "HTTP_IDLE_TIMEOUT_MS",
};

/* The flag of each variable above, in the same order. */
static const char *const flags[] = {
    "--data",      "--shards",    "--sync",             "--map-size",  "--page-size",
    "--grpc-port", "--http-port", "--prom-port", "--max-message-size", "--log-level",
    "--http-request-timeout-ms", "--http-idle-timeout-ms",
};

static const char *flag_of(const char *variable) {
  for (size_t i = 0; i < sizeof(variables) / sizeof(variables[0]); i++) {
    if (strcmp(variables[i], variable) == 0)
      return flags[i];
  }
  fail_msg("no flag for %s", variable);
  return NULL;
}

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

/*
 * evf_config_load() with the arguments after the program name given as a
 * NULL-terminated list.
 */
static int load_args_v(struct evf_config *cfg, char *err, size_t err_len, va_list args) {
  char *argv[32] = {"eventflowdb"};
  int argc = 1;
  for (const char *arg; (arg = va_arg(args, const char *)) != NULL;) {
    assert_true(argc < 31);
    argv[argc++] = (char *)arg;
  }
  return evf_config_load(cfg, argc, argv, err, err_len);
}

static int load_args(struct evf_config *cfg, char *err, size_t err_len, ...) {
  va_list args;
  va_start(args, err_len);
  int rc = load_args_v(cfg, err, err_len, args);
  va_end(args);
  return rc;
}

/* Loads with the arguments given, which must succeed. */
static void load_flags(struct evf_config *cfg, ...) {
  char err[256] = "";
  va_list args;
  va_start(args, cfg);
  int rc = load_args_v(cfg, err, sizeof(err), args);
  va_end(args);
  if (rc != 0)
    fail_msg("evf_config_load: %d (%s)", rc, err);
}

static bool is_name_char(char c) {
  return isalnum((unsigned char)c) || c == '_' || c == '-';
}

/*
 * Whether err mentions name as a whole word ("PORT" is not "HTTP_PORT",
 * "--data" is not "--data-dir").
 */
static bool names_variable(const char *err, const char *name) {
  size_t len = strlen(name);
  for (const char *p = strstr(err, name); p != NULL; p = strstr(p + 1, name)) {
    if ((p == err || !is_name_char(p[-1])) && !is_name_char(p[len]))
      return true;
  }
  return false;
}

/* Loading with these arguments fails with EVF_EINVAL, an error naming what, and cfg untouched. */
static void expect_args_rejected(const char *what, ...) {
  struct evf_config cfg, before;
  char err[8192];
  memset(&cfg, 0xA5, sizeof(cfg));
  memcpy(&before, &cfg, sizeof(cfg));
  memset(err, 0, sizeof(err));
  va_list args;
  va_start(args, what);
  int rc = load_args_v(&cfg, err, sizeof(err), args);
  va_end(args);
  if (rc != EVF_EINVAL)
    fail_msg("%s: returned %d, expected EVF_EINVAL (%s)", what, rc, err);
  if (strstr(err, what) == NULL)
    fail_msg("error does not mention %s: %s", what, err);
  if (strchr(err, '\n') != NULL)
    fail_msg("error is not one line: %s", err);
  if (memcmp(&cfg, &before, sizeof(cfg)) != 0)
    fail_msg("%s: cfg was modified on failure", what);
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

  /* The same value given by the flag, in both forms, is rejected naming the flag. */
  const char *flag = flag_of(name);
  size_t joined_len = strlen(flag) + 1 + strlen(value) + 1;
  char *joined = malloc(joined_len);
  assert_non_null(joined);
  snprintf(joined, joined_len, "%s=%s", flag, value);
  for (int form = 0; form < 2; form++) {
    memset(err, 0, sizeof(err));
    rc = form == 0 ? load_args(&cfg, err, sizeof(err), flag, value, NULL)
                   : load_args(&cfg, err, sizeof(err), joined, NULL);
    if (rc != EVF_EINVAL)
      fail_msg("%s \"%s\": returned %d, expected EVF_EINVAL", flag, value, rc);
    if (!names_variable(err, flag))
      fail_msg("%s \"%s\": error does not name the flag: %s", flag, value, err);
    if (strstr(err, value) == NULL)
      fail_msg("%s \"%s\": error does not quote the value: %s", flag, value, err);
    if (memcmp(&cfg, &before, sizeof(cfg)) != 0)
      fail_msg("%s \"%s\": cfg was modified on failure", flag, value);
  }
  free(joined);
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
  assert_int_equal(cfg.http_request_timeout_ms, 30000);
  assert_int_equal(cfg.http_idle_timeout_ms, 120000);
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

static void http_timeouts(void **state) {
  (void)state;
  struct evf_config cfg;
  set("HTTP_REQUEST_TIMEOUT_MS", "10");
  set("HTTP_IDLE_TIMEOUT_MS", "86400000");
  load(&cfg);
  assert_int_equal(cfg.http_request_timeout_ms, 10);
  assert_int_equal(cfg.http_idle_timeout_ms, 86400000);
  load_flags(&cfg, "--http-request-timeout-ms", "5000", "--http-idle-timeout-ms=60000", NULL);
  assert_int_equal(cfg.http_request_timeout_ms, 5000);
  assert_int_equal(cfg.http_idle_timeout_ms, 60000);
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

static void rejects_http_timeouts(void **state) {
  (void)state;
  static const char *const names[] = {"HTTP_REQUEST_TIMEOUT_MS", "HTTP_IDLE_TIMEOUT_MS"};
  for (size_t n = 0; n < sizeof(names) / sizeof(names[0]); n++) {
    expect_rejected(names[n], "0");
    expect_rejected(names[n], "9");
    expect_rejected(names[n], "86400001");
    expect_rejected(names[n], "30s");
    for (size_t i = 0; i < sizeof(not_integers) / sizeof(not_integers[0]); i++)
      expect_rejected(names[n], not_integers[i]);
  }
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

/* Every setting by flag, over a different value of every variable. */
static void flags_override_env(void **state) {
  (void)state;
  set("DATA", "/env");
  set("SHARDS", "2");
  set("SYNC", "full");
  set("MAP_SIZE", "1G");
  set("PAGE_SIZE", "10");
  set("GRPC_PORT", "1001");
  set("HTTP_PORT", "1002");
  set("PROM_PORT", "1003");
  set("MAX_MESSAGE_SIZE", "1M");
  set("LOG_LEVEL", "error");
  struct evf_config cfg;
  load_flags(&cfg, "--data", "/flag", "--shards", "16", "--sync", "none", "--map-size", "3G",
             "--page-size", "20", "--grpc-port", "2001", "--http-port", "2002", "--prom-port",
             "2003", "--max-message-size", "2M", "--log-level", "debug", NULL);
  assert_string_equal(cfg.data_dir, "/flag");
  assert_int_equal(cfg.shards, 16);
  assert_false(cfg.sync_full);
  assert_int_equal(cfg.map_size, (uint64_t)3 << 30);
  assert_int_equal(cfg.page_size, 20);
  assert_int_equal(cfg.grpc_port, 2001);
  assert_int_equal(cfg.http_port, 2002);
  assert_int_equal(cfg.prom_port, 2003);
  assert_int_equal(cfg.max_message_size, (uint64_t)2 << 20);
  assert_int_equal(cfg.log_level, EVF_LOG_DEBUG);

  /* Without flags, the same environment applies. */
  load_flags(&cfg, NULL);
  assert_string_equal(cfg.data_dir, "/env");
  assert_int_equal(cfg.shards, 2);
  assert_true(cfg.sync_full);
  assert_int_equal(cfg.map_size, (uint64_t)1 << 30);
  assert_int_equal(cfg.page_size, 10);
  assert_int_equal(cfg.grpc_port, 1001);
  assert_int_equal(cfg.http_port, 1002);
  assert_int_equal(cfg.prom_port, 1003);
  assert_int_equal(cfg.max_message_size, (uint64_t)1 << 20);
  assert_int_equal(cfg.log_level, EVF_LOG_ERROR);
}

/* The --flag=VALUE form, mixed with the environment for the settings not given. */
static void flags_with_equals(void **state) {
  (void)state;
  set("HTTP_PORT", "3002");
  struct evf_config cfg;
  load_flags(&cfg, "--data=/srv/x", "--shards=3", "--sync=none", "--map-size=2M",
             "--page-size=7", "--grpc-port=3001", "--prom-port=3003",
             "--max-message-size=8KiB", "--log-level=warn", NULL);
  assert_string_equal(cfg.data_dir, "/srv/x");
  assert_int_equal(cfg.shards, 3);
  assert_false(cfg.sync_full);
  assert_int_equal(cfg.map_size, (uint64_t)2 << 20);
  assert_int_equal(cfg.page_size, 7);
  assert_int_equal(cfg.grpc_port, 3001);
  assert_int_equal(cfg.http_port, 3002);
  assert_int_equal(cfg.prom_port, 3003);
  assert_int_equal(cfg.max_message_size, 8192);
  assert_int_equal(cfg.log_level, EVF_LOG_WARN);
}

static void flag_forms_agree(void **state) {
  (void)state;
  struct evf_config spaced, joined;
  load_flags(&spaced, "--grpc-port", "6000", "--data", "a=b", NULL);
  load_flags(&joined, "--grpc-port=6000", "--data=a=b", NULL);
  assert_int_equal(spaced.grpc_port, 6000);
  assert_int_equal(joined.grpc_port, 6000);
  /* Only the first = separates the flag from its value. */
  assert_string_equal(spaced.data_dir, "a=b");
  assert_string_equal(joined.data_dir, "a=b");
}

static void flag_edge_cases(void **state) {
  (void)state;
  struct evf_config cfg;
  /* The last of a repeated flag wins. */
  load_flags(&cfg, "--shards", "4", "--shards=5", NULL);
  assert_int_equal(cfg.shards, 5);
  /* A value that looks like a flag needs the = form. */
  load_flags(&cfg, "--data=--odd", NULL);
  assert_string_equal(cfg.data_dir, "--odd");
  /* A single dash is not a flag prefix, so it may start a value. */
  load_flags(&cfg, "--data", "-x", NULL);
  assert_string_equal(cfg.data_dir, "-x");
  /* An environment value a flag overrides is not checked. */
  set("SHARDS", "0");
  load_flags(&cfg, "--shards", "9", NULL);
  assert_int_equal(cfg.shards, 9);
  unsetenv("SHARDS");
  /* No arguments at all, as evf_config_from_env(). */
  memset(&cfg, 0, sizeof(cfg));
  assert_int_equal(evf_config_load(&cfg, 0, NULL, NULL, 0), 0);
  assert_int_equal(cfg.grpc_port, 6543);
}

static void unknown_flags(void **state) {
  (void)state;
  expect_args_rejected("--foo", "--foo", NULL);
  expect_args_rejected("--foo", "--foo=1", NULL);
  expect_args_rejected("--grpc_port", "--grpc_port", "1", NULL);
  expect_args_rejected("--GRPC-PORT", "--GRPC-PORT=1", NULL);
  expect_args_rejected("--grpc-portx", "--grpc-portx=1", NULL);
  expect_args_rejected("--grpc-por", "--grpc-por=1", NULL);
  expect_args_rejected("-p", "-p", "1", NULL);
  expect_args_rejected("---data", "---data=x", NULL);
  /* After valid flags too. */
  expect_args_rejected("--bogus", "--shards", "2", "--bogus", NULL);
  struct evf_config cfg;
  char err[256];
  assert_int_equal(load_args(&cfg, err, sizeof(err), "--foo", NULL), EVF_EINVAL);
  assert_non_null(strstr(err, "unknown flag --foo"));
}

static void missing_values(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
    expect_args_rejected(flags[i], flags[i], NULL);
    /* The next flag is not taken as the value. */
    expect_args_rejected(flags[i], flags[i], "--shards", "4", NULL);
  }
  struct evf_config cfg;
  char err[256];
  assert_int_equal(load_args(&cfg, err, sizeof(err), "--grpc-port", NULL), EVF_EINVAL);
  assert_non_null(strstr(err, "missing value for --grpc-port"));
}

static void empty_flag_values_rejected(void **state) {
  (void)state;
  /* Unlike an empty variable, an empty flag value is a mistake, not "unset". */
  for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
    char joined[64];
    snprintf(joined, sizeof(joined), "%s=", flags[i]);
    expect_args_rejected(flags[i], joined, NULL);
    expect_args_rejected(flags[i], flags[i], "", NULL);
  }
}

static void stray_arguments(void **state) {
  (void)state;
  expect_args_rejected("serve", "serve", NULL);
  expect_args_rejected("6543", "--shards", "2", "6543", NULL);
  expect_args_rejected("\"-\"", "-", NULL);
  expect_args_rejected("--", "--", NULL);
}

static void error_is_one_line(void **state) {
  (void)state;
  struct evf_config cfg;
  char err[256];
  /* Control characters and quotes in a value are escaped, not printed raw. */
  assert_int_equal(load_args(&cfg, err, sizeof(err), "--shards=1\n2\"", NULL), EVF_EINVAL);
  assert_null(strchr(err, '\n'));
  assert_string_equal(err, "--shards=\"1\\x0a2\\\"\" is invalid: expected an integer from 1 to 256");
  set("SHARDS", "0");
  assert_int_equal(load_args(&cfg, err, sizeof(err), NULL), EVF_EINVAL);
  assert_string_equal(err, "SHARDS=\"0\" is invalid: expected an integer from 1 to 256");
  unsetenv("SHARDS");
  assert_int_equal(load_args(&cfg, err, sizeof(err), "--grpc-port", "abc", NULL), EVF_EINVAL);
  assert_string_equal(err, "--grpc-port=\"abc\" is invalid: expected an integer from 1 to 65535");
}

/* Loading with these arguments asks for help and leaves cfg untouched. */
static void expect_help(const char *what, ...) {
  struct evf_config cfg, before;
  char err[256] = "";
  memset(&cfg, 0x3C, sizeof(cfg));
  memcpy(&before, &cfg, sizeof(cfg));
  va_list args;
  va_start(args, what);
  int rc = load_args_v(&cfg, err, sizeof(err), args);
  va_end(args);
  if (rc != EVF_CONFIG_HELP)
    fail_msg("%s: returned %d (%s), expected EVF_CONFIG_HELP", what, rc, err);
  if (memcmp(&cfg, &before, sizeof(cfg)) != 0)
    fail_msg("%s: cfg was modified", what);
}

static void help_requested(void **state) {
  (void)state;
  assert_true(EVF_CONFIG_HELP > 0);
  expect_help("--help", "--help", NULL);
  expect_help("-h", "-h", NULL);
  expect_help("after flags", "--shards", "3", "--help", NULL);
  expect_help("after a mistake", "--nope", "--help", NULL);
  expect_help("after a bad value", "--shards=0", "-h", NULL);
  set("SHARDS", "0");
  expect_help("with a bad variable", "--help", NULL);
  unsetenv("SHARDS");
  /* A value that happens to read "-h" is a value. */
  struct evf_config cfg;
  load_flags(&cfg, "--data", "-h", NULL);
  assert_string_equal(cfg.data_dir, "-h");
  /* Not a prefix match. */
  expect_args_rejected("--helpme", "--helpme", NULL);
}

static void help_text(void **state) {
  (void)state;
  char *text = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&text, &len);
  assert_non_null(out);
  evf_config_print_help(out);
  assert_int_equal(fclose(out), 0);
  static const char *const defaults[] = {"./data", "full", "16G",  "1000",  "6543",  "16543",
                                         "26543",  "4M",   "info", "30000", "120000"};
  for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
    if (!names_variable(text, flags[i]))
      fail_msg("help does not list %s:\n%s", flags[i], text);
    if (!names_variable(text, variables[i]))
      fail_msg("help does not name %s:\n%s", variables[i], text);
  }
  for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++) {
    if (strstr(text, defaults[i]) == NULL)
      fail_msg("help does not give the default %s:\n%s", defaults[i], text);
  }
  assert_non_null(strstr(text, "--help"));
  assert_non_null(strstr(text, "1 to 256"));
  /* Lines fit a terminal. */
  for (const char *line = text; *line != '\0';) {
    const char *nl = strchr(line, '\n');
    assert_non_null(nl);
    if (nl - line > 80)
      fail_msg("help line of %td columns: %.*s", nl - line, (int)(nl - line), line);
    line = nl + 1;
  }
  free(text);
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
      T(http_timeouts),
      T(all_variables_together),
      T(rejects_data),
      T(rejects_shards),
      T(rejects_sync),
      T(rejects_map_size),
      T(rejects_page_size),
      T(rejects_ports),
      T(rejects_http_timeouts),
      T(rejects_max_message_size),
      T(rejects_log_level),
      T(first_error_leaves_cfg_untouched),
      T(short_error_buffer),
      T(flags_override_env),
      T(flags_with_equals),
      T(flag_forms_agree),
      T(flag_edge_cases),
      T(unknown_flags),
      T(missing_values),
      T(empty_flag_values_rejected),
      T(stray_arguments),
      T(error_is_one_line),
      T(help_requested),
      T(help_text),
      T(parse_size_accepts),
      T(parse_size_rejects),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
