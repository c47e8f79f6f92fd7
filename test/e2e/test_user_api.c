/* End to end: ./app (the sanitized build) against private PostgreSQL and Redis, spoken to
 * over HTTP exactly as API.md describes the user endpoints. */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/uuid.h"
#include "test/support/http_client.h"
#include "test/support/services.h"

static ts_app app;

/* ---- helpers ---------------------------------------------------------------------- */

static tc_response call(const char *method, const char *path, const char *const *headers,
                        const char *body)
{
    tc_response r;
    memset(&r, 0, sizeof r);
    int rc =
        tc_http("127.0.0.1", app.port, method, path, headers, body, body ? strlen(body) : 0, &r);
    assert_int_equal(rc, 0);
    return r;
}

static const char *const json_headers[] = {"Content-Type: application/json", NULL};

static void unique_email(char *out, size_t n, const char *tag)
{
    char id[UUID_STR_LEN];
    uuid_v4(id);
    snprintf(out, n, "%s.%.8s@example.com", tag, id);
}

/* Registers a user and returns its id (caller's buffer). */
static void register_user(const char *email, const char *name, char id[UUID_STR_LEN])
{
    char body[512];
    snprintf(body, sizeof body, "{\"email\":\"%s\",\"name\":\"%s\"}", email, name);
    tc_response r = call("POST", "/v1/users", json_headers, body);
    assert_int_equal(r.status, 201);
    cJSON *j = tc_json(&r);
    assert_non_null(j);
    const cJSON *jid = cJSON_GetObjectItem(j, "id");
    assert_true(cJSON_IsString(jid));
    snprintf(id, UUID_STR_LEN, "%s", jid->valuestring);
    cJSON_Delete(j);
    tc_response_free(&r);
}

typedef struct poll_arg {
    const char *path;
    int want_status;
    int min_version;
} poll_arg;

static bool poll_status(void *p)
{
    poll_arg *a = p;
    tc_response r = call("GET", a->path, NULL, NULL);
    bool ok = r.status == a->want_status;
    if (ok && a->min_version > 0) {
        cJSON *j = tc_json(&r);
        const cJSON *v = cJSON_GetObjectItem(j, "version");
        ok = cJSON_IsNumber(v) && v->valueint >= a->min_version;
        cJSON_Delete(j);
    }
    tc_response_free(&r);
    return ok;
}

/* Waits until GET path answers want_status (the read model is eventually consistent). */
static void wait_for(const char *path, int want_status, int min_version)
{
    poll_arg a = {path, want_status, min_version};
    assert_int_equal(ts_wait_until(poll_status, &a, 10000), 0);
}

static void assert_problem(const tc_response *r, int status)
{
    if (r->status != status)
        fail_msg("expected %d, got %d: %.*s", status, r->status, (int)r->body_len,
                 r->body ? r->body : "");
    const char *ct = tc_header(r, "Content-Type");
    assert_non_null(ct);
    assert_non_null(strstr(ct, "application/problem+json"));
    cJSON *j = tc_json(r);
    assert_non_null(j);
    assert_int_equal(cJSON_GetObjectItem(j, "status")->valueint, status);
    assert_true(cJSON_IsString(cJSON_GetObjectItem(j, "title")));
    assert_true(cJSON_IsString(cJSON_GetObjectItem(j, "type")));
    cJSON_Delete(j);
}

/* ---- fixtures --------------------------------------------------------------------- */

/* ---- tests ------------------------------------------------------------------------ */

