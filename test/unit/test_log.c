/* core/log: the line format, and the asynchronous writer (log_async_start): every line
 * arrives, whole, in the order each thread logged it, also when the ring is far smaller than
 * what is logged (producers wait for room), and everything is out once log_async_stop
 * returns. stderr is pointed at a temporary file for the checks. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/log.h"
#include "core/trace.h"

#define THREADS 4
#define LINES   5000

static int saved_stderr = -1;
static char path[] = "/tmp/test_log_XXXXXX";

/* Sends fd 2 to a fresh temporary file. */
static int capture(void **state)
{
    (void)state;
    strcpy(path, "/tmp/test_log_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    fflush(stderr);
    saved_stderr = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
    log_set_level(LOG_DEBUG);
    return 0;
}

static int restore(void **state)
{
    (void)state;
    log_async_stop();
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    unlink(path);
    log_set_level(LOG_INFO);
    return 0;
}

/* What was written to the captured stderr so far; owned by the caller. */
static char *captured(void)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    assert_non_null(text);
    assert_int_equal(fread(text, 1, (size_t)n, f), (size_t)n);
    text[n] = '\0';
    fclose(f);
    return text;
}

static void test_line_is_json_with_escaped_message(void **state)
{
    (void)state;
    log_info("say \"hi\"\\ to\n%s", "you");
    log_debug("below the level: %d", 1);
    log_set_level(LOG_INFO);
    log_debug("not written");
    char *text = captured();
    assert_non_null(
        strstr(text, "\"level\":\"info\",\"msg\":\"say \\\"hi\\\"\\\\ to\\u000ayou\"}\n"));
    assert_non_null(strstr(text, "below the level: 1"));
    assert_null(strstr(text, "not written"));
    assert_int_equal(strncmp(text, "{\"ts\":\"20", 9), 0);
    free(text);
}

static void test_line_names_the_trace(void **state)
{
    (void)state;
    trace_span span;
    memset(&span, 0, sizeof span);
    span.ctx.trace_id[15] = 0xab;
    span.ctx.span_id[7] = 0xcd;
    span.ctx.valid = true;
    trace_ctx outer = trace_enter(&span);
    log_warn("traced");
    trace_leave(&outer);
    char *text = captured();
    assert_non_null(strstr(text,
                           "\"msg\":\"traced\",\"trace_id\":\"000000000000000000000000000000ab\","
                           "\"span_id\":\"00000000000000cd\"}"));
    free(text);
}

static void *logger(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < LINES; i++)
        log_info("thread %d line %d %s", id, i, "padding padding padding padding padding");
    return NULL;
}

/* Each thread's lines, all of them, whole and in order. */
static void check_all_lines(const char *text)
{
    int next[THREADS] = {0};
    size_t lines = 0;
    for (const char *p = text; *p;) {
        const char *end = strchr(p, '\n');
        assert_non_null(end);
        int id, i;
        const char *m = strstr(p, "\"msg\":\"thread ");
        assert_true(m && m < end);
        assert_int_equal(sscanf(m, "\"msg\":\"thread %d line %d", &id, &i), 2);
        assert_true(id >= 0 && id < THREADS);
        assert_int_equal(i, next[id]);
        next[id]++;
        assert_int_equal(end[-1], '}');
        lines++;
        p = end + 1;
    }
    assert_int_equal(lines, (size_t)THREADS * LINES);
}

static void run_threads(void)
{
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, logger, (void *)(intptr_t)i), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
}

static void test_async_writes_every_line_in_order(void **state)
{
    (void)state;
    assert_int_equal(log_async_start(0), 0);
    assert_int_equal(log_async_start(0), 0); /* twice: nothing more */
    run_threads();
    log_async_stop();
    char *text = captured();
    check_all_lines(text);
    free(text);
}

/* A ring of 4 KiB holds some 30 lines of the 20,000: producers wait for room, and nothing
 * is dropped or torn. */
static void test_async_small_ring_waits_for_room(void **state)
{
    (void)state;
    assert_int_equal(log_async_start(100), 0); /* raised to 4 KiB */
    run_threads();
    log_async_stop();
    log_async_stop(); /* twice: nothing more */
    char *text = captured();
    check_all_lines(text);
    free(text);
}

/* After the stop, lines are written directly, after those the writer had. */
static void test_after_stop_lines_go_directly(void **state)
{
    (void)state;
    assert_int_equal(log_async_start(0), 0);
    log_info("first");
    log_async_stop();
    log_info("second");
    char *text = captured();
    const char *a = strstr(text, "first"), *b = strstr(text, "second");
    assert_true(a && b && a < b);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_line_is_json_with_escaped_message, capture, restore),
        cmocka_unit_test_setup_teardown(test_line_names_the_trace, capture, restore),
        cmocka_unit_test_setup_teardown(test_async_writes_every_line_in_order, capture, restore),
        cmocka_unit_test_setup_teardown(test_async_small_ring_waits_for_room, capture, restore),
        cmocka_unit_test_setup_teardown(test_after_stop_lines_go_directly, capture, restore),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
