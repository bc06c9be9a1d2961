/*
 * Tests for evf/utf8.h: hand-picked sequences at every boundary of the
 * Unicode 15 table 3-7, then every 1-, 2- and 3-byte input and a large
 * sample of 4-byte inputs checked against a reference decoder written the
 * other way round (decode the code point, then reject what is not allowed).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "evf/utf8.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

struct sample {
  const char *bytes;
  size_t len;
};

#define S(lit) {lit, sizeof(lit) - 1}

static void check_all(const struct sample *samples, size_t count, bool expected) {
  for (size_t i = 0; i < count; i++) {
    if (evf_utf8_valid(samples[i].bytes, samples[i].len) != expected) {
      char hex[64] = "";
      for (size_t k = 0; k < samples[i].len && k < 16; k++)
        snprintf(hex + 3 * k, sizeof(hex) - 3 * k, "%02X ", (unsigned char)samples[i].bytes[k]);
      fail_msg("sample %zu [%s] (len %zu): expected %s", i, hex, samples[i].len,
               expected ? "valid" : "invalid");
    }
  }
}

static void valid_sequences(void **state) {
  (void)state;
  static const struct sample valid[] = {
      S(""),
      S("hello, world"),
      S("\x01\x7f"),                 /* U+0001, U+007F */
      S("\xc2\x80"),                 /* U+0080 */
      S("\xc3\xa9t\xc3\xa9"),        /* "été" */
      S("\xdf\xbf"),                 /* U+07FF */
      S("\xe0\xa0\x80"),             /* U+0800 */
      S("\xe2\x82\xac"),             /* U+20AC euro sign */
      S("\xed\x9f\xbf"),             /* U+D7FF, just below the surrogates */
      S("\xee\x80\x80"),             /* U+E000, just above them */
      S("\xef\xbf\xbf"),             /* U+FFFF */
      S("\xf0\x90\x80\x80"),         /* U+10000 */
      S("\xf0\x9f\x98\x80"),         /* U+1F600 */
      S("\xf3\xbf\xbf\xbf"),         /* U+FFFFF */
      S("\xf4\x80\x80\x80"),         /* U+100000 */
      S("\xf4\x8f\xbf\xbf"),         /* U+10FFFF */
      S("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z"),
  };
  check_all(valid, sizeof(valid) / sizeof(valid[0]), true);
  /* An empty input is valid whatever the pointer. */
  assert_true(evf_utf8_valid("\xff", 0));
}

static void embedded_nul_accepted(void **state) {
  (void)state;
  static const struct sample valid[] = {
      S("\0"),
      S("a\0b"),
      S("\0\0\0"),
      S("\xc3\xa9\0\xe2\x82\xac"),
  };
  check_all(valid, sizeof(valid) / sizeof(valid[0]), true);
}

static void lone_continuation_bytes(void **state) {
  (void)state;
  static const struct sample invalid[] = {
      S("\x80"),
      S("\xbf"),
      S("a\x80"),
      S("\x80" "a"),
      S("\xc3\xa9\xa9"),          /* one continuation too many */
      S("\xe2\x82\xac\x80"),
      S("\xf0\x9f\x98\x80\x80"),
  };
  check_all(invalid, sizeof(invalid) / sizeof(invalid[0]), false);
}

static void truncated_sequences(void **state) {
  (void)state;
  static const struct sample invalid[] = {
      S("\xc3"),
      S("a\xc3"),
      S("\xe2"),
      S("\xe2\x82"),
      S("a\xe2\x82"),
      S("\xf0"),
      S("\xf0\x9f"),
      S("\xf0\x9f\x98"),
      S("a\xf0\x9f\x98"),
      /* cut short by a following ASCII byte or lead byte, not by the end */
      S("\xc3" "a"),
      S("\xe2\x82" "a"),
      S("\xf0\x9f\x98" "a"),
      S("\xe2\xc3\xa9"),
      S("\xf0\x9f\xc3\xa9"),
  };
  check_all(invalid, sizeof(invalid) / sizeof(invalid[0]), false);
}

static void len_bounds_the_input(void **state) {
  (void)state;
  /* Valid bytes cut inside a character by len are truncated... */
  assert_false(evf_utf8_valid("\xc3\xa9", 1));
  assert_false(evf_utf8_valid("\xe2\x82\xac", 2));
  assert_false(evf_utf8_valid("\xf0\x9f\x98\x80", 3));
  /* ...and invalid bytes past len are not read. */
  assert_true(evf_utf8_valid("ab\xff", 2));
  assert_true(evf_utf8_valid("\xc3\xa9\x80", 2));
}

