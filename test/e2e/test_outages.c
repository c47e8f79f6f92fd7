/* End to end, the README's "When a dependency goes down" and "When Redis loses its data":
 * with PostgreSQL stopped, commands answer 503, read models keep answering from Redis,
 * audit trails and readiness answer 503, and all of it works again once PostgreSQL is back,
 * with no restart of the app; with Redis back empty, every read model is rebuilt from the
 * log by itself, readiness says "rebuilding" meanwhile, and its queries answer 503 with
 * Retry-After, never a wrong 404. Each step waits for what happened, never for a time. */
#include <cjson/cJSON.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "adapters/postgres/pg_event_store.h"
#include "core/uuid.h"
#include "test/support/http_client.h"
#include "test/support/services.h"

static ts_app app;
static const char *const json_headers[] = {"Content-Type: application/json", NULL};

static tc_response call(const char *method, const char *path, const char *body)
{
    tc_response r;
    memset(&r, 0, sizeof r);
    int rc = tc_http("127.0.0.1", app.port, method, path, body ? json_headers : NULL, body,
                     body ? strlen(body) : 0, &r);
    if (rc != 0)
        fail_msg("%s %s: %s", method, path, r.error);
    return r;
}

static void expect_problem(tc_response *r, int status)
{
    if (r->status != status)
        fail_msg("expected %d, got %d: %s", status, r->status, r->body ? r->body : "");
    const char *type = tc_header(r, "Content-Type");
    if (!type || !strstr(type, "application/problem+json"))
        fail_msg("a %d answer is not problem+json: %s", status, type ? type : "(none)");
}

/* Registers a user; returns 0 and its id on 201, else the status (the body is shown). */
static int try_register(const char *tag, char id[UUID_STR_LEN], char *email, size_t email_size)
{
    char u[UUID_STR_LEN], body[256];
    uuid_v4(u);
    snprintf(email, email_size, "%s.%.8s@outage.example", tag, u);
    snprintf(body, sizeof body, "{\"email\":\"%s\",\"name\":\"Outage\"}", email);
    tc_response r = call("POST", "/v1/users", body);
    int status = r.status;
    if (status == 201) {
        cJSON *j = tc_json(&r);
        snprintf(id, UUID_STR_LEN, "%s", cJSON_GetObjectItem(j, "id")->valuestring);
        cJSON_Delete(j);
        status = 0;
    }
    tc_response_free(&r);
    return status;
}

static void register_user(const char *tag, char id[UUID_STR_LEN], char *email, size_t size)
{
    int status = try_register(tag, id, email, size);
    if (status != 0)
        fail_msg("POST /v1/users answered %d", status);
}

typedef struct registration {
    char id[UUID_STR_LEN];
    char email[128];
} registration;

/* One registration: true on 201, false on 503; any other answer fails the test. */
static bool registers(void *arg)
{
    registration *r = arg;
    int status = try_register("after", r->id, r->email, sizeof r->email);
    if (status != 0 && status != 503)
        fail_msg("POST /v1/users answered %d after PostgreSQL came back", status);
    return status == 0;
}

typedef struct want {
    const char *path;
    int status;
    const char *email; /* when set, the body's email must be this */
} want;

static bool answers(void *arg)
{
    want *w = arg;
    tc_response r = call("GET", w->path, NULL);
    bool ok = r.status == w->status;
    if (ok && w->email) {
        cJSON *j = tc_json(&r);
        const cJSON *e = cJSON_GetObjectItem(j, "email");
        ok = cJSON_IsString(e) && strcmp(e->valuestring, w->email) == 0;
        cJSON_Delete(j);
    }
    tc_response_free(&r);
    return ok;
}

static void wait_answer(const char *path, int status, const char *email)
{
    want w = {path, status, email};
    if (ts_wait_until(answers, &w, TS_HANG_GUARD_MS) != 0)
        fail_msg("GET %s never answered %d", path, status);
}

/* /health/ready's status of one subscriber ("running", "rebuilding", ...), in out. */
static void subscriber_status(const char *name, char *out, size_t size)
{
    tc_response r = call("GET", "/health/ready", NULL);
    cJSON *j = tc_json(&r);
    const cJSON *s = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "subscriptions"), name);
    const cJSON *st = cJSON_GetObjectItem(s, "status");
    snprintf(out, size, "%s", cJSON_IsString(st) ? st->valuestring : "(absent)");
    cJSON_Delete(j);
    tc_response_free(&r);
}

