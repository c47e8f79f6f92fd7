/* Display names count code points, not bytes, so that a name in any script gets the same
 * number of characters. */
#include "core/text.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static bool text_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Decodes one code point at p (at most n bytes); returns its length or 0 when invalid. */
static size_t text_decode(const unsigned char *p, size_t n, uint32_t *cp)
{
    unsigned c = p[0];
    size_t len;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return c == 0 ? 0 : 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (p[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

uint32_t text_fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

int text_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long text_utf8_count(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    long count = 0;
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t len = text_decode(p + i, n - i, &cp);
        if (len == 0)
            return -1;
        i += len;
        count++;
    }
    return count;
}

int text_field_invalid(app_error *err, const char *field, const char *fmt, ...)
{
    if (err->code != APP_EINVAL && err->code != APP_EBADREQ)
        app_error_set(err, APP_EINVAL, "validation failed");
    char msg[sizeof err->fields[0].message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    app_error_field(err, field, "%s", msg);
    return APP_EINVAL;
}

int text_display_name(char *out, size_t size, const char *input, size_t max_chars,
                      const char *field, app_error *err)
{
    const char *s = input ? input : "";
    while (text_space(*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && text_space(s[n - 1]))
        n--;
    if (n == 0)
        return text_field_invalid(err, field, "must not be empty");
    const unsigned char *p = (const unsigned char *)s;
    size_t chars = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = text_decode(p + i, n - i, &cp);
        if (len == 0)
            return text_field_invalid(err, field, "must be valid UTF-8");
        /* C0, DEL and C1 controls: invisible, and they break logs and e-mail headers. */
        if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F))
            return text_field_invalid(err, field, "must not contain control characters");
        i += len;
        if (++chars > max_chars)
            return text_field_invalid(err, field, "must be at most %zu characters", max_chars);
    }
    if (n >= size)
        return text_field_invalid(err, field, "is too long");
    memcpy(out, s, n);
    out[n] = '\0';
    return 0;
}
