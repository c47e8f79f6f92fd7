/* The HTTP edge against a client that means harm, over real loopback sockets: an endless
 * chunk-size line, smuggling forms and trailers, slow clients (one byte at a time, and 2,000
 * of them at once), and more connections than allowed. Each is refused with problem+json and
 * closed, and an ordinary client is still served. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/metrics.h"
#include "http/server.h"
#include "test/support/raw_http.h"
#include "test/support/services.h"

#define BODY_LIMIT 1024
#define HEAD_MS    400

static int route_ok(bus *b, const http_req *req, http_res *res, app_error *err)
{
    (void)b;
    (void)req;
    res->body = cJSON_CreateObject();
    return res->body ? 0 : app_error_set(err, APP_ENOMEM, "out of memory");
}

static const http_route_def routes[] = {
    {HTTP_M_GET, "/ok", route_ok, HTTP_ROUTE_INLINE, NULL, NULL},
    {HTTP_M_POST, "/ok", route_ok, HTTP_ROUTE_JSON_BODY, NULL, NULL},
    {HTTP_M_POST, "/post-only", route_ok, HTTP_ROUTE_JSON_BODY, NULL, NULL},
    {0},
};

typedef struct server {
    workers *pool;
    http_server *srv;
    int port;
} server;

static int max_requests; /* http.max_requests_per_connection of the next server_start */
static int idle_ms;      /* http.request_timeout_ms of the next server_start (0: 30 s) */

static void server_start(server *s, int max_connections)
{
    app_error err = APP_ERROR_INIT;
    assert_int_equal(workers_new(&s->pool, 2, 64, &err), 0);
    http_server_options o = {
        .host = "127.0.0.1",
        .threads = 2,
        .max_body_bytes = BODY_LIMIT,
        .request_timeout_ms = idle_ms > 0 ? idle_ms : 30000,
        .header_timeout_ms = HEAD_MS,
        .body_timeout_ms = HEAD_MS,
        .max_connections = max_connections,
        .max_requests_per_connection = max_requests,
        .pool = s->pool,
    };
    if (http_server_new(&s->srv, &o, &err) != 0)
        fail_msg("http_server_new: %s", err.message);
    assert_int_equal(http_server_add_routes(s->srv, routes, &err), 0);
    assert_int_equal(http_server_start(s->srv, &err), 0);
    s->port = http_server_port(s->srv);
}

static void server_stop(server *s)
{
    http_server_stop(s->srv, 1000);
    http_server_free(s->srv);
    workers_free(s->pool);
}

