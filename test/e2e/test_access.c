/* End to end: API keys (the apikey header), consumers named by a trusted gateway (Kong's
 * X-Consumer-* headers), and the per-caller rate limit, against ./app with private
 * PostgreSQL and Redis. The consumer is the actor of what its requests do: it shows in the
 * audit trail and owns its Idempotency-Keys. */
#include <cjson/cJSON.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/sha256.h"
#include "core/uuid.h"
#include "test/support/http_client.h"
#include "test/support/services.h"

static ts_app app;

/* "APP_AUTH_API_KEYS=alice:<sha256 of alice-key>,bob:<sha256 of bob-key>,reader:<...>:read,
 * clerk:<...>:read+write" */
static const char *keys_env(void)
{
    static char env[512];
    char r[SHA256_HEX_LEN], w[SHA256_HEX_LEN];
    char a[SHA256_HEX_LEN], b[SHA256_HEX_LEN];
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, "alice-key", 9);
    sha256_final_hex(&c, a);
    sha256_init(&c);
    sha256_update(&c, "bob-key", 7);
    sha256_final_hex(&c, b);
    sha256_init(&c);
    sha256_update(&c, "reader-key", 10);
    sha256_final_hex(&c, r);
    sha256_init(&c);
    sha256_update(&c, "clerk-key", 9);
    sha256_final_hex(&c, w);
    snprintf(env, sizeof env,
             "APP_AUTH_API_KEYS=alice:%s,bob:%s,reader:%s:read,clerk:%s:read+write", a, b, r, w);
    return env;
}

/* One request; headers are "Name: value" strings ending with NULL. */
static tc_response call(const char *method, const char *path, const char *const *headers,
                        const char *body)
{
    const char *h[8];
    size_t n = 0;
    if (body)
        h[n++] = "Content-Type: application/json";
    for (size_t i = 0; headers && headers[i] && n + 1 < sizeof h / sizeof h[0]; i++)
        h[n++] = headers[i];
    h[n] = NULL;
    tc_response r;
    memset(&r, 0, sizeof r);
    assert_int_equal(
        tc_http("127.0.0.1", app.port, method, path, h, body, body ? strlen(body) : 0, &r), 0);
    return r;
}

static int status_of(const char *method, const char *path, const char *const *headers,
                     const char *body)
{
    tc_response r = call(method, path, headers, body);
    int status = r.status;
    tc_response_free(&r);
    return status;
}

static void expect_problem(const tc_response *r, int status, const char *part)
{
    if (r->status != status)
        fail_msg("expected %d, got %d: %.*s", status, r->status, (int)r->body_len, r->body);
    const char *ct = tc_header(r, "Content-Type");
    assert_non_null(ct);
    assert_string_equal(ct, "application/problem+json");
    cJSON *p = tc_json(r);
    assert_non_null(p);
    assert_int_equal(cJSON_GetObjectItem(p, "status")->valueint, status);
    const char *detail = cJSON_GetStringValue(cJSON_GetObjectItem(p, "detail"));
    if (!detail || !strstr(detail, part))
        fail_msg("problem detail \"%s\" lacks \"%s\"", detail ? detail : "(none)", part);
    cJSON_Delete(p);
}

/* Registers a user as the caller the headers name; returns the new id in id. */
static void register_user(const char *const *headers, const char *tag, char id[UUID_STR_LEN])
{
    char body[160], suffix[UUID_STR_LEN];
    uuid_v4(suffix);
    snprintf(body, sizeof body, "{\"email\":\"%s-%.8s@access.example\",\"name\":\"A\"}", tag,
             suffix);
    tc_response r = call("POST", "/v1/users", headers, body);
    if (r.status != 201)
        fail_msg("register as %s: %d %.*s", tag, r.status, (int)r.body_len, r.body);
    cJSON *u = tc_json(&r);
    snprintf(id, UUID_STR_LEN, "%s", cJSON_GetStringValue(cJSON_GetObjectItem(u, "id")));
    cJSON_Delete(u);
    tc_response_free(&r);
}