static void test_register_read_and_audit_trail(void **state)
{
    (void)state;
    char email[128], body[512];
    unique_email(email, sizeof email, "Ada");
    snprintf(body, sizeof body, "{\"email\":\"  %s \",\"name\":\"Ada Lovelace\"}", email);
    const char *const headers[] = {"Content-Type: application/json",
                                   "X-Request-ID: req-e2e-register-1", NULL};
    tc_response r = call("POST", "/v1/users", headers, body);
    assert_int_equal(r.status, 201);
    assert_string_equal(tc_header(&r, "X-Request-ID"), "req-e2e-register-1");
    cJSON *u = tc_json(&r);
    const char *id = cJSON_GetObjectItem(u, "id")->valuestring;
    assert_true(uuid_valid(id));
    assert_string_equal(cJSON_GetObjectItem(u, "email")->valuestring, email);
    assert_string_equal(cJSON_GetObjectItem(u, "status")->valuestring, "active");
    assert_int_equal(cJSON_GetObjectItem(u, "version")->valueint, 1);
    char location[128];
    snprintf(location, sizeof location, "/v1/users/%s", id);
    assert_string_equal(tc_header(&r, "Location"), location);
    tc_response_free(&r);

    wait_for(location, 200, 1);
    r = call("GET", location, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(tc_header(&r, "ETag"), "\"1\"");
    cJSON *g = tc_json(&r);
    assert_string_equal(cJSON_GetObjectItem(g, "name")->valuestring, "Ada Lovelace");
    cJSON_Delete(g);
    tc_response_free(&r);

    char path[160];
    snprintf(path, sizeof path, "/v1/users/%s/events", id);
    r = call("GET", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    cJSON *ev = tc_json(&r);
    const cJSON *items = cJSON_GetObjectItem(ev, "items");
    assert_int_equal(cJSON_GetArraySize(items), 1);
    const cJSON *e0 = cJSON_GetArrayItem(items, 0);
    assert_string_equal(cJSON_GetObjectItem(e0, "type")->valuestring, "user.user.registered");
    assert_int_equal(cJSON_GetObjectItem(e0, "version")->valueint, 1);
    assert_true(uuid_valid(cJSON_GetObjectItem(e0, "eventId")->valuestring));
    const cJSON *md = cJSON_GetObjectItem(e0, "metadata");
    assert_string_equal(cJSON_GetObjectItem(md, "correlationId")->valuestring,
                        "req-e2e-register-1");
    assert_true(cJSON_IsString(cJSON_GetObjectItem(md, "causationId")));
    cJSON_Delete(ev);
    tc_response_free(&r);
    cJSON_Delete(u);
}

static void test_email_unique_case_insensitive(void **state)
{
    (void)state;
    char email[128], upper[128], id[UUID_STR_LEN], body[512];
    unique_email(email, sizeof email, "grace");
    register_user(email, "Grace", id);
    snprintf(upper, sizeof upper, "%s", email);
    for (char *p = upper; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    snprintf(body, sizeof body, "{\"email\":\"%s\",\"name\":\"Other\"}", upper);
    tc_response r = call("POST", "/v1/users", json_headers, body);
    assert_problem(&r, 409);
    tc_response_free(&r);
}

typedef struct race_arg {
    const char *method;
    const char *path;
    const char *body;
    const char *const *headers;
    int status;
} race_arg;

static void *race_thread(void *p)
{
    race_arg *a = p;
    tc_response r;
    memset(&r, 0, sizeof r);
    if (tc_http("127.0.0.1", app.port, a->method, a->path, a->headers, a->body, strlen(a->body),
                &r) == 0)
        a->status = r.status;
    tc_response_free(&r);
    return NULL;
}

static void race(race_arg *args, int n, int *count_201_or_200, int *count_other_expected,
                 int expected_other)
{
    pthread_t th[64];
    for (int i = 0; i < n; i++)
        assert_int_equal(pthread_create(&th[i], NULL, race_thread, &args[i]), 0);
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    *count_201_or_200 = 0;
    *count_other_expected = 0;
    for (int i = 0; i < n; i++) {
        if (args[i].status == 201 || args[i].status == 200)
            (*count_201_or_200)++;
        else if (args[i].status == expected_other)
            (*count_other_expected)++;
        else
            fail_msg("unexpected status %d", args[i].status);
    }
}

static void test_concurrent_registrations_of_one_email(void **state)
{
    (void)state;
    char email[128], body[512];
    unique_email(email, sizeof email, "race");
    snprintf(body, sizeof body, "{\"email\":\"%s\",\"name\":\"Racer\"}", email);
    race_arg args[50];
    for (int i = 0; i < 50; i++)
        args[i] = (race_arg){"POST", "/v1/users", body, json_headers, 0};
    int created, conflicts;
    race(args, 50, &created, &conflicts, 409);
    assert_int_equal(created, 1);
    assert_int_equal(conflicts, 49);
}

static void test_concurrent_email_changes_with_if_match(void **state)
{
    (void)state;
    char email[128], id[UUID_STR_LEN], path[160];
    unique_email(email, sizeof email, "change");
    register_user(email, "Changer", id);
    snprintf(path, sizeof path, "/v1/users/%s/email", id);
    static char bodies[50][160];
    race_arg args[50];
    const char *const headers[] = {"Content-Type: application/json", "If-Match: \"1\"", NULL};
    for (int i = 0; i < 50; i++) {
        char e[128];
        unique_email(e, sizeof e, "changed");
        snprintf(bodies[i], sizeof bodies[i], "{\"email\":\"%s\"}", e);
        args[i] = (race_arg){"PUT", path, bodies[i], headers, 0};
    }
    int ok, precondition;
    race(args, 50, &ok, &precondition, 412);
    assert_int_equal(ok, 1);
    assert_int_equal(precondition, 49);

    char events[160];
    snprintf(events, sizeof events, "/v1/users/%s/events", id);
    tc_response r = call("GET", events, NULL, NULL);
    cJSON *j = tc_json(&r);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "items")), 2);
    cJSON_Delete(j);
    tc_response_free(&r);
}

