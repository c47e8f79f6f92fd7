/* The command line of ./app: --help, --version, check-config, migrate, config errors that
 * name the key and the line with exit status 2, and serving under systemd (Type=notify). */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "test/support/services.h"

/* Runs the app with args, stdout and stderr captured together; returns the exit status. */
static int run_app(const char *args, char *out, size_t n)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s", ts_app_binary(), args);
    int status = ts_run(cmd, out, n);
    assert_true(status >= 0);
    return status;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_help_and_version(void **state)
{
    (void)state;
    char out[8192];
    assert_int_equal(run_app("--help", out, sizeof out), 0);
    assert_non_null(strstr(out, "--config"));
    assert_non_null(strstr(out, "migrate"));
    assert_non_null(strstr(out, "check-config"));
    assert_int_equal(run_app("--version", out, sizeof out), 0);
    assert_non_null(strstr(out, "app "));
    assert_int_equal(run_app("--bogus", out, sizeof out), 2);
}

/* `routes` lists what a configuration serves: a service of one context lists its own routes,
 * the operations endpoints and the internal ones, and no other context's. */
static void test_routes(void **state)
{
    (void)state;
    char out[8192];
    assert_int_equal(run_app("--config config/app.yaml routes", out, sizeof out), 0);
    assert_non_null(strstr(out, "/v1/users/{id}/orders"));
    assert_non_null(strstr(out, "/v1/products"));
    const char *env = "APP_CONTEXTS=inventory";
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s %s --config config/app.yaml routes", env, ts_app_binary());
    assert_int_equal(ts_run(cmd, out, sizeof out), 0);
    assert_non_null(strstr(out, "/v1/products/{sku}"));
    assert_non_null(strstr(out, "/health/ready"));
    assert_non_null(strstr(out, "/internal/v1/commands/{name}"));
    assert_null(strstr(out, "/v1/orders"));
    assert_null(strstr(out, "/v1/users"));
}

static void test_check_config(void **state)
{
    (void)state;
    char out[8192];
    assert_int_equal(run_app("--config config/app.yaml check-config", out, sizeof out), 0);

    char path[] = "/tmp/app-cli-test-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char args[256];
    snprintf(args, sizeof args, "--config %s check-config", path);

    write_file(path, "http:\n  listen: \"127.0.0.1:8080\"\n  threads: lots\n");
    assert_int_equal(run_app(args, out, sizeof out), 2);
    assert_non_null(strstr(out, "http.threads"));
    assert_non_null(strstr(out, "line 3"));

    write_file(path, "http:\n  listen: \"127.0.0.1:8080\"\nredis:\n  colour: blue\n");
    assert_int_equal(run_app(args, out, sizeof out), 2);
    assert_non_null(strstr(out, "redis.colour"));
    assert_non_null(strstr(out, "line 4"));

    assert_int_equal(run_app("--config /nonexistent/app.yaml check-config", out, sizeof out), 2);
    assert_non_null(strstr(out, "/nonexistent/app.yaml"));
    unlink(path);
}

static void test_env_override_is_validated(void **state)
{
    (void)state;
    char out[8192];
    setenv("APP_HTTP_THREADS", "abc", 1);
    assert_int_equal(run_app("--config config/app.yaml check-config", out, sizeof out), 2);
    assert_non_null(strstr(out, "APP_HTTP_THREADS"));
    unsetenv("APP_HTTP_THREADS");
}

static void test_migrate_twice(void **state)
{
    (void)state;
    char out[8192];
    /* APP_POSTGRES_DSN from the harness points at the private test server. */
    assert_non_null(getenv("APP_POSTGRES_DSN"));
    assert_int_equal(run_app("--config config/app.yaml migrate", out, sizeof out), 0);
    assert_int_equal(run_app("--config config/app.yaml migrate", out, sizeof out), 0);
    assert_non_null(strstr(out, "0 migrations applied"));
}

/* Waits up to 20 s for one datagram on fd and checks it starts with want. */
static void expect_notification(int fd, const char *want)
{
    char buf[512];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    if (n < 0)
        fail_msg("no \"%s\" notification arrived", want);
    buf[n] = '\0';
    if (strncmp(buf, want, strlen(want)) != 0)
        fail_msg("notification \"%s\" does not start with \"%s\"", buf, want);
}

static void test_systemd_notify(void **state)
{
    (void)state;
    char path[96], env[128];
    snprintf(path, sizeof path, "/tmp/app-e2e-notify-%d.sock", (int)getpid());
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    struct timeval tv = {.tv_sec = 20};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

    snprintf(env, sizeof env, "NOTIFY_SOCKET=%s", path);
    const char *extra[] = {env, NULL};
    ts_app app;
    ts_app_start(&app, extra);
    expect_notification(fd, "READY=1\nSTATUS=serving on 127.0.0.1:");
    ts_app_stop_clean(&app);
    expect_notification(fd, "STOPPING=1");
    close(fd);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help_and_version), cmocka_unit_test(test_check_config),
        cmocka_unit_test(test_routes),           cmocka_unit_test(test_env_override_is_validated),
        cmocka_unit_test(test_migrate_twice),    cmocka_unit_test(test_systemd_notify),
    };
    return cmocka_run_group_tests_name("e2e command line", tests, NULL, NULL);
}
