/* The user name value object. Lengths count code points, not bytes, so that a name in any
 * script gets the same 200 characters. */
#include "contexts/user/domain/name.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "contexts/user/domain/validation.h"

static bool name_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Decodes one code point at p (at most n bytes); returns its length or 0 when invalid. */
static size_t name_decode(const unsigned char *p, size_t n, uint32_t *cp)
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

long user_utf8_count(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    long count = 0;
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        size_t len = name_decode(p + i, n - i, &cp);
        if (len == 0)
            return -1;
        i += len;
        count++;
    }
    return count;
}

int user_name_parse(user_name *out, const char *input, app_error *err)
{
    const char *s = input ? input : "";
    while (name_space(*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && name_space(s[n - 1]))
        n--;
    if (n == 0)
        return user_invalid_field(err, "name", "must not be empty");
    const unsigned char *p = (const unsigned char *)s;
    size_t chars = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = name_decode(p + i, n - i, &cp);
        if (len == 0)
            return user_invalid_field(err, "name", "must be valid UTF-8");
        /* C0, DEL and C1 controls: invisible, and they break logs and e-mail headers. */
        if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F))
            return user_invalid_field(err, "name", "must not contain control characters");
        i += len;
        if (++chars > USER_NAME_MAX_CHARS)
            return user_invalid_field(err, "name", "must be at most %d characters",
                                      USER_NAME_MAX_CHARS);
    }
    memcpy(out->value, s, n); /* n <= 200 code points of at most 4 bytes */
    out->value[n] = '\0';
    out->chars = chars;
    return 0;
}
