/* `app replay` while the service serves: read models are rebuilt into a new generation and
 * switched to at once (queries never see a half-built one), nothing but the projections
 * runs again; a replay with no service running switches by itself; and a read store that
 * comes back empty is noticed and rebuilt without anyone asking. */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/uuid.h"
#include "test/support/http_client.h"
#include "test/support/services.h"

static ts_app app;
static const char *const json_headers[] = {"Content-Type: application/json", NULL};

/* Runs the app with args, stdout and stderr captured together; returns the exit status. */
static int run_app(const char *args, char *out, size_t n)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s", ts_app_binary(), args);
    int status = ts_run(cmd, out, n);
    assert_true(status >= 0);
    return status;
}

/* Checkpoint rows of a projection in its context's schema: one per generation it keeps. */
static int checkpoint_rows(const char *schema, const char *projection)
{
    char cmd[1024], out[64] = "";
    snprintf(cmd, sizeof cmd,
             "psql '%s' -qtAX -c \"SELECT count(*) FROM %s.checkpoints"
             " WHERE subscriber = '%s' OR subscriber LIKE '%s@%%'\"",
             ts_env("APP_POSTGRES_DSN"), schema, projection, projection);
    assert_int_equal(ts_run(cmd, out, sizeof out), 0);
    return atoi(out);
}

static int status_of(const char *method, const char *path, const char *body, cJSON **json)
{
    tc_response r;
    memset(&r, 0, sizeof r);
    assert_int_equal(tc_http("127.0.0.1", app.port, method, path, body ? json_headers : NULL, body,
                             body ? strlen(body) : 0, &r),
                     0);
    int status = r.status;
    if (json)
        *json = status >= 200 && status < 300 ? tc_json(&r) : NULL;
    tc_response_free(&r);
    return status;
}

static cJSON *call(const char *method, const char *path, const char *body, int want)
{
    cJSON *j = NULL;
    int got = status_of(method, path, body, &j);
    if (got != want)
        fail_msg("%s %s: expected %d, got %d", method, path, want, got);
    return j;
}

static const char *str(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItem(o, name);
    return cJSON_IsString(v) ? v->valuestring : "";
}

typedef struct want {
    const char *path, *member, *value;
} want;

static bool has(void *p)
{
    want *w = p;
    cJSON *j = NULL;
    bool ok =
        status_of("GET", w->path, NULL, &j) == 200 && strcmp(str(j, w->member), w->value) == 0;
    cJSON_Delete(j);
    return ok;
}

static void wait_member(const char *path, const char *member, const char *value)
{
    want w = {path, member, value};
    if (ts_wait_until(has, &w, 20000) != 0)
        fail_msg("%s never had %s = %s", path, member, value);
}

static int count_items(const char *path)
{
    cJSON *j = call("GET", path, NULL, 200);
    int n = cJSON_GetArraySize(cJSON_GetObjectItem(j, "items"));
    cJSON_Delete(j);
    return n;
}

/* subscription_events_total of one subscriber in the app (0 when it never ran). */
static double handled(const char *subscriber)
{
    tc_response r;
    memset(&r, 0, sizeof r);
    assert_int_equal(tc_http("127.0.0.1", app.port, "GET", "/metrics", NULL, NULL, 0, &r), 0);
    char needle[160];
    snprintf(needle, sizeof needle, "subscription_events_total{subscriber=\"%s\"} ", subscriber);
    const char *at = r.body ? strstr(r.body, needle) : NULL;
    double n = at ? atof(at + strlen(needle)) : 0;
    tc_response_free(&r);
    return n;
}

/* ---- the log and what reads it ---------------------------------------------------- */

/* Only a hang fails on it: every step waits for a state, none for a time. */
#define HANG_GUARD_MS 60000

/* Runs query with psql (from a here-document, so quotes need no escaping); the first line
 * of its output, unaligned and without headers, goes to out. */
