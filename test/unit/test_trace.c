/* core/trace.h: the traceparent, span ids and parent links, the samplers, the thread's
 * context; http/otlp.h: a full queue drops spans (counted) and never blocks the caller. The
 * export itself, to a real OpenTelemetry Collector, is test/e2e/test_tracing.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/metrics.h"
#include "core/trace.h"
#include "http/otlp.h"
#include "test/support/services.h"

#define TP "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

static trace_span got[64];
static size_t n_got;

static void sink(const trace_span *s, void *arg)
{
    (void)arg;
    if (n_got < sizeof got / sizeof got[0])
        got[n_got++] = *s;
}

static int reset(void **state)
{
    (void)state;
    trace_configure(NULL, NULL, 0, true);
    n_got = 0;
    return 0;
}

static void test_traceparent(void **state)
{
    (void)state;
    trace_ctx c;
    char out[TRACEPARENT_LEN];
    assert_true(trace_ctx_parse(TP, &c));
    assert_true(c.valid && c.sampled);
    trace_ctx_format(&c, out);
    assert_string_equal(out, TP);
    assert_true(trace_ctx_parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", &c));
    assert_false(c.sampled);
    /* A later version is read as far as version 00 goes, and written back as 00. */
    assert_true(trace_ctx_parse("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-xyz", &c));
    trace_ctx_format(&c, out);
    assert_string_equal(out, TP);
    static const char *const bad[] = {
        "",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  /* upper case */
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  /* zero trace id */
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  /* zero span id */
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  /* version ff */
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-", /* 00 with more */
        "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (trace_ctx_parse(bad[i], &c) || c.valid)
            fail_msg("accepted \"%s\"", bad[i]);
    assert_false(trace_ctx_parse(NULL, &c));
    trace_ctx_format(&c, out);
    assert_string_equal(out, "");
}

/* Without a sink nothing records, and a span only carries its parent's context on. */
static void test_off_carries_the_context(void **state)
{
    (void)state;
    trace_span s;
    trace_start_tp(&s, "x", TRACE_SERVER, TP);
    assert_false(s.recording);
    char out[TRACEPARENT_LEN];
    trace_ctx_format(&s.ctx, out);
    assert_string_equal(out, TP);
    trace_end(&s);
    trace_start_tp(&s, "x", TRACE_SERVER, NULL);
    assert_false(s.ctx.valid);
    trace_end(&s);
    assert_int_equal(n_got, 0);
}

static void test_children_and_samplers(void **state)
{
    (void)state;
    trace_configure(sink, NULL, 1.0, true);
    trace_span root, child;
    trace_start(&root, "root", TRACE_SERVER, NULL);
    assert_true(root.recording && root.ctx.sampled && !root.has_parent);
    trace_start(&child, "child", TRACE_INTERNAL, &root.ctx);
    assert_memory_equal(child.ctx.trace_id, root.ctx.trace_id, 16);
    assert_memory_equal(child.parent_id, root.ctx.span_id, 8);
    assert_memory_not_equal(child.ctx.span_id, root.ctx.span_id, 8);
    for (int i = 0; i < TRACE_MAX_ATTRS + 3; i++)
        trace_attr_int(&child, "n", i);
    assert_int_equal(child.n_attrs, TRACE_MAX_ATTRS);
    trace_fail(&child, "boom");
    trace_end(&child);
    trace_end(&root);
    trace_end(&root); /* ends once */
    assert_int_equal(n_got, 2);
    assert_string_equal(got[0].name, "child");
    assert_true(got[0].error);
    assert_true(got[0].end_ns >= got[0].start_ns);

    /* parentbased: an unsampled parent's child is not sampled, whatever the ratio. */
    trace_span s;
    trace_start_tp(&s, "x", TRACE_SERVER,
                   "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00");
    assert_true(s.ctx.valid);
    assert_false(s.recording);
    trace_end(&s);
    /* Not parent-based (traceidratio): the ratio decides, by the trace id. */
    trace_configure(sink, NULL, 1.0, false);
    trace_start_tp(&s, "x", TRACE_SERVER,
                   "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00");
    assert_true(s.recording);
    trace_end(&s);
    trace_configure(sink, NULL, 0.0, true);
    size_t before = n_got;
    for (int i = 0; i < 100; i++) {
        trace_start(&s, "never", TRACE_SERVER, NULL);
        trace_end(&s);
    }
    assert_int_equal(n_got, before);
    /* About half at 0.5: the decision is the trace id's, so a sample of 2,000 shows it. */
    trace_configure(sink, NULL, 0.5, true);
    int sampled = 0;
    for (int i = 0; i < 2000; i++) {
        trace_start(&s, "half", TRACE_SERVER, NULL);
        sampled += s.recording;
        s.recording = false;
    }
    assert_true(sampled > 800 && sampled < 1200);
}

/* Work that only continues a trace starts none: without a parent it records nothing. */
static void test_continue(void **state)
{
    (void)state;
    trace_configure(sink, NULL, 1.0, true);
    trace_span s;
    trace_continue_tp(&s, "orphan", TRACE_CONSUMER, NULL);
    assert_false(s.recording);
    assert_false(s.ctx.valid);
    trace_end(&s);
    trace_continue_tp(&s, "orphan", TRACE_CONSUMER, "garbage");
    trace_end(&s);
    assert_int_equal(n_got, 0);
    trace_continue_tp(&s, "child", TRACE_CONSUMER, TP);
    assert_true(s.recording);
    trace_end(&s);
    assert_int_equal(n_got, 1);
    assert_true(got[0].has_parent);
}

