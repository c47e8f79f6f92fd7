/* The framing guard as a byte-at-a-time state machine (bodies and chunk data are skipped in
 * bulk). It accepts a strict subset of HTTP/1.1: CRLF line ends, origin-form targets, no
 * obsolete line folding, one framing header at most, no trailers. */
#include "http/guard.h"

#include <stdio.h>
#include <string.h>

#include "core/text.h"

enum {
    S_IDLE,    /* before a request line; empty lines are skipped */
    S_IDLE_LF, /* an empty line's LF */
    S_METHOD,
    S_TARGET,
    S_VERSION,
    S_LINE_LF,    /* the request line's LF */
    S_NAME_START, /* the start of a header line, or of the empty line that ends them */
    S_NAME,
    S_VALUE,
    S_VALUE_LF,
    S_HEAD_LF, /* the LF of the empty line */
    S_BODY,
    S_CHUNK_SIZE,
    S_CHUNK_EXT,
    S_CHUNK_SIZE_LF,
    S_CHUNK_DATA,
    S_CHUNK_DATA_CR,
    S_CHUNK_DATA_LF,
    S_TRAILER_CR,
    S_TRAILER_LF,
    S_FAILED,
};

#define GUARD_MAX_IDLE_LINES    8 /* empty lines tolerated before a request line */
#define GUARD_MAX_LENGTH_DIGITS 18

void http_guard_init(http_guard *g, uint64_t max_body)
{
    memset(g, 0, sizeof *g);
    g->max_body = max_body;
    g->state = S_IDLE;
    g->phase = HTTP_GUARD_IDLE;
}

static size_t guard_fail(http_guard *g, int status, const char *reason, size_t at)
{
    g->state = S_FAILED;
    g->phase = HTTP_GUARD_FAILED;
    g->status = status;
    if (reason != g->reason)
        snprintf(g->reason, sizeof g->reason, "%s", reason);
    return at;
}

/* RFC 9110 tchar. */
static bool guard_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static void guard_next_request(http_guard *g)
{
    uint64_t max_body = g->max_body, requests = g->requests;
    http_guard_init(g, max_body);
    g->requests = requests;
}

static bool guard_method_known(const http_guard *g)
{
    /* TRACE and CONNECT are HTTP's own: they reach the router, which answers 405. */
    static const char *const known[] = {"GET",   "HEAD",    "POST",  "PUT",     "DELETE",
                                        "PATCH", "OPTIONS", "TRACE", "CONNECT", NULL};
    for (size_t i = 0; known[i]; i++)
        if (strlen(known[i]) == g->method_len && memcmp(known[i], g->method, g->method_len) == 0)
            return true;
    return false;
}

/* A framing header is complete: Content-Length must be plain digits, Transfer-Encoding
 * exactly "chunked", and neither may come twice. Returns 0 or an HTTP status. */
static int guard_framing_header(http_guard *g, const char **reason)
{
    bool length = strcmp(g->name, "content-length") == 0;
    bool te = strcmp(g->name, "transfer-encoding") == 0;
    if (!length && !te)
        return 0;
    /* Optional whitespace after the value. */
    while (g->value_len > 0 &&
           (g->value[g->value_len - 1] == ' ' || g->value[g->value_len - 1] == '\t'))
        g->value_len--;
    g->value[g->value_len] = '\0';
    if (length) {
        if (g->has_length) {
            *reason = "Content-Length is given more than once";
            return 400;
        }
        if (g->value_long || g->value_len == 0 || g->value_len > GUARD_MAX_LENGTH_DIGITS) {
            *reason = "Content-Length is not a plain number";
            return 400;
        }
        uint64_t v = 0;
        for (size_t i = 0; i < g->value_len; i++) {
            if (g->value[i] < '0' || g->value[i] > '9') {
                *reason = "Content-Length is not a plain number";
                return 400;
            }
            v = v * 10 + (uint64_t)(g->value[i] - '0');
        }
        g->has_length = true;
        g->length = v;
        return 0;
    }
    if (g->has_te) {
        *reason = "Transfer-Encoding is given more than once";
        return 400;
    }
    g->has_te = true;
    for (size_t i = 0; i < g->value_len; i++)
        if (g->value[i] >= 'A' && g->value[i] <= 'Z')
            g->value[i] = (char)(g->value[i] - 'A' + 'a');
    if (g->value_long || strcmp(g->value, "chunked") != 0) {
        *reason = "the only transfer coding accepted is chunked";
        return 501;
    }
    g->chunked = true;
    return 0;
}

