/* The request framing guard on its own: what it lets through, what it refuses with which
 * status, that every bound holds however the bytes are split, and that it never reads past
 * a refusal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/guard.h"

#define MAX_BODY 1000

/* Feeds text in one piece, then byte by byte; both must agree. Returns the status (0: all
 * accepted). */
static int feed(const char *text, size_t len, http_guard *out)
{
    http_guard whole, bytes;
    http_guard_init(&whole, MAX_BODY);
    http_guard_init(&bytes, MAX_BODY);
    size_t a = http_guard_feed(&whole, text, len), b = 0;
    for (size_t i = 0; i < len && bytes.phase != HTTP_GUARD_FAILED; i++)
        b += http_guard_feed(&bytes, text + i, 1);
    if (a != b || whole.status != bytes.status)
        fail_msg("split feeding disagrees: %zu/%d against %zu/%d for %.60s", a, whole.status, b,
                 bytes.status, text);
    if (whole.phase == HTTP_GUARD_FAILED && a >= len)
        fail_msg("a refusal accepted every byte");
    if (out)
        *out = whole;
    return whole.phase == HTTP_GUARD_FAILED ? whole.status : 0;
}

static int feed_str(const char *text)
{
    return feed(text, strlen(text), NULL);
}

static void test_ordinary_requests_pass(void **state)
{
    (void)state;
    http_guard g;
    const char *get = "GET /v1/users/1?x=2 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n";
    assert_int_equal(feed(get, strlen(get), &g), 0);
    assert_int_equal(g.phase, HTTP_GUARD_IDLE);
    assert_int_equal(g.requests, 1);

    const char *post = "POST /v1/users HTTP/1.1\r\nContent-Type: application/json\r\n"
                       "Content-Length: 7\r\n\r\n{\"a\":1}";
    assert_int_equal(feed(post, strlen(post), &g), 0);
    assert_int_equal(g.phase, HTTP_GUARD_IDLE);

    /* Pipelined, chunked with an extension, then a keep-alive GET. */
    const char *chunked = "PUT /x HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"
                          "3;name=v\r\nabc\r\n0\r\n\r\n"
                          "\r\nGET /y HTTP/1.0\r\n\r\n";
    assert_int_equal(feed(chunked, strlen(chunked), &g), 0);
    assert_int_equal(g.requests, 2);
    assert_int_equal(g.phase, HTTP_GUARD_IDLE);

    /* Mid-body the phase says so: the body deadline applies. */
    const char *partial = "POST /x HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345";
    assert_int_equal(feed(partial, strlen(partial), &g), 0);
    assert_int_equal(g.phase, HTTP_GUARD_BODY);
    const char *head = "POST /x HTTP/1.1\r\nContent-";
    assert_int_equal(feed(head, strlen(head), &g), 0);
    assert_int_equal(g.phase, HTTP_GUARD_HEAD);
}