static void test_change_email_and_deactivate(void **state)
{
    (void)state;
    char email[128], email2[128], id[UUID_STR_LEN], path[160], body[256];
    unique_email(email, sizeof email, "life");
    unique_email(email2, sizeof email2, "life2");
    register_user(email, "Life Cycle", id);

    snprintf(path, sizeof path, "/v1/users/%s/email", id);
    snprintf(body, sizeof body, "{\"email\":\"%s\"}", email2);
    const char *const stale[] = {"Content-Type: application/json", "If-Match: \"7\"", NULL};
    tc_response r = call("PUT", path, stale, body);
    assert_problem(&r, 412);
    tc_response_free(&r);

    r = call("PUT", path, json_headers, body);
    assert_int_equal(r.status, 200);
    cJSON *u = tc_json(&r);
    assert_string_equal(cJSON_GetObjectItem(u, "email")->valuestring, email2);
    assert_int_equal(cJSON_GetObjectItem(u, "version")->valueint, 2);
    cJSON_Delete(u);
    tc_response_free(&r);

    /* The old address is free again. */
    char other[UUID_STR_LEN];
    register_user(email, "Someone Else", other);

    char deact[160];
    snprintf(deact, sizeof deact, "/v1/users/%s/deactivate", id);
    for (int i = 0; i < 2; i++) {
        r = call("POST", deact, NULL, NULL);
        assert_int_equal(r.status, 200);
        u = tc_json(&r);
        assert_string_equal(cJSON_GetObjectItem(u, "status")->valuestring, "deactivated");
        assert_int_equal(cJSON_GetObjectItem(u, "version")->valueint, 3);
        cJSON_Delete(u);
        tc_response_free(&r);
    }
    r = call("PUT", path, json_headers, "{\"email\":\"new.one@example.com\"}");
    assert_problem(&r, 409);
    tc_response_free(&r);

    char get[160];
    snprintf(get, sizeof get, "/v1/users/%s", id);
    wait_for(get, 200, 3);
}

