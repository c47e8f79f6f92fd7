/* Shared-kernel text rules: UTF-8 code points, display names (a user's, a product's), and
 * the field errors a value object adds when it refuses an input. */
#ifndef CORE_TEXT_H
#define CORE_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* The value of a hexadecimal digit (0-9, a-f, A-F), or -1 for any other character. */
int text_hex_digit(char c);

/* 32-bit FNV-1a of a NUL-terminated string: a fast, stable spread for hash tables, lanes
 * and lock keys (not for anything an attacker must not steer). */
uint32_t text_fnv1a(const char *s);

/* Number of code points in valid UTF-8 s of n bytes, or -1 when s is not valid UTF-8
 * (overlongs, surrogates, past U+10FFFF and NUL bytes are invalid). */
long text_utf8_count(const char *s, size_t n);

/* Adds a field error and makes err a validation failure (APP_EINVAL), keeping an earlier
 * APP_EBADREQ (wrong types outrank bad values). Returns APP_EINVAL. */
int text_field_invalid(app_error *err, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A display name: ASCII whitespace trimmed, 1..max_chars code points, no control
 * characters. Copies it into out (size at least max_chars * 4 + 1). On failure adds a field
 * error for field and returns APP_EINVAL. */
int text_display_name(char *out, size_t size, const char *input, size_t max_chars,
                      const char *field, app_error *err);

#endif
