#ifndef EVF_UTF8_H
#define EVF_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/**
 * Whether the bytes are valid UTF-8: shortest forms only, no surrogates,
 * nothing above U+10FFFF. NUL bytes are valid UTF-8 and accepted.
 */
bool evf_utf8_valid(const char *text, size_t len);

/**
 * The length (1 to 4) of the well-formed UTF-8 character text begins with
 * (as evf_utf8_valid() reads them), or 0 when its first bytes are none (or
 * len is 0).
 */
size_t evf_utf8_char_len(const char *text, size_t len);

/**
 * For text cut short after len bytes: the length without the beginning of a
 * character the cut split, if it did, so that a shortened text ends between
 * characters. Bytes that begin no character are kept, as they were.
 */
size_t evf_utf8_cut(const char *text, size_t len);

#endif