static void sql(const char *query, char *out, size_t size)
{
    char cmd[3800];
    int n = snprintf(cmd, sizeof cmd, "{ psql '%s' -qtAX -v ON_ERROR_STOP=1 <<'SQL'\n%s;\nSQL\n}",
                     ts_env("APP_POSTGRES_DSN"), query);
    assert_true(n > 0 && (size_t)n < sizeof cmd);
    if (ts_run(cmd, out, size) != 0)
        fail_msg("psql failed: %s\n%s", out, query);
    out[strcspn(out, "\n")] = '\0';
}

static long long sql_number(const char *query)
{
    char out[64];
    sql(query, out, sizeof out);
    char *end;
    long long n = strtoll(out, &end, 10);
    if (end == out || *end)
        fail_msg("expected a number from %s, got \"%s\"", query, out);
    return n;
}

typedef struct subscriber {
    const char *name;   /* as /health/ready names it */
    const char *schema; /* of the context whose log it reads */
} subscriber;

/* True when the app runs the subscriber, caught up with the head of its log. */
static bool caught_up(void *arg)
{
    const subscriber *sub = arg;
    cJSON *j = NULL;
    bool ok = false;
    if (status_of("GET", "/health/ready", NULL, &j) == 200) {
        const cJSON *s = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "subscriptions"), sub->name);
        const cJSON *checkpoint = cJSON_GetObjectItem(s, "checkpoint");
        char q[128];
        snprintf(q, sizeof q, "SELECT coalesce(max(global_position), 0) FROM %s.events",
                 sub->schema);
        ok = strcmp(str(s, "status"), "running") == 0 && cJSON_IsNumber(checkpoint) &&
             (long long)checkpoint->valuedouble == sql_number(q);
    }
    cJSON_Delete(j);
    return ok;
}

/* A world to replay: users, a product, confirmed orders of one customer. */
typedef struct world {
    char tag[UUID_STR_LEN];
    char sku[32];
    char users[12][UUID_STR_LEN];
    char orders[4][UUID_STR_LEN];
} world;

static void make_world(world *w)
{
    char body[256], path[128];
    uuid_v4(w->tag);
    snprintf(w->sku, sizeof w->sku, "RPL-%.8s", w->tag);
    for (char *p = w->sku; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    snprintf(body, sizeof body,
             "{\"sku\":\"%s\",\"name\":\"Replayed\",\"price\":{\"amount\":250,\"currency\":"
             "\"EUR\"},\"stock\":10}",
             w->sku);
    cJSON_Delete(call("POST", "/v1/products", body, 201));
    for (int i = 0; i < 12; i++) {
        snprintf(body, sizeof body, "{\"email\":\"r%d.%.8s@example.com\",\"name\":\"R %d\"}", i,
                 w->tag, i);
        cJSON *u = call("POST", "/v1/users", body, 201);
        snprintf(w->users[i], sizeof w->users[i], "%s", str(u, "id"));
        cJSON_Delete(u);
    }
    /* Changes after creation, so that the rebuilt models must fold more than one event. */
    snprintf(path, sizeof path, "/v1/users/%s/deactivate", w->users[11]);
    cJSON_Delete(call("POST", path, "{}", 200));
    for (int i = 0; i < 4; i++) {
        snprintf(body, sizeof body,
                 "{\"customerId\":\"%s\",\"lines\":[{\"sku\":\"%s\",\"quantity\":2}]}", w->users[0],
                 w->sku);
        cJSON *o = call("POST", "/v1/orders", body, 202);
        snprintf(w->orders[i], sizeof w->orders[i], "%s", str(o, "id"));
        cJSON_Delete(o);
    }
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "/v1/orders/%s", w->orders[i]);
        wait_member(path, "status", "confirmed");
    }
    snprintf(path, sizeof path, "/v1/users/%s", w->users[11]);
    wait_member(path, "status", "deactivated");
    snprintf(path, sizeof path, "/v1/products/%s", w->sku);
    wait_member(path, "sku", w->sku);
}