static void test_bad_input(void **state)
{
    (void)state;
    static const struct {
        const char *method, *path, *ctype, *body;
        int status;
    } cases[] = {
        {"POST", "/v1/users", "application/json", "{\"email\":", 400},
        {"POST", "/v1/users", "application/json", "[1,2]", 400},
        {"POST", "/v1/users", "application/json", "{\"email\":5,\"name\":\"x\"}", 400},
        {"POST", "/v1/users", "application/json", "{\"email\":\"a@b.co\",\"name\":[]}", 400},
        {"POST", "/v1/users", "application/json", "{\"name\":\"No Email\"}", 422},
        {"POST", "/v1/users", "application/json", "{\"email\":\"not-an-email\",\"name\":\"x\"}",
         422},
        {"POST", "/v1/users", "application/json", "{\"email\":\"a@b.co\",\"name\":\"  \"}", 422},
        {"POST", "/v1/users", "text/plain", "{\"email\":\"a@b.co\",\"name\":\"x\"}", 415},
        {"POST", "/v1/users", "application/json", "{\"email\":\"\xff\xfe@b.co\",\"name\":\"x\"}",
         400},
        {"POST", "/v1/users", "application/json", "", 400},
        {"GET", "/v1/nothing-here", NULL, NULL, 404},
        {"DELETE", "/v1/users", NULL, NULL, 405},
        {"GET", "/v1/users/not-a-uuid", NULL, NULL, 404},
        {"GET", "/v1/users/00000000-0000-4000-8000-000000000000", NULL, NULL, 404},
        {"GET", "/v1/users/00000000-0000-4000-8000-000000000000/events", NULL, NULL, 404},
        {"POST", "/v1/users/00000000-0000-4000-8000-000000000000/deactivate", NULL, NULL, 404},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char ct[64];
        snprintf(ct, sizeof ct, "Content-Type: %s", cases[i].ctype ? cases[i].ctype : "");
        const char *const headers[] = {cases[i].ctype ? ct : NULL, NULL};
        tc_response r = call(cases[i].method, cases[i].path, headers, cases[i].body);
        if (r.status != cases[i].status)
            fail_msg("case %zu (%s %s %s): expected %d, got %d: %.*s", i, cases[i].method,
                     cases[i].path, cases[i].body ? cases[i].body : "", cases[i].status, r.status,
                     (int)r.body_len, r.body ? r.body : "");
        assert_problem(&r, cases[i].status);
        tc_response_free(&r);
    }

    /* A name of 201 characters, and one of 200 multi-byte characters that is fine. */
    char body[2048], name[1024];
    memset(name, 'n', 201);
    name[201] = '\0';
    snprintf(body, sizeof body, "{\"email\":\"long@example.com\",\"name\":\"%s\"}", name);
    tc_response r = call("POST", "/v1/users", json_headers, body);
    assert_problem(&r, 422);
    cJSON *p = tc_json(&r);
    const cJSON *errors = cJSON_GetObjectItem(p, "errors");
    assert_true(cJSON_GetArraySize(errors) >= 1);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(errors, 0), "field")->valuestring,
                        "name");
    cJSON_Delete(p);
    tc_response_free(&r);

    /* Bad If-Match values. */
    char email[128], id[UUID_STR_LEN], path[160];
    unique_email(email, sizeof email, "ifmatch");
    register_user(email, "If Match", id);
    snprintf(path, sizeof path, "/v1/users/%s/email", id);
    const char *const bad_if_match[] = {"Content-Type: application/json", "If-Match: banana", NULL};
    r = call("PUT", path, bad_if_match, "{\"email\":\"x1@example.com\"}");
    assert_problem(&r, 400);
    tc_response_free(&r);
    const char *const half_quoted[] = {"Content-Type: application/json", "If-Match: \"1", NULL};
    r = call("PUT", path, half_quoted, "{\"email\":\"x1@example.com\"}");
    assert_problem(&r, 400);
    tc_response_free(&r);
    /* A bare version is read as the quoted one: stale here, so 412 and nothing changed. */
    const char *const bare[] = {"Content-Type: application/json", "If-Match: 7", NULL};
    r = call("PUT", path, bare, "{\"email\":\"x1@example.com\"}");
    assert_problem(&r, 412);
    tc_response_free(&r);

    /* An oversized body (the test config allows 1 MiB). */
    size_t big = 2u * 1024 * 1024;
    char *huge = malloc(big + 1);
    assert_non_null(huge);
    memset(huge, ' ', big);
    huge[0] = '{';
    huge[big - 1] = '}';
    huge[big] = '\0';
    r = call("POST", "/v1/users", json_headers, huge);
    assert_problem(&r, 413);
    tc_response_free(&r);
    free(huge);

    /* And it keeps serving. */
    r = call("GET", "/health/live", NULL, NULL);
    assert_int_equal(r.status, 200);
    tc_response_free(&r);
}

