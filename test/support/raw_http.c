/* The raw HTTP client of the edge tests. */
#include "test/support/raw_http.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "test/support/services.h"

int tcli_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    /* Only against hangs: a reply may wait for as long as a test holds the gate closed. */
    struct timeval tv = {TS_HANG_GUARD_MS / 1000, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int tcli_raw(int port, const char *req, size_t len, tcli_resp *out)
{
    memset(out, 0, sizeof *out);
    int fd = tcli_connect(port);
    if (fd < 0)
        return -1;
    for (size_t off = 0; off < len;) {
        ssize_t n = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    return tcli_read(fd, out);
}

int tcli_get_keepalive(int fd, const char *path, char *head, size_t size)
{
    char req[256], buf[4096];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n)
        return -1;
    size_t got = 0;
    for (;;) {
        ssize_t k = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        if (k <= 0)
            return -1;
        got += (size_t)k;
        buf[got] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        const char *cl = strcasestr(buf, "Content-Length:");
        if (end && cl && got >= (size_t)(end + 4 - buf) + strtoul(cl + 15, NULL, 10)) {
            if (head)
                snprintf(head, size, "%.*s", (int)(end - buf), buf);
            return atoi(buf + 9);
        }
        if (got == sizeof buf - 1)
            return -1;
    }
}

int tcli_read(int fd, tcli_resp *out)
{
    memset(out, 0, sizeof *out);
    size_t cap = 4096, got = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (got == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
        }
        ssize_t n = recv(fd, buf + got, cap - got, 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    char *end = strstr(buf, "\r\n\r\n");
    if (got < 12 || !end || strncmp(buf, "HTTP/1.", 7) != 0) {
        free(buf);
        return -1;
    }
    out->status = atoi(buf + 9);
    size_t head_len = (size_t)(end - buf) + 2;
    assert_true(head_len < sizeof out->head);
    memcpy(out->head, buf, head_len);
    out->head[head_len] = '\0';
    out->body_len = got - head_len - 2;
    memmove(buf, end + 4, out->body_len + 1);
    out->body = buf;
    return 0;
}

int tcli(int port, const char *method, const char *path, const char *headers, const char *body,
         tcli_resp *out)
{
    size_t blen = body ? strlen(body) : 0;
    size_t cap = blen + 1024 + (headers ? strlen(headers) : 0);
    char *req = malloc(cap);
    int n = snprintf(req, cap, "%s %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n%s", method,
                     path, headers ? headers : "");
    if (body)
        n += snprintf(req + n, cap - (size_t)n, "Content-Length: %zu\r\n", blen);
    n += snprintf(req + n, cap - (size_t)n, "\r\n");
    if (body)
        memcpy(req + n, body, blen);
    int rc = tcli_raw(port, req, (size_t)n + blen, out);
    free(req);
    return rc;
}

void tcli_free(tcli_resp *r)
{
    free(r->body);
    r->body = NULL;
}

const char *tcli_header(const tcli_resp *r, const char *name)
{
    static _Thread_local char value[512];
    size_t n = strlen(name);
    for (const char *p = strstr(r->head, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, n) == 0 && line[n] == ':') {
            const char *v = line + n + 1;
            while (*v == ' ')
                v++;
            size_t len = strcspn(v, "\r");
            snprintf(value, sizeof value, "%.*s", (int)len, v);
            return value;
        }
    }
    return NULL;
}

cJSON *expect_problem(const tcli_resp *r, int status, const char *slug)
{
    if (r->status != status)
        fail_msg("status %d, wanted %d: %s", r->status, status, r->body);
    const char *ct = tcli_header(r, "Content-Type");
    assert_non_null(ct);
    assert_string_equal(ct, "application/problem+json");
    const char *rid = tcli_header(r, "X-Request-ID");
    assert_non_null(rid);
    assert_true(strlen(rid) > 0);
    cJSON *p = cJSON_Parse(r->body);
    assert_non_null(p);
    char type[128];
    snprintf(type, sizeof type, "https://problems.app.dev/%s", slug);
    assert_string_equal(cJSON_GetObjectItem(p, "type")->valuestring, type);
    assert_true(cJSON_IsString(cJSON_GetObjectItem(p, "title")));
    assert_int_equal(cJSON_GetObjectItem(p, "status")->valueint, status);
    return p;
}