/* Every read model of the world is whole: fails the test on the first difference. */
static void check_world(const world *w, bool wait)
{
    char path[160];
    for (int i = 0; i < 12; i++) {
        snprintf(path, sizeof path, "/v1/users/%s", w->users[i]);
        if (wait) {
            wait_member(path, "status", i == 11 ? "deactivated" : "active");
            continue;
        }
        cJSON *u = call("GET", path, NULL, 200);
        assert_string_equal(str(u, "status"), i == 11 ? "deactivated" : "active");
        cJSON_Delete(u);
    }
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "/v1/orders/%s", w->orders[i]);
        if (wait)
            wait_member(path, "status", "confirmed");
        cJSON *o = call("GET", path, NULL, 200);
        assert_string_equal(str(o, "status"), "confirmed");
        cJSON_Delete(o);
    }
    snprintf(path, sizeof path, "/v1/users/%s/orders", w->users[0]);
    assert_int_equal(count_items(path), 4);
    snprintf(path, sizeof path, "/v1/products/%s", w->sku);
    if (wait)
        wait_member(path, "sku", w->sku);
    cJSON *p = call("GET", path, NULL, 200);
    assert_int_equal(cJSON_GetObjectItem(p, "reserved")->valueint, 8);
    assert_int_equal(cJSON_GetObjectItem(p, "available")->valueint, 2);
    cJSON_Delete(p);
}

typedef struct replay_job {
    const char *args;
    char out[16384];
    int status;
    bool done;
    pthread_mutex_t mu;
} replay_job;

static void *replay_thread(void *arg)
{
    replay_job *job = arg;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s", ts_app_binary(), job->args);
    int status = ts_run(cmd, job->out, sizeof job->out);
    pthread_mutex_lock(&job->mu);
    job->status = status < 0 ? 128 : status;
    job->done = true;
    pthread_mutex_unlock(&job->mu);
    return NULL;
}

static bool job_done(replay_job *job)
{
    pthread_mutex_lock(&job->mu);
    bool done = job->done;
    pthread_mutex_unlock(&job->mu);
    return done;
}

static void test_replay_while_serving(void **state)
{
    (void)state;
    assert_int_equal(ts_app_start(&app, NULL), 0);
    world w;
    make_world(&w);
    char path[160];
    /* The saga handles the confirmations it wrote too: read its count once it has. */
    static subscriber saga = {"order.placement_saga", "order_ctx"};
    assert_int_equal(ts_wait_until(caught_up, &saga, HANG_GUARD_MS), 0);
    double saga_before = handled("order.placement_saga");
    assert_true(saga_before >= 8); /* placed + confirmed of each order, at least */

    /* Replay every projection while reads go on: each read answers 200 with the whole model,
     * before, during and after the switch. */
    static replay_job job;
    memset(&job, 0, sizeof job);
    pthread_mutex_init(&job.mu, NULL);
    job.args = "--config config/app.yaml replay";
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, replay_thread, &job), 0);
    int rounds = 0;
    while (!job_done(&job)) {
        check_world(&w, false);
        rounds++;
    }
    pthread_join(t, NULL);
    pthread_mutex_destroy(&job.mu);
    if (job.status != 0)
        fail_msg("replay exited %d:\n%s", job.status, job.out);
    print_message("replay (%d rounds of reads meanwhile):\n%s", rounds, job.out);
    const char *projections[] = {"user.projection", "order.projection", "order.product_catalog",
                                 "order.customer_directory", "inventory.projection"};
    for (size_t i = 0; i < sizeof projections / sizeof projections[0]; i++) {
        char line[128];
        snprintf(line, sizeof line, "%s: the service switched to generation", projections[i]);
        if (!strstr(job.out, line))
            fail_msg("no switch of %s in:\n%s", projections[i], job.out);
    }
    check_world(&w, false);

    /* No side effect ran again: the saga handled nothing new, no order or product event was
     * added. */
    assert_true(handled("order.placement_saga") == saga_before);
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "/v1/orders/%s/events", w.orders[i]);
        assert_int_equal(count_items(path), 2);
    }
    snprintf(path, sizeof path, "/v1/products/%s/events", w.sku);
    assert_int_equal(count_items(path), 1 + 4);

    /* The live projections go on in the new generation. */
    char body[256];
    snprintf(body, sizeof body, "{\"email\":\"after.%.8s@example.com\",\"name\":\"After\"}", w.tag);
    cJSON *u = call("POST", "/v1/users", body, 201);
    snprintf(path, sizeof path, "/v1/users/%s", str(u, "id"));
    cJSON_Delete(u);
    wait_member(path, "status", "active");
    ts_app_stop_clean(&app);
}