/* Every form that lets two parsers see two different requests is refused. */
static void test_smuggling_forms_refused(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int status;
    } cases[] = {
        {"POST /x HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400},
        {"POST /x HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", 400},
        {"POST /x HTTP/1.1\r\nContent-Length: +3\r\n\r\n", 400},
        {"POST /x HTTP/1.1\r\nContent-Length: 3 3\r\n\r\n", 400},
        {"POST /x HTTP/1.1\r\nContent-Length: 0x3\r\n\r\n", 400},
        {"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
        {"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
         400},
        {"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n", 400},
        {"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n", 400},
        {"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n 3\r\nabc\r\n0\r\n\r\n", 400},
        {"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n", 400},
        {"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", 400},
        /* Trailers would be merged into the headers: apikey, X-Consumer-*, Idempotency-Key. */
        {"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\napikey: k\r\n\r\n", 400},
        {"GET /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nGET /", 400},
        {"HEAD /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
        {"GET /x HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400},
        {"GET /x HTTP/1.1\r\nHost : a\r\n\r\n", 400},
        {"GET /x HTTP/1.1\nHost: a\n\n", 400},
        {"GET /x HTTP/1.1\r\nX: a\rb\r\n\r\n", 400},
        {"GET http://evil/x HTTP/1.1\r\n\r\n", 400},
        {"GET /x HTTP/2.0\r\n\r\n", 400},
        {"GET  /x HTTP/1.1\r\n\r\n", 400},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = feed_str(cases[i].text);
        if (got != cases[i].status)
            fail_msg("case %zu: status %d, wanted %d: %s", i, got, cases[i].status, cases[i].text);
    }
}

static void test_methods(void **state)
{
    (void)state;
    /* Unknown methods are refused at the end of the request line, with the target kept. */
    http_guard g;
    http_guard_init(&g, MAX_BODY);
    const char *query = "QUERY /v1/users?limit=2 HTTP/1.1\r\n\r\n";
    assert_true(http_guard_feed(&g, query, strlen(query)) < strlen(query));
    assert_int_equal(g.status, 405);
    assert_true(g.method_unknown);
    assert_string_equal(g.target, "/v1/users?limit=2");
    assert_int_equal(feed_str("FOO /x HTTP/1.1\r\n\r\n"), 405);
    assert_int_equal(feed_str("TRACE /x HTTP/1.1\r\n\r\n"), 0); /* the router answers 405 */
    assert_int_equal(feed_str("TRACE /x HTTP/1.1\r\nContent-Length: 4\r\n\r\nGET "), 405);
    assert_int_equal(feed_str("TRACE /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), 405);
    assert_int_equal(feed_str("GET /x HTTP/1.1\r\nContent-Length: 4\r\n\r\nGET "), 400);
    assert_int_equal(feed_str("AVERYLONGMETHODNAMEINDEED /x HTTP/1.1\r\n\r\n"), 405);
    /* A long target is cut where it is kept, not refused for that. */
    char long_target[2 * HTTP_GUARD_TARGET_KEEP + 32];
    int n = snprintf(long_target, sizeof long_target, "FOO /%0*d HTTP/1.1\r\n\r\n",
                     2 * HTTP_GUARD_TARGET_KEEP, 7);
    http_guard_init(&g, MAX_BODY);
    http_guard_feed(&g, long_target, (size_t)n);
    assert_int_equal(g.status, 405);
    assert_int_equal(strlen(g.target), HTTP_GUARD_TARGET_KEEP - 1);
    assert_int_equal(g.target_len, 2 * HTTP_GUARD_TARGET_KEEP + 1);
    assert_int_equal(feed_str("G(T /x HTTP/1.1\r\n\r\n"), 400);
    assert_int_equal(feed_str("OPTIONS /x HTTP/1.1\r\n\r\n"), 0);
    assert_int_equal(feed_str("DELETE /x HTTP/1.1\r\n\r\n"), 0);
    assert_int_equal(feed_str("PATCH /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), 0);
}

/* The bounds, each refused within a small margin of itself. */
static void test_bounds(void **state)
{
    (void)state;
    size_t big = 10 * 1024 * 1024;
    char *buf = malloc(big + 256);
    assert_non_null(buf);
    http_guard g;

    /* An endless chunk-size line: refused within the line bound, not 10 MB later. */
    int n = snprintf(buf, 256, "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    memset(buf + n, '0', big);
    http_guard_init(&g, MAX_BODY);
    size_t ok = http_guard_feed(&g, buf, (size_t)n + big);
    assert_int_equal(g.phase, HTTP_GUARD_FAILED);
    assert_true(ok <= (size_t)n + HTTP_GUARD_MAX_CHUNK_LINE);
    /* ...also with an endless extension. */
    buf[n] = '1';
    buf[n + 1] = ';';
    memset(buf + n + 2, 'e', big - 2);
    http_guard_init(&g, MAX_BODY);
    ok = http_guard_feed(&g, buf, (size_t)n + big);
    assert_int_equal(g.status, 400);
    assert_true(ok <= (size_t)n + HTTP_GUARD_MAX_CHUNK_LINE);

    /* The request line, a header line, the header block. */
    memcpy(buf, "GET /", 5);
    memset(buf + 5, 'a', big - 5);
    http_guard_init(&g, MAX_BODY);
    ok = http_guard_feed(&g, buf, big);
    assert_int_equal(g.status, 414);
    assert_true(ok <= HTTP_GUARD_MAX_LINE);

    n = snprintf(buf, 256, "GET / HTTP/1.1\r\nX-Long: ");
    memset(buf + n, 'a', big);
    http_guard_init(&g, MAX_BODY);
    ok = http_guard_feed(&g, buf, (size_t)n + big);
    assert_int_equal(g.status, 431);
    assert_true(ok <= (size_t)n + HTTP_GUARD_MAX_LINE);

    size_t off = (size_t)snprintf(buf, 256, "GET / HTTP/1.1\r\n");
    while (off + 64 < big)
        off += (size_t)snprintf(buf + off, 64, "X-Many: %040d\r\n", 7);
    http_guard_init(&g, MAX_BODY);
    ok = http_guard_feed(&g, buf, off);
    assert_int_equal(g.status, 431);
    assert_true(ok <= HTTP_GUARD_MAX_HEAD);

    /* Bodies: a Content-Length over the limit before any byte of it, chunks adding up over
     * it at the chunk that passes it. */
    assert_int_equal(feed_str("POST /x HTTP/1.1\r\nContent-Length: 1001\r\n\r\n"), 413);
    assert_int_equal(feed_str("POST /x HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"),
                     400);
    off = (size_t)snprintf(buf, 256, "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 3; i++) {
        off += (size_t)snprintf(buf + off, 16, "190\r\n"); /* 400 bytes */
        memset(buf + off, 'x', 400);
        off += 400;
        memcpy(buf + off, "\r\n", 2);
        off += 2;
    }
    http_guard_init(&g, MAX_BODY);
    ok = http_guard_feed(&g, buf, off);
    assert_int_equal(g.status, 413);
    assert_true(ok < off);
    assert_int_equal(feed_str("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                              "ffffffffffffffffff\r\n"),
                     413);

    /* Endless empty lines between requests are not a way to hold a connection. */
    memset(buf, 0, 64);
    for (int i = 0; i < 20; i++)
        memcpy(buf + 2 * i, "\r\n", 2);
    assert_int_equal(feed(buf, 40, NULL), 400);
    free(buf);
}

/* After a refusal nothing more is accepted, however much comes. */
static void test_nothing_after_a_refusal(void **state)
{
    (void)state;
    http_guard g;
    http_guard_init(&g, MAX_BODY);
    const char *bad = "BREW /pot HTTP/1.1\r\n\r\n";
    size_t ok = http_guard_feed(&g, bad, strlen(bad));
    assert_int_equal(g.status, 405);
    assert_true(g.reason[0] != '\0');
    const char *good = "GET / HTTP/1.1\r\n\r\n";
    assert_int_equal(http_guard_feed(&g, good, strlen(good)), 0);
    assert_true(ok < strlen(bad));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ordinary_requests_pass),
        cmocka_unit_test(test_smuggling_forms_refused),
        cmocka_unit_test(test_methods),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_nothing_after_a_refusal),
    };
    return cmocka_run_group_tests_name("http request guard", tests, NULL, NULL);
}
