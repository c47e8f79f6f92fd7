/* The email value object. Deliberately stricter than RFC 5322 (no quoted local parts, no
 * comments, no address literals, IDN only as punycode): what users type, not what mailers
 * once allowed. */
#include "contexts/user/domain/email.h"

#include <string.h>

#include "contexts/user/domain/validation.h"

static bool email_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static bool email_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static char email_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* RFC 5322 atext: printable ASCII without specials, spaces or quotes. */
static bool email_atext(char c)
{
    return email_alnum(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* Dot-atom: atext runs separated by single dots, no dot at either end. */
static bool email_local_valid(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.') {
            if (i == 0 || i == n - 1 || s[i - 1] == '.')
                return false;
        } else if (!email_atext(s[i])) {
            return false;
        }
    }
    return true;
}

/* Host name of at least two labels of [A-Za-z0-9-], 1..63 each, no hyphen at either end of a
 * label, and a top-level label that is not all digits (that would be an IP address). */
static bool email_domain_valid(const char *s, size_t n)
{
    size_t labels = 0, start = 0;
    bool all_digits = true;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '.') {
            size_t len = i - start;
            if (len == 0 || len > 63 || s[start] == '-' || s[i - 1] == '-')
                return false;
            labels++;
            if (i < n) {
                start = i + 1;
                all_digits = true;
            }
            continue;
        }
        if (!email_alnum(s[i]) && s[i] != '-')
            return false;
        if (s[i] < '0' || s[i] > '9')
            all_digits = false;
    }
    return labels >= 2 && !all_digits;
}

int user_email_parse(user_email *out, const char *input, app_error *err)
{
    const char *s = input ? input : "";
    while (email_space(*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && email_space(s[n - 1]))
        n--;
    if (n == 0)
        return user_invalid_field(err, "email", "must not be empty");
    if (n > USER_EMAIL_MAX)
        return user_invalid_field(err, "email", "must be at most %d characters", USER_EMAIL_MAX);
    if (n < USER_EMAIL_MIN)
        return user_invalid_field(err, "email", "must be a valid email address");
    const char *at = memchr(s, '@', n);
    if (!at || memchr(at + 1, '@', n - (size_t)(at - s) - 1))
        return user_invalid_field(err, "email", "must contain exactly one '@'");
    size_t local_len = (size_t)(at - s), domain_len = n - local_len - 1;
    if (local_len == 0 || local_len > USER_EMAIL_LOCAL_MAX)
        return user_invalid_field(err, "email", "the part before '@' must be 1 to %d characters",
                                  USER_EMAIL_LOCAL_MAX);
    if (!email_local_valid(s, local_len))
        return user_invalid_field(err, "email",
                                  "the part before '@' has a character or dot that is not "
                                  "allowed");
    if (!email_domain_valid(at + 1, domain_len))
        return user_invalid_field(err, "email",
                                  "the part after '@' must be a host name such as example.com");
    memcpy(out->value, s, n);
    out->value[n] = '\0';
    user_email_key(out->key, out->value);
    return 0;
}

void user_email_key(char out[USER_EMAIL_MAX + 1], const char *email)
{
    size_t i = 0;
    for (; i < USER_EMAIL_MAX && email[i]; i++)
        out[i] = email_lower(email[i]);
    out[i] = '\0';
}

bool user_email_same(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (email_lower(*a) != email_lower(*b))
            return false;
    return *a == *b;
}
