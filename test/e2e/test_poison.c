/* Poison events: an event a subscriber cannot handle goes to the dead letters after
 * subscriptions.max_attempts failures, and the subscriber goes on with the events after it.
 * `app dlq list` shows it, `app dlq redrive` hands it to that subscriber again (by the process
 * that runs the subscriber), and a dependency that is down never dead-letters anything.
 * Against a real PostgreSQL and Redis. */
#include <cjson/cJSON.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/uuid.h"
#include "test/support/http_client.h"
#include "test/support/services.h"

/* One failure dead-letters an event: a dependency that is down must not count even once. */
#define MAX_ATTEMPTS "1"

static ts_app app;
static const char *const app_env[] = {"APP_SUBSCRIPTIONS_MAX_ATTEMPTS=" MAX_ATTEMPTS, NULL};

static int setup(void **state)
{
    (void)state;
    ts_app_share(&app);
    return ts_app_start(&app, app_env);
}

/* Runs the app's command line with args (the environment the app has); the exit status. */
static int run_app(const char *args, char *out, size_t n)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "APP_SUBSCRIPTIONS_MAX_ATTEMPTS=" MAX_ATTEMPTS " %s %s",
             ts_app_binary(), args);
    int status = ts_run(cmd, out, n);
    assert_true(status >= 0);
    return status;
}

/* Runs query with psql; the first line of its output into out. */
static void sql(const char *query, char *out, size_t size)
{
    char cmd[2048];
    int n = snprintf(cmd, sizeof cmd, "{ psql '%s' -qtAX -v ON_ERROR_STOP=1 <<'SQL'\n%s;\nSQL\n}",
                     ts_env("APP_POSTGRES_DSN"), query);
    assert_true(n > 0 && (size_t)n < sizeof cmd);
    if (ts_run(cmd, out, size) != 0)
        fail_msg("psql failed: %s\n%s", out, query);
    out[strcspn(out, "\n")] = '\0';
}

/* The value of a /metrics series (0 when absent). */
static double metric(const char *series)
{
    return tc_metric("127.0.0.1", app.port, series, 0);
}

/* Whether the user projection holds user id in the read store (any generation). */
static bool projected(void *arg)
{
    char key[64];
    snprintf(key, sizeof key, "user:%s", (const char *)arg);
    return ts_read_model_has("user.projection", key);
}

static void wait_projected(const char *id, const char *why)
{
    char copy[UUID_STR_LEN];
    snprintf(copy, sizeof copy, "%s", id);
    if (ts_wait_until(projected, copy, 30000) != 0)
        fail_msg("user %s is not in the read model: %s", id, why);
}

static void register_user(const char *email, char id[UUID_STR_LEN])
{
    char body[256];
    snprintf(body, sizeof body, "{\"email\":\"%s\",\"name\":\"Poison Test\"}", email);
    const char *headers[] = {"Content-Type: application/json", NULL};
    tc_response r;
    memset(&r, 0, sizeof r);
    assert_int_equal(
        tc_http("127.0.0.1", app.port, "POST", "/v1/users", headers, body, strlen(body), &r), 0);
    assert_int_equal(r.status, 201);
    cJSON *j = cJSON_Parse(r.body);
    const char *got = cJSON_GetStringValue(cJSON_GetObjectItem(j, "id"));
    assert_non_null(got);
    snprintf(id, UUID_STR_LEN, "%s", got);
    cJSON_Delete(j);
    tc_response_free(&r);
}

/* The "user:<n>" id of user.projection's dead letter for the stream of user id, into out;
 * false when there is none. */
static bool dead_letter_of(const char *id, char *out, size_t size)
{
    char q[512], row[64];
    snprintf(q, sizeof q,
             "SELECT coalesce(max(d.id)::text, '') FROM user_ctx.dead_letters d"
             " JOIN user_ctx.events e ON e.global_position = d.position"
             " WHERE d.subscriber = 'user.projection' AND e.stream_id = 'user-%s'",
             id);
    sql(q, row, sizeof row);
    if (!row[0])
        return false;
    snprintf(out, size, "user:%s", row);
    return true;
}