static void test_metrics_exposition(void **state)
{
    (void)state;
    tc_response r = call("GET", "/metrics", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(tc_header(&r, "Content-Type"), "text/plain"));
    static const char *const wanted[] = {
        "http_requests_total{",     "http_request_duration_seconds_bucket{",
        "commands_total{",          "eventstore_append_duration_seconds",
        "subscription_lag_events{", "subscription_lag_seconds{",
    };
    for (size_t i = 0; i < sizeof wanted / sizeof wanted[0]; i++)
        if (!strstr(r.body, wanted[i]))
            fail_msg("metrics lack %s", wanted[i]);
    assert_non_null(strstr(r.body, "command=\"user.register_user\",outcome=\"ok\""));
    tc_response_free(&r);
}

static double metric(const char *sample)
{
    return tc_metric("127.0.0.1", app.port, sample, 0);
}

#define LOOP_READS   "http_read_model_answers_total{route=\"/v1/users/{id}\",answered=\"loop\"}"
#define WORKER_READS "http_read_model_answers_total{route=\"/v1/users/{id}\",answered=\"worker\"}"
#define USER_QUERIES "queries_total{query=\"user.get_user\",outcome=\"ok\"}"

/* GET /v1/users/{id} is answered on the HTTP loop from the read model (redis.loop_reads),
 * the same answer the query gives on a worker: each read is counted on one of the two, and
 * as the query it answers. A user the read model has not seen goes to the worker. */
static void test_reads_on_the_loop(void **state)
{
    (void)state;
    char email[128], id[UUID_STR_LEN], path[160];
    unique_email(email, sizeof email, "loop");
    register_user(email, "Loop Reader", id);
    snprintf(path, sizeof path, "/v1/users/%s", id);
    wait_for(path, 200, 1);

    double loop0 = metric(LOOP_READS), worker0 = metric(WORKER_READS);
    double queries0 = metric(USER_QUERIES);
    char *first = NULL;
    const int n = 20;
    for (int i = 0; i < n; i++) {
        tc_response r = call(i % 2 ? "HEAD" : "GET", path, NULL, NULL);
        assert_int_equal(r.status, 200);
        assert_string_equal(tc_header(&r, "ETag"), "\"1\"");
        assert_non_null(strstr(tc_header(&r, "Content-Type"), "application/json"));
        if (i % 2 == 0) {
            if (!first)
                first = strndup(r.body, r.body_len);
            else
                assert_string_equal(r.body, first);
        }
        tc_response_free(&r);
    }
    cJSON *u = cJSON_Parse(first);
    assert_string_equal(cJSON_GetObjectItem(u, "id")->valuestring, id);
    assert_string_equal(cJSON_GetObjectItem(u, "name")->valuestring, "Loop Reader");
    cJSON_Delete(u);
    free(first);
    double loop = metric(LOOP_READS) - loop0, worker = metric(WORKER_READS) - worker0;
    print_message("%d reads: %.0f on the loop, %.0f on a worker\n", n, loop, worker);
    assert_true(loop + worker == n);
    /* A worker refreshes the read model's control record every 250 ms: that read, no more. */
    assert_true(loop >= n / 2);
    assert_true(metric(USER_QUERIES) - queries0 == n);

    /* Unknown: the worker's answer (404), counted there. */
    char other[UUID_STR_LEN], unknown[160];
    uuid_v4(other);
    snprintf(unknown, sizeof unknown, "/v1/users/%s", other);
    worker0 = metric(WORKER_READS);
    tc_response r = call("GET", unknown, NULL, NULL);
    assert_problem(&r, 404);
    tc_response_free(&r);
    assert_true(metric(WORKER_READS) - worker0 == 1);
    /* Not a UUID: the route's own answer, not a read. */
    loop0 = metric(LOOP_READS);
    worker0 = metric(WORKER_READS);
    r = call("GET", "/v1/users/not-a-uuid", NULL, NULL);
    assert_problem(&r, 404);
    tc_response_free(&r);
    assert_true(metric(LOOP_READS) == loop0 && metric(WORKER_READS) == worker0);
}

