/*
 * Tests for evf/status.h. The expected codes, names, messages and statuses
 * are written out here rather than generated from EVF_ERRNO_MAP: clients see
 * all of them, so a change to the table must show up as a failing test. The
 * map is used only to check that this file covers every entry.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "evf/status.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

struct expected {
  int code;
  int value;
  const char *name;
  const char *message;
  enum evf_grpc_status grpc;
  int http;
};

static const struct expected table[] = {
    {EVF_EINVAL, -20001, "EINVAL", "invalid argument", EVF_GRPC_INVALID_ARGUMENT, 400},
    {EVF_EVERSION, -20002, "EVERSION", "wrong expected version", EVF_GRPC_ABORTED, 409},
    {EVF_EEXIST, -20003, "EEXIST", "event id already exists", EVF_GRPC_ALREADY_EXISTS, 409},
    {EVF_ENOTFOUND, -20004, "ENOTFOUND", "not found", EVF_GRPC_NOT_FOUND, 404},
    {EVF_EFULL, -20005, "EFULL", "storage full", EVF_GRPC_RESOURCE_EXHAUSTED, 507},
    {EVF_ETOOBIG, -20006, "ETOOBIG", "too large", EVF_GRPC_RESOURCE_EXHAUSTED, 413},
    {EVF_ESHUTDOWN, -20007, "ESHUTDOWN", "shutting down", EVF_GRPC_UNAVAILABLE, 503},
    {EVF_EFORMAT, -20008, "EFORMAT", "incompatible or damaged data folder", EVF_GRPC_INTERNAL, 500},
    {EVF_EINTERNAL, -20009, "EINTERNAL", "internal error", EVF_GRPC_INTERNAL, 500},
};
#define TABLE_LEN (sizeof(table) / sizeof(table[0]))

static const struct expected *find(int code) {
  for (size_t i = 0; i < TABLE_LEN; i++)
    if (table[i].code == code)
      return &table[i];
  return NULL;
}

static void every_code_is_covered(void **state) {
  (void)state;
  size_t in_map = 0;
#define XX(name, value, msg, grpc, http)                                                     \
  in_map++;                                                                                  \
  if (find(EVF_##name) == NULL)                                                              \
    fail_msg("EVF_" #name " is missing from this test's table");
  EVF_ERRNO_MAP(XX)
#undef XX
  assert_int_equal(in_map, TABLE_LEN);
}

static void codes_have_fixed_values(void **state) {
  (void)state;
  for (size_t i = 0; i < TABLE_LEN; i++) {
    assert_int_equal(table[i].code, table[i].value);
    /* Our codes must never collide with -errno (glibc's stop below 4096). */
    assert_true(table[i].code < -4095);
    for (size_t k = 0; k < i; k++)
      assert_int_not_equal(table[i].code, table[k].code);
  }
}

static void names(void **state) {
  (void)state;
  for (size_t i = 0; i < TABLE_LEN; i++)
    assert_string_equal(evf_err_name(table[i].code), table[i].name);
}

static void messages(void **state) {
  (void)state;
  for (size_t i = 0; i < TABLE_LEN; i++)
    assert_string_equal(evf_strerror(table[i].code), table[i].message);
}

static void grpc_statuses(void **state) {
  (void)state;
  for (size_t i = 0; i < TABLE_LEN; i++) {
    if (evf_err_grpc_status(table[i].code) != table[i].grpc)
      fail_msg("%s: gRPC status %s, expected %s", table[i].name,
               evf_grpc_status_name(evf_err_grpc_status(table[i].code)),
               evf_grpc_status_name(table[i].grpc));
  }
}

static void http_statuses(void **state) {
  (void)state;
  for (size_t i = 0; i < TABLE_LEN; i++) {
    if (evf_err_http_status(table[i].code) != table[i].http)
      fail_msg("%s: HTTP %d, expected %d", table[i].name, evf_err_http_status(table[i].code),
               table[i].http);
  }
}

static void success(void **state) {
  (void)state;
  assert_string_equal(evf_err_name(0), "OK");
  assert_string_equal(evf_strerror(0), "success");
  assert_int_equal(evf_err_grpc_status(0), EVF_GRPC_OK);
  assert_int_equal(evf_err_http_status(0), 200);
}