typedef struct sub_want {
    const char *name;
    const char *status;
} sub_want;

static bool subscriber_is(void *arg)
{
    sub_want *w = arg;
    char now[32];
    subscriber_status(w->name, now, sizeof now);
    return strcmp(now, w->status) == 0;
}

static void wait_subscriber(const char *name, const char *status)
{
    sub_want w = {name, status};
    if (ts_wait_until(subscriber_is, &w, TS_HANG_GUARD_MS) != 0) {
        char now[32];
        subscriber_status(name, now, sizeof now);
        fail_msg("subscriber %s never became %s (it is %s)", name, status, now);
    }
}

/* The status of one readiness check ("up", "down"), in out; returns the HTTP status. */
static int ready_check(const char *check, char *out, size_t size)
{
    tc_response r = call("GET", "/health/ready", NULL);
    int status = r.status;
    cJSON *j = tc_json(&r);
    const cJSON *c = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "checks"), check);
    const cJSON *st = cJSON_GetObjectItem(c, "status");
    snprintf(out, size, "%s", cJSON_IsString(st) ? st->valuestring : "(absent)");
    cJSON_Delete(j);
    tc_response_free(&r);
    return status;
}

/* ---- PostgreSQL down ---------------------------------------------------------------- */

static void test_postgres_down(void **state)
{
    (void)state;
    char before[UUID_STR_LEN], email[128], path[160], trail[200];
    register_user("before", before, email, sizeof email);
    snprintf(path, sizeof path, "/v1/users/%s", before);
    snprintf(trail, sizeof trail, "/v1/users/%s/events", before);
    wait_answer(path, 200, email);

    assert_int_equal(ts_pg_stop(), 0);

    /* Commands: 503 (an answer, not a hang: tc_http gives up after the request timeout). */
    char id[UUID_STR_LEN], other[128];
    int status = try_register("during", id, other, sizeof other);
    if (status != 503)
        fail_msg("a registration with PostgreSQL down answered %d, not 503", status);
    tc_response r = call("POST", "/v1/users", "{\"email\":\"down@outage.example\",\"name\":\"D\"}");
    expect_problem(&r, 503);
    tc_response_free(&r);
    /* Read models keep answering from Redis; the audit trail is the log's, so 503. */
    r = call("GET", path, NULL);
    assert_int_equal(r.status, 200);
    tc_response_free(&r);
    r = call("GET", trail, NULL);
    expect_problem(&r, 503);
    tc_response_free(&r);
    /* Readiness: 503, naming PostgreSQL as what is down. */
    char check[32];
    assert_int_equal(ready_check("postgres", check, sizeof check), 503);
    assert_string_equal(check, "down");
    assert_int_equal(ready_check("redis", check, sizeof check), 503);
    assert_string_equal(check, "up");

    assert_int_equal(ts_pg_start(), 0);

    /* Back without a restart of the app: readiness, then commands (a command may still get
     * a 503 for a moment: the committer waits a quarter of a second between connection
     * attempts, but never anything else), projections and trails. */
    wait_answer("/health/ready", 200, NULL);
    registration after;
    if (ts_wait_until(registers, &after, TS_HANG_GUARD_MS) != 0)
        fail_msg("registrations kept answering 503 after PostgreSQL came back");
    char after_path[160];
    snprintf(after_path, sizeof after_path, "/v1/users/%s", after.id);
    wait_answer(after_path, 200, after.email);
    r = call("GET", trail, NULL);
    assert_int_equal(r.status, 200);
    tc_response_free(&r);
    /* Nothing of the refused commands reached the log. */
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM user_ctx.events WHERE data->>'email' IN ('%s', "
             "'down@outage.example')",
             other);
    assert_int_equal(ts_sql_int(sql), 0);
    /* ...while the command after the outage did (so the count above could see one). */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM user_ctx.events WHERE data->>'email' = '%s'",
             after.email);
    assert_int_equal(ts_sql_int(sql), 1);
}

/* ---- Redis back empty ----------------------------------------------------------------- */

/* A psql session of the test's own, kept open so that the locks it takes are held until
 * psql_end. "we": the pipe is close-on-exec, so an app started meanwhile does not hold it
 * open (which would keep the session, and its locks, alive after psql_end). */
static FILE *psql_begin(const char *sql)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "psql '%s' -qX -v ON_ERROR_STOP=1 >/dev/null",
             ts_env("APP_POSTGRES_DSN"));
    FILE *psql = popen(cmd, "we");
    assert_non_null(psql);
    fputs(sql, psql);
    fflush(psql);
    return psql;
}