static void test_ready(void **state)
{
    (void)state;
    tc_response r = call("GET", "/health/ready", NULL, NULL);
    assert_int_equal(r.status, 200);
    cJSON *j = tc_json(&r);
    assert_string_equal(cJSON_GetObjectItem(j, "status")->valuestring, "ok");
    const cJSON *checks = cJSON_GetObjectItem(j, "checks");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(checks, "postgres"), "status")->valuestring, "up");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(checks, "redis"), "status")->valuestring, "up");
    /* Every subscriber with where it runs and how far behind it is. */
    const cJSON *subs = cJSON_GetObjectItem(j, "subscriptions");
    const cJSON *proj = cJSON_GetObjectItem(subs, "user.projection");
    assert_non_null(proj);
    assert_string_equal(cJSON_GetObjectItem(proj, "status")->valuestring, "running");
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(proj, "lagEvents")));
    assert_true(cJSON_IsNumber(cJSON_GetObjectItem(proj, "lagSeconds")));
    assert_non_null(cJSON_GetObjectItem(subs, "order.placement_saga"));
    cJSON_Delete(j);
    tc_response_free(&r);
}

static bool projection_behind(void *unused)
{
    (void)unused;
    tc_response r = call("GET", "/health/ready", NULL, NULL);
    cJSON *j = tc_json(&r);
    const cJSON *p =
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "subscriptions"), "user.projection");
    bool behind = cJSON_GetObjectItem(p, "lagEvents") &&
                  cJSON_GetObjectItem(p, "lagEvents")->valuedouble >= 1 &&
                  cJSON_GetObjectItem(p, "lagSeconds")->valuedouble > 0 &&
                  strcmp(cJSON_GetObjectItem(p, "status")->valuestring, "failing") == 0;
    cJSON_Delete(j);
    tc_response_free(&r);
    return behind;
}

/* Killing Redis: readiness says so, commands go on, the read model catches up after. */
static void test_redis_outage(void **state)
{
    (void)state;
    assert_int_equal(ts_redis_stop(), 0);
    tc_response r = call("GET", "/health/ready", NULL, NULL);
    assert_int_equal(r.status, 503);
    cJSON *j = tc_json(&r);
    const cJSON *checks = cJSON_GetObjectItem(j, "checks");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(checks, "redis"), "status")->valuestring, "down");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(checks, "postgres"), "status")->valuestring, "up");
    cJSON_Delete(j);
    tc_response_free(&r);

    char email[128], id[UUID_STR_LEN], path[160];
    unique_email(email, sizeof email, "outage");
    register_user(email, "During Outage", id);
    snprintf(path, sizeof path, "/v1/users/%s", id);
    r = call("GET", path, NULL, NULL);
    assert_problem(&r, 503);
    /* At once, with a time to come back: the breaker answers without waiting for Redis. */
    const char *retry = tc_header(&r, "Retry-After");
    if (!retry || atoi(retry) < 1)
        fail_msg("a 503 while Redis is down has Retry-After \"%s\", not whole seconds",
                 retry ? retry : "(none)");
    tc_response_free(&r);
    /* The projection cannot write: readiness shows it behind, in events and in seconds. */
    assert_int_equal(ts_wait_until(projection_behind, NULL, 10000), 0);

    assert_int_equal(ts_redis_start(), 0);
    wait_for("/health/ready", 200, 0);
    wait_for(path, 200, 1);
}

