/* End to end: traces reach a real OpenTelemetry Collector (0.165.0, an OTLP/HTTP receiver and
 * the debug exporter, built from the Go module proxy by test/tools/otelcol/build.sh), and one
 * order placement is one trace: the HTTP request, the command, its append, the placement
 * saga's handling of the placed event, its steps (check the customer, reserve, confirm), the
 * stock reservation it sends, and (with the tests' Kafka broker) the copy of the events to Kafka,
 * each linked to its parent. Log lines carry the trace and span ids. */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/uuid.h"
#include "test/support/http_client.h"
#include "test/support/services.h"

extern char **environ;

#define MAX_SPANS 4096

static ts_app app;
static pid_t collector;
static char dir[] = "/tmp/app-tracing-XXXXXX";
static char collector_log[128];
static int collector_port;
static bool with_kafka;
static char app_env[8][160];
static const char *app_env_list[9];

typedef struct span {
    char trace[33], id[17], parent[17], name[96], kind[24];
    bool has_offset; /* an attribute messaging.kafka.offset: the broker acknowledged it */
} span;

static span spans[MAX_SPANS];
static size_t n_spans;

/* ---- the collector ---------------------------------------------------------------------- */

static bool collector_ready(void *arg)
{
    (void)arg;
    char cmd[256], out[64];
    snprintf(cmd, sizeof cmd, "grep -c 'Everything is ready' %s", collector_log);
    return ts_run(cmd, out, sizeof out) == 0 && atoi(out) > 0;
}

static int setup(void **state)
{
    (void)state;
    static char bin[512];
    if (ts_tool("sh test/tools/otelcol/build.sh", bin, sizeof bin) != 0)
        return -1;
    if (!mkdtemp(dir))
        return -1;
    collector_port = ts_free_port();
    char config[160];
    snprintf(config, sizeof config, "%s/otelcol.yaml", dir);
    snprintf(collector_log, sizeof collector_log, "%s/collector.log", dir);
    FILE *f = fopen(config, "w");
    if (!f)
        return -1;
    fprintf(f,
            "receivers:\n  otlp:\n    protocols:\n      http:\n        endpoint: 127.0.0.1:%d\n"
            "exporters:\n  debug:\n    verbosity: detailed\n"
            "service:\n  telemetry:\n    metrics:\n      level: none\n"
            "  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [debug]\n",
            collector_port);
    fclose(f);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, collector_log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    char flag[] = "--config";
    char *argv[] = {bin, flag, config, NULL};
    int rc = posix_spawn(&collector, bin, &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0 || ts_wait_until(collector_ready, NULL, 30000) != 0) {
        fprintf(stderr, "test_tracing: the collector did not start (log: %s)\n", collector_log);
        return -1;
    }

    size_t e = 0;
    snprintf(app_env[e++], sizeof app_env[0], "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:%d",
             collector_port);
    snprintf(app_env[e++], sizeof app_env[0], "OTEL_SERVICE_NAME=app-e2e");
    snprintf(app_env[e++], sizeof app_env[0],
             "OTEL_RESOURCE_ATTRIBUTES=deployment.environment=test");
    const char *brokers = getenv("APP_TEST_KAFKA_BROKERS");
    with_kafka = brokers && *brokers;
    if (with_kafka) {
        snprintf(app_env[e++], sizeof app_env[0], "APP_KAFKA_ENABLED=true");
        snprintf(app_env[e++], sizeof app_env[0], "APP_KAFKA_BROKERS=%s", brokers);
        snprintf(app_env[e++], sizeof app_env[0], "APP_KAFKA_TOPIC_PREFIX=trace-%ld-%d.",
                 (long)time(NULL), (int)getpid());
    }
    for (size_t i = 0; i < e; i++)
        app_env_list[i] = app_env[i];
    app_env_list[e] = NULL;
    return ts_app_start(&app, app_env_list);
}

static int teardown(void **state)
{
    (void)state;
    ts_app_end(&app);
    if (collector > 0) {
        kill(collector, SIGTERM);
        waitpid(collector, NULL, 0);
    }
    char cmd[160], out[64];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ts_run(cmd, out, sizeof out);
    return 0;
}

static const char *trace_of_order;

/* Reads the spans of trace_of_order the debug exporter printed so far (the relay's copy of
 * every event other tests left in the database makes many more). */
