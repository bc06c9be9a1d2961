/*
 * Tests for evf/uuid.h.
 *
 * The generator keeps its state per thread, so every v7 test runs its
 * generation on a new thread: it starts from a fresh state whatever ran
 * before, and the main thread makes the assertions after pthread_join()
 * (cmocka's assertions must not fire on another thread).
 *
 * The link wraps evf_now_ms() (-Wl,--wrap=evf_now_ms, see CMakeLists.txt),
 * so a test can feed evf_uuid_v7_at() the times it wants: a frozen clock to
 * exhaust the 12-bit counter, a clock that steps back. Without a script
 * the wrapper returns the real time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "evf/clock.h"
#include "evf/status.h"
#include "evf/uuid.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t __real_evf_now_ms(void);
int64_t __wrap_evf_now_ms(void);

/*
 * The scripted clock: times[i] for the i-th call, the last one repeated
 * once the script runs out. Set by the main thread before it starts the one
 * generating thread and cleared after joining it, so no two threads use it
 * at once.
 */
static const int64_t *script_times;
static size_t script_len;
static size_t script_calls;

int64_t __wrap_evf_now_ms(void) {
  if (script_times == NULL)
    return __real_evf_now_ms();
  size_t i = script_calls < script_len ? script_calls : script_len - 1;
  script_calls++;
  return script_times[i];
}

static int64_t real_now_ms(void) { return __real_evf_now_ms(); }

/* A plausible wall clock time for the scripts: 2024-01-01T00:00:00Z. */
#define T0 INT64_C(1704067200000)

static const char sample_lower[] = "0190f2a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6";
static const char sample_upper[] = "0190F2A4-5B6C-7D8E-9FA0-B1C2D3E4F5A6";
static const char sample_mixed[] = "0190f2A4-5B6c-7D8e-9Fa0-B1c2D3e4F5a6";
static const uint8_t sample_bytes[16] = {0x01, 0x90, 0xf2, 0xa4, 0x5b, 0x6c, 0x7d, 0x8e,
                                         0x9f, 0xa0, 0xb1, 0xc2, 0xd3, 0xe4, 0xf5, 0xa6};

static const size_t dash_offsets[] = {8, 13, 18, 23};

static bool is_dash_offset(size_t i) { return i == 8 || i == 13 || i == 18 || i == 23; }

static uint64_t uuid_ms(const struct evf_uuid *id) {
  uint64_t ms = 0;
  for (int i = 0; i < 6; i++)
    ms = (ms << 8) | id->bytes[i];
  return ms;
}

/* Parses text[0..len) and expects EVF_EINVAL with *out left alone. */
static void expect_rejected(const char *text, size_t len, const char *what) {
  struct evf_uuid out, before;
  memset(&out, 0xA5, sizeof(out));
  before = out;
  int rc = evf_uuid_parse(text, len, &out);
  if (rc != EVF_EINVAL)
    fail_msg("%s: returned %d, expected EVF_EINVAL", what, rc);
  if (memcmp(&out, &before, sizeof(out)) != 0)
    fail_msg("%s: *out modified on failure", what);
}

static void expect_parsed(const char *text, const uint8_t bytes[16]) {
  struct evf_uuid out;
  memset(&out, 0xA5, sizeof(out));
  int rc = evf_uuid_parse(text, strlen(text), &out);
  if (rc != 0)
    fail_msg("\"%s\": returned %d", text, rc);
  assert_memory_equal(out.bytes, bytes, 16);
}

static void parse_any_case(void **state) {
  (void)state;
  expect_parsed(sample_lower, sample_bytes);
  expect_parsed(sample_upper, sample_bytes);
  expect_parsed(sample_mixed, sample_bytes);
}

