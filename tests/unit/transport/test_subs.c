/* Subscription filters: matching stored events by type and stream prefix, and checking filters. */
#include "api.pb-c.h"
#include "subs.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* An event as the store keeps it: an encoded api.Event. */
static uint8_t *stored_event(const char *stream, const char *type, size_t *len) {
  Api__Event e = API__EVENT__INIT;
  e.id = "01890a5d-ac96-774b-bcce-b302099a8057";
  e.stream = (char *)stream;
  e.type = (char *)type;
  e.version = 7;
  e.position = 42;
  e.added_at = 1700000000000;
  e.data = (ProtobufCBinaryData){.data = (uint8_t *)"{\"a\":1}", .len = 7};
  *len = api__event__get_packed_size(&e);
  uint8_t *buf = malloc(*len);
  assert_non_null(buf);
  api__event__pack(&e, buf);
  return buf;
}

static bool matches(char **types, size_t n_types, char **prefixes, size_t n_prefixes,
                    const char *stream, const char *type) {
  struct tp_sub_filter f = {types, n_types, prefixes, n_prefixes};
  size_t len;
  uint8_t *event = stored_event(stream, type, &len);
  bool m = tp_sub_filter_match(&f, event, len);
  free(event);
  return m;
}

static void empty_filter_matches_all(void **state) {
  (void)state;
  assert_true(matches(NULL, 0, NULL, 0, "account-1", "Deposited"));
}

static void types_match_exactly(void **state) {
  (void)state;
  char *types[] = {"Deposited", "Withdrawn"};
  assert_true(matches(types, 2, NULL, 0, "account-1", "Withdrawn"));
  assert_false(matches(types, 2, NULL, 0, "account-1", "Deposit"));   /* a prefix of a type */
  assert_false(matches(types, 2, NULL, 0, "account-1", "DepositedX")); /* a type's extension */
  assert_false(matches(types, 2, NULL, 0, "Deposited", "Opened"));     /* the stream is no type */
}

static void prefixes_match_stream_starts(void **state) {
  (void)state;
  char *prefixes[] = {"account-", "order"};
  assert_true(matches(NULL, 0, prefixes, 2, "account-1", "Opened"));
  assert_true(matches(NULL, 0, prefixes, 2, "order", "Opened"));
  assert_true(matches(NULL, 0, prefixes, 2, "orders-9", "Opened"));
  assert_false(matches(NULL, 0, prefixes, 2, "accoun", "Opened"));
  assert_false(matches(NULL, 0, prefixes, 2, "my-account-1", "Opened"));
}

static void both_lists_must_match(void **state) {
  (void)state;
  char *types[] = {"Deposited"}, *prefixes[] = {"account-"};
  assert_true(matches(types, 1, prefixes, 1, "account-1", "Deposited"));
  assert_false(matches(types, 1, prefixes, 1, "order-1", "Deposited"));
  assert_false(matches(types, 1, prefixes, 1, "account-1", "Opened"));
}

static void check_refuses_bad_filters(void **state) {
  (void)state;
  char *ok[] = {"a"}, *empty[] = {""}, long_name[TP_SUB_FILTER_MAX_NAME + 2];
  memset(long_name, 'x', sizeof(long_name) - 1);
  long_name[sizeof(long_name) - 1] = '\0';
  char *too_long[] = {long_name};
  char *many[TP_SUB_FILTER_MAX_NAMES + 1];
  for (size_t i = 0; i < TP_SUB_FILTER_MAX_NAMES + 1; i++)
    many[i] = "t";
  assert_null(tp_sub_filter_check(&(struct tp_sub_filter){ok, 1, ok, 1}));
  assert_null(tp_sub_filter_check(&(struct tp_sub_filter){many, TP_SUB_FILTER_MAX_NAMES, NULL, 0}));
  assert_non_null(tp_sub_filter_check(&(struct tp_sub_filter){empty, 1, NULL, 0}));
  assert_non_null(tp_sub_filter_check(&(struct tp_sub_filter){NULL, 0, empty, 1}));
  assert_non_null(tp_sub_filter_check(&(struct tp_sub_filter){too_long, 1, NULL, 0}));
  assert_non_null(tp_sub_filter_check(&(struct tp_sub_filter){NULL, 0, too_long, 1}));
  assert_non_null(
      tp_sub_filter_check(&(struct tp_sub_filter){many, TP_SUB_FILTER_MAX_NAMES + 1, NULL, 0}));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(empty_filter_matches_all),
      cmocka_unit_test(types_match_exactly),
      cmocka_unit_test(prefixes_match_stream_starts),
      cmocka_unit_test(both_lists_must_match),
      cmocka_unit_test(check_refuses_bad_filters),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
