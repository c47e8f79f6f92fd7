/* The command line of ./app: --help, --version, check-config, migrate, and config errors
 * that name the key and the line with exit status 2. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

static const char *app_binary(void)
{
    const char *b = getenv("APP_TEST_APP_BINARY");
    return b && *b ? b : "build/test/app";
}

/* Runs the app with args, stdout and stderr captured together; returns the exit status. */
static int run_app(const char *args, char *out, size_t n)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", app_binary(), args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t got = fread(out, 1, n - 1, p);
    out[got] = '\0';
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_help_and_version),
        cmocka_unit_test(test_check_config),
        cmocka_unit_test(test_env_override_is_validated),
        cmocka_unit_test(test_migrate_twice),
    };
    return cmocka_run_group_tests_name("e2e command line", tests, NULL, NULL);
}