static void parse_any_version(void **state) {
  (void)state;
  static const uint8_t v4[16] = {0xf4, 0x7a, 0xc1, 0x0b, 0x58, 0xcc, 0x43, 0x72,
                                 0xa5, 0x67, 0x0e, 0x02, 0xb2, 0xc3, 0xd4, 0x79};
  static const uint8_t max[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  static const uint8_t one[16] = {[15] = 1};
  static const uint8_t high[16] = {[0] = 0x80};
  expect_parsed("f47ac10b-58cc-4372-a567-0e02b2c3d479", v4);
  expect_parsed("FFFFFFFF-ffff-FFFF-ffff-FFFFFFFFFFFF", max);
  expect_parsed("00000000-0000-0000-0000-000000000001", one);
  expect_parsed("80000000-0000-0000-0000-000000000000", high);
}

static void parse_reads_len_bytes_only(void **state) {
  (void)state;
  /* The text need not end at len: the id is read from the first 36 bytes. */
  char text[64];
  memcpy(text, sample_lower, EVF_UUID_TEXT_LEN);
  strcpy(text + EVF_UUID_TEXT_LEN, "-trailing-garbage");
  struct evf_uuid out;
  assert_int_equal(evf_uuid_parse(text, EVF_UUID_TEXT_LEN, &out), 0);
  assert_memory_equal(out.bytes, sample_bytes, 16);
}

static void parse_rejects_other_forms(void **state) {
  (void)state;
  static const char *const forms[] = {
      "{0190f2a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6}",          /* braces */
      "(0190f2a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6)",
      "0190f2a45b6c7d8e9fa0b1c2d3e4f5a6",                /* no dashes */
      "urn:uuid:0190f2a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6",   /* URN */
      "URN:UUID:0190f2a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6",
      "0190f2a4-5b6c-7d8e-9fa0-b1c2d3e4f5a",             /* 35 characters */
      "0190f2a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6a",           /* 37 characters */
      "0190f2a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6\n",
      " 0190f2a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6",
      "0190f2a4-5b6c-7d8e-9fa0b1c2-d3e4f5a6",            /* dashes 8-4-4-8-8 */
      "0190f2a45-b6c-7d8e-9fa0-b1c2d3e4f5a6",
      "0190f2a4--5b6c7d8e-9fa0-b1c2d3e4f5a6",
      "0190f2a4_5b6c_7d8e_9fa0_b1c2d3e4f5a6",            /* other separators */
      "0190f2a4:5b6c:7d8e:9fa0:b1c2d3e4f5a6",
      "0190g2a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6",            /* non-hex */
      "0x90f2a4-5b6c-7d8e-9fa0-b1c2d3e4f5a6",
      "0190f2a4-5b6c-7d8e-9fa0-b1c2d3e4f5aZ",
      "-0190f2a-45b6c-7d8e-9fa0b1c2d3e4f5a6",
      "",
      "-",
  };
  for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++)
    expect_rejected(forms[i], strlen(forms[i]), forms[i]);
}

static void parse_rejects_nil(void **state) {
  (void)state;
  static const char nil[] = "00000000-0000-0000-0000-000000000000";
  expect_rejected(nil, EVF_UUID_TEXT_LEN, nil);
}

static void parse_rejects_wrong_lengths(void **state) {
  (void)state;
  /* The sample is valid; every other length of a prefix or extension is not. */
  char text[80];
  memset(text, 'a', sizeof(text));
  memcpy(text, sample_lower, EVF_UUID_TEXT_LEN);
  memcpy(text + EVF_UUID_TEXT_LEN, "0123456789abcdef0123456789abcdef012345678", 41);
  for (size_t len = 0; len < sizeof(text); len++) {
    if (len != EVF_UUID_TEXT_LEN)
      expect_rejected(text, len, "wrong length");
  }
}

static void parse_rejects_each_bad_character(void **state) {
  (void)state;
  static const char not_hex[] = {'g', 'G', 'x', 'X', 'z', ' ', '-', '\0', '/', ':',
                                 '@', '`', '{', '+', '.', (char)0xC3, (char)0xFF};
  static const char not_dash[] = {'0', 'a', 'F', '_', ':', ' ', '\0', '+', '.', (char)0xE2};
  char text[EVF_UUID_TEXT_LEN];
  char what[64];
  for (size_t i = 0; i < EVF_UUID_TEXT_LEN; i++) {
    const char *bad = is_dash_offset(i) ? not_dash : not_hex;
    size_t bad_len = is_dash_offset(i) ? sizeof(not_dash) : sizeof(not_hex);
    for (size_t k = 0; k < bad_len; k++) {
      memcpy(text, sample_lower, sizeof(text));
      text[i] = bad[k];
      snprintf(what, sizeof(what), "byte 0x%02X at offset %zu", (unsigned char)bad[k], i);
      expect_rejected(text, sizeof(text), what);
    }
  }
}