/* The header block is complete: decide how the body is framed. Returns 0 or a status. */
static int guard_head_done(http_guard *g, const char **reason)
{
    g->requests++;
    if (g->has_te && g->has_length) {
        *reason = "a request may not have both Transfer-Encoding and Content-Length";
        return 400;
    }
    if (g->has_te && strcmp(g->version, "HTTP/1.0") == 0) {
        *reason = "HTTP/1.0 has no Transfer-Encoding";
        return 400;
    }
    bool body = g->chunked || g->length > 0;
    /* No resource here accepts TRACE: a body, which a proxy might read as a second request,
     * is refused with the 405 the router would give. */
    if (body && g->method_len == 5 && memcmp(g->method, "TRACE", 5) == 0) {
        *reason = "TRACE is not accepted here";
        return 405;
    }
    bool bodiless = (g->method_len == 3 && memcmp(g->method, "GET", 3) == 0) ||
                    (g->method_len == 4 && memcmp(g->method, "HEAD", 4) == 0);
    if (bodiless && body) {
        g->body_refused = true;
        *reason = "GET and HEAD requests may not have a body";
        return 400;
    }
    if (g->has_length && g->length > g->max_body) {
        *reason = "the request body is larger than http.max_body_bytes";
        return 413;
    }
    return 0;
}

