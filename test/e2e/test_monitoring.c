/* The PromQL we ship (alert rules in deploy/prometheus, the dashboard in deploy/grafana)
 * against the running app: a scrape of its /metrics (with the Kafka relay on, so its metrics
 * exist too) and test/tools/check_promql.mjs, which parses every expression with the
 * Prometheus project's PromQL grammar and refuses a metric the app does not export. Broken
 * files must be refused, or the check proves nothing. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "test/support/http_client.h"
#include "test/support/services.h"

static char metrics_path[64] = "/tmp/app-monitoring-metrics-XXXXXX";
static const char *const rules = "deploy/prometheus/alerts.yml";
static const char *const dashboard = "deploy/grafana/app-dashboard.json";

static void write_text(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
}

/* Runs the check on files (space-separated); returns its exit status, its output in out. */
static int check(const char *files, char *out, size_t size)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "node test/tools/check_promql.mjs %s %s", metrics_path, files);
    int status = ts_run(cmd, out, size);
    assert_true(status >= 0);
    return status;
}

static int setup(void **state)
{
    (void)state;
    if (system("node --version >/dev/null 2>&1") != 0 ||
        access("test/tools/node_modules/@prometheus-io/lezer-promql", R_OK) != 0) {
        fprintf(stderr, "test_monitoring: needs Node.js and test/tools/node_modules "
                        "(make test installs them: npm ci --prefix test/tools)\n");
        return -1;
    }
    int fd = mkstemp(metrics_path);
    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

/* Runs first: a real app's /metrics is what the checks below hold the files against. The
 * app runs in a test rather than in the group setup, so that its stop is a checked test. */
static void test_scrape_metrics(void **state)
{
    (void)state;
    /* A broker address where nothing listens: the relay starts and declares its metrics. */
    char brokers[64];
    snprintf(brokers, sizeof brokers, "APP_KAFKA_BROKERS=127.0.0.1:%d", ts_free_port());
    const char *env[] = {"APP_KAFKA_ENABLED=true", brokers, NULL};
    ts_app app;
    ts_app_start(&app, env);
    tc_response r;
    memset(&r, 0, sizeof r);
    assert_int_equal(tc_http("127.0.0.1", app.port, "GET", "/metrics", NULL, NULL, 0, &r), 0);
    assert_int_equal(r.status, 200);
    write_text(metrics_path, r.body, r.body_len);
    tc_response_free(&r);
    ts_app_stop_clean(&app);
}

static int teardown(void **state)
{
    (void)state;
    unlink(metrics_path);
    return 0;
}

static void test_shipped_queries_hold(void **state)
{
    (void)state;
    char out[8192], files[256];
    snprintf(files, sizeof files, "%s %s", rules, dashboard);
    int status = check(files, out, sizeof out);
    if (status != 0)
        fail_msg("%s", out);
    assert_non_null(strstr(out, "15 rules"));
    assert_non_null(strstr(out, "parse and use only"));
}

/* A shipped file with one change; the check must refuse it, saying why. */
static void expect_refused(const char *file, const char *from, const char *to, const char *reason)
{
    char path[64];
    ts_file_changed(file, from, to, path, sizeof path);
    char out[8192];
    int status = check(path, out, sizeof out);
    unlink(path);
    assert_int_equal(status, 1);
    if (!strstr(out, reason))
        fail_msg("the check said \"%s\", not \"%s\"", out, reason);
}

static void test_broken_files_are_refused(void **state)
{
    (void)state;
    expect_refused(rules, "subscription_lag_seconds{job=\"app\"}) > 60",
                   "subscription_lag_secs{job=\"app\"}) > 60",
                   "exports no metric \"subscription_lag_secs\"");
    expect_refused(rules, "max by (context) (kafka_relay_breaker_state",
                   "max by (context (kafka_relay_breaker_state", "does not parse");
    expect_refused(rules, "severity: critical", "severity: loud", "labels.severity");
    expect_refused(rules, "for: 10m", "for: ten minutes", "\"for\" is not a duration");
    expect_refused(dashboard, "rate(kafka_relay_retried_total", "rate(kafka_relay_retries_total",
                   "exports no metric \"kafka_relay_retries_total\"");
    expect_refused(dashboard, "sum by (status) (rate(", "sum by status (rate(", "does not parse");
    expect_refused(dashboard, "\"id\": 3,", "\"id\": 2,", "an id of its own");
}

/* ---- Prometheus's own checks (promtool, Debian's prometheus package) ---------------------- */

static int promtool(const char *args, char *out, size_t size)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "promtool %s", args);
    int status = ts_run(cmd, out, size);
    assert_true(status >= 0);
    return status;
}

