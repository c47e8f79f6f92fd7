/* Blocking HTTP/1.1 client for tests: enough framing (Content-Length, chunked, close) to
 * check what the server really sends, with a receive timeout so a bug cannot hang a run. */
#include "test/support/http_client.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define TC_TIMEOUT_S 30

typedef struct tc_buf {
    char *data;
    size_t len, cap;
} tc_buf;

static int buf_append(tc_buf *b, const void *data, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p)
            return -1;
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

static int buf_printf(tc_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int buf_printf(tc_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    int rc = buf_append(b, s, (size_t)n);
    free(s);
    return rc;
}

static int tc_fail(tc_response *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int tc_fail(tc_response *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out->error, sizeof out->error, fmt, ap);
    va_end(ap);
    return -1;
}

static int connect_to(const char *host, int port, tc_response *out)
{
    char port_s[16];
    snprintf(port_s, sizeof port_s, "%d", port);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(host, port_s, &hints, &res);
    if (gai != 0)
        return tc_fail(out, "cannot resolve %s: %s", host, gai_strerror(gai));
    int fd = -1, last_errno = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        struct timeval tv = {TC_TIMEOUT_S, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        last_errno = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return tc_fail(out, "cannot connect to %s:%d: %s", host, port, strerror(last_errno));
    return fd;
}

static bool has_header(const char *const *headers, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; headers && headers[i]; i++)
        if (strncasecmp(headers[i], name, n) == 0 && headers[i][n] == ':')
            return true;
    return false;
}

static int send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

static char *dup_range(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

/* Parses the status line and headers in raw[0..head_len). */
static int parse_head(const char *raw, size_t head_len, tc_response *out)
{
    const char *end = raw + head_len;
    const char *eol = memmem(raw, head_len, "\r\n", 2);
    if (!eol || strncmp(raw, "HTTP/1.", 7) != 0 || eol - raw < 12)
        return tc_fail(out, "malformed status line");
    out->status = atoi(raw + 9);
    if (out->status < 100 || out->status > 999)
        return tc_fail(out, "malformed status code");
    for (const char *line = eol + 2; line < end;) {
        eol = memmem(line, (size_t)(end - line), "\r\n", 2);
        if (!eol)
            eol = end;
        if (eol == line)
            break;
        const char *colon = memchr(line, ':', (size_t)(eol - line));
        if (!colon)
            return tc_fail(out, "malformed header line");
        const char *v = colon + 1;
        while (v < eol && (*v == ' ' || *v == '\t'))
            v++;
        const char *v_end = eol;
        while (v_end > v && (v_end[-1] == ' ' || v_end[-1] == '\t'))
            v_end--;
        tc_header_kv *h = realloc(out->headers, (out->n_headers + 1) * sizeof *h);
        if (!h)
            return tc_fail(out, "out of memory");
        out->headers = h;
        h[out->n_headers].name = dup_range(line, (size_t)(colon - line));
        h[out->n_headers].value = dup_range(v, (size_t)(v_end - v));
        out->n_headers++;
        if (!h[out->n_headers - 1].name || !h[out->n_headers - 1].value)
            return tc_fail(out, "out of memory");
        line = eol + 2;
    }
    return 0;
}

/* Decodes a chunked body; 1 when complete (into *body), 0 when more bytes are needed,
 * -1 when malformed. */
static int decode_chunked(const char *p, size_t len, tc_buf *body)
{
    size_t pos = 0;
    body->len = 0;
    for (;;) {
        const char *eol = memmem(p + pos, len - pos, "\r\n", 2);
        if (!eol)
            return 0;
        char *num_end;
        errno = 0;
        unsigned long long size = strtoull(p + pos, &num_end, 16);
        if (num_end == p + pos || errno != 0 || size > (1ULL << 32))
            return -1;
        pos = (size_t)(eol - p) + 2;
        if (size == 0) {
            /* Trailers, then an empty line. */
            for (;;) {
                eol = memmem(p + pos, len - pos, "\r\n", 2);
                if (!eol)
                    return 0;
                bool empty = eol == p + pos;
                pos = (size_t)(eol - p) + 2;
                if (empty)
                    return 1;
            }
        }
        if (len - pos < size + 2)
            return 0;
        if (buf_append(body, p + pos, (size_t)size) < 0)
            return -1;
        pos += (size_t)size;
        if (memcmp(p + pos, "\r\n", 2) != 0)
            return -1;
        pos += 2;
    }
}

/* Checks whether raw holds a whole response; fills out when it does. 1 done, 0 need more,
 * -1 malformed. at_eof: the server closed the connection. */
static int try_finish(const tc_buf *raw, bool head_only, bool at_eof, tc_response *out)
{
    const char *sep = raw->len ? memmem(raw->data, raw->len, "\r\n\r\n", 4) : NULL;
    if (!sep)
        return at_eof ? tc_fail(out, "connection closed before the end of the headers") : 0;
    size_t head_len = (size_t)(sep - raw->data) + 2;
    size_t body_off = head_len + 2;

    tc_response head = {0};
    if (parse_head(raw->data, head_len, &head) < 0) {
        snprintf(out->error, sizeof out->error, "%s", head.error);
        tc_response_free(&head);
        return -1;
    }
    const char *te = tc_header(&head, "Transfer-Encoding");
    const char *cl = tc_header(&head, "Content-Length");
    tc_buf body = {0};
    int rc = 1;
    bool no_body = head_only || head.status < 200 || head.status == 204 || head.status == 304;
    if (no_body) {
        rc = buf_append(&body, "", 0) < 0 ? -1 : 1;
    } else if (te && strcasecmp(te, "chunked") == 0) {
        rc = decode_chunked(raw->data + body_off, raw->len - body_off, &body);
        if (rc == 0 && at_eof)
            rc = -1;
    } else if (cl) {
        char *end;
        unsigned long long n = strtoull(cl, &end, 10);
        if (end == cl || *end != '\0') {
            rc = -1;
        } else if (raw->len - body_off < n) {
            rc = at_eof ? -1 : 0;
        } else {
            rc = buf_append(&body, raw->data + body_off, (size_t)n) < 0 ? -1 : 1;
        }
    } else if (at_eof) {
        rc = buf_append(&body, raw->data + body_off, raw->len - body_off) < 0 ? -1 : 1;
    } else {
        rc = 0;
    }
    if (rc == 1 && !body.data)
        rc = buf_append(&body, "", 0) < 0 ? -1 : 1;
    if (rc != 1) {
        free(body.data);
        tc_response_free(&head);
        return rc < 0 ? tc_fail(out, "malformed or truncated response body") : 0;
    }
    *out = head;
    out->body = body.data;
    out->body_len = body.len;
    return 1;
}

int tc_http(const char *host, int port, const char *method, const char *path,
            const char *const *headers, const char *body, size_t body_len, tc_response *out)
{
    memset(out, 0, sizeof *out);
    tc_buf req = {0}, raw = {0};
    int rc = -1;
    int fd = connect_to(host, port, out);
    if (fd < 0)
        return -1;

    bool ok = buf_printf(&req, "%s %s HTTP/1.1\r\n", method, path) == 0;
    if (ok && !has_header(headers, "Host"))
        ok = buf_printf(&req, "Host: %s:%d\r\n", host, port) == 0;
    for (size_t i = 0; ok && headers && headers[i]; i++)
        ok = buf_printf(&req, "%s\r\n", headers[i]) == 0;
    bool wants_length = body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 ||
                        strcmp(method, "PATCH") == 0;
    if (ok && wants_length && !has_header(headers, "Content-Length") &&
        !has_header(headers, "Transfer-Encoding"))
        ok = buf_printf(&req, "Content-Length: %zu\r\n", body ? body_len : 0) == 0;
    if (ok && !has_header(headers, "Connection"))
        ok = buf_printf(&req, "Connection: close\r\n") == 0;
    ok = ok && buf_append(&req, "\r\n", 2) == 0;
    if (ok && body)
        ok = buf_append(&req, body, body_len) == 0;
    if (!ok) {
        tc_fail(out, "out of memory");
        goto out;
    }
    if (send_all(fd, req.data, req.len) < 0) {
        tc_fail(out, "cannot send the request: %s", strerror(errno));
        goto out;
    }

    bool head_only = strcmp(method, "HEAD") == 0;
    for (;;) {
        char chunk[16384];
        ssize_t n = recv(fd, chunk, sizeof chunk, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            tc_fail(out, "cannot read the response: %s",
                    errno == EAGAIN ? "timed out" : strerror(errno));
            goto out;
        }
        if (n > 0 && buf_append(&raw, chunk, (size_t)n) < 0) {
            tc_fail(out, "out of memory");
            goto out;
        }
        int done = try_finish(&raw, head_only, n == 0, out);
        if (done < 0)
            goto out;
        if (done == 1)
            break;
    }
    rc = 0;
out:
    if (rc < 0) {
        char why[sizeof out->error];
        memcpy(why, out->error, sizeof why);
        tc_response_free(out);
        memcpy(out->error, why, sizeof why);
    }
    free(req.data);
    free(raw.data);
    close(fd);
    return rc;
}

const char *tc_header(const tc_response *r, const char *name)
{
    for (size_t i = 0; i < r->n_headers; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

cJSON *tc_json(const tc_response *r)
{
    if (!r->body)
        return NULL;
    return cJSON_ParseWithLength(r->body, r->body_len);
}

void tc_response_free(tc_response *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_headers; i++) {
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof *r);
}

double tc_metric(const char *host, int port, const char *sample, double missing)
{
    tc_response r;
    memset(&r, 0, sizeof r);
    if (tc_http(host, port, "GET", "/metrics", NULL, NULL, 0, &r) != 0 || r.status != 200)
        fail_msg("GET /metrics on %s:%d failed (status %d)", host, port, r.status);
    double v = missing;
    size_t n = strlen(sample);
    /* A sample is a whole line: its name and labels at the start, then a space. */
    for (const char *line = r.body; line && *line;
         line = strchr(line, '\n'), line = line ? line + 1 : NULL)
        if (strncmp(line, sample, n) == 0 && line[n] == ' ') {
            v = strtod(line + n + 1, NULL);
            break;
        }
    tc_response_free(&r);
    return v;
}