static void read_spans(void)
{
    n_spans = 0;
    FILE *f = fopen(collector_log, "r");
    assert_non_null(f);
    char line[1024];
    span *cur = NULL;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "Span #", 6) == 0) {
            cur = n_spans < MAX_SPANS ? &spans[n_spans++] : NULL;
            if (cur)
                memset(cur, 0, sizeof *cur);
            continue;
        }
        if (cur && strstr(line, "-> messaging.kafka.offset: Int("))
            cur->has_offset = true;
        const char *colon = strstr(line, " : ");
        if (!cur || !colon)
            continue;
        const char *v = colon + 3;
        if (strstr(line, "    Trace ID")) {
            if (strcmp(v, trace_of_order) != 0) { /* not ours: the slot is used again */
                n_spans--;
                cur = NULL;
                continue;
            }
            snprintf(cur->trace, sizeof cur->trace, "%s", v);
        } else if (strstr(line, "    Parent ID"))
            snprintf(cur->parent, sizeof cur->parent, "%s", v);
        else if (strncmp(line, "    ID ", 7) == 0)
            snprintf(cur->id, sizeof cur->id, "%s", v);
        else if (strstr(line, "    Name"))
            snprintf(cur->name, sizeof cur->name, "%s", v);
        else if (strstr(line, "    Kind"))
            snprintf(cur->kind, sizeof cur->kind, "%s", v);
    }
    fclose(f);
}

/* The span of trace named name (a prefix is enough when prefix), or NULL. */
static const span *find(const char *trace, const char *name, bool prefix)
{
    for (size_t i = 0; i < n_spans; i++)
        if (strcmp(spans[i].trace, trace) == 0 &&
            (prefix ? strncmp(spans[i].name, name, strlen(name)) == 0
                    : strcmp(spans[i].name, name) == 0))
            return &spans[i];
    return NULL;
}

static bool order_traced(void *arg)
{
    (void)arg;
    read_spans();
    return find(trace_of_order, "command inventory.reserve_stock", false) &&
           find(trace_of_order, "order.placement_saga order.order.placed", false) &&
           find(trace_of_order, "order.placement confirm", false) &&
           (!with_kafka || find(trace_of_order, "trace-", true));
}

static tc_response call(const char *method, const char *path, const char *tp, const char *body)
{
    char tp_header[96];
    snprintf(tp_header, sizeof tp_header, "traceparent: %s", tp ? tp : "");
    const char *headers[] = {"Content-Type: application/json", tp ? tp_header : NULL, NULL};
    tc_response r;
    memset(&r, 0, sizeof r);
    assert_int_equal(tc_http("127.0.0.1", app.port, method, path, body ? headers : NULL, body,
                             body ? strlen(body) : 0, &r),
                     0);
    return r;
}

static void expect_parent(const span *child, const span *parent)
{
    assert_non_null(child);
    assert_non_null(parent);
    if (strcmp(child->parent, parent->id) != 0)
        fail_msg("span \"%s\" has parent %s, not \"%s\" (%s)", child->name, child->parent,
                 parent->name, parent->id);
}

