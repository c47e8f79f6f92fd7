/* Two ./app processes on one PostgreSQL and Redis, as behind a load balancer: commands to
 * either are processed once, each subscriber (projections, the saga) runs in one process at
 * a time, and when one process is killed the other takes its subscribers over. */
#include <cjson/cJSON.h>
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

static ts_app a, b;
static const char *const json_headers[] = {"Content-Type: application/json", NULL};

static cJSON *call(const ts_app *app, const char *method, const char *path, const char *body,
                   int want)
{
    tc_response r;
    memset(&r, 0, sizeof r);
    assert_int_equal(tc_http("127.0.0.1", app->port, method, path, body ? json_headers : NULL, body,
                             body ? strlen(body) : 0, &r),
                     0);
    if (want && r.status != want)
        fail_msg("%s %s on :%d: expected %d, got %d: %.*s", method, path, app->port, want, r.status,
                 (int)r.body_len, r.body ? r.body : "");
    cJSON *j = r.status == 200 || r.status == 201 || r.status == 202 ? tc_json(&r) : NULL;
    tc_response_free(&r);
    return j;
}

static const char *str(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItem(o, name);
    return cJSON_IsString(v) ? v->valuestring : "";
}

typedef struct want {
    const ts_app *app;
    const char *path;
    const char *member;
    const char *value;
} want;

static bool has(void *p)
{
    want *w = p;
    cJSON *j = call(w->app, "GET", w->path, NULL, 0);
    bool ok = j && strcmp(str(j, w->member), w->value) == 0;
    cJSON_Delete(j);
    return ok;
}

static void wait_member(const ts_app *app, const char *path, const char *member, const char *value)
{
    want w = {app, path, member, value};
    if (ts_wait_until(has, &w, 20000) != 0)
        fail_msg("%s never had %s = %s", path, member, value);
}

static int count_events(const ts_app *app, const char *path)
{
    cJSON *j = call(app, "GET", path, NULL, 200);
    int n = cJSON_GetArraySize(cJSON_GetObjectItem(j, "items"));
    cJSON_Delete(j);
    return n;
}

/* subscription_events_total of one subscriber in one process (0 when it never ran there). */
/* A subscriber's sample of metric in app's /metrics (0 when absent). */
static double metric_of(const ts_app *app, const char *metric, const char *subscriber)
{
    char sample[160];
    snprintf(sample, sizeof sample, "%s{subscriber=\"%s\"}", metric, subscriber);
    return tc_metric("127.0.0.1", app->port, sample, 0);
}

static bool leads_in_b(void *subscriber)
{
    return metric_of(&b, "subscription_leader", subscriber) == 1;
}

static void place(const ts_app *app, const char *customer, const char *sku, char id[37])
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"customerId\":\"%s\",\"lines\":[{\"sku\":\"%s\",\"quantity\":1}]}", customer, sku);
    cJSON *o = call(app, "POST", "/v1/orders", body, 202);
    snprintf(id, 37, "%s", str(o, "id"));
    cJSON_Delete(o);
}

/* Places an order with an Idempotency-Key; the answer's body, owned by the caller. */
static char *place_keyed(const ts_app *app, const char *customer, const char *sku, const char *key)
{
    char body[256], header[160];
    snprintf(body, sizeof body,
             "{\"customerId\":\"%s\",\"lines\":[{\"sku\":\"%s\",\"quantity\":1}]}", customer, sku);
    snprintf(header, sizeof header, "Idempotency-Key: %s", key);
    const char *const headers[] = {"Content-Type: application/json", header, NULL};
    tc_response r;
    memset(&r, 0, sizeof r);
    assert_int_equal(
        tc_http("127.0.0.1", app->port, "POST", "/v1/orders", headers, body, strlen(body), &r), 0);
    assert_int_equal(r.status, 202);
    char *answer = strdup(r.body);
    assert_non_null(answer);
    tc_response_free(&r);
    return answer;
}