/* The actor recorded on the first event of a user's audit trail. */
static void expect_actor(const char *const *headers, const char *id, const char *actor)
{
    char path[96];
    snprintf(path, sizeof path, "/v1/users/%s/events", id);
    tc_response r = call("GET", path, headers, NULL);
    assert_int_equal(r.status, 200);
    cJSON *body = tc_json(&r);
    cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItem(body, "items"), 0);
    cJSON *meta = cJSON_GetObjectItem(first, "metadata");
    const char *got = cJSON_GetStringValue(cJSON_GetObjectItem(meta, "actor"));
    if (!got || strcmp(got, actor) != 0)
        fail_msg("actor: expected %s, got %s", actor, got ? got : "(none)");
    cJSON_Delete(body);
    tc_response_free(&r);
}

static void test_api_keys_required(void **state)
{
    (void)state;
    const char *env[] = {"APP_AUTH_ENABLED=true", keys_env(),
                         "APP_AUTH_TRUSTED_GATEWAYS=10.255.255.0/24", NULL};
    ts_app_start(&app, env);
    static const char *const alice[] = {"apikey: alice-key", NULL};
    static const char *const bob[] = {"apikey: bob-key", NULL};
    const char *user = "{\"email\":\"nokey@access.example\",\"name\":\"N\"}";

    /* Probes and scrapes need no key. */
    assert_int_equal(status_of("GET", "/health/live", NULL, NULL), 200);
    assert_int_equal(status_of("GET", "/health/ready", NULL, NULL), 200);
    assert_int_equal(status_of("GET", "/metrics", NULL, NULL), 200);

    tc_response r = call("POST", "/v1/users", NULL, user);
    expect_problem(&r, 401, "apikey");
    assert_non_null(tc_header(&r, "WWW-Authenticate"));
    tc_response_free(&r);
    r = call("GET", "/v1/users/9b2f8c1e-4d3a-4e5f-8a6b-7c8d9e0f1a2b", NULL, NULL);
    expect_problem(&r, 401, "apikey");
    tc_response_free(&r);
    r = call("POST", "/v1/users", (const char *const[]){"apikey: alice-kez", NULL}, user);
    expect_problem(&r, 401, "not valid");
    tc_response_free(&r);
    /* A gateway's consumer header from an address that is not a trusted gateway. */
    r = call("POST", "/v1/users", (const char *const[]){"X-Consumer-Username: mallory", NULL},
             user);
    expect_problem(&r, 401, "apikey");
    tc_response_free(&r);

    char id[UUID_STR_LEN];
    register_user(alice, "alice", id);
    expect_actor(alice, id, "alice");
    register_user(bob, "bob", id);
    expect_actor(bob, id, "bob");

    /* Idempotency-Keys belong to their consumer: bob's key is not alice's. */
    char key[64], body_a[128], body_b[128];
    char suffix[UUID_STR_LEN];
    uuid_v4(suffix);
    snprintf(key, sizeof key, "Idempotency-Key: shared-%s", suffix);
    snprintf(body_a, sizeof body_a, "{\"email\":\"ia-%.8s@access.example\",\"name\":\"A\"}",
             suffix);
    snprintf(body_b, sizeof body_b, "{\"email\":\"ib-%.8s@access.example\",\"name\":\"B\"}",
             suffix);
    const char *alice_keyed[] = {"apikey: alice-key", key, NULL};
    const char *bob_keyed[] = {"apikey: bob-key", key, NULL};
    tc_response first = call("POST", "/v1/users", alice_keyed, body_a);
    assert_int_equal(first.status, 201);
    tc_response other = call("POST", "/v1/users", bob_keyed, body_b);
    assert_int_equal(other.status, 201);
    assert_string_not_equal(other.body, first.body);
    tc_response again = call("POST", "/v1/users", alice_keyed, body_a);
    assert_int_equal(again.status, 201);
    assert_string_equal(again.body, first.body);
    tc_response_free(&again);
    again = call("POST", "/v1/users", alice_keyed, body_b);
    expect_problem(&again, 422, "different body");
    tc_response_free(&again);
    tc_response_free(&other);
    tc_response_free(&first);

    ts_app_stop_clean(&app);
}

