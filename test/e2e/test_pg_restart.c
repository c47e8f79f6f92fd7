/* PostgreSQL restarted under load, `pg_ctl restart -m fast` and then `-m immediate`, while
 * eight clients register users, each request with an Idempotency-Key of its own:
 * - every answer is 201 or 503 (with Retry-After): never a 500, never one slower than the
 *   request timeout;
 * - a client that gets a 503 sends the request again with the same key until it gets an
 *   answer, as the 503 says ("outcome unknown" ones included);
 * - afterwards every registration answered 201 is in the log exactly once, and nothing else
 *   is: the test checks the log against its own list of 2xx replies;
 * - the pool, the committer and the subscribers came back by themselves: a new registration
 *   succeeds and reaches the read model, without restarting the app.
 * And the one case a restart makes rare: the database commits and the answer is lost (a proxy
 * that reads the wire protocol cuts there). The client gets 503 "outcome unknown"; the same
 * request with the same Idempotency-Key then gets the first outcome, and the log holds the
 * registration once. */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/uuid.h"
#include "test/support/http_client.h"
#include "test/support/pg_proxy.h"
#include "test/support/services.h"
#include "test/support/str_map.h"

#define CLIENTS    8
#define PER_CLIENT 4000 /* at most; the load stops before */
#define TIMEOUT_MS 5000 /* http.request_timeout_ms of the app */

static ts_app app;
static const char *const app_env[] = {"APP_HTTP_REQUEST_TIMEOUT_MS=5000", NULL};

/* What one client saw. */
typedef struct client {
    pthread_t thread;
    int n;                              /* registrations it finished */
    char emails[PER_CLIENT][64];        /* of those answered 201 */
    char ids[PER_CLIENT][UUID_STR_LEN]; /* the ids they were answered with */
    int answered;                       /* 2xx */
    int unavailable, unknown;           /* 503s, and those of them "outcome unknown" */
    int bad;                            /* any other answer: a failure of the test */
    char bad_what[256];
    long long slowest_ms;
} client;

static client clients[CLIENTS];
static atomic_bool stop_load;
static char tag[9];

static int setup(void **state)
{
    (void)state;
    ts_app_share(&app);
    return ts_app_start(&app, app_env);
}

static void note_bad(client *c, const char *fmt, ...)
{
    if (c->bad++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->bad_what, sizeof c->bad_what, fmt, ap);
        va_end(ap);
    }
}

/* Registers one user, sending the request again with the same key after each 503. */
static void register_one(client *c, int who, int i)
{
    char key[UUID_STR_LEN], key_header[80], body[160], email[64];
    uuid_v4(key);
    snprintf(key_header, sizeof key_header, "Idempotency-Key: %s", key);
    snprintf(email, sizeof email, "r%s.%d.%d@example.com", tag, who, i);
    snprintf(body, sizeof body, "{\"email\":\"%s\",\"name\":\"Restart %d %d\"}", email, who, i);
    const char *headers[] = {"Content-Type: application/json", key_header, NULL};
    for (int attempt = 0; attempt < 600; attempt++) {
        tc_response r;
        memset(&r, 0, sizeof r);
        long long t0 = ts_now_ms();
        int rc =
            tc_http("127.0.0.1", app.port, "POST", "/v1/users", headers, body, strlen(body), &r);
        long long took = ts_now_ms() - t0;
        if (took > c->slowest_ms)
            c->slowest_ms = took;
        if (rc != 0) {
            note_bad(c, "no answer: %s", r.error);
        } else if (r.status == 201 || r.status == 200) {
            cJSON *j = tc_json(&r);
            const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(j, "id"));
            if (id) {
                snprintf(c->emails[c->answered], sizeof c->emails[0], "%s", email);
                snprintf(c->ids[c->answered], sizeof c->ids[0], "%s", id);
                c->answered++;
            } else {
                note_bad(c, "a %d without an id: %s", r.status, r.body);
            }
            cJSON_Delete(j);
            tc_response_free(&r);
            return;
        } else if (r.status == 503) {
            c->unavailable++;
            if (strstr(r.body, "outcome unknown"))
                c->unknown++;
            if (!tc_header(&r, "Retry-After"))
                note_bad(c, "a 503 without Retry-After");
            tc_response_free(&r);
            usleep(100 * 1000); /* Retry-After says 1 s; a busy client comes back sooner */
            continue;
        } else {
            note_bad(c, "%d: %s", r.status, r.body);
        }
        tc_response_free(&r);
        return;
    }
    note_bad(c, "still 503 after 600 tries");
}

