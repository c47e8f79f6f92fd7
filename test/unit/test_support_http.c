/* Self-test of the tests' HTTP client against a canned server thread: framing
 * (Content-Length, chunked, close-delimited), headers, JSON and failure reporting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test/support/http_client.h"
#include "test/support/services.h"

typedef struct fake_server {
    int listen_fd;
    int port;
    pthread_t thread;
} fake_server;

static fake_server server;

static void send_str(int fd, const char *s)
{
    size_t len = strlen(s);
    while (len > 0) {
        ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
        if (n <= 0)
            return;
        s += n;
        len -= (size_t)n;
    }
}

/* Reads one request (head plus Content-Length body) into buf; returns its length. */
static size_t read_request(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    for (;;) {
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (!end)
            continue;
        const char *cl = strcasestr(buf, "\r\nContent-Length:");
        size_t want = cl ? (size_t)atoi(cl + 17) : 0;
        if (len - (size_t)(end + 4 - buf) >= want)
            break;
    }
    buf[len] = '\0';
    return len;
}

/* Answers one connection; false when asked to quit. */
static bool serve_one(int fd)
{
    char req[8192];
    read_request(fd, req, sizeof req);
    char path[256] = "";
    char method[16] = "";
    sscanf(req, "%15s %255s", method, path);
    bool keep_going = true;
    if (strcmp(path, "/quit") == 0) {
        keep_going = false;
        send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    } else if (strcmp(path, "/len") == 0) {
        send_str(fd, "HTTP/1.1 201 Created\r\nX-Thing:  spaced value  \r\n"
                     "Content-Length: 5\r\n\r\nhello");
    } else if (strcmp(path, "/chunked") == 0) {
        /* Split across writes so the client must assemble the pieces. */
        send_str(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                     "Content-Type: application/json\r\n\r\n4\r\n{\"a\"");
        usleep(20000);
        send_str(fd, "\r\nA;ext=1\r\n:[1,2,3]} \r\n0\r\nX-Trailer: t\r\n\r\n");
    } else if (strcmp(path, "/close") == 0) {
        send_str(fd, "HTTP/1.0 500 Internal Server Error\r\n\r\nuntil close");
    } else if (strcmp(path, "/nocontent") == 0) {
        send_str(fd, "HTTP/1.1 204 No Content\r\n\r\n");
    } else if (strcmp(path, "/garbage") == 0) {
        send_str(fd, "SSH-2.0-OpenSSH\r\n\r\n");
    } else if (strcmp(path, "/truncated") == 0) {
        send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    } else if (strcmp(path, "/echo") == 0) {
        /* Echo the whole request back, so the test can check what was sent. */
        char head[128];
        snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", strlen(req));
        send_str(fd, head);
        send_str(fd, req);
    } else {
        send_str(fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    }
    close(fd);
    return keep_going;
}

static void *server_main(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(server.listen_fd, NULL, NULL);
        if (fd < 0)
            break;
        if (!serve_one(fd))
            break;
    }
    return NULL;
}

static int setup(void **state)
{
    (void)state;
    server.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (server.listen_fd < 0 || bind(server.listen_fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        listen(server.listen_fd, 16) < 0 ||
        getsockname(server.listen_fd, (struct sockaddr *)&sa, &len) < 0)
        return -1;
    server.port = ntohs(sa.sin_port);
    return pthread_create(&server.thread, NULL, server_main, NULL) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    tc_response r;
    tc_http("127.0.0.1", server.port, "GET", "/quit", NULL, NULL, 0, &r);
    tc_response_free(&r);
    pthread_join(server.thread, NULL);
    close(server.listen_fd);
    return 0;
}

static void test_content_length(void **state)
{
    (void)state;
    tc_response r;
    assert_int_equal(tc_http("127.0.0.1", server.port, "GET", "/len", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 201);
    assert_int_equal(r.body_len, 5);
    assert_string_equal(r.body, "hello");
    assert_string_equal(tc_header(&r, "x-thing"), "spaced value");
    assert_string_equal(tc_header(&r, "CONTENT-LENGTH"), "5");
    assert_null(tc_header(&r, "X-Missing"));
    tc_response_free(&r);
}

static void test_chunked_json(void **state)
{
    (void)state;
    tc_response r;
    assert_int_equal(tc_http("localhost", server.port, "GET", "/chunked", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"a\":[1,2,3]} ");
    cJSON *j = tc_json(&r);
    assert_non_null(j);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "a")), 3);
    cJSON_Delete(j);
    tc_response_free(&r);
}

static void test_close_delimited_and_no_content(void **state)
{
    (void)state;
    tc_response r;
    assert_int_equal(tc_http("127.0.0.1", server.port, "GET", "/close", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 500);
    assert_string_equal(r.body, "until close");
    assert_null(tc_json(&r));
    tc_response_free(&r);

    assert_int_equal(tc_http("127.0.0.1", server.port, "DELETE", "/nocontent", NULL, NULL, 0, &r),
                     0);
    assert_int_equal(r.status, 204);
    assert_int_equal(r.body_len, 0);
    assert_non_null(r.body);
    tc_response_free(&r);
}

static void test_request_shape(void **state)
{
    (void)state;
    const char *const headers[] = {"Content-Type: application/json", "X-Request-ID: abc", NULL};
    const char body[] = "{\"k\":1}";
    tc_response r;
    assert_int_equal(
        tc_http("127.0.0.1", server.port, "POST", "/echo", headers, body, sizeof body - 1, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "POST /echo HTTP/1.1\r\n"));
    assert_non_null(strstr(r.body, "\r\nContent-Type: application/json\r\n"));
    assert_non_null(strstr(r.body, "\r\nX-Request-ID: abc\r\n"));
    assert_non_null(strstr(r.body, "\r\nContent-Length: 7\r\n"));
    assert_non_null(strstr(r.body, "\r\nConnection: close\r\n"));
    assert_non_null(strstr(r.body, "\r\n\r\n{\"k\":1}"));
    tc_response_free(&r);
}

static void test_failures_are_reported(void **state)
{
    (void)state;
    tc_response r;
    assert_int_equal(tc_http("127.0.0.1", server.port, "GET", "/garbage", NULL, NULL, 0, &r), -1);
    assert_non_null(strstr(r.error, "status line"));
    tc_response_free(&r);

    assert_int_equal(tc_http("127.0.0.1", server.port, "GET", "/truncated", NULL, NULL, 0, &r), -1);
    assert_non_null(strstr(r.error, "truncated"));
    assert_null(r.body);
    tc_response_free(&r);

    int closed_port = ts_free_port();
    assert_int_equal(tc_http("127.0.0.1", closed_port, "GET", "/", NULL, NULL, 0, &r), -1);
    assert_non_null(strstr(r.error, "refused"));
    tc_response_free(&r);
    tc_response_free(NULL);
}

static bool countdown(void *arg)
{
    int *n = arg;
    return --*n <= 0;
}

static void test_wait_until(void **state)
{
    (void)state;
    int n = 3;
    assert_int_equal(ts_wait_until(countdown, &n, 1000), 0);
    n = 1000000;
    long long t0 = ts_now_ms();
    assert_int_equal(ts_wait_until(countdown, &n, 100), -1);
    assert_true(ts_now_ms() - t0 >= 100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_content_length),
        cmocka_unit_test(test_chunked_json),
        cmocka_unit_test(test_close_delimited_and_no_content),
        cmocka_unit_test(test_request_shape),
        cmocka_unit_test(test_failures_are_reported),
        cmocka_unit_test(test_wait_until),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