/* Scopes: read is every GET, write the user and order commands, admin products, stock,
 * shipping and the audit trails. A missing scope is 403, and nothing runs. */
static void test_scopes(void **state)
{
    (void)state;
    const char *env[] = {"APP_AUTH_ENABLED=true", keys_env(), NULL};
    ts_app_start(&app, env);
    static const char *const alice[] = {"apikey: alice-key", NULL}; /* no scopes: every right */
    static const char *const reader[] = {"apikey: reader-key", NULL};
    static const char *const clerk[] = {"apikey: clerk-key", NULL};
    char id[UUID_STR_LEN], path[128];
    register_user(alice, "scoped", id);
    snprintf(path, sizeof path, "/v1/users/%s", id);
    /* The read model has the new user a moment after its 201. */
    long long until = ts_now_ms() + TS_HANG_GUARD_MS;
    while (status_of("GET", path, reader, NULL) == 404 && ts_now_ms() < until)
        ;
    assert_int_equal(status_of("GET", path, reader, NULL), 200);
    tc_response r =
        call("POST", "/v1/users", reader, "{\"email\":\"reader@access.example\",\"name\":\"R\"}");
    expect_problem(&r, 403, "write");
    tc_response_free(&r);
    assert_int_equal(status_of("POST", "/v1/users", clerk,
                               "{\"email\":\"clerk@access.example\",\"name\":\"C\"}"),
                     201);
    /* Nothing ran for the reader: its email is still free. */
    assert_int_equal(status_of("POST", "/v1/users", alice,
                               "{\"email\":\"reader@access.example\",\"name\":\"R\"}"),
                     201);
    snprintf(path, sizeof path, "/v1/users/%s/events", id);
    r = call("GET", path, clerk, NULL);
    expect_problem(&r, 403, "admin");
    tc_response_free(&r);
    assert_int_equal(status_of("GET", path, alice, NULL), 200);
    const char *product = "{\"sku\":\"SCOPE-1\",\"name\":\"P\",\"price\":{\"amount\":1,"
                          "\"currency\":\"EUR\"},\"stock\":1}";
    r = call("POST", "/v1/products", clerk, product);
    expect_problem(&r, 403, "admin");
    tc_response_free(&r);
    assert_int_equal(status_of("GET", "/v1/products/SCOPE-1", alice, NULL), 404);
    /* Shipping is the warehouse's, not a clerk's: admin, refused before the order is read. */
    r = call("POST", "/v1/orders/00000000-0000-4000-8000-000000000000/ship", clerk, NULL);
    expect_problem(&r, 403, "admin");
    tc_response_free(&r);
    assert_int_equal(
        status_of("POST", "/v1/orders/00000000-0000-4000-8000-000000000000/ship", alice, NULL),
        404);
    ts_app_stop_clean(&app);
}

/* Places an order for customer as the caller the headers name; returns its status and id. */
static int place_as(const char *const *headers, const char *customer, const char *sku,
                    char id[UUID_STR_LEN])
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"customerId\":\"%s\",\"lines\":[{\"sku\":\"%s\",\"quantity\":1}]}", customer, sku);
    tc_response r = call("POST", "/v1/orders", headers, body);
    int status = r.status;
    id[0] = '\0';
    if (status == 202) {
        cJSON *j = tc_json(&r);
        snprintf(id, UUID_STR_LEN, "%s", cJSON_GetStringValue(cJSON_GetObjectItem(j, "id")));
        cJSON_Delete(j);
    }
    tc_response_free(&r);
    return status;
}

/* An end user behind a trusted gateway (X-Authenticated-Userid) touches only what is its own:
 * its user, its orders and their audit trails; it reads products; nothing else. Its actor on
 * events is that user. */