static void test_two_processes_then_one(void **state)
{
    (void)state;
    assert_int_equal(ts_app_start(&a, NULL), 0);
    assert_int_equal(ts_app_start(&b, NULL), 0);

    char sku[32], tag[UUID_STR_LEN], body[256], path[128];
    uuid_v4(tag);
    snprintf(sku, sizeof sku, "TWO-%.8s", tag);
    for (char *p = sku; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    snprintf(body, sizeof body,
             "{\"sku\":\"%s\",\"name\":\"Shared\",\"price\":{\"amount\":100,\"currency\":\"EUR\"},"
             "\"stock\":15}",
             sku);
    cJSON_Delete(call(&a, "POST", "/v1/products", body, 201));
    snprintf(body, sizeof body, "{\"email\":\"two.%.8s@example.com\",\"name\":\"Two\"}", tag);
    cJSON *u = call(&b, "POST", "/v1/users", body, 201);
    char customer[UUID_STR_LEN];
    snprintf(customer, sizeof customer, "%s", str(u, "id"));
    cJSON_Delete(u);

    enum { N = 10 };
    char ids[N + 5][37], key[64];
    for (int i = 0; i < N - 1; i++)
        place(i % 2 ? &a : &b, customer, sku, ids[i]);
    /* The last one through a with an Idempotency-Key: its client will retry through b. */
    snprintf(key, sizeof key, "two-%s", tag);
    char *first = place_keyed(&a, customer, sku, key);
    cJSON *o = cJSON_Parse(first);
    snprintf(ids[N - 1], sizeof ids[N - 1], "%s", str(o, "id"));
    cJSON_Delete(o);
    for (int i = 0; i < N; i++) {
        snprintf(path, sizeof path, "/v1/orders/%s", ids[i]);
        wait_member(i % 2 ? &b : &a, path, "status", "confirmed"); /* read through the other */
    }

    /* Each subscriber ran in exactly one of the two. */
    const char *subs[] = {"order.placement_saga", "order.projection", "user.projection",
                          "inventory.projection"};
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        double in_a = metric_of(&a, "subscription_events_total", subs[i]),
               in_b = metric_of(&b, "subscription_events_total", subs[i]);
        if (!((in_a > 0) ^ (in_b > 0)))
            fail_msg("%s handled %g events in one process and %g in the other", subs[i], in_a,
                     in_b);
        /* subscription_leader says where (what the SubscriberNotRunning alert sums up). */
        assert_true(metric_of(&a, "subscription_leader", subs[i]) == (in_a > 0 ? 1 : 0));
        assert_true(metric_of(&b, "subscription_leader", subs[i]) == (in_b > 0 ? 1 : 0));
    }

    /* One process dies; the other takes over every subscriber, the saga included. */
    assert_int_equal(ts_app_stop(&a, SIGKILL), 128 + SIGKILL);
    /* The retry lands on the survivor: the first answer again, and no second order. */
    char *again = place_keyed(&b, customer, sku, key);
    assert_string_equal(again, first);
    free(again);
    free(first);
    for (int i = N; i < N + 5; i++)
        place(&b, customer, sku, ids[i]);
    for (int i = N; i < N + 5; i++) {
        snprintf(path, sizeof path, "/v1/orders/%s", ids[i]);
        wait_member(&b, path, "status", "confirmed");
    }
    snprintf(body, sizeof body, "{\"email\":\"after.%.8s@example.com\",\"name\":\"After\"}", tag);
    u = call(&b, "POST", "/v1/users", body, 201);
    snprintf(path, sizeof path, "/v1/users/%s", str(u, "id"));
    cJSON_Delete(u);
    wait_member(&b, path, "status", "active");

    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s", subs[i]);
        if (ts_wait_until(leads_in_b, name, 20000) != 0)
            fail_msg("%s does not run in the surviving process", subs[i]);
    }

    /* Nothing happened twice: every order has exactly placed + confirmed, the product one
     * reservation per order, and the stock adds up. */
    for (int i = 0; i < N + 5; i++) {
        snprintf(path, sizeof path, "/v1/orders/%s/events", ids[i]);
        assert_int_equal(count_events(&b, path), 2);
    }
    snprintf(path, sizeof path, "/v1/products/%s/events", sku);
    assert_int_equal(count_events(&b, path), 1 + N + 5);
    snprintf(path, sizeof path, "/v1/products/%s", sku);
    wait_member(&b, path, "sku", sku);
    cJSON *p = call(&b, "GET", path, NULL, 200);
    assert_int_equal(cJSON_GetObjectItem(p, "reserved")->valueint, 15);
    assert_int_equal(cJSON_GetObjectItem(p, "available")->valueint, 0);
    cJSON_Delete(p);
    ts_app_stop_clean(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_processes_then_one),
    };
    return cmocka_run_group_tests_name("e2e two processes", tests, NULL, NULL);
}