static void parse_rejects_misplaced_dashes(void **state) {
  (void)state;
  char text[EVF_UUID_TEXT_LEN];
  char what[64];
  for (size_t d = 0; d < sizeof(dash_offsets) / sizeof(dash_offsets[0]); d++) {
    size_t at = dash_offsets[d];
    /* Swap the dash with its left neighbour, then with its right one. */
    for (int side = -1; side <= 1; side += 2) {
      memcpy(text, sample_lower, sizeof(text));
      size_t other = (size_t)((long)at + side);
      char c = text[other];
      text[other] = '-';
      text[at] = c;
      snprintf(what, sizeof(what), "dash moved from %zu to %zu", at, other);
      expect_rejected(text, sizeof(text), what);
    }
  }
}

static void format_lowercase_canonical(void **state) {
  (void)state;
  struct evf_uuid id;
  char out[64];

  for (int i = 0; i < 16; i++)
    id.bytes[i] = (uint8_t)(i + 1);
  memset(out, 'X', sizeof(out));
  evf_uuid_format(&id, out);
  assert_string_equal(out, "01020304-0506-0708-090a-0b0c0d0e0f10");
  /* Exactly EVF_UUID_TEXT_LEN + 1 bytes written. */
  assert_int_equal(out[EVF_UUID_TEXT_LEN + 1], 'X');

  memcpy(id.bytes, sample_bytes, 16);
  evf_uuid_format(&id, out);
  assert_string_equal(out, sample_lower);

  memset(id.bytes, 0xAB, 16);
  evf_uuid_format(&id, out);
  assert_string_equal(out, "abababab-abab-abab-abab-abababababab");

  memset(id.bytes, 0, 16);
  evf_uuid_format(&id, out);
  assert_string_equal(out, "00000000-0000-0000-0000-000000000000");
}

static void format_parse_round_trip(void **state) {
  (void)state;
  struct evf_uuid id, back;
  char text[EVF_UUID_TEXT_LEN + 1];

  /* Upper and mixed case come back lowercase. */
  assert_int_equal(evf_uuid_parse(sample_mixed, EVF_UUID_TEXT_LEN, &id), 0);
  evf_uuid_format(&id, text);
  assert_string_equal(text, sample_lower);

  /* Every byte value, in every position. */
  for (int v = 1; v < 256; v++) {
    for (int i = 0; i < 16; i++)
      id.bytes[i] = (uint8_t)(v + 17 * i);
    evf_uuid_format(&id, text);
    assert_int_equal(strlen(text), EVF_UUID_TEXT_LEN);
    for (size_t k = 0; k < EVF_UUID_TEXT_LEN; k++) {
      if (is_dash_offset(k))
        assert_int_equal(text[k], '-');
      else
        assert_non_null(strchr("0123456789abcdef", text[k]));
    }
    memset(&back, 0, sizeof(back));
    assert_int_equal(evf_uuid_parse(text, EVF_UUID_TEXT_LEN, &back), 0);
    assert_memory_equal(back.bytes, id.bytes, 16);
  }
}

static void is_nil(void **state) {
  (void)state;
  struct evf_uuid id;
  memset(&id, 0, sizeof(id));
  assert_true(evf_uuid_is_nil(&id));
  for (int i = 0; i < 16; i++) {
    memset(&id, 0, sizeof(id));
    id.bytes[i] = 1;
    assert_false(evf_uuid_is_nil(&id));
  }
}

/* One generating thread's work. */
struct batch {
  struct evf_uuid *ids;
  size_t count;
  pthread_barrier_t *start; /* NULL, or waited on before generating */
  int64_t before_ms;        /* real time before the first id */
  int64_t after_ms;         /* and after the last */
};

static void *generate_cb(void *arg) {
  struct batch *b = arg;
  if (b->start != NULL)
    pthread_barrier_wait(b->start);
  b->before_ms = real_now_ms();
  for (size_t i = 0; i < b->count; i++)
    evf_uuid_v7_at(&b->ids[i], evf_now_ms());
  b->after_ms = real_now_ms();
  return NULL;
}

static void batch_init(struct batch *b, size_t count) {
  memset(b, 0, sizeof(*b));
  b->ids = calloc(count, sizeof(b->ids[0]));
  assert_non_null(b->ids);
  b->count = count;
}