static void overlong_encodings(void **state) {
  (void)state;
  static const struct sample invalid[] = {
      S("\xc0\x80"),             /* U+0000 in two bytes */
      S("\xc0\xaf"),             /* "/" in two bytes */
      S("\xc1\xbf"),             /* U+007F in two bytes */
      S("\xe0\x80\x80"),         /* U+0000 in three bytes */
      S("\xe0\x80\xaf"),
      S("\xe0\x9f\xbf"),         /* U+07FF in three bytes */
      S("\xf0\x80\x80\x80"),     /* U+0000 in four bytes */
      S("\xf0\x80\x80\xaf"),
      S("\xf0\x8f\xbf\xbf"),     /* U+FFFF in four bytes */
  };
  check_all(invalid, sizeof(invalid) / sizeof(invalid[0]), false);
}

static void surrogates(void **state) {
  (void)state;
  static const struct sample invalid[] = {
      S("\xed\xa0\x80"),                 /* U+D800 */
      S("\xed\xad\xbf"),                 /* U+DB7F */
      S("\xed\xb0\x80"),                 /* U+DC00 */
      S("\xed\xbf\xbf"),                 /* U+DFFF */
      S("\xed\xa0\xbd\xed\xb8\x80"),     /* a CESU-8 pair for U+1F600 */
  };
  check_all(invalid, sizeof(invalid) / sizeof(invalid[0]), false);
}

static void above_max_code_point(void **state) {
  (void)state;
  static const struct sample invalid[] = {
      S("\xf4\x90\x80\x80"),     /* U+110000 */
      S("\xf4\xbf\xbf\xbf"),     /* U+13FFFF */
      S("\xf5\x80\x80\x80"),
      S("\xf7\xbf\xbf\xbf"),     /* U+1FFFFF */
      S("\xf8\x88\x80\x80\x80"), /* old five-byte form */
      S("\xfc\x84\x80\x80\x80\x80"),
  };
  check_all(invalid, sizeof(invalid) / sizeof(invalid[0]), false);
}

static void bytes_f5_to_ff(void **state) {
  (void)state;
  for (unsigned b = 0xF5; b <= 0xFF; b++) {
    char alone[1] = {(char)b};
    char followed[4] = {(char)b, '\x80', '\x80', '\x80'};
    char after_ascii[2] = {'a', (char)b};
    if (evf_utf8_valid(alone, 1) || evf_utf8_valid(followed, 4) ||
        evf_utf8_valid(after_ascii, 2))
      fail_msg("byte 0x%02X accepted", b);
  }
}

/*
 * The reference: take the length from the lead byte's high bits, check the
 * continuation bytes' form, decode, then reject overlong forms, surrogates
 * and code points above U+10FFFF.
 */