static void system_errors(void **state) {
  (void)state;
  assert_string_equal(evf_err_name(-ENOSPC), "ENOSPC");
  assert_string_equal(evf_strerror(-ENOSPC), strerror(ENOSPC));
  assert_int_equal(evf_err_grpc_status(-ENOSPC), EVF_GRPC_RESOURCE_EXHAUSTED);
  assert_int_equal(evf_err_http_status(-ENOSPC), 507);

  assert_string_equal(evf_err_name(-ENOMEM), "ENOMEM");
  assert_string_equal(evf_strerror(-ENOMEM), strerror(ENOMEM));
  assert_int_equal(evf_err_grpc_status(-ENOMEM), EVF_GRPC_RESOURCE_EXHAUSTED);
  assert_int_equal(evf_err_http_status(-ENOMEM), 503);

  assert_string_equal(evf_err_name(-EIO), "EIO");
  assert_string_equal(evf_strerror(-EIO), strerror(EIO));
  assert_int_equal(evf_err_grpc_status(-EIO), EVF_GRPC_INTERNAL);
  assert_int_equal(evf_err_http_status(-EIO), 500);

  /* Any other -errno: the system's message, and an internal error. */
  static const int others[] = {ENOENT, EACCES, EAGAIN, EBADF, EEXIST, EINVAL, EROFS, EMFILE};
  for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
    int code = -others[i];
    assert_string_equal(evf_strerror(code), strerror(others[i]));
    assert_non_null(evf_err_name(code));
    assert_int_equal(evf_err_grpc_status(code), EVF_GRPC_INTERNAL);
    assert_int_equal(evf_err_http_status(code), 500);
  }
}

/* status.h documents evf_err_name() as giving "ENOENT" for -ENOENT. */
static void system_error_names(void **state) {
  (void)state;
  assert_string_equal(evf_err_name(-ENOENT), "ENOENT");
  assert_string_equal(evf_err_name(-EACCES), "EACCES");
  assert_string_equal(evf_err_name(-EAGAIN), "EAGAIN");
}

static void unknown_codes(void **state) {
  (void)state;
  /* Positive, between -errno and our range, just past our range, extremes. */
  static const int unknown[] = {1, 12345, INT_MAX, -4096, -20000, -20010, INT_MIN};
  for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
    int code = unknown[i];
    const char *name = evf_err_name(code);
    const char *message = evf_strerror(code);
    assert_non_null(name);
    assert_non_null(message);
    assert_true(name[0] != '\0');
    assert_true(message[0] != '\0');
    assert_int_equal(evf_err_grpc_status(code), EVF_GRPC_INTERNAL);
    assert_int_equal(evf_err_http_status(code), 500);
  }
  assert_string_equal(evf_strerror(-20010), "unknown error");
  assert_string_equal(evf_strerror(12345), "unknown error");
}

static void grpc_status_names(void **state) {
  (void)state;
  static const struct {
    enum evf_grpc_status status;
    int value;
    const char *name;
  } names_table[] = {
      {EVF_GRPC_OK, 0, "OK"},
      {EVF_GRPC_CANCELLED, 1, "CANCELLED"},
      {EVF_GRPC_UNKNOWN, 2, "UNKNOWN"},
      {EVF_GRPC_INVALID_ARGUMENT, 3, "INVALID_ARGUMENT"},
      {EVF_GRPC_DEADLINE_EXCEEDED, 4, "DEADLINE_EXCEEDED"},
      {EVF_GRPC_NOT_FOUND, 5, "NOT_FOUND"},
      {EVF_GRPC_ALREADY_EXISTS, 6, "ALREADY_EXISTS"},
      {EVF_GRPC_PERMISSION_DENIED, 7, "PERMISSION_DENIED"},
      {EVF_GRPC_RESOURCE_EXHAUSTED, 8, "RESOURCE_EXHAUSTED"},
      {EVF_GRPC_FAILED_PRECONDITION, 9, "FAILED_PRECONDITION"},
      {EVF_GRPC_ABORTED, 10, "ABORTED"},
      {EVF_GRPC_OUT_OF_RANGE, 11, "OUT_OF_RANGE"},
      {EVF_GRPC_UNIMPLEMENTED, 12, "UNIMPLEMENTED"},
      {EVF_GRPC_INTERNAL, 13, "INTERNAL"},
      {EVF_GRPC_UNAVAILABLE, 14, "UNAVAILABLE"},
      {EVF_GRPC_DATA_LOSS, 15, "DATA_LOSS"},
      {EVF_GRPC_UNAUTHENTICATED, 16, "UNAUTHENTICATED"},
  };
  for (size_t i = 0; i < sizeof(names_table) / sizeof(names_table[0]); i++) {
    assert_int_equal(names_table[i].status, names_table[i].value);
    assert_string_equal(evf_grpc_status_name(names_table[i].status), names_table[i].name);
  }
}

static void grpc_status_name_out_of_range(void **state) {
  (void)state;
  assert_string_equal(evf_grpc_status_name((enum evf_grpc_status)17), "UNKNOWN");
  assert_string_equal(evf_grpc_status_name((enum evf_grpc_status)1000), "UNKNOWN");
  assert_string_equal(evf_grpc_status_name((enum evf_grpc_status)-1), "UNKNOWN");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(every_code_is_covered),
      cmocka_unit_test(codes_have_fixed_values),
      cmocka_unit_test(names),
      cmocka_unit_test(messages),
      cmocka_unit_test(grpc_statuses),
      cmocka_unit_test(http_statuses),
      cmocka_unit_test(success),
      cmocka_unit_test(system_errors),
      cmocka_unit_test(system_error_names),
      cmocka_unit_test(unknown_codes),
      cmocka_unit_test(grpc_status_names),
      cmocka_unit_test(grpc_status_name_out_of_range),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