/* Everything written before a restart is there after it. */
static void test_restart_keeps_data(void **state)
{
    (void)state;
    char email[128], id[UUID_STR_LEN], path[160];
    unique_email(email, sizeof email, "durable");
    register_user(email, "Durable", id);
    ts_app_stop_clean(&app);
    assert_int_equal(ts_app_start(&app, NULL), 0);
    snprintf(path, sizeof path, "/v1/users/%s/events", id);
    tc_response r = call("GET", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    tc_response_free(&r);
    snprintf(path, sizeof path, "/v1/users/%s", id);
    wait_for(path, 200, 1);
    /* The email is still taken. */
    char body[256];
    snprintf(body, sizeof body, "{\"email\":\"%s\",\"name\":\"Again\"}", email);
    r = call("POST", "/v1/users", json_headers, body);
    assert_problem(&r, 409);
    tc_response_free(&r);
}

static int count_events(const char *id)
{
    char path[160];
    snprintf(path, sizeof path, "/v1/users/%s/events", id);
    tc_response r = call("GET", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    cJSON *j = tc_json(&r);
    int n = cJSON_GetArraySize(cJSON_GetObjectItem(j, "items"));
    cJSON_Delete(j);
    tc_response_free(&r);
    return n;
}

/* A retry with the same Idempotency-Key gets the first answer, also after the process was
 * killed and started again; the command ran once; another body under the key is 422. */
static void test_idempotency_key(void **state)
{
    (void)state;
    char email[128], body[256], key[80], key_header[128], uid[UUID_STR_LEN];
    unique_email(email, sizeof email, "idem");
    uuid_v4(uid);
    snprintf(key, sizeof key, "signup-%s", uid);
    snprintf(key_header, sizeof key_header, "Idempotency-Key: %s", key);
    snprintf(body, sizeof body, "{\"email\":\"%s\",\"name\":\"Idem Potent\"}", email);
    const char *const headers[] = {"Content-Type: application/json", key_header, NULL};

    tc_response first = call("POST", "/v1/users", headers, body);
    assert_int_equal(first.status, 201);
    assert_null(tc_header(&first, "Idempotent-Replayed"));
    tc_response again = call("POST", "/v1/users", headers, body);
    assert_int_equal(again.status, 201);
    assert_string_equal(again.body, first.body);
    assert_string_equal(tc_header(&again, "Idempotent-Replayed"), "true");
    assert_string_equal(tc_header(&again, "Location"), tc_header(&first, "Location"));
    cJSON *u = tc_json(&first);
    char id[UUID_STR_LEN];
    snprintf(id, sizeof id, "%s", cJSON_GetObjectItem(u, "id")->valuestring);
    cJSON_Delete(u);
    assert_int_equal(count_events(id), 1);

    /* The record is durable with the events: a crash does not make the retry run again. */
    assert_int_equal(ts_app_stop(&app, SIGKILL), 137);
    assert_int_equal(ts_app_start(&app, NULL), 0);
    tc_response after = call("POST", "/v1/users", headers, body);
    assert_int_equal(after.status, 201);
    assert_string_equal(after.body, first.body);
    assert_string_equal(tc_header(&after, "Idempotent-Replayed"), "true");
    tc_response_free(&after);
    assert_int_equal(count_events(id), 1);

    char other[256];
    snprintf(other, sizeof other, "{\"email\":\"%s\",\"name\":\"Someone Else\"}", email);
    tc_response refused = call("POST", "/v1/users", headers, other);
    assert_problem(&refused, 422);
    assert_non_null(strstr(refused.body, "Idempotency-Key"));
    tc_response_free(&refused);

    /* A refused request is not recorded: its key works for the corrected request. */
    uuid_v4(uid);
    snprintf(key_header, sizeof key_header, "Idempotency-Key: fix-%s", uid);
    tc_response bad = call("POST", "/v1/users", headers, "{\"email\":\"nope\",\"name\":\"X\"}");
    assert_problem(&bad, 422);
    tc_response_free(&bad);
    unique_email(email, sizeof email, "fixed");
    snprintf(body, sizeof body, "{\"email\":\"%s\",\"name\":\"Fixed\"}", email);
    tc_response fixed = call("POST", "/v1/users", headers, body);
    assert_int_equal(fixed.status, 201);
    tc_response_free(&fixed);

    tc_response_free(&first);
    tc_response_free(&again);
}

/* A PUT honours an Idempotency-Key as a POST does: the retry gets the first answer's very
 * bytes, even after the resource changed since, and the command does not run again. */
static void test_idempotent_put(void **state)
{
    (void)state;
    char email[128], email2[128], email3[128], id[UUID_STR_LEN], path[160], body[256];
    char key_header[128], uid[UUID_STR_LEN];
    unique_email(email, sizeof email, "put");
    unique_email(email2, sizeof email2, "put2");
    unique_email(email3, sizeof email3, "put3");
    register_user(email, "Put Twice", id);
    snprintf(path, sizeof path, "/v1/users/%s/email", id);
    uuid_v4(uid);
    snprintf(key_header, sizeof key_header, "Idempotency-Key: email-%s", uid);
    const char *const keyed[] = {"Content-Type: application/json", key_header, NULL};

    snprintf(body, sizeof body, "{\"email\":\"%s\"}", email2);
    tc_response first = call("PUT", path, keyed, body);
    assert_int_equal(first.status, 200);
    assert_null(tc_header(&first, "Idempotent-Replayed"));
    /* Someone else changes the email meanwhile, without a key. */
    char body3[256];
    snprintf(body3, sizeof body3, "{\"email\":\"%s\"}", email3);
    tc_response other = call("PUT", path, json_headers, body3);
    assert_int_equal(other.status, 200);
    tc_response_free(&other);

    tc_response again = call("PUT", path, keyed, body);
    assert_int_equal(again.status, 200);
    assert_string_equal(again.body, first.body);
    assert_string_equal(tc_header(&again, "Idempotent-Replayed"), "true");
    assert_string_equal(tc_header(&again, "ETag"), tc_header(&first, "ETag"));
    /* Registered, then two changes: the retry appended nothing. */
    assert_int_equal(count_events(id), 3);
    /* The retry changed nothing back: the latest email stands. */
    char user_path[160];
    snprintf(user_path, sizeof user_path, "/v1/users/%s", id);
    wait_for(user_path, 200, 3);
    tc_response now = call("GET", user_path, NULL, NULL);
    cJSON *u = tc_json(&now);
    assert_string_equal(cJSON_GetObjectItem(u, "email")->valuestring, email3);
    cJSON_Delete(u);
    tc_response_free(&now);

    /* The same key for another request is refused, and runs nothing. */
    tc_response refused = call("PUT", path, keyed, body3);
    assert_problem(&refused, 422);
    assert_non_null(strstr(refused.body, "Idempotency-Key"));
    tc_response_free(&refused);
    assert_int_equal(count_events(id), 3);
    tc_response_free(&first);
    tc_response_free(&again);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ready),
        cmocka_unit_test(test_register_read_and_audit_trail),
        cmocka_unit_test(test_email_unique_case_insensitive),
        cmocka_unit_test(test_concurrent_registrations_of_one_email),
        cmocka_unit_test(test_concurrent_email_changes_with_if_match),
        cmocka_unit_test(test_change_email_and_deactivate),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_metrics_exposition),
        cmocka_unit_test(test_reads_on_the_loop),
        cmocka_unit_test(test_redis_outage),
        cmocka_unit_test(test_restart_keeps_data),
        cmocka_unit_test(test_idempotency_key),
        cmocka_unit_test(test_idempotent_put),
        cmocka_unit_test(ts_test_app_stops_cleanly),
    };
    ts_app_share(&app);
    return cmocka_run_group_tests_name("e2e user api", tests, ts_app_group_start, ts_app_group_end);
}