static void test_end_users(void **state)
{
    (void)state;
    const char *env[] = {"APP_AUTH_TRUSTED_GATEWAYS=127.0.0.1", NULL};
    ts_app_start(&app, env);
    char ada[UUID_STR_LEN], bob[UUID_STR_LEN], path[160];
    register_user(NULL, "ada", ada);
    register_user(NULL, "bob", bob);
    char as_ada_h[160], as_bob_h[160];
    snprintf(as_ada_h, sizeof as_ada_h, "X-Authenticated-Userid: %s", ada);
    snprintf(as_bob_h, sizeof as_bob_h, "X-Authenticated-Userid: %s", bob);
    const char *const as_ada[] = {as_ada_h, NULL}, *const as_bob[] = {as_bob_h, NULL};
    char sku[32], suffix[UUID_STR_LEN];
    uuid_v4(suffix);
    snprintf(sku, sizeof sku, "EU-%.8s", suffix);
    for (char *c = sku; *c; c++)
        if (*c >= 'a' && *c <= 'z')
            *c = (char)(*c - 'a' + 'A');
    char product[256];
    snprintf(product, sizeof product,
             "{\"sku\":\"%s\",\"name\":\"P\",\"price\":{\"amount\":1,\"currency\":\"EUR\"},"
             "\"stock\":5}",
             sku);
    assert_int_equal(status_of("POST", "/v1/products", NULL, product), 201);

    /* Its user, and no other. */
    snprintf(path, sizeof path, "/v1/users/%s", ada);
    long long until = ts_now_ms() + TS_HANG_GUARD_MS; /* the read model catches up */
    while (status_of("GET", path, as_ada, NULL) == 404 && ts_now_ms() < until)
        ;
    assert_int_equal(status_of("GET", path, as_ada, NULL), 200);
    snprintf(path, sizeof path, "/v1/users/%s", bob);
    tc_response r = call("GET", path, as_ada, NULL);
    expect_problem(&r, 403, "another user");
    tc_response_free(&r);
    snprintf(path, sizeof path, "/v1/users/%s/deactivate", bob);
    assert_int_equal(status_of("POST", path, as_ada, NULL), 403);
    snprintf(path, sizeof path, "/v1/users/%s", bob);
    assert_int_equal(status_of("GET", path, NULL, NULL), 200); /* bob is still active */
    assert_int_equal(status_of("POST", "/v1/users", as_ada,
                               "{\"email\":\"other@access.example\",\"name\":\"O\"}"),
                     403);
    snprintf(path, sizeof path, "/v1/users/%s/events", ada);
    assert_int_equal(status_of("GET", path, as_ada, NULL), 200);
    snprintf(path, sizeof path, "/v1/users/%s/events", bob);
    assert_int_equal(status_of("GET", path, as_ada, NULL), 403);

    /* Products: read, not write, not their audit trail. */
    snprintf(path, sizeof path, "/v1/products/%s", sku);
    assert_int_equal(status_of("GET", path, as_ada, NULL), 200);
    snprintf(path, sizeof path, "/v1/products/%s/events", sku);
    assert_int_equal(status_of("GET", path, as_ada, NULL), 403);
    assert_int_equal(status_of("POST", "/v1/products", as_ada, product), 403);

    /* Orders: its own only. */
    char order[UUID_STR_LEN];
    assert_int_equal(place_as(as_ada, bob, sku, order), 403);
    assert_int_equal(place_as(as_ada, ada, sku, order), 202);
    snprintf(path, sizeof path, "/v1/orders/%s", order);
    until = ts_now_ms() + TS_HANG_GUARD_MS; /* the order's read model catches up */
    while (status_of("GET", path, as_ada, NULL) == 404 && ts_now_ms() < until)
        ;
    assert_int_equal(status_of("GET", path, as_ada, NULL), 200);
    assert_int_equal(status_of("GET", path, as_bob, NULL), 404);
    /* The same once the HTTP loop answers from the read model itself (redis.loop_reads): its
     * owner, and no one else. */
    static const char loop_reads[] =
        "http_read_model_answers_total{route=\"/v1/orders/{id}\",answered=\"loop\"}";
    double answered = tc_metric("127.0.0.1", app.port, loop_reads, 0);
    for (until = ts_now_ms() + TS_HANG_GUARD_MS;;) {
        assert_int_equal(status_of("GET", path, as_ada, NULL), 200);
        double now = tc_metric("127.0.0.1", app.port, loop_reads, 0);
        if (now > answered) {
            answered = now;
            break;
        }
        if (ts_now_ms() > until)
            fail_msg("the loop never answered ada's read of her order");
    }
    for (int tries = 0;; tries++) { /* one read in 250 ms goes to a worker (see read_models.h) */
        assert_int_equal(status_of("GET", path, as_bob, NULL), 404);
        double now = tc_metric("127.0.0.1", app.port, loop_reads, 0);
        if (now == answered + 1)
            break;
        if (tries == 3)
            fail_msg("the loop never answered bob's read of ada's order");
        answered = now;
    }
    snprintf(path, sizeof path, "/v1/orders/%s/events", order);
    assert_int_equal(status_of("GET", path, as_bob, NULL), 404);
    r = call("GET", path, as_ada, NULL);
    assert_int_equal(r.status, 200);
    cJSON *events = tc_json(&r);
    const cJSON *meta = cJSON_GetObjectItem(
        cJSON_GetArrayItem(cJSON_GetObjectItem(events, "items"), 0), "metadata");
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(meta, "actor")), ada);
    cJSON_Delete(events);
    tc_response_free(&r);
    snprintf(path, sizeof path, "/v1/users/%s/orders", ada);
    assert_int_equal(status_of("GET", path, as_ada, NULL), 200);
    assert_int_equal(status_of("GET", path, as_bob, NULL), 403);
    snprintf(path, sizeof path, "/v1/orders/%s/ship", order);
    assert_int_equal(status_of("POST", path, as_ada, NULL), 403); /* not an end user's */
    snprintf(path, sizeof path, "/v1/orders/%s/cancel", order);
    assert_int_equal(status_of("POST", path, as_bob, NULL), 404);
    assert_int_equal(status_of("POST", path, as_ada, NULL), 200);
    ts_app_stop_clean(&app);
}

