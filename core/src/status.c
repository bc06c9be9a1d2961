#define _GNU_SOURCE /* strerrorname_np */
#include "evf/status.h"

#include <errno.h>
#include <string.h>

const char *evf_strerror(int code) {
  switch (code) {
#define XX(name, value, msg, grpc, http) case EVF_##name: return msg;
    EVF_ERRNO_MAP(XX)
#undef XX
  case 0:
    return "success";
  }
  if (code < 0 && code > -4096)
    return strerror(-code);
  return "unknown error";
}

const char *evf_err_name(int code) {
  switch (code) {
#define XX(name, value, msg, grpc, http) case EVF_##name: return #name;
    EVF_ERRNO_MAP(XX)
#undef XX
  case 0:
    return "OK";
  }
  const char *name = code < 0 && code > -4096 ? strerrorname_np(-code) : NULL;
  return name ? name : "ESYSTEM";
}

enum evf_grpc_status evf_err_grpc_status(int code) {
  switch (code) {
#define XX(name, value, msg, grpc, http) case EVF_##name: return grpc;
    EVF_ERRNO_MAP(XX)
#undef XX
  case 0:
    return EVF_GRPC_OK;
  case -ENOMEM:
  case -ENOSPC:
    return EVF_GRPC_RESOURCE_EXHAUSTED;
  }
  return EVF_GRPC_INTERNAL;
}

int evf_err_http_status(int code) {
  switch (code) {
#define XX(name, value, msg, grpc, http) case EVF_##name: return http;
    EVF_ERRNO_MAP(XX)
#undef XX
  case 0:
    return 200;
  case -ENOSPC:
    return 507;
  case -ENOMEM:
    return 503;
  }
  return 500;
}

const char *evf_grpc_status_name(enum evf_grpc_status status) {
  static const char *const names[] = {
      "OK",           "CANCELLED",         "UNKNOWN",           "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED", "NOT_FOUND",    "ALREADY_EXISTS",    "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",   "OUT_OF_RANGE",
      "UNIMPLEMENTED", "INTERNAL",         "UNAVAILABLE",       "DATA_LOSS",
      "UNAUTHENTICATED"};
  if ((unsigned)status < sizeof(names) / sizeof(names[0]))
    return names[status];
  return "UNKNOWN";
}