size_t http_guard_feed(http_guard *g, const char *p, size_t n)
{
    const char *reason = NULL;
    int status;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (g->state >= S_METHOD && g->state <= S_HEAD_LF && ++g->head_len > HTTP_GUARD_MAX_HEAD)
            return guard_fail(g, 431, "the request headers are too large", i);
        switch (g->state) {
        case S_FAILED:
            return i;
        case S_IDLE:
            if (c == '\r') {
                if (++g->line_len > GUARD_MAX_IDLE_LINES)
                    return guard_fail(g, 400, "too many empty lines before the request", i);
                g->state = S_IDLE_LF;
                break;
            }
            g->line_len = 0;
            g->head_len = 1;
            g->phase = HTTP_GUARD_HEAD;
            g->state = S_METHOD;
            /* c is the method's first character */
            __attribute__((fallthrough));
        case S_METHOD:
            if (++g->line_len > HTTP_GUARD_MAX_LINE)
                return guard_fail(g, 414, "the request line is too long", i);
            if (c == ' ') {
                if (g->method_len == 0)
                    return guard_fail(g, 400, "the request line has no method", i);
                g->method_unknown = g->method_unknown || !guard_method_known(g);
                g->state = S_TARGET;
            } else if (!guard_tchar(c)) {
                return guard_fail(g, 400, "the request line is malformed", i);
            } else if (g->method_len + 1 < sizeof g->method) {
                g->method[g->method_len++] = (char)c;
            } else {
                g->method_unknown = true; /* longer than any HTTP method */
            }
            break;
        case S_IDLE_LF:
            if (c != '\n')
                return guard_fail(g, 400, "lines must end with CRLF", i);
            g->state = S_IDLE;
            break;
        case S_TARGET:
            if (++g->line_len > HTTP_GUARD_MAX_LINE)
                return guard_fail(g, 414, "the request line is too long", i);
            if (c == ' ') {
                if (g->target_len == 0)
                    return guard_fail(g, 400, "the request line has no target", i);
                g->state = S_VERSION;
            } else if (c <= 0x20 || c >= 0x7f || (g->target_len == 0 && c != '/')) {
                return guard_fail(g, 400, "the request target must be a path starting with /", i);
            } else {
                if (g->target_len + 1 < sizeof g->target) {
                    g->target[g->target_len] = (char)c;
                    g->target[g->target_len + 1] = '\0';
                }
                g->target_len++;
            }
            break;
        case S_VERSION:
            if (++g->line_len > HTTP_GUARD_MAX_LINE)
                return guard_fail(g, 414, "the request line is too long", i);
            if (c == '\r') {
                g->version[g->version_len] = '\0';
                if (strcmp(g->version, "HTTP/1.1") != 0 && strcmp(g->version, "HTTP/1.0") != 0)
                    return guard_fail(g, 400, "only HTTP/1.1 and HTTP/1.0 are spoken here", i);
                /* Refused here, once the target is known, so that the answer can say what the
                 * target does accept. */
                if (g->method_unknown)
                    return guard_fail(g, 405, "this method is not accepted here", i);
                g->state = S_LINE_LF;
            } else if (g->version_len + 1 >= sizeof g->version) {
                return guard_fail(g, 400, "only HTTP/1.1 and HTTP/1.0 are spoken here", i);
            } else {
                g->version[g->version_len++] = (char)c;
            }
            break;
        case S_LINE_LF:
        case S_VALUE_LF:
            if (c != '\n')
                return guard_fail(g, 400, "lines must end with CRLF", i);
            if (g->state == S_VALUE_LF && (status = guard_framing_header(g, &reason)) != 0)
                return guard_fail(g, status, reason, i);
            g->state = S_NAME_START;
            g->line_len = 0;
            break;
        case S_NAME_START:
            if (c == '\r') {
                g->state = S_HEAD_LF;
                break;
            }
            if (c == ' ' || c == '\t')
                return guard_fail(g, 400, "folded header lines are not accepted", i);
            g->name_len = 0;
            g->shown[0] = '\0';
            g->value_len = 0;
            g->value_long = false;
            g->line_len = 0;
            g->state = S_NAME;
            __attribute__((fallthrough));
        case S_NAME:
            if (++g->line_len > HTTP_GUARD_MAX_LINE)
                return guard_fail(g, 431, "a request header line is too long", i);
            if (c == ':') {
                if (g->name_len == 0)
                    return guard_fail(g, 400, "a header has no name", i);
                g->name[g->name_len < sizeof g->name ? g->name_len : sizeof g->name - 1] = '\0';
                g->state = S_VALUE;
            } else if (!guard_tchar(c)) {
                return guard_fail(g, 400, "a header name is malformed", i);
            } else {
                if (g->name_len + 1 < sizeof g->name) {
                    g->name[g->name_len] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
                    g->shown[g->name_len] = (char)c;
                    g->shown[g->name_len + 1] = '\0';
                }
                g->name_len++;
            }
            break;
        case S_VALUE:
            if (++g->line_len > HTTP_GUARD_MAX_LINE)
                return guard_fail(g, 431, "a request header line is too long", i);
            if (c == '\r') {
                g->state = S_VALUE_LF;
            } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
                snprintf(g->reason, sizeof g->reason,
                         "the value of header %s holds a control character", g->shown);
                return guard_fail(g, 400, g->reason, i);
            } else if (g->value_len == 0 && (c == ' ' || c == '\t')) {
                /* leading whitespace */
            } else if (g->value_len + 1 < sizeof g->value) {
                g->value[g->value_len++] = (char)c;
            } else {
                g->value_long = true;
            }
            break;
        case S_HEAD_LF:
            if (c != '\n')
                return guard_fail(g, 400, "lines must end with CRLF", i);
            if ((status = guard_head_done(g, &reason)) != 0)
                return guard_fail(g, status, reason, i);
            if (g->chunked) {
                g->phase = HTTP_GUARD_BODY;
                g->state = S_CHUNK_SIZE;
                g->line_len = 0;
            } else if (g->length > 0) {
                g->phase = HTTP_GUARD_BODY;
                g->state = S_BODY;
                g->remaining = g->length;
            } else {
                guard_next_request(g);
            }
            break;
        case S_BODY:
        case S_CHUNK_DATA: {
            size_t take = n - i;
            if ((uint64_t)take > g->remaining)
                take = (size_t)g->remaining;
            g->remaining -= take;
            i += take - 1; /* the loop adds the last one */
            if (g->remaining == 0) {
                if (g->state == S_BODY)
                    guard_next_request(g);
                else
                    g->state = S_CHUNK_DATA_CR;
            }
            break;
        }
        case S_CHUNK_SIZE:
            if (++g->line_len > HTTP_GUARD_MAX_CHUNK_LINE)
                return guard_fail(g, 400, "a chunk-size line is too long", i);
            if (text_hex_digit((char)c) >= 0) {
                if (++g->chunk_digits > 15)
                    return guard_fail(g, 413, "a chunk is larger than http.max_body_bytes", i);
                g->chunk_size = g->chunk_size * 16 + (uint64_t)text_hex_digit((char)c);
            } else if (g->chunk_digits > 0 && (c == ';' || c == '\r')) {
                if (g->body_seen + g->chunk_size > g->max_body)
                    return guard_fail(g, 413, "the request body is larger than http.max_body_bytes",
                                      i);
                g->state = c == ';' ? S_CHUNK_EXT : S_CHUNK_SIZE_LF;
            } else {
                return guard_fail(g, 400, "a chunk size must be plain hexadecimal digits", i);
            }
            break;
        case S_CHUNK_EXT:
            if (++g->line_len > HTTP_GUARD_MAX_CHUNK_LINE)
                return guard_fail(g, 400, "a chunk-size line is too long", i);
            if (c == '\r')
                g->state = S_CHUNK_SIZE_LF;
            else if ((c < 0x20 && c != '\t') || c == 0x7f)
                return guard_fail(g, 400, "a chunk extension holds a control character", i);
            break;
        case S_CHUNK_SIZE_LF:
            if (c != '\n')
                return guard_fail(g, 400, "lines must end with CRLF", i);
            if (g->chunk_size == 0) {
                g->state = S_TRAILER_CR;
            } else {
                g->body_seen += g->chunk_size;
                g->remaining = g->chunk_size;
                g->state = S_CHUNK_DATA;
            }
            g->chunk_size = 0;
            g->chunk_digits = 0;
            g->line_len = 0;
            break;
        case S_CHUNK_DATA_CR:
        case S_TRAILER_CR:
            if (c != '\r')
                return guard_fail(g, 400,
                                  g->state == S_TRAILER_CR ? "trailers are not accepted"
                                                           : "a chunk does not end with CRLF",
                                  i);
            g->state = g->state == S_TRAILER_CR ? S_TRAILER_LF : S_CHUNK_DATA_LF;
            break;
        case S_CHUNK_DATA_LF:
        case S_TRAILER_LF:
            if (c != '\n')
                return guard_fail(g, 400, "lines must end with CRLF", i);
            if (g->state == S_TRAILER_LF)
                guard_next_request(g);
            else
                g->state = S_CHUNK_SIZE;
            break;
        }
    }
    return n;
}