/* Ends the session (psql reads EOF, exits, and its locks go with it). Accepts NULL. */
static void psql_end(FILE **psql)
{
    if (*psql)
        pclose(*psql);
    *psql = NULL;
}

static FILE *lease_holder, *log_locker;

static bool lease_held_by_test(void *unused)
{
    (void)unused;
    int32_t ns, key;
    pg_event_store_lease_lock("user", "user.projection", &ns, &key);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
             " AND classid = %u AND objid = %u AND objsubid = 2",
             (unsigned)ns, (uint32_t)key);
    return ts_sql_int(sql) == 1;
}

static bool user_log_locked(void *unused)
{
    (void)unused;
    return ts_sql_int("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
                      " JOIN pg_namespace n ON n.oid = c.relnamespace"
                      " WHERE n.nspname = 'user_ctx' AND c.relname = 'events'"
                      " AND l.mode = 'AccessExclusiveLock' AND l.granted") == 1;
}

/* Redis comes back empty while the app serves. To look at the rebuild however fast the
 * machine is, the test holds it open: it keeps user.projection's lease while Redis is
 * emptied (so the projection waits in standby), locks the user log, then lets the lease go.
 * The projection takes its lease, finds its read model gone, starts rebuilding, and waits
 * at its first read of the log until the test unlocks it. */
static void test_redis_back_empty(void **state)
{
    (void)state;
    char id[UUID_STR_LEN], email[128], path[160];
    register_user("kept", id, email, sizeof email);
    snprintf(path, sizeof path, "/v1/users/%s", id);
    wait_answer(path, 200, email);

    ts_app_stop_clean(&app);
    /* The lease of user.projection, held as the app would hold it. */
    int32_t ns, key;
    pg_event_store_lease_lock("user", "user.projection", &ns, &key);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT pg_advisory_lock(%d, %d);\n", (int)ns, (int)key);
    lease_holder = psql_begin(sql);
    assert_int_equal(ts_wait_until(lease_held_by_test, NULL, TS_HANG_GUARD_MS), 0);
    assert_int_equal(ts_app_start(&app, NULL), 0);
    wait_subscriber("user.projection", "standby");

    /* Redis restarts with nothing: its append-only file is gone. */
    assert_int_equal(ts_redis_stop(), 0);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/redis/appendonlydir'", ts_env("APP_TEST_RUN_DIR"));
    assert_int_equal(system(cmd), 0);
    assert_int_equal(ts_redis_start(), 0);

    log_locker = psql_begin("BEGIN;\nLOCK TABLE user_ctx.events IN ACCESS EXCLUSIVE MODE;\n");
    assert_int_equal(ts_wait_until(user_log_locked, NULL, TS_HANG_GUARD_MS), 0);
    psql_end(&lease_holder);

    /* Until it has caught up, readiness says so and its queries are 503 with Retry-After: 1,
     * never a 404 for a user that exists. */
    wait_subscriber("user.projection", "rebuilding");
    tc_response r = call("GET", path, NULL);
    expect_problem(&r, 503);
    const char *retry = tc_header(&r, "Retry-After");
    if (!retry || strcmp(retry, "1") != 0)
        fail_msg("Retry-After is %s, not 1", retry ? retry : "absent");
    tc_response_free(&r);

    psql_end(&log_locker);
    wait_subscriber("user.projection", "running");
    wait_answer(path, 200, email);
    wait_answer("/health/ready", 200, NULL);
    /* The lost generation's checkpoint went with it, though this process never knew which
     * generation that was: one row, the new generation's. */
    assert_int_equal(ts_sql_int("SELECT count(*) FROM user_ctx.checkpoints WHERE subscriber ="
                                " 'user.projection' OR subscriber LIKE 'user.projection@%'"),
                     1);
}

/* After a failure half-way, the locks must not outlive the test (the app's stop would wait
 * for a subscriber stuck behind them). */
static int release_locks(void **state)
{
    (void)state;
    psql_end(&lease_holder);
    psql_end(&log_locker);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_postgres_down),
        cmocka_unit_test_teardown(test_redis_back_empty, release_locks),
        cmocka_unit_test(ts_test_app_stops_cleanly),
    };
    ts_app_share(&app);
    return cmocka_run_group_tests_name("e2e outages", tests, ts_app_group_start, ts_app_group_end);
}