/* Generates b->count ids on a new thread, from a fresh generator state. */
static void generate_on_new_thread(struct batch *b) {
  pthread_t thread;
  assert_int_equal(pthread_create(&thread, NULL, generate_cb, b), 0);
  assert_int_equal(pthread_join(thread, NULL), 0);
}

/* Runs a batch against the scripted clock. */
static void generate_scripted(struct batch *b, const int64_t *times, size_t len) {
  script_times = times;
  script_len = len;
  script_calls = 0;
  generate_on_new_thread(b);
  script_times = NULL;
  /*
   * Fails if the link did not wrap evf_now_ms(). The scripts also assume
   * one clock read per id.
   */
  assert_int_equal(script_calls, b->count);
}

static void check_layout(const struct evf_uuid *ids, size_t count) {
  for (size_t i = 0; i < count; i++) {
    if ((ids[i].bytes[6] >> 4) != 7)
      fail_msg("id %zu: version %d, expected 7", i, ids[i].bytes[6] >> 4);
    if ((ids[i].bytes[8] >> 6) != 2)
      fail_msg("id %zu: variant bits %d, expected 2 (binary 10)", i, ids[i].bytes[8] >> 6);
  }
}

static void check_increasing(const struct evf_uuid *ids, size_t count) {
  for (size_t i = 1; i < count; i++) {
    if (memcmp(&ids[i - 1], &ids[i], sizeof(ids[i])) >= 0) {
      char a[EVF_UUID_TEXT_LEN + 1], b[EVF_UUID_TEXT_LEN + 1];
      evf_uuid_format(&ids[i - 1], a);
      evf_uuid_format(&ids[i], b);
      fail_msg("id %zu (%s) is not greater than id %zu (%s)", i, b, i - 1, a);
    }
  }
}

static int compare_ids(const void *a, const void *b) {
  return memcmp(a, b, sizeof(struct evf_uuid));
}

static void v7_layout_and_timestamp(void **state) {
  (void)state;
  struct batch b;
  batch_init(&b, 1);
  generate_on_new_thread(&b);
  check_layout(b.ids, 1);
  assert_false(evf_uuid_is_nil(&b.ids[0]));
  /* A fresh generator stamps the current time, not a borrowed one. */
  assert_in_range(uuid_ms(&b.ids[0]), (uint64_t)b.before_ms, (uint64_t)b.after_ms);
  free(b.ids);
}

static void now_ms_is_wall_clock(void **state) {
  (void)state;
  /* The unwrapped evf_now_ms() is the wall clock the timestamps come from. */
  struct timespec ts;
  assert_int_equal(clock_gettime(CLOCK_REALTIME, &ts), 0);
  int64_t expected = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  assert_in_range(real_now_ms(), (uint64_t)expected, (uint64_t)expected + 1000);
}

static void v7_increasing_in_tight_loop(void **state) {
  (void)state;
  enum { COUNT = 100000 };
  struct batch b;
  batch_init(&b, COUNT);
  generate_on_new_thread(&b);
  check_layout(b.ids, COUNT);
  check_increasing(b.ids, COUNT); /* and so no duplicates */
  assert_in_range(uuid_ms(&b.ids[0]), (uint64_t)b.before_ms, (uint64_t)b.after_ms);
  /*
   * Faster than 4096 ids a millisecond the generator borrows milliseconds
   * ahead; at least 2048 ids fit in each, so the drift stays bounded.
   */
  assert_in_range(uuid_ms(&b.ids[COUNT - 1]), (uint64_t)b.before_ms,
                  (uint64_t)b.after_ms + COUNT / 2048 + 1);
  free(b.ids);
}

