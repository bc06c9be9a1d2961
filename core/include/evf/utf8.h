#ifndef EVF_UTF8_H
#define EVF_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/**
 * Whether the bytes are valid UTF-8: shortest forms only, no surrogates,
 * nothing above U+10FFFF. NUL bytes are valid UTF-8 and accepted.
 */
bool evf_utf8_valid(const char *text, size_t len);

#endif