static void test_gateway_consumers(void **state)
{
    (void)state;
    const char *env[] = {"APP_AUTH_ENABLED=true", "APP_AUTH_TRUSTED_GATEWAYS=127.0.0.0/8",
                         "APP_AUTH_API_KEYS", NULL};
    ts_app_start(&app, env);
    static const char *const kong_user[] = {"X-Consumer-ID: 5e0c7b52-0001",
                                            "X-Consumer-Username: kong-alice", NULL};
    static const char *const kong_id[] = {"X-Consumer-ID: 5e0c7b52-0002", NULL};
    char id[UUID_STR_LEN];
    register_user(kong_user, "kong", id);
    expect_actor(kong_user, id, "kong-alice");
    register_user(kong_id, "kongid", id);
    expect_actor(kong_id, id, "5e0c7b52-0002");

    const char *user = "{\"email\":\"anon@access.example\",\"name\":\"N\"}";
    tc_response r = call(
        "POST", "/v1/users",
        (const char *const[]){"X-Consumer-Username: anonymous", "X-Anonymous-Consumer: true", NULL},
        user);
    expect_problem(&r, 401, "apikey");
    tc_response_free(&r);
    r = call("POST", "/v1/users", NULL, user);
    expect_problem(&r, 401, "apikey");
    tc_response_free(&r);
    r = call("POST", "/v1/users", (const char *const[]){"X-Consumer-Username: a\x01b", NULL}, user);
    expect_problem(&r, 400, "X-Consumer-Username");
    tc_response_free(&r);

    ts_app_stop_clean(&app);
}