/* The scrape configurations (with the rule files they name), the rules, the live exposition,
 * and the unit tests of every alert: what Prometheus itself loads. */
static void test_promtool_accepts_the_files(void **state)
{
    (void)state;
    ts_require_tool("promtool", "prometheus");
    char out[16384], args[512];
    if (promtool("check config deploy/prometheus/prometheus.yml", out, sizeof out) != 0)
        fail_msg("promtool check config:\n%s", out);
    assert_non_null(strstr(out, "1 rule files found"));
    if (promtool("check config deploy/prometheus/prometheus-split.yml", out, sizeof out) != 0)
        fail_msg("promtool check config (the split deployment's):\n%s", out);
    assert_non_null(strstr(out, "1 rule files found"));
    if (promtool("check rules deploy/prometheus/alerts.yml", out, sizeof out) != 0)
        fail_msg("promtool check rules:\n%s", out);
    snprintf(args, sizeof args, "check metrics < %s", metrics_path);
    if (promtool(args, out, sizeof out) != 0)
        fail_msg("promtool check metrics on a live scrape:\n%s", out);
    if (promtool("test rules deploy/prometheus/alerts_test.yml", out, sizeof out) != 0)
        fail_msg("promtool test rules:\n%s", out);
    assert_non_null(strstr(out, "SUCCESS"));
}

/* Every alert of alerts.yml has unit tests in alerts_test.yml. */
static void test_every_alert_is_unit_tested(void **state)
{
    (void)state;
    static char alerts[65536], tests[131072];
    FILE *f = fopen(rules, "r");
    assert_non_null(f);
    alerts[fread(alerts, 1, sizeof alerts - 1, f)] = '\0';
    fclose(f);
    f = fopen("deploy/prometheus/alerts_test.yml", "r");
    assert_non_null(f);
    tests[fread(tests, 1, sizeof tests - 1, f)] = '\0';
    fclose(f);
    int n = 0;
    for (const char *p = strstr(alerts, "- alert: "); p; p = strstr(p + 1, "- alert: ")) {
        char name[128], want[160];
        if (sscanf(p + 9, "%127s", name) != 1)
            fail_msg("an alert without a name in %s", rules);
        snprintf(want, sizeof want, "alertname: %s\n", name);
        if (!strstr(tests, want))
            fail_msg("alert %s has no unit test in deploy/prometheus/alerts_test.yml", name);
        n++;
    }
    assert_int_equal(n, 15);
}

/* The unit tests can fail: a test expecting another severity is refused by promtool. */
static void test_a_wrong_expectation_fails(void **state)
{
    (void)state;
    ts_require_tool("promtool", "prometheus");
    char dir[] = "/tmp/app-alerts-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cmd[1024], out[16384];
    snprintf(cmd, sizeof cmd,
             "cp deploy/prometheus/alerts.yml %s/ && sed 's/severity: critical, job: app/"
             "severity: warning, job: app/' deploy/prometheus/alerts_test.yml > "
             "%s/alerts_test.yml && grep -q 'severity: warning, job: app' %s/alerts_test.yml",
             dir, dir, dir);
    assert_int_equal(ts_run(cmd, out, sizeof out), 0);
    snprintf(cmd, sizeof cmd, "test rules %s/alerts_test.yml", dir);
    int status = promtool(cmd, out, sizeof out);
    char ignored[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ts_run(cmd, ignored, sizeof ignored);
    assert_int_not_equal(status, 0);
    assert_non_null(strstr(out, "AppDown"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scrape_metrics),
        cmocka_unit_test(test_shipped_queries_hold),
        cmocka_unit_test(test_broken_files_are_refused),
        cmocka_unit_test(test_promtool_accepts_the_files),
        cmocka_unit_test(test_every_alert_is_unit_tested),
        cmocka_unit_test(test_a_wrong_expectation_fails),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