static void test_thread_context(void **state)
{
    (void)state;
    trace_configure(sink, NULL, 1.0, true);
    assert_null(trace_current());
    trace_span a, b;
    trace_start(&a, "a", TRACE_SERVER, NULL);
    trace_ctx outer = trace_enter(&a);
    assert_memory_equal(trace_current()->span_id, a.ctx.span_id, 8);
    trace_start(&b, "b", TRACE_INTERNAL, trace_current());
    trace_ctx inner = trace_enter(&b);
    assert_memory_equal(trace_current()->span_id, b.ctx.span_id, 8);
    trace_leave(&inner);
    assert_memory_equal(trace_current()->span_id, a.ctx.span_id, 8);
    trace_leave(&outer);
    assert_null(trace_current());
    trace_end(&b);
    trace_end(&a);
}

/* A receiver that does not answer: the queue fills, the rest is dropped and counted, and no
 * caller waits. */
static void test_full_queue_drops(void **state)
{
    (void)state;
    metrics_reset();
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d", ts_free_port());
    otlp_exporter *e = NULL;
    app_error err = APP_ERROR_INIT;
    otlp_options o = {.endpoint = endpoint,
                      .service_name = "unit",
                      .ratio = 1.0,
                      .parent_based = true,
                      .queue_size = 8,
                      .batch_size = 8,
                      .interval_ms = 60000,
                      .timeout_ms = 200};
    assert_int_equal(otlp_start(&e, &o, &err), 0);
    long long t0 = ts_now_ms();
    for (int i = 0; i < 1000; i++) {
        trace_span s;
        trace_start(&s, "load", TRACE_SERVER, NULL);
        trace_end(&s);
    }
    print_message("1,000 spans ended in %lld ms with the receiver away\n", ts_now_ms() - t0);
    otlp_stop(e);
    char *text = metrics_render();
    assert_non_null(text);
    const char *dropped = strstr(text, "tracing_spans_total{outcome=\"dropped\"} ");
    assert_non_null(dropped);
    double n = strtod(dropped + strlen("tracing_spans_total{outcome=\"dropped\"} "), NULL);
    assert_true(n >= 1000 - 2 * 8);
    assert_non_null(strstr(text, "tracing_spans_total{outcome=\"failed\"}"));
    free(text);
    metrics_reset();

    o.endpoint = "https://127.0.0.1:4318";
    assert_int_equal(otlp_start(&e, &o, &err), APP_ECONFIG);
    assert_non_null(strstr(err.message, "tracing.endpoint"));
}

/* A receiver of one request on a loopback socket: its request line, then 200. */
typedef struct receiver {
    int fd;
    char line[256];
} receiver;

static void *receive_one(void *arg)
{
    receiver *r = arg;
    int c = accept(r->fd, NULL, NULL);
    if (c < 0)
        return NULL;
    char buf[65536];
    size_t n_read = 0;
    ssize_t k;
    /* The head, then as much body as it announces. */
    while (n_read < sizeof buf - 1 && (k = recv(c, buf + n_read, sizeof buf - 1 - n_read, 0)) > 0) {
        n_read += (size_t)k;
        buf[n_read] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        const char *cl = strcasestr(buf, "Content-Length:");
        if (end && cl && n_read >= (size_t)(end + 4 - buf) + strtoul(cl + 15, NULL, 10))
            break;
    }
    snprintf(r->line, sizeof r->line, "%.*s", (int)strcspn(buf, "\r"), buf);
    const char *ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
    (void)!send(c, ok, strlen(ok), MSG_NOSIGNAL);
    close(c);
    return NULL;
}

/* The endpoint's path is the base: spans go to <endpoint>/v1/traces. */
static void test_endpoint_path(void **state)
{
    (void)state;
    receiver r = {.fd = socket(AF_INET, SOCK_STREAM, 0)};
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(r.fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(r.fd, 4), 0);
    assert_int_equal(getsockname(r.fd, (struct sockaddr *)&a, &len), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, receive_one, &r), 0);
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "http://127.0.0.1:%d/otlp/", ntohs(a.sin_port));
    otlp_exporter *e = NULL;
    app_error err = APP_ERROR_INIT;
    otlp_options o = {.endpoint = endpoint, .ratio = 1.0, .parent_based = true, .interval_ms = 10};
    assert_int_equal(otlp_start(&e, &o, &err), 0);
    trace_span s;
    trace_start(&s, "one", TRACE_SERVER, NULL);
    trace_end(&s);
    pthread_join(t, NULL);
    otlp_stop(e);
    close(r.fd);
    assert_string_equal(r.line, "POST /otlp/v1/traces HTTP/1.1");
    metrics_reset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_traceparent, reset),
        cmocka_unit_test_setup(test_off_carries_the_context, reset),
        cmocka_unit_test_setup(test_children_and_samplers, reset),
        cmocka_unit_test_setup(test_continue, reset),
        cmocka_unit_test_setup(test_thread_context, reset),
        cmocka_unit_test_setup(test_full_queue_drops, reset),
        cmocka_unit_test_setup(test_endpoint_path, reset),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    trace_configure(NULL, NULL, 0, true);
    return rc;
}