static void *client_main(void *arg)
{
    client *c = arg;
    int who = (int)(c - clients);
    for (int i = 0; i < PER_CLIENT && !atomic_load(&stop_load); i++) {
        register_one(c, who, i);
        c->n++;
    }
    return NULL;
}

static int finished(void)
{
    int n = 0;
    for (int i = 0; i < CLIENTS; i++)
        n += clients[i].n;
    return n;
}

/* Waits until the clients finished `more` registrations past now. */
static void load_for(int more)
{
    int until = finished() + more;
    for (int i = 0; i < 600 && finished() < until; i++)
        usleep(100 * 1000);
    assert_true(finished() >= until);
}

static bool projected(void *arg)
{
    char key[64];
    snprintf(key, sizeof key, "user:%s", (const char *)arg);
    return ts_read_model_has("user.projection", key);
}

static void test_restarts_under_load_lose_nothing(void **state)
{
    (void)state;
    char id[UUID_STR_LEN];
    uuid_v4(id);
    snprintf(tag, sizeof tag, "%.8s", id);
    memset(clients, 0, sizeof clients);
    atomic_store(&stop_load, false);
    for (int i = 0; i < CLIENTS; i++)
        assert_int_equal(pthread_create(&clients[i].thread, NULL, client_main, &clients[i]), 0);

    load_for(200);
    assert_int_equal(ts_pg_restart("fast"), 0);
    load_for(200);
    assert_int_equal(ts_pg_restart("immediate"), 0);
    load_for(200);
    atomic_store(&stop_load, true);
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(clients[i].thread, NULL);

    int answered = 0, unavailable = 0, unknown = 0;
    long long slowest = 0;
    for (int i = 0; i < CLIENTS; i++) {
        client *c = &clients[i];
        if (c->bad)
            fail_msg("client %d got %d wrong answers, the first: %s", i, c->bad, c->bad_what);
        answered += c->answered;
        unavailable += c->unavailable;
        unknown += c->unknown;
        if (c->slowest_ms > slowest)
            slowest = c->slowest_ms;
    }
    print_message("%d registrations answered 201, %d answers 503 (%d of them outcome unknown), "
                  "slowest answer %lld ms\n",
                  answered, unavailable, unknown, slowest);
    if (slowest > TIMEOUT_MS + 2000)
        fail_msg("an answer took %lld ms, past the request timeout of %d ms", slowest, TIMEOUT_MS);

    /* The log holds each 2xx registration exactly once, with the id it was answered with,
     * and no registration of this run that was not answered 2xx: one query lists the run's
     * registrations (by their emails) with how many each stream has. */
    char sql[256], stream[96];
    snprintf(sql, sizeof sql,
             "SELECT stream_id, count(*) FROM user_ctx.events"
             " WHERE event_type = 'user.user.registered' AND data->>'email' LIKE 'r%s.%%'"
             " GROUP BY stream_id",
             tag);
    ts_map *in_log = ts_sql_map(sql); /* stream id -> registrations */
    for (int i = 0; i < CLIENTS; i++)
        for (int k = 0; k < clients[i].answered; k++) {
            snprintf(stream, sizeof stream, "user-%s", clients[i].ids[k]);
            long long n = 0;
            ts_map_get(in_log, stream, &n);
            if (n != 1)
                fail_msg("user %s (%s), answered 201, has %lld registrations in the log",
                         clients[i].ids[k], clients[i].emails[k], n);
        }
    assert_int_equal(ts_map_size(in_log), answered);
    ts_map_free(in_log);

    /* Everything came back by itself: a new registration succeeds and is projected. */
    client after;
    memset(&after, 0, sizeof after);
    register_one(&after, CLIENTS, 0);
    if (after.bad || after.answered != 1)
        fail_msg("no registration after the restarts: %s", after.bad_what);
    if (ts_wait_until(projected, after.ids[0], 30000) != 0)
        fail_msg("the user projection did not resume after the restarts");
}