static void expect_ok(int port)
{
    tcli_resp r;
    assert_int_equal(tcli(port, "GET", "/ok", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    tcli_free(&r);
}

/* The bytes the process holds in live allocations (the sanitizer's count: freed memory in
 * its quarantine does not count, as it would in the RSS). */
size_t __sanitizer_get_current_allocated_bytes(void) __attribute__((weak));

static long live_kib(void)
{
    if (!__sanitizer_get_current_allocated_bytes)
        fail_msg("this test needs the AddressSanitizer build (make test)");
    return (long)(__sanitizer_get_current_allocated_bytes() / 1024);
}

/* Sends as much of buf as the server takes, until it stops reading or closes; returns the
 * bytes sent, and in *peak_kib the most memory the process held meanwhile. */
static size_t send_until_refused(int fd, const char *buf, size_t len, long *peak_kib)
{
    size_t off = 0;
    *peak_kib = 0;
    while (off < len) {
        long now = live_kib();
        if (now > *peak_kib)
            *peak_kib = now;
        struct pollfd p = {fd, POLLOUT, 0};
        if (poll(&p, 1, 2000) <= 0 || (p.revents & (POLLERR | POLLHUP)))
            break;
        ssize_t n = send(fd, buf + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n <= 0 && errno != EAGAIN)
            break;
        if (n > 0)
            off += (size_t)n;
    }
    return off;
}

/* The attack of the issue: chunked, then a 10 MB chunk-size line. The server answers 400
 * after reading at most its line bound (the guard's unit test counts the bytes), closes, and
 * holds no more memory than that. */
static void test_endless_chunk_size_line(void **state)
{
    (void)state;
    server s;
    server_start(&s, 0);
    size_t big = 10 * 1024 * 1024;
    char *buf = malloc(big);
    assert_non_null(buf);
    int n = snprintf(buf, 256,
                     "POST /ok HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n1;");
    memset(buf + n, 'e', big - (size_t)n); /* a chunk extension that never ends */
    long before = live_kib(), peak = 0;
    int fd = tcli_connect(s.port);
    assert_true(fd >= 0);
    size_t sent = send_until_refused(fd, buf, big, &peak);
    tcli_resp r;
    assert_int_equal(tcli_read(fd, &r), 0);
    cJSON_Delete(expect_problem(&r, 400, "bad-request"));
    assert_string_equal(tcli_header(&r, "Connection"), "close");
    tcli_free(&r);
    long grown = peak - before;
    print_message("endless chunk-size line: %zu bytes sent, refused with 400; the process held "
                  "at most %ld KiB more than before (bound: max_body_bytes + 64 KiB = %d KiB)\n",
                  sent, grown, BODY_LIMIT / 1024 + 64);
    /* The server keeps at most its bounds: what it reads after the refusal it drops. */
    assert_true(grown <= BODY_LIMIT / 1024 + 64);
    free(buf);
    expect_ok(s.port);
    server_stop(&s);
}

/* Smuggling forms and trailers, over the wire: refused, closed, and the request hidden behind
 * them never runs. */
static void test_smuggling_refused_on_the_wire(void **state)
{
    (void)state;
    server s;
    server_start(&s, 0);
    static const char *const attacks[] = {
        "POST /ok HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 4\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /ok HTTP/1.1\r\n\r\n",
        "POST /ok HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\napikey: stolen\r\n\r\n",
        "GET /ok HTTP/1.1\r\nHost: t\r\nContent-Length: 18\r\n\r\nGET /ok HTTP/1.1\r\n\r\n",
        "POST /ok HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\n{}\r\n0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof attacks / sizeof attacks[0]; i++) {
        tcli_resp r;
        assert_int_equal(tcli_raw(s.port, attacks[i], strlen(attacks[i]), &r), 0);
        if (r.status != 400)
            fail_msg("attack %zu: status %d", i, r.status);
        cJSON_Delete(expect_problem(&r, 400, "bad-request"));
        /* One answer, then the close: the smuggled request got none. */
        assert_null(strstr(r.body, "HTTP/1.1"));
        tcli_free(&r);
    }
    /* A method no resource accepts: 405 with what the resource does accept, as the router
     * answers known methods; 501 where no resource is. */
    const char *refused[][2] = {
        {"QUERY /ok?x=1 HTTP/1.1\r\nHost: t\r\n\r\n", "405"},
        {"TRACE /ok HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}", "405"},
        {"QUERY /nothing-here HTTP/1.1\r\nHost: t\r\n\r\n", "501"},
        {"TRACE /nothing-here HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}", "404"},
        /* A GET with a body: the router's answer first, the body's 400 only where GET is. */
        {"GET /post-only HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}", "405"},
        {"GET /nothing-here HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}", "404"},
        {"HEAD /ok HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}", "400"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        tcli_resp r;
        assert_int_equal(tcli_raw(s.port, refused[i][0], strlen(refused[i][0]), &r), 0);
        int want = atoi(refused[i][1]);
        cJSON_Delete(expect_problem(&r, want,
                                    want == 405   ? "method-not-allowed"
                                    : want == 501 ? "not-implemented"
                                    : want == 400 ? "bad-request"
                                                  : "not-found"));
        if (want == 405 && !strstr(r.head, "\r\nAllow: "))
            fail_msg("case %zu: no Allow: %s", i, r.head);
        tcli_free(&r);
    }
    expect_ok(s.port);
    server_stop(&s);
}

/* One byte at a time does not keep a request alive: the head deadline counts from its first
 * byte, whatever arrives after. */
static void test_slow_head_gets_408(void **state)
{
    (void)state;
    server s;
    server_start(&s, 0);
    int fd = tcli_connect(s.port);
    assert_true(fd >= 0);
    const char *req = "GET /ok HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    long long start = ts_now_ms();
    bool closed = false;
    for (size_t i = 0; req[i] && !closed; i++) {
        if (send(fd, req + i, 1, MSG_NOSIGNAL) != 1)
            closed = true;
        struct pollfd p = {fd, POLLIN, 0};
        closed = closed || poll(&p, 1, 50) > 0; /* the server answered (and closes) */
    }
    assert_true(closed);
    tcli_resp r;
    assert_int_equal(tcli_read(fd, &r), 0);
    cJSON_Delete(expect_problem(&r, 408, "request-timeout"));
    tcli_free(&r);
    print_message("a head sent a byte every 50 ms was refused after %lld ms (deadline %d ms)\n",
                  ts_now_ms() - start, HEAD_MS);
    /* A slow body too. */
    fd = tcli_connect(s.port);
    const char *head = "POST /ok HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                       "Content-Length: 10\r\n\r\n{";
    assert_int_equal(send(fd, head, strlen(head), MSG_NOSIGNAL), (ssize_t)strlen(head));
    assert_int_equal(tcli_read(fd, &r), 0);
    cJSON_Delete(expect_problem(&r, 408, "request-timeout"));
    tcli_free(&r);
    server_stop(&s);
}

/* 2,000 slow clients hold connections with half a head each; an ordinary client is served
 * meanwhile, and the slow ones are closed by the head deadline. */
static void test_many_slow_clients(void **state)
{
    (void)state;
    server s;
    server_start(&s, 0);
    enum { SLOW = 2000 };
    static int fds[SLOW];
    for (int i = 0; i < SLOW; i++) {
        fds[i] = tcli_connect(s.port);
        if (fds[i] < 0)
            fail_msg("connection %d: %s", i, strerror(errno));
        send(fds[i], "GET /ok HTTP/1.1\r\nHo", 20, MSG_NOSIGNAL);
    }
    long long start = ts_now_ms();
    expect_ok(s.port);
    long long served = ts_now_ms() - start;
    int closed = 0;
    for (int i = 0; i < SLOW; i++) {
        char buf[512];
        struct pollfd p = {fds[i], POLLIN, 0};
        if (poll(&p, 1, TS_HANG_GUARD_MS) == 1 && recv(fds[i], buf, sizeof buf, 0) > 0 &&
            strncmp(buf, "HTTP/1.1 408", 12) == 0)
            closed++;
        close(fds[i]);
    }
    print_message("with %d slow clients open, an ordinary request was answered in %lld ms; "
                  "%d slow ones got 408 when their head was due\n",
                  SLOW, served, closed);
    assert_int_equal(closed, SLOW);
    expect_ok(s.port);
    server_stop(&s);
}

static bool connections_open(void *arg)
{
    char want[64];
    snprintf(want, sizeof want, "\nhttp_connections_open %d\n", *(int *)arg);
    char *m = metrics_render();
    bool ok = m && strstr(m, want);
    free(m);
    return ok;
}

/* Past http.max_connections a new connection gets 503 and is closed; the ones inside are not
 * affected, and once one leaves there is room again. */
static void test_connection_limit(void **state)
{
    (void)state;
    server s;
    server_start(&s, 3);
    int inside[3];
    for (int i = 0; i < 3; i++) {
        inside[i] = tcli_connect(s.port);
        assert_true(inside[i] >= 0);
    }
    /* The three are in once the server has accepted them (two loops accept on their own). */
    if (ts_wait_until(connections_open, (int[]){3}, TS_HANG_GUARD_MS) != 0)
        fail_msg("the server never had the three connections open");
    tcli_resp r;
    assert_int_equal(tcli(s.port, "GET", "/ok", NULL, NULL, &r), 0);
    cJSON_Delete(expect_problem(&r, 503, "service-unavailable"));
    assert_string_equal(tcli_header(&r, "Retry-After"), "1");
    tcli_free(&r);
    /* An open one is served... */
    const char *req = "GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    assert_int_equal(send(inside[0], req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    assert_int_equal(tcli_read(inside[0], &r), 0);
    assert_int_equal(r.status, 200);
    tcli_free(&r);
    /* ...and its leaving makes room (the count drops once the server let it go). */
    close(inside[1]);
    close(inside[2]);
    long long deadline = ts_now_ms() + TS_HANG_GUARD_MS;
    int status = 0;
    while (status != 200 && ts_now_ms() < deadline) {
        assert_int_equal(tcli(s.port, "GET", "/ok", NULL, NULL, &r), 0);
        status = r.status;
        tcli_free(&r);
    }
    assert_int_equal(status, 200);
    char *m = metrics_render();
    assert_non_null(strstr(m, "http_connections_refused_total{reason=\"max_connections\"}"));
    free(m);
    server_stop(&s);
}

/* A kept-alive connection serves http.max_requests_per_connection requests: the answer to
 * the last says "Connection: close", and the server closes it. */
static void test_requests_per_connection(void **state)
{
    (void)state;
    server s;
    max_requests = 3;
    server_start(&s, 0);
    max_requests = 0;
    int fd = tcli_connect(s.port);
    assert_true(fd >= 0);
    char head[2048];
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(tcli_get_keepalive(fd, "/ok", head, sizeof head), 200);
        bool closing = strcasestr(head, "\r\nConnection: close") != NULL;
        if (closing != (i == 3))
            fail_msg("answer %d %s Connection: close: %s", i, closing ? "has" : "lacks", head);
    }
    char byte;
    assert_int_equal(recv(fd, &byte, 1, 0), 0); /* closed by the server */
    close(fd);
    /* Without a cap, the same connection goes on. */
    server_stop(&s);
    server_start(&s, 0);
    fd = tcli_connect(s.port);
    assert_true(fd >= 0);
    for (int i = 1; i <= 5; i++) {
        assert_int_equal(tcli_get_keepalive(fd, "/ok", head, sizeof head), 200);
        assert_null(strcasestr(head, "\r\nConnection: close"));
    }
    close(fd);
    server_stop(&s);
}

/* A kept-alive connection that sends nothing more is closed after http.request_timeout_ms;
 * the wait is printed, not held to a wall clock. */
static void test_idle_keepalive_closed(void **state)
{
    (void)state;
    server s;
    idle_ms = 300;
    server_start(&s, 0);
    idle_ms = 0;
    int fd = tcli_connect(s.port);
    assert_true(fd >= 0);
    char head[2048];
    assert_int_equal(tcli_get_keepalive(fd, "/ok", head, sizeof head), 200);
    long long t0 = ts_now_ms();
    char byte;
    assert_int_equal(recv(fd, &byte, 1, 0), 0); /* closed by the server, not the hang guard */
    print_message("an idle kept-alive connection closed after %lld ms (timeout 300 ms)\n",
                  ts_now_ms() - t0);
    close(fd);
    server_stop(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endless_chunk_size_line),
        cmocka_unit_test(test_smuggling_refused_on_the_wire),
        cmocka_unit_test(test_slow_head_gets_408),
        cmocka_unit_test(test_many_slow_clients),
        cmocka_unit_test(test_connection_limit),
        cmocka_unit_test(test_requests_per_connection),
        cmocka_unit_test(test_idle_keepalive_closed),
    };
    return cmocka_run_group_tests_name("http edge under attack", tests, NULL, NULL);
}
