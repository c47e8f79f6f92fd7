/* redis:// URL parsing: strict, so a typo in the configuration fails at start-up with a
 * message that says which part is wrong instead of a connection error much later. */
#include "adapters/redis/rds_url.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/text.h"

#define RDS_URL_FORM "expected redis://[[user]:password@]host[:port][/db]"

static int url_fail(rds_url *out, app_error *err, const char *why)
{
    memset(out, 0, sizeof *out);
    app_error_set(err, APP_ECONFIG, "invalid redis url: %s", why);
    if (err)
        app_error_detail(err, RDS_URL_FORM);
    return APP_ECONFIG;
}

/* Percent-decodes s[0..n) into dst (size cap); false on bad escapes, NUL bytes or
 * overflow. */
static bool decode_part(const char *s, size_t n, char *dst, size_t cap)
{
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            if (i + 2 >= n)
                return false;
            int hi = text_hex_digit(s[i + 1]), lo = text_hex_digit(s[i + 2]);
            if (hi < 0 || lo < 0)
                return false;
            c = hi * 16 + lo;
            if (c == 0)
                return false;
            i += 2;
        }
        if (j + 1 >= cap)
            return false;
        dst[j++] = (char)c;
    }
    dst[j] = '\0';
    return true;
}

/* Parses a decimal number of at most 9 digits; -1 when s[0..n) is not one. */
static long parse_digits(const char *s, size_t n)
{
    if (n == 0 || n > 9)
        return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static bool hostname_valid(const char *s, size_t n)
{
    if (n == 0 || s[0] == '-' || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '-' && c != '.' && c != '_')
            return false;
    }
    return true;
}

static int parse_userinfo(const char *s, size_t n, rds_url *out, app_error *err)
{
    const char *colon = memchr(s, ':', n);
    if (!colon)
        return url_fail(out, err, "credentials must be written [user]:password@");
    size_t user_len = (size_t)(colon - s);
    if (!decode_part(s, user_len, out->user, sizeof out->user))
        return url_fail(out, err, "user name is too long or badly percent-encoded");
    if (!decode_part(colon + 1, n - user_len - 1, out->password, sizeof out->password))
        return url_fail(out, err, "password is too long or badly percent-encoded");
    if (out->password[0] == '\0' && out->user[0] != '\0')
        return url_fail(out, err, "user name given without a password");
    return 0;
}

int rds_url_parse(const char *url, rds_url *out, app_error *err)
{
    static const char scheme[] = "redis://";
    memset(out, 0, sizeof *out);
    out->port = RDS_URL_DEFAULT_PORT;
    if (!url || !url[0])
        return url_fail(out, err, "url is empty");
    if (strncasecmp(url, scheme, sizeof scheme - 1) != 0)
        return url_fail(out, err,
                        "scheme must be redis:// (TLS and unix sockets are not supported)");
    const char *p = url + sizeof scheme - 1;

    /* The last '@' ends the credentials, so a raw '@' or '/' in a password still works. */
    const char *at = strrchr(p, '@');
    if (at) {
        int rc = parse_userinfo(p, (size_t)(at - p), out, err);
        if (rc < 0)
            return rc;
        p = at + 1;
    }
    if (strpbrk(p, "?#"))
        return url_fail(out, err, "query strings and fragments are not supported");

    const char *slash = strchr(p, '/');
    const char *auth_end = slash ? slash : p + strlen(p);
    const char *port_start = NULL;
    if (*p == '[') {
        const char *close = memchr(p, ']', (size_t)(auth_end - p));
        if (!close)
            return url_fail(out, err, "IPv6 address is missing its closing ']'");
        size_t len = (size_t)(close - p - 1);
        if (len == 0 || len >= sizeof out->host)
            return url_fail(out, err, "IPv6 address is empty or too long");
        memcpy(out->host, p + 1, len);
        out->host[len] = '\0';
        unsigned char buf[sizeof(struct in6_addr)];
        if (inet_pton(AF_INET6, out->host, buf) != 1)
            return url_fail(out, err, "IPv6 address is not valid");
        if (close + 1 < auth_end) {
            if (close[1] != ':')
                return url_fail(out, err, "unexpected text after the IPv6 address");
            port_start = close + 2;
        }
    } else {
        const char *colon = memchr(p, ':', (size_t)(auth_end - p));
        const char *host_end = colon ? colon : auth_end;
        size_t len = (size_t)(host_end - p);
        if (len == 0)
            return url_fail(out, err, "host is missing");
        if (len >= sizeof out->host || !hostname_valid(p, len))
            return url_fail(out, err, "host is not a valid host name or address");
        memcpy(out->host, p, len);
        out->host[len] = '\0';
        if (colon)
            port_start = colon + 1;
    }
    if (port_start) {
        long port = parse_digits(port_start, (size_t)(auth_end - port_start));
        if (port < 1 || port > 65535)
            return url_fail(out, err, "port must be a number from 1 to 65535");
        out->port = (int)port;
    }
    if (slash && slash[1] != '\0') {
        long db = parse_digits(slash + 1, strlen(slash + 1));
        if (db < 0 || db > RDS_URL_MAX_DB)
            return url_fail(out, err, "database must be a number from 0 to 15");
        out->db = (int)db;
    }
    return 0;
}
