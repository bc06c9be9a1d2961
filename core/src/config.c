#include "evf/config.h"

#include "evf/status.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

static int parse_uint(const char *text, unsigned long min, unsigned long max, unsigned long *out) {
  if (!isdigit((unsigned char)text[0]))
    return EVF_EINVAL;
  errno = 0;
  char *end;
  unsigned long value = strtoul(text, &end, 10);
  if (errno != 0 || *end != '\0' || value < min || value > max)
    return EVF_EINVAL;
  *out = value;
  return 0;
}

static int bad(char *err, size_t err_len, const char *name, const char *value, const char *want) {
  snprintf(err, err_len, "%s=\"%s\" is invalid: expected %s", name, value, want);
  return EVF_EINVAL;
}

static int env_uint(const char *name, unsigned long min, unsigned long max, unsigned *field,
                    char *err, size_t err_len) {
  const char *value = getenv(name);
  unsigned long parsed;
  if (value == NULL || value[0] == '\0')
    return 0;
  if (parse_uint(value, min, max, &parsed) != 0) {
    char want[64];
    snprintf(want, sizeof(want), "an integer from %lu to %lu", min, max);
    return bad(err, err_len, name, value, want);
  }
  *field = (unsigned)parsed;
  return 0;
}

static int env_size(const char *name, uint64_t min, uint64_t *field, char *err, size_t err_len) {
  const char *value = getenv(name);
  uint64_t parsed;
  if (value == NULL || value[0] == '\0')
    return 0;
  if (evf_parse_size(value, &parsed) != 0 || parsed < min)
    return bad(err, err_len, name, value, "a byte size such as 4194304, 512K, 64M or 16G");
  *field = parsed;
  return 0;
}

static int env_sync(struct evf_config *cfg, char *err, size_t err_len) {
  const char *value = getenv("SYNC");
  if (value == NULL || value[0] == '\0' || strcmp(value, "full") == 0)
    cfg->sync_full = true;
  else if (strcmp(value, "none") == 0)
    cfg->sync_full = false;
  else
    return bad(err, err_len, "SYNC", value, "\"full\" or \"none\"");
  return 0;
}

static int env_data(struct evf_config *cfg, char *err, size_t err_len) {
  const char *value = getenv("DATA");
  if (value == NULL || value[0] == '\0')
    value = "./data";
  if (strlen(value) >= sizeof(cfg->data_dir) - 64)
    return bad(err, err_len, "DATA", value, "a shorter path");
  strcpy(cfg->data_dir, value);
  return 0;
}

static int env_log_level(struct evf_config *cfg, char *err, size_t err_len) {
  const char *value = getenv("LOG_LEVEL");
  if (value == NULL || value[0] == '\0')
    return 0;
  if (evf_log_parse_level(value, &cfg->log_level) != 0)
    return bad(err, err_len, "LOG_LEVEL", value, "debug, info, warn or error");
  return 0;
}

int evf_config_from_env(struct evf_config *cfg, char *err, size_t err_len) {
  struct evf_config c = {
      .sync_full = true,
      .map_size = (uint64_t)16 << 30,
      .page_size = 1000,
      .grpc_port = 6543,
      .http_port = 16543,
      .prom_port = 26543,
      .max_message_size = 4u << 20,
      .log_level = EVF_LOG_INFO,
  };
  int rc;
  if ((rc = env_data(&c, err, err_len)) != 0 ||
      (rc = env_uint("SHARDS", 1, 256, &c.shards, err, err_len)) != 0 ||
      (rc = env_sync(&c, err, err_len)) != 0 ||
      (rc = env_size("MAP_SIZE", 1u << 20, &c.map_size, err, err_len)) != 0 ||
      (rc = env_uint("PAGE_SIZE", 1, 100000, &c.page_size, err, err_len)) != 0 ||
      (rc = env_uint("GRPC_PORT", 1, 65535, &c.grpc_port, err, err_len)) != 0 ||
      (rc = env_uint("HTTP_PORT", 1, 65535, &c.http_port, err, err_len)) != 0 ||
      (rc = env_uint("PROM_PORT", 1, 65535, &c.prom_port, err, err_len)) != 0 ||
      (rc = env_size("MAX_MESSAGE_SIZE", 4096, &c.max_message_size, err, err_len)) != 0 ||
      (rc = env_log_level(&c, err, err_len)) != 0)
    return rc;
  *cfg = c;
  return 0;
}