static void v7_two_threads_no_duplicates(void **state) {
  (void)state;
  enum { COUNT = 100000 };
  struct batch b[2];
  pthread_t threads[2];
  pthread_barrier_t start;
  assert_int_equal(pthread_barrier_init(&start, NULL, 2), 0);
  for (int t = 0; t < 2; t++) {
    batch_init(&b[t], COUNT);
    b[t].start = &start;
  }
  for (int t = 0; t < 2; t++)
    assert_int_equal(pthread_create(&threads[t], NULL, generate_cb, &b[t]), 0);
  for (int t = 0; t < 2; t++)
    assert_int_equal(pthread_join(threads[t], NULL), 0);
  pthread_barrier_destroy(&start);

  struct evf_uuid *all = malloc(2 * COUNT * sizeof(all[0]));
  assert_non_null(all);
  for (int t = 0; t < 2; t++) {
    check_layout(b[t].ids, COUNT);
    check_increasing(b[t].ids, COUNT);
    memcpy(all + t * COUNT, b[t].ids, COUNT * sizeof(all[0]));
  }
  qsort(all, 2 * COUNT, sizeof(all[0]), compare_ids);
  for (size_t i = 1; i < 2 * COUNT; i++) {
    if (memcmp(&all[i - 1], &all[i], sizeof(all[0])) == 0) {
      char text[EVF_UUID_TEXT_LEN + 1];
      evf_uuid_format(&all[i], text);
      fail_msg("duplicate id %s", text);
    }
  }
  free(all);
  free(b[0].ids);
  free(b[1].ids);
}

static void v7_frozen_clock_exhausts_counter(void **state) {
  (void)state;
  /* Enough ids in one millisecond to run the 12-bit counter out three times. */
  enum { COUNT = 3 * 4096 + 1 };
  static const int64_t frozen[] = {T0};
  struct batch b;
  batch_init(&b, COUNT);
  generate_scripted(&b, frozen, 1);
  check_layout(b.ids, COUNT);
  check_increasing(b.ids, COUNT);
  assert_int_equal(uuid_ms(&b.ids[0]), T0);
  for (size_t i = 0; i < COUNT; i++)
    assert_in_range(uuid_ms(&b.ids[i]), T0, T0 + COUNT / 2048 + 1);
  assert_true(uuid_ms(&b.ids[COUNT - 1]) > (uint64_t)T0);
  free(b.ids);
}

static void v7_clock_steps_back(void **state) {
  (void)state;
  /* 10 ids at T0, 10 after the clock stepped back a second, 10 back at T0,
   * then one once the clock has moved on. */
  enum { COUNT = 31 };
  int64_t times[COUNT];
  for (int i = 0; i < COUNT; i++)
    times[i] = i < 10 ? T0 : i < 20 ? T0 - 1000 : i < 30 ? T0 : T0 + 5;
  struct batch b;
  batch_init(&b, COUNT);
  generate_scripted(&b, times, COUNT);
  check_layout(b.ids, COUNT);
  check_increasing(b.ids, COUNT);
  for (int i = 0; i < 30; i++)
    assert_int_equal(uuid_ms(&b.ids[i]), T0);
  assert_int_equal(uuid_ms(&b.ids[30]), T0 + 5);
  free(b.ids);
}

static void v7_stamps_each_new_millisecond(void **state) {
  (void)state;
  enum { COUNT = 100 };
  int64_t times[COUNT];
  for (int i = 0; i < COUNT; i++)
    times[i] = T0 + i * 7;
  struct batch b;
  batch_init(&b, COUNT);
  generate_scripted(&b, times, COUNT);
  check_layout(b.ids, COUNT);
  check_increasing(b.ids, COUNT);
  for (int i = 0; i < COUNT; i++)
    assert_int_equal(uuid_ms(&b.ids[i]), (uint64_t)times[i]);
  free(b.ids);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(parse_any_case),
      cmocka_unit_test(parse_any_version),
      cmocka_unit_test(parse_reads_len_bytes_only),
      cmocka_unit_test(parse_rejects_other_forms),
      cmocka_unit_test(parse_rejects_nil),
      cmocka_unit_test(parse_rejects_wrong_lengths),
      cmocka_unit_test(parse_rejects_each_bad_character),
      cmocka_unit_test(parse_rejects_misplaced_dashes),
      cmocka_unit_test(format_lowercase_canonical),
      cmocka_unit_test(format_parse_round_trip),
      cmocka_unit_test(is_nil),
      cmocka_unit_test(now_ms_is_wall_clock),
      cmocka_unit_test(v7_layout_and_timestamp),
      cmocka_unit_test(v7_increasing_in_tight_loop),
      cmocka_unit_test(v7_two_threads_no_duplicates),
      cmocka_unit_test(v7_frozen_clock_exhausts_counter),
      cmocka_unit_test(v7_clock_steps_back),
      cmocka_unit_test(v7_stamps_each_new_millisecond),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