static void test_replay_without_a_service(void **state)
{
    (void)state;
    assert_int_equal(ts_app_start(&app, NULL), 0);
    world w;
    make_world(&w);
    ts_app_stop_clean(&app);

    char out[16384];
    assert_int_equal(
        run_app("--config config/app.yaml replay --projection user.projection", out, sizeof out),
        0);
    if (!strstr(out, "user.projection: no running process has it; switched to generation"))
        fail_msg("unexpected replay output:\n%s", out);
    assert_null(strstr(out, "order.projection")); /* only the one asked for */
    assert_non_null(strstr(out, "events replayed in"));
    /* The old generation went with its checkpoint. */
    assert_int_equal(checkpoint_rows("user_ctx", "user.projection"), 1);

    assert_int_equal(ts_app_start(&app, NULL), 0);
    check_world(&w, false);
    ts_app_stop_clean(&app);

    assert_int_equal(run_app("--config config/app.yaml replay --projection nope", out, sizeof out),
                     2);
    assert_non_null(strstr(out, "no projection named nope"));
    assert_non_null(strstr(out, "user.projection"));
}

static void test_empty_read_store_is_rebuilt(void **state)
{
    (void)state;
    assert_int_equal(ts_app_start(&app, NULL), 0);
    world w;
    make_world(&w);

    /* Redis loses everything (as when restarted without persistence): the app notices and
     * builds every read model again from the log, by itself. */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "redis-cli -u '%s' FLUSHALL >/dev/null", ts_env("APP_REDIS_URL"));
    assert_int_equal(system(cmd), 0);
    check_world(&w, true);

    /* Meanwhile, a read of a model being rebuilt is a 503, never a wrong 404 for a user that
     * exists: every answer since the flush was 200 or 503. */
    char path[160];
    snprintf(path, sizeof path, "/v1/users/%s", w.users[3]);
    assert_int_equal(system(cmd), 0);
    for (int i = 0; i < 50; i++) {
        int status = status_of("GET", path, NULL, NULL);
        if (status != 200 && status != 503)
            fail_msg("GET %s answered %d while its read model was rebuilt", path, status);
    }
    check_world(&w, true);
    assert_int_equal(checkpoint_rows("user_ctx", "user.projection"), 1);
    assert_int_equal(checkpoint_rows("order_ctx", "order.projection"), 1);
    ts_app_stop_clean(&app);
}

/* Each test stops what it started and checks the stop; this only cleans up after a failed
 * one, so that what it left running cannot disturb the next. */
static int kill_leftovers(void **state)
{
    (void)state;
    ts_app_kill(&app);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_replay_while_serving, kill_leftovers),
        cmocka_unit_test_teardown(test_replay_without_a_service, kill_leftovers),
        cmocka_unit_test_teardown(test_empty_read_store_is_rebuilt, kill_leftovers),
    };
    return cmocka_run_group_tests_name("e2e replay", tests, NULL, NULL);
}