/* POST /v1/users with body and, when key is not NULL, that Idempotency-Key. */
static tc_response post_user(const ts_app *to, const char *body, const char *key)
{
    char key_header[80];
    snprintf(key_header, sizeof key_header, "Idempotency-Key: %s", key ? key : "");
    const char *headers[] = {"Content-Type: application/json", key ? key_header : NULL, NULL};
    tc_response r;
    memset(&r, 0, sizeof r);
    assert_int_equal(
        tc_http("127.0.0.1", to->port, "POST", "/v1/users", headers, body, strlen(body), &r), 0);
    return r;
}

static void test_outcome_unknown_then_the_same_key(void **state)
{
    (void)state;
    pg_proxy *proxy = NULL;
    assert_int_equal(pg_proxy_start(&proxy, atoi(ts_env("APP_TEST_PG_PORT"))), 0);
    char dsn[512];
    snprintf(dsn, sizeof dsn, "APP_POSTGRES_DSN=%s port=%d sslmode=disable gssencmode=disable",
             ts_env("APP_POSTGRES_DSN"), pg_proxy_port(proxy));
    const char *env[] = {dsn, NULL};
    ts_app cut;
    assert_int_equal(ts_app_start(&cut, env), 0);

    char id[UUID_STR_LEN], body[160], key[UUID_STR_LEN];
    uuid_v4(id);
    snprintf(body, sizeof body, "{\"email\":\"warm.%.8s@example.com\",\"name\":\"Warm\"}", id);
    tc_response r = post_user(&cut, body, NULL); /* the committer's connection is open now */
    assert_int_equal(r.status, 201);
    tc_response_free(&r);

    snprintf(body, sizeof body, "{\"email\":\"lost.%.8s@example.com\",\"name\":\"Lost\"}", id);
    uuid_v4(key);
    pg_proxy_arm(proxy, PGP_LOSE_ALL_REPLIES);
    r = post_user(&cut, body, key);
    assert_int_equal(pg_proxy_cuts(proxy), 1);
    if (r.status != 503 || !strstr(r.body, "outcome unknown") || !tc_header(&r, "Retry-After"))
        fail_msg("a commit whose answer was lost: %d %s", r.status, r.body);
    assert_non_null(strstr(r.body, "same Idempotency-Key"));
    tc_response_free(&r);

    r = post_user(&cut, body, key);
    if (r.status != 201)
        fail_msg("the same request with the same key: %d %s", r.status, r.body);
    const char *replayed = tc_header(&r, "Idempotent-Replayed");
    assert_true(replayed && strcmp(replayed, "true") == 0);
    tc_response_free(&r);
    char q[256];
    snprintf(q, sizeof q,
             "SELECT count(*) FROM user_ctx.events WHERE event_type = 'user.user.registered'"
             " AND data->>'email' = 'lost.%.8s@example.com'",
             id);
    assert_int_equal(ts_sql_int(q), 1);

    assert_int_equal(ts_app_stop_clean(&cut), 0);
    pg_proxy_stop(proxy);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_restarts_under_load_lose_nothing),
        cmocka_unit_test(test_outcome_unknown_then_the_same_key),
        cmocka_unit_test(ts_test_app_stops_cleanly),
    };
    return cmocka_run_group_tests_name("pg_restart", tests, setup, ts_app_group_end);
}