static void test_poison_event_is_dead_lettered_and_redriven(void **state)
{
    (void)state;
    double dead_before = metric("subscription_dead_lettered_total{subscriber=\"user.projection\"}");

    /* A registration without an email: no user projection can apply it. */
    char bad[UUID_STR_LEN], q[768], out[8192];
    uuid_v4(bad);
    snprintf(q, sizeof q,
             "INSERT INTO user_ctx.events (stream_id, stream_version, event_id, event_type,"
             " schema_version, data, metadata)"
             " VALUES ('user-%s', 1, gen_random_uuid(), 'user.user.registered', 1,"
             " jsonb_build_object('userId', '%s', 'name', 'No Email'),"
             " jsonb_build_object('correlationId', 'test-poison'))",
             bad, bad);
    sql(q, out, sizeof out);

    /* A registration after it is applied all the same. */
    char good[UUID_STR_LEN], email[64];
    snprintf(email, sizeof email, "after.%.8s@example.com", bad);
    register_user(email, good);
    wait_projected(good, "the projection is stuck behind the poison event");
    assert_false(projected(bad));

    /* Dead-lettered once, after max_attempts failures, with the decoder's reason. */
    char dl[64];
    assert_true(dead_letter_of(bad, dl, sizeof dl));
    assert_int_equal(metric("subscription_dead_lettered_total{subscriber=\"user.projection\"}"),
                     dead_before + 1);
    snprintf(q, sizeof q,
             "SELECT attempts || ' ' || error FROM user_ctx.dead_letters WHERE id = %s",
             strchr(dl, ':') + 1);
    sql(q, out, sizeof out);
    assert_int_equal(atoi(out), 1);
    assert_non_null(strstr(out, "malformed user.user.registered event"));
    assert_int_equal(run_app("--config config/app.yaml dlq list", out, sizeof out), 0);
    char line[128];
    snprintf(line, sizeof line, "%s  position=", dl);
    assert_non_null(strstr(out, line));
    assert_non_null(strstr(out, "subscriber=user.projection"));

    /* A redrive before the data is fixed fails again, and says so. */
    char args[256];
    snprintf(args, sizeof args, "--config config/app.yaml dlq redrive %s", dl);
    assert_int_not_equal(run_app(args, out, sizeof out), 0);
    if (!strstr(out, "failed again"))
        fail_msg("a redrive that fails does not say so:\n%s", out);
    snprintf(q, sizeof q,
             "SELECT attempts || ' ' || redrive_requested FROM user_ctx.dead_letters"
             " WHERE id = %s",
             strchr(dl, ':') + 1);
    sql(q, out, sizeof out);
    assert_string_equal(out, "2 false");

    /* The data fixed, a redrive hands it to user.projection only, which applies it. */
    double redriven = metric("subscription_redriven_total{subscriber=\"user.projection\"}");
    double handled_by_copy =
        metric("subscription_events_total{subscriber=\"order.customer_directory\"}");
    snprintf(q, sizeof q,
             "UPDATE user_ctx.events SET data = data || jsonb_build_object('email',"
             " 'fixed.%.8s@example.com') WHERE stream_id = 'user-%s'",
             bad, bad);
    sql(q, out, sizeof out);
    if (run_app(args, out, sizeof out) != 0)
        fail_msg("dlq redrive %s failed:\n%s", dl, out);
    assert_non_null(strstr(out, "handled again by user.projection"));
    wait_projected(bad, "the redriven event was not applied");
    assert_false(dead_letter_of(bad, dl, sizeof dl));
    assert_int_equal(metric("subscription_redriven_total{subscriber=\"user.projection\"}"),
                     redriven + 1);
    assert_int_equal(metric("subscription_events_total{subscriber=\"order.customer_directory\"}"),
                     handled_by_copy);
}

/* Redis down: the projection's handler fails max_attempts times (and more) on the same event,
 * and dead-letters nothing; once Redis is back, it applies what it missed. */
static int handler_failures_on_redis(void)
{
    char cmd[768], out[64];
    snprintf(cmd, sizeof cmd,
             "grep -cE 'subscriber user.projection: (handler failed|event .* put in the dead "
             "letters).*redis is unavailable' '%s'",
             app.log_path);
    ts_run(cmd, out, sizeof out); /* grep -c exits 1 when it counts 0 */
    return atoi(out);
}

static bool failed_enough(void *arg)
{
    int *before = arg;
    return handler_failures_on_redis() >= *before + atoi(MAX_ATTEMPTS);
}

static void test_a_dependency_down_never_dead_letters(void **state)
{
    (void)state;
    double dead_before = metric("subscription_dead_lettered_total{subscriber=\"user.projection\"}");
    int failures = handler_failures_on_redis();
    assert_int_equal(ts_redis_stop(), 0);
    char id[UUID_STR_LEN], email[64], tag[UUID_STR_LEN];
    uuid_v4(tag);
    snprintf(email, sizeof email, "outage.%.8s@example.com", tag);
    register_user(email, id); /* the log is in PostgreSQL: the command succeeds */
    int waited = ts_wait_until(failed_enough, &failures, 30000);
    assert_int_equal(ts_redis_start(), 0);
    if (waited != 0)
        fail_msg("the projection's handler did not fail %s times while Redis was down",
                 MAX_ATTEMPTS);
    wait_projected(id, "the projection did not catch up after Redis came back");
    assert_int_equal(metric("subscription_dead_lettered_total{subscriber=\"user.projection\"}"),
                     dead_before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_poison_event_is_dead_lettered_and_redriven),
        cmocka_unit_test(test_a_dependency_down_never_dead_letters),
        cmocka_unit_test(ts_test_app_stops_cleanly),
    };
    return cmocka_run_group_tests_name("poison", tests, setup, ts_app_group_end);
}
