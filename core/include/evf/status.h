#ifndef EVF_STATUS_H
#define EVF_STATUS_H

/*
 * Error codes. Functions return 0 on success or a negative code: -errno for
 * system errors, or one of the EVF_E* codes below. This table is the one
 * place that maps a code to its name, message, gRPC status and HTTP status.
 *
 *   XX(name, value, message, grpc status, http status)
 */
#define EVF_ERRNO_MAP(XX)                                                         \
  XX(EINVAL,     -20001, "invalid argument",                 EVF_GRPC_INVALID_ARGUMENT,   400) \
  XX(EVERSION,   -20002, "wrong expected version",           EVF_GRPC_ABORTED,            409) \
  XX(EEXIST,     -20003, "event id already exists",          EVF_GRPC_ALREADY_EXISTS,     409) \
  XX(ENOTFOUND,  -20004, "not found",                        EVF_GRPC_NOT_FOUND,          404) \
  XX(EFULL,      -20005, "storage full",                     EVF_GRPC_RESOURCE_EXHAUSTED, 507) \
  XX(ETOOBIG,    -20006, "too large",                        EVF_GRPC_RESOURCE_EXHAUSTED, 413) \
  XX(ESHUTDOWN,  -20007, "shutting down",                    EVF_GRPC_UNAVAILABLE,        503) \
  XX(EFORMAT,    -20008, "incompatible or damaged data folder", EVF_GRPC_INTERNAL,        500) \
  XX(EINTERNAL,  -20009, "internal error",                   EVF_GRPC_INTERNAL,           500)

/* gRPC status codes (grpc/doc/statuscodes.md). */
enum evf_grpc_status {
  EVF_GRPC_OK = 0,
  EVF_GRPC_CANCELLED = 1,
  EVF_GRPC_UNKNOWN = 2,
  EVF_GRPC_INVALID_ARGUMENT = 3,
  EVF_GRPC_DEADLINE_EXCEEDED = 4,
  EVF_GRPC_NOT_FOUND = 5,
  EVF_GRPC_ALREADY_EXISTS = 6,
  EVF_GRPC_PERMISSION_DENIED = 7,
  EVF_GRPC_RESOURCE_EXHAUSTED = 8,
  EVF_GRPC_FAILED_PRECONDITION = 9,
  EVF_GRPC_ABORTED = 10,
  EVF_GRPC_OUT_OF_RANGE = 11,
  EVF_GRPC_UNIMPLEMENTED = 12,
  EVF_GRPC_INTERNAL = 13,
  EVF_GRPC_UNAVAILABLE = 14,
  EVF_GRPC_DATA_LOSS = 15,
  EVF_GRPC_UNAUTHENTICATED = 16
};

enum evf_errno {
#define XX(name, value, msg, grpc, http) EVF_##name = value,
  EVF_ERRNO_MAP(XX)
#undef XX
};

/** The message of an error code (EVF_* or -errno). Never NULL. */
const char *evf_strerror(int code);

/** The name of an error code ("EVERSION", "ENOENT", ...). Never NULL. */
const char *evf_err_name(int code);

/** The gRPC status of an error code; 0 (OK) for 0, INTERNAL for unknown ones. */
enum evf_grpc_status evf_err_grpc_status(int code);

/** The HTTP status of an error code; 200 for 0, 500 for unknown ones. */
int evf_err_http_status(int code);

/** The canonical name of a gRPC status ("INVALID_ARGUMENT"). Never NULL. */
const char *evf_grpc_status_name(enum evf_grpc_status status);

#endif