static void test_an_order_is_one_trace(void **state)
{
    (void)state;
    char email[96], id[UUID_STR_LEN], sku[32], body[512];
    uuid_v4(id);
    snprintf(email, sizeof email, "trace-%.8s@example.com", id);
    snprintf(body, sizeof body, "{\"email\":\"%s\",\"name\":\"Tracy\"}", email);
    tc_response r = call("POST", "/v1/users", NULL, body);
    assert_int_equal(r.status, 201);
    cJSON *j = tc_json(&r);
    char customer[UUID_STR_LEN];
    snprintf(customer, sizeof customer, "%s", cJSON_GetStringValue(cJSON_GetObjectItem(j, "id")));
    cJSON_Delete(j);
    tc_response_free(&r);
    snprintf(sku, sizeof sku, "TR-%.8s", id);
    for (char *p = sku; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    snprintf(body, sizeof body,
             "{\"sku\":\"%s\",\"name\":\"Lamp\",\"price\":{\"amount\":990,\"currency\":\"EUR\"},"
             "\"stock\":3}",
             sku);
    r = call("POST", "/v1/products", NULL, body);
    assert_int_equal(r.status, 201);
    tc_response_free(&r);

    /* The client's own trace: the order joins it. */
    static char trace[33];
    uuid_v4(id);
    snprintf(trace, sizeof trace, "%.8s%.4s%.4s%.4s%.12s", id, id + 9, id + 14, id + 19, id + 24);
    char tp[64];
    snprintf(tp, sizeof tp, "00-%s-00f067aa0ba902b7-01", trace);
    snprintf(body, sizeof body,
             "{\"customerId\":\"%s\",\"lines\":[{\"sku\":\"%s\",\"quantity\":1}]}", customer, sku);
    r = call("POST", "/v1/orders", tp, body);
    assert_int_equal(r.status, 202);
    tc_response_free(&r);

    trace_of_order = trace;
    long long t0 = ts_now_ms();
    if (ts_wait_until(order_traced, NULL, 60000) != 0) {
        for (size_t i = 0; i < n_spans; i++)
            if (strcmp(spans[i].trace, trace) == 0)
                fprintf(stderr, "  %s %s <- %s\n", spans[i].name, spans[i].id, spans[i].parent);
        fail_msg("the order's trace %s is not complete in the collector (%zu spans in all)", trace,
                 n_spans);
    }
    print_message("the order's trace was complete in the collector after %lld ms\n",
                  ts_now_ms() - t0);

    const span *http = find(trace, "POST /v1/orders", false);
    const span *place = find(trace, "command order.place_order", false);
    const span *saga = find(trace, "order.placement_saga order.order.placed", false);
    const span *reserve = find(trace, "command inventory.reserve_stock", false);
    /* The saga's steps: checking the customer, reserving, confirming. */
    const span *checking = find(trace, "order.placement check_customer", false);
    const span *reserving = find(trace, "order.placement reserve", false);
    const span *confirming = find(trace, "order.placement confirm", false);
    assert_non_null(http);
    assert_string_equal(http->parent, "00f067aa0ba902b7"); /* the client's span */
    assert_string_equal(http->kind, "Server");
    expect_parent(place, http);
    expect_parent(saga, place);
    assert_string_equal(saga->kind, "Consumer");
    expect_parent(checking, saga);
    expect_parent(reserving, saga);
    expect_parent(confirming, saga);
    expect_parent(reserve, reserving);
    /* Each append is a child of the command or the saga step that made it. */
    size_t appends = 0;
    for (size_t i = 0; i < n_spans; i++)
        if (strcmp(spans[i].trace, trace) == 0 && strcmp(spans[i].name, "eventstore append") == 0) {
            if (strcmp(spans[i].parent, place->id) != 0 &&
                strcmp(spans[i].parent, reserve->id) != 0 &&
                strcmp(spans[i].parent, confirming->id) != 0)
                fail_msg("an append span has parent %s, which is no command or step of the order",
                         spans[i].parent);
            appends++;
        }
    assert_true(appends >= 2);
    if (with_kafka) {
        const span *publish = find(trace, "trace-", true);
        assert_string_equal(publish->kind, "Producer");
        /* It lasts until the broker's acknowledgement, whose offset it carries. */
        if (!publish->has_offset)
            fail_msg("the Kafka publish span has no messaging.kafka.offset: it ended before "
                     "the broker acknowledged the message");
        if (strcmp(publish->parent, place->id) != 0 && strcmp(publish->parent, reserve->id) != 0 &&
            strcmp(publish->parent, confirming->id) != 0)
            fail_msg("the Kafka publish span has parent %s, no span of the order", publish->parent);
    }

    /* The request's log line names the trace. */
    char cmd[768], out[4096];
    snprintf(cmd, sizeof cmd, "grep 'http POST /v1/orders 202' %s | grep -c '\"trace_id\":\"%s\"'",
             app.log_path, trace);
    assert_int_equal(ts_run(cmd, out, sizeof out), 0);
    assert_true(atoi(out) >= 1);

    /* Exported, as /metrics counts. */
    r = call("GET", "/metrics", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "tracing_spans_total{outcome=\"exported\"}"));
    tc_response_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_an_order_is_one_trace),
        cmocka_unit_test(ts_test_app_stops_cleanly),
    };
    ts_app_share(&app);
    return cmocka_run_group_tests_name("e2e tracing", tests, setup, teardown);
}