static bool reference_valid(const unsigned char *s, size_t len) {
  static const uint32_t min_for_len[5] = {0, 0, 0x80, 0x800, 0x10000};
  size_t i = 0;
  while (i < len) {
    unsigned char c = s[i];
    size_t n;
    uint32_t cp;
    if ((c & 0x80) == 0) {
      n = 1;
      cp = c;
    } else if ((c & 0xE0) == 0xC0) {
      n = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (len - i < n)
      return false;
    for (size_t k = 1; k < n; k++) {
      if ((s[i + k] & 0xC0) != 0x80)
        return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < min_for_len[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += n;
  }
  return true;
}

static void check_against_reference(const unsigned char *s, size_t len) {
  bool want = reference_valid(s, len);
  if (evf_utf8_valid((const char *)s, len) != want) {
    char hex[3 * 48 + 1] = "";
    for (size_t k = 0; k < len && k < 48; k++)
      snprintf(hex + 3 * k, sizeof(hex) - 3 * k, "%02X ", s[k]);
    fail_msg("[%s] (len %zu): expected %s", hex, len, want ? "valid" : "invalid");
  }
}

static void exhaustive_up_to_three_bytes(void **state) {
  (void)state;
  unsigned char s[3];
  for (unsigned a = 0; a < 256; a++) {
    s[0] = (unsigned char)a;
    check_against_reference(s, 1);
    for (unsigned b = 0; b < 256; b++) {
      s[1] = (unsigned char)b;
      check_against_reference(s, 2);
      for (unsigned c = 0; c < 256; c++) {
        s[2] = (unsigned char)c;
        check_against_reference(s, 3);
      }
    }
  }
}

static void four_bytes_against_reference(void **state) {
  (void)state;
  /* Every lead and second byte; the last two from each class's edges. */
  static const unsigned char tail[] = {0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90,
                                       0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xE0,
                                       0xF0, 0xF4, 0xF5, 0xFF};
  unsigned char s[4];
  for (unsigned a = 0; a < 256; a++) {
    s[0] = (unsigned char)a;
    for (unsigned b = 0; b < 256; b++) {
      s[1] = (unsigned char)b;
      for (size_t c = 0; c < sizeof(tail); c++) {
        s[2] = tail[c];
        for (size_t d = 0; d < sizeof(tail); d++) {
          s[3] = tail[d];
          check_against_reference(s, 4);
        }
      }
    }
  }
}

/*
 * Inputs of up to 40 bytes: ASCII, with a sequence from the 4-byte sample
 * (valid or not, cut short or not) at every offset, so that every word the
 * validator reads whole is followed by every kind of byte.
 */
static void sequences_at_every_offset_of_ascii_runs(void **state) {
  (void)state;
  static const unsigned char inserts[][4] = {
      {0xC3, 0xA9}, {0xE2, 0x82, 0xAC}, {0xF0, 0x9F, 0x98, 0x80}, {0x80}, {0xC3}, {0xE2, 0x82},
      {0xED, 0xA0, 0x80}, {0xF5}, {0xC0, 0xAF}, {0xFF}, {0x7F}, {0x00}};
  static const size_t insert_lens[] = {2, 3, 4, 1, 1, 2, 3, 1, 2, 1, 1, 1};
  unsigned char s[48];
  for (size_t len = 0; len <= 40; len++) {
    for (size_t at = 0; at <= len; at++) {
      for (size_t k = 0; k < sizeof(insert_lens) / sizeof(insert_lens[0]); k++) {
        size_t n = insert_lens[k];
        if (at + n > len)
          continue;
        memset(s, 'a' + (int)(len % 26), len);
        memcpy(s + at, inserts[k], n);
        check_against_reference(s, len);
      }
    }
  }
}

/* evf_utf8_char_len() is the length of the shortest valid prefix of a non-ASCII start. */
static size_t reference_char_len(const unsigned char *s, size_t len) {
  if (len > 0 && s[0] < 0x80)
    return 1;
  for (size_t n = 2; n <= len && n <= 4; n++) {
    if (reference_valid(s, n))
      return n;
  }
  return 0;
}

/* Every lead and second byte; every third byte after a 3- or 4-byte lead, the fourth's edges. */
static void char_len_against_reference(void **state) {
  (void)state;
  static const unsigned char fourth[] = {0x7F, 0x80, 0xBF, 0xC0};
  unsigned char s[4];
  for (unsigned a = 0; a < 256; a++) {
    for (unsigned b = 0; b < 256; b++) {
      for (unsigned c = 0; c < 256; c += a < 0xE0 ? 255 : 1) {
        for (size_t d = 0; d < (a < 0xF0 ? 1 : sizeof(fourth)); d++) {
          s[0] = (unsigned char)a, s[1] = (unsigned char)b, s[2] = (unsigned char)c;
          s[3] = fourth[d];
          for (size_t len = 0; len <= 4; len++) {
            size_t got = evf_utf8_char_len((const char *)s, len), want = reference_char_len(s, len);
            if (got != want)
              fail_msg("[%02X %02X %02X %02X] (len %zu): %zu, want %zu", a, b, c, s[3], len, got,
                       want);
          }
        }
      }
    }
  }
}

static void cut_leaves_no_half_character(void **state) {
  (void)state;
  static const struct {
    struct sample text;
    size_t want;
  } cases[] = {
      {S(""), 0},
      {S("abc"), 3},
      {S("a\xc3"), 1},
      {S("a\xc3\xa9"), 3},
      {S("\xe2"), 0},
      {S("\xe2\x82"), 0},
      {S("x\xf0\x9f\x98"), 1},
      {S("\xf0\x9f\x98\x80"), 4},
      /* Bytes that begin no character are not the cut's doing: kept. */
      {S("a\xff"), 2},
      {S("\x80\x80\x80\x80"), 4},
      {S("\xe0\x80"), 2},     /* overlong: no character begins so */
      {S("\xed\xa0"), 2},     /* a surrogate's beginning */
      {S("\xc3\xa9\x80"), 3}, /* a continuation byte too many */
      {S("\xc3\xc3"), 1},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    size_t got = evf_utf8_cut(cases[i].text.bytes, cases[i].text.len);
    if (got != cases[i].want)
      fail_msg("case %zu: %zu, want %zu", i, got, cases[i].want);
  }
  /* Cut anywhere, a valid text keeps its characters before the cut, whole. */
  static const char text[] = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z\xf4\x8f\xbf\xbf";
  static const size_t ends[] = {0, 1, 3, 6, 10, 11, 15};
  for (size_t len = 0, e = 0; len < sizeof(text); len++) {
    while (e + 1 < sizeof(ends) / sizeof(ends[0]) && ends[e + 1] <= len)
      e++;
    assert_int_equal(evf_utf8_cut(text, len), ends[e]);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(valid_sequences),
      cmocka_unit_test(embedded_nul_accepted),
      cmocka_unit_test(lone_continuation_bytes),
      cmocka_unit_test(truncated_sequences),
      cmocka_unit_test(len_bounds_the_input),
      cmocka_unit_test(overlong_encodings),
      cmocka_unit_test(surrogates),
      cmocka_unit_test(above_max_code_point),
      cmocka_unit_test(bytes_f5_to_ff),
      cmocka_unit_test(exhaustive_up_to_three_bytes),
      cmocka_unit_test(four_bytes_against_reference),
      cmocka_unit_test(sequences_at_every_offset_of_ascii_runs),
      cmocka_unit_test(char_len_against_reference),
      cmocka_unit_test(cut_leaves_no_half_character),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