static int header_int(const tc_response *r, const char *name)
{
    const char *v = tc_header(r, name);
    if (!v)
        fail_msg("no %s header on a %d answer", name, r->status);
    return atoi(v);
}

static void test_rate_limit(void **state)
{
    (void)state;
    /* One request a minute after a burst of three: the fourth is refused whatever the pace. */
    const char *env[] = {"APP_RATE_LIMIT_REQUESTS_PER_MINUTE=1", "APP_RATE_LIMIT_BURST=3",
                         keys_env(), "APP_AUTH_ENABLED=false", NULL};
    ts_app_start(&app, env);
    const char *missing = "/v1/users/9b2f8c1e-4d3a-4e5f-8a6b-7c8d9e0f1a2b";

    for (int i = 0; i < 3; i++) {
        tc_response r = call("GET", missing, NULL, NULL);
        assert_int_equal(r.status, 404);
        assert_int_equal(header_int(&r, "RateLimit-Limit"), 3);
        assert_int_equal(header_int(&r, "RateLimit-Remaining"), 2 - i);
        tc_response_free(&r);
    }
    tc_response r = call("GET", missing, NULL, NULL);
    expect_problem(&r, 429, "1 requests a minute");
    int retry = header_int(&r, "Retry-After");
    assert_true(retry >= 1 && retry <= 60);
    assert_int_equal(header_int(&r, "RateLimit-Remaining"), 0);
    tc_response_free(&r);
    /* Writes are refused too, and write nothing: the log has no event of them. */
    r = call("POST", "/v1/users", NULL, "{\"email\":\"limited@access.example\",\"name\":\"L\"}");
    assert_int_equal(r.status, 429);
    tc_response_free(&r);
    static const char *const count_sql =
        "SELECT count(*) FROM user_ctx.events WHERE data->>'email' = '%s@access.example'";
    char sql[256];
    snprintf(sql, sizeof sql, count_sql, "limited");
    assert_int_equal(ts_sql_int(sql), 0);

    /* A consumer has its own bucket, apart from the anonymous callers at this address; its
     * write is let through and logged, so the count above could have seen one. */
    static const char *const alice[] = {"apikey: alice-key", NULL};
    r = call("GET", missing, alice, NULL);
    assert_int_equal(r.status, 404);
    assert_int_equal(header_int(&r, "RateLimit-Remaining"), 2);
    tc_response_free(&r);
    r = call("POST", "/v1/users", alice, "{\"email\":\"unlimited@access.example\",\"name\":\"U\"}");
    assert_int_equal(r.status, 201);
    tc_response_free(&r);
    snprintf(sql, sizeof sql, count_sql, "unlimited");
    assert_int_equal(ts_sql_int(sql), 1);

    /* Probes are never limited. */
    for (int i = 0; i < 10; i++) {
        r = call("GET", "/health/live", NULL, NULL);
        assert_int_equal(r.status, 200);
        assert_null(tc_header(&r, "RateLimit-Limit"));
        tc_response_free(&r);
    }
    r = call("GET", "/metrics", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "status=\"429\""));
    tc_response_free(&r);
    ts_app_stop_clean(&app);
}

static void test_bad_auth_config_is_refused(void **state)
{
    (void)state;
    char out[4096], cmd[512];
    snprintf(cmd, sizeof cmd,
             "APP_AUTH_ENABLED=true APP_AUTH_API_KEYS= APP_AUTH_TRUSTED_GATEWAYS= "
             "%s --config config/app.yaml check-config",
             ts_app_binary());
    assert_int_equal(ts_run(cmd, out, sizeof out), 2);
    assert_non_null(strstr(out, "auth.enabled"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_api_keys_required), cmocka_unit_test(test_scopes),
        cmocka_unit_test(test_end_users),         cmocka_unit_test(test_gateway_consumers),
        cmocka_unit_test(test_rate_limit),        cmocka_unit_test(test_bad_auth_config_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
