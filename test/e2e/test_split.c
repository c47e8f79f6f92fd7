/* The split deployment end to end: three processes of the same binary, one context each, each
 * with a database of its own, and every request sent to the service that owns its route, as
 * deploy/kong/kong.yml routes it. The order service reaches user and inventory only through
 * their internal endpoints (commands and queries over HTTP, kernel/remote.h). */
#include <cjson/cJSON.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/sha256.h"
#include "core/uuid.h"
#include "test/support/http_client.h"
#include "test/support/services.h"

#define TOKEN "split-test-internal-token"

static ts_app user_svc, inventory_svc, order_svc;
static char token_sha256[SHA256_HEX_LEN];
static const char *const json_headers[] = {"Content-Type: application/json", NULL};

/* ---- calls ------------------------------------------------------------------------------ */

static tc_response call_h(const ts_app *svc, const char *method, const char *path,
                          const char *const *headers, const char *body)
{
    tc_response r;
    memset(&r, 0, sizeof r);
    assert_int_equal(
        tc_http("127.0.0.1", svc->port, method, path, headers, body, body ? strlen(body) : 0, &r),
        0);
    return r;
}

static cJSON *call_json(const ts_app *svc, const char *method, const char *path, const char *body,
                        int want)
{
    tc_response r = call_h(svc, method, path, body ? json_headers : NULL, body);
    if (r.status != want)
        fail_msg("%s %s on :%d: expected %d, got %d: %.*s", method, path, svc->port, want, r.status,
                 (int)r.body_len, r.body ? r.body : "");
    cJSON *j = tc_json(&r);
    tc_response_free(&r);
    assert_non_null(j);
    return j;
}

static const char *str(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItem(o, name);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static int64_t num(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItem(o, name);
    if (!cJSON_IsNumber(v))
        fail_msg("member %s is missing", name);
    return (int64_t)v->valuedouble;
}

/* ---- the three services ------------------------------------------------------------------ */

/* "<the harness's DSN> dbname=<name>": libpq takes the last of a repeated keyword. */
static void service_dsn(const char *db, char *out, size_t size)
{
    snprintf(out, size, "%s dbname=%s", ts_env("APP_POSTGRES_DSN"), db);
}

static void fresh_database(const char *db)
{
    char cmd[1024], out[2048];
    snprintf(cmd, sizeof cmd,
             "psql -X -q -v ON_ERROR_STOP=1 \"$APP_POSTGRES_DSN\" -c 'DROP DATABASE IF EXISTS %s "
             "WITH (FORCE)' -c 'CREATE DATABASE %s'",
             db, db);
    if (ts_run(cmd, out, sizeof out) != 0)
        fail_msg("cannot create database %s: %s", db, out);
}

static void start_owner(ts_app *svc, const char *context)
{
    char contexts[64], dsn[1024], prefix[64], token[128];
    snprintf(contexts, sizeof contexts, "APP_CONTEXTS=%s", context);
    char db[64];
    snprintf(db, sizeof db, "split_%s", context);
    service_dsn(db, dsn + snprintf(dsn, sizeof dsn, "APP_POSTGRES_DSN="), sizeof dsn - 17);
    snprintf(prefix, sizeof prefix, "APP_REDIS_KEY_PREFIX=split-%s:", context);
    snprintf(token, sizeof token, "APP_INTERNAL_TOKEN_SHA256=%s", token_sha256);
    const char *const env[] = {contexts, dsn, prefix, token, NULL};
    if (svc->port > 0 && svc->pid == 0)
        assert_int_equal(ts_app_restart(svc, env), 0);
    else
        assert_int_equal(ts_app_start(svc, env), 0);
}

static void order_env(char dsn[1024], char remote_user[64], char remote_inventory[64],
                      const char **env)
{
    snprintf(dsn, 1024, "APP_POSTGRES_DSN=");
    service_dsn("split_order", dsn + strlen(dsn), 1024 - strlen(dsn));
    snprintf(remote_user, 64, "APP_REMOTE_USER=http://127.0.0.1:%d", user_svc.port);
    snprintf(remote_inventory, 64, "APP_REMOTE_INVENTORY=http://127.0.0.1:%d", inventory_svc.port);
    size_t n = 0;
    env[n++] = "APP_CONTEXTS=order";
    env[n++] = dsn;
    env[n++] = "APP_REDIS_KEY_PREFIX=split-order:";
    env[n++] = remote_user;
    env[n++] = remote_inventory;
    env[n++] = "APP_REMOTE_TOKEN=" TOKEN;
    /* Long enough that nothing in these tests settles by the deadline: every outcome is the
     * saga's own. A short breaker keeps the recovery after an outage quick. */
    env[n++] = "APP_ORDER_PLACEMENT_TIMEOUT_MS=300000";
    env[n++] = "APP_REMOTE_BREAKER_OPEN_MS=200";
    env[n] = NULL;
}

static void start_order(void)
{
    char dsn[1024], ru[64], ri[64];
    const char *env[12];
    order_env(dsn, ru, ri, env);
    if (order_svc.port > 0 && order_svc.pid == 0)
        assert_int_equal(ts_app_restart(&order_svc, env), 0);
    else
        assert_int_equal(ts_app_start(&order_svc, env), 0);
}

static int group_start(void **state)
{
    (void)state;
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, TOKEN, strlen(TOKEN));
    sha256_final_hex(&c, token_sha256);
    fresh_database("split_user");
    fresh_database("split_inventory");
    fresh_database("split_order");
    start_owner(&user_svc, "user");
    start_owner(&inventory_svc, "inventory");
    start_order();
    return 0;
}

static int group_end(void **state)
{
    (void)state;
    ts_app_end(&order_svc);
    ts_app_end(&inventory_svc);
    ts_app_end(&user_svc);
    return 0;
}

/* ---- the domain, through each owner's public routes ---------------------------------------- */

static void new_sku(char *out, size_t n, int64_t stock)
{
    char id[UUID_STR_LEN], body[256];
    uuid_v4(id);
    snprintf(out, n, "S-%.8s", id);
    for (char *p = out; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    snprintf(body, sizeof body,
             "{\"sku\":\"%s\",\"name\":\"Part\",\"price\":{\"amount\":250,\"currency\":\"EUR\"},"
             "\"stock\":%lld}",
             out, (long long)stock);
    cJSON_Delete(call_json(&inventory_svc, "POST", "/v1/products", body, 201));
}

static void new_customer(char id[UUID_STR_LEN])
{
    char email[96], body[192];
    uuid_v4(id);
    snprintf(email, sizeof email, "split.%.8s@example.com", id);
    snprintf(body, sizeof body, "{\"email\":\"%s\",\"name\":\"Buyer\"}", email);
    cJSON *u = call_json(&user_svc, "POST", "/v1/users", body, 201);
    snprintf(id, UUID_STR_LEN, "%s", str(u, "id"));
    cJSON_Delete(u);
}

static void place(const char *customer, const char *const *skus, const int *qty, size_t n,
                  char id[UUID_STR_LEN])
{
    char body[2048];
    size_t o = (size_t)snprintf(body, sizeof body, "{\"customerId\":\"%s\",\"lines\":[", customer);
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(body + o, sizeof body - o, "%s{\"sku\":\"%s\",\"quantity\":%d}",
                              i ? "," : "", skus[i], qty[i]);
    snprintf(body + o, sizeof body - o, "]}");
    cJSON *order = call_json(&order_svc, "POST", "/v1/orders", body, 202);
    assert_string_equal(str(order, "status"), "pending");
    snprintf(id, UUID_STR_LEN, "%s", str(order, "id"));
    cJSON_Delete(order);
}

typedef struct order_state {
    const char *id;
    char status[16];
    char reason[32];
} order_state;

static void read_order(order_state *s)
{
    char path[96];
    snprintf(path, sizeof path, "/v1/orders/%s", s->id);
    tc_response r = call_h(&order_svc, "GET", path, NULL, NULL);
    s->status[0] = s->reason[0] = '\0';
    if (r.status == 200) {
        cJSON *j = tc_json(&r);
        snprintf(s->status, sizeof s->status, "%s", str(j, "status"));
        snprintf(s->reason, sizeof s->reason, "%s", str(j, "reason"));
        cJSON_Delete(j);
    }
    tc_response_free(&r);
}

static bool order_settled(void *p)
{
    order_state *s = p;
    read_order(s);
    return s->status[0] && strcmp(s->status, "pending") != 0;
}

static void expect_outcome(const char *id, const char *status, const char *reason)
{
    order_state s = {.id = id};
    if (ts_wait_until(order_settled, &s, TS_HANG_GUARD_MS) != 0)
        fail_msg("order %s did not settle (status %s)", id, s.status);
    if (strcmp(s.status, status) != 0 || strcmp(s.reason, reason) != 0)
        fail_msg("order %s: want %s %s, have %s %s", id, status, reason, s.status, s.reason);
}

typedef struct stock_arg {
    const char *sku;
    int64_t on_hand, reserved;
} stock_arg;

static bool stock_is(void *p)
{
    stock_arg *a = p;
    char path[96];
    snprintf(path, sizeof path, "/v1/products/%s", a->sku);
    tc_response r = call_h(&inventory_svc, "GET", path, NULL, NULL);
    bool ok = false;
    if (r.status == 200) {
        cJSON *j = tc_json(&r);
        ok = num(j, "onHand") == a->on_hand && num(j, "reserved") == a->reserved;
        cJSON_Delete(j);
    }
    tc_response_free(&r);
    return ok;
}

static void expect_stock(const char *sku, int64_t on_hand, int64_t reserved)
{
    stock_arg a = {sku, on_hand, reserved};
    if (ts_wait_until(stock_is, &a, TS_HANG_GUARD_MS) != 0)
        fail_msg("stock of %s: want onHand %lld reserved %lld", sku, (long long)on_hand,
                 (long long)reserved);
}

/* The value of the first sample of metric whose labels contain every part given. */
static double metric(const ts_app *svc, const char *name, const char *part1, const char *part2)
{
    tc_response r = call_h(svc, "GET", "/metrics", NULL, NULL);
    assert_int_equal(r.status, 200);
    double sum = 0;
    for (char *line = strtok(r.body, "\n"); line; line = strtok(NULL, "\n")) {
        size_t n = strlen(name);
        if (strncmp(line, name, n) != 0 || (line[n] != '{' && line[n] != ' '))
            continue;
        if ((part1 && !strstr(line, part1)) || (part2 && !strstr(line, part2)))
            continue;
        const char *sp = strrchr(line, ' ');
        sum += sp ? strtod(sp + 1, NULL) : 0;
    }
    tc_response_free(&r);
    return sum;
}

/* ---- the tests ----------------------------------------------------------------------------- */

/* Users on user, products on inventory, orders on order: the order service asks for the
 * customer and the products and reserves the stock over the internal endpoints. */
static void test_orders_confirm(void **state)
{
    (void)state;
    char customer[UUID_STR_LEN], a[32], b[32], id[UUID_STR_LEN];
    new_customer(customer);
    new_sku(a, sizeof a, 10);
    new_sku(b, sizeof b, 4);
    const char *skus[] = {a, b};
    int qty[] = {3, 4};
    place(customer, skus, qty, 2, id);
    expect_outcome(id, "confirmed", "");
    expect_stock(a, 10, 3);
    expect_stock(b, 4, 4);
    /* The calls went to the other services, and came back answered. */
    assert_true(
        metric(&order_svc, "remote_calls_total", "remote=\"inventory\"", "outcome=\"ok\"") >= 2);
    assert_true(metric(&order_svc, "remote_calls_total", "remote=\"user\"", "outcome=\"ok\"") >= 1);
    /* Each service runs its own context only. */
    tc_response r = call_h(&order_svc, "GET", "/v1/products/whatever", NULL, NULL);
    assert_int_equal(r.status, 404);
    tc_response_free(&r);
}

/* A line short of stock cancels the order as out_of_stock, and the line reserved before it
 * is released on the inventory service. */
static void test_out_of_stock_releases(void **state)
{
    (void)state;
    char customer[UUID_STR_LEN], a[32], b[32], id[UUID_STR_LEN];
    new_customer(customer);
    new_sku(a, sizeof a, 10);
    new_sku(b, sizeof b, 1);
    const char *skus[] = {a, b};
    int qty[] = {2, 5};
    place(customer, skus, qty, 2, id);
    expect_outcome(id, "cancelled", "out_of_stock");
    expect_stock(a, 10, 0);
    expect_stock(b, 1, 0);
}

/* The user service's answer decides: a deactivated customer's order is cancelled. */
static void test_deactivated_customer(void **state)
{
    (void)state;
    char customer[UUID_STR_LEN], sku[32], id[UUID_STR_LEN], path[96];
    new_customer(customer);
    new_sku(sku, sizeof sku, 5);
    snprintf(path, sizeof path, "/v1/users/%s/deactivate", customer);
    cJSON_Delete(call_json(&user_svc, "POST", path, NULL, 200));
    const char *skus[] = {sku};
    int one[] = {1};
    place(customer, skus, one, 1, id);
    expect_outcome(id, "cancelled", "customer_deactivated");
    expect_stock(sku, 5, 0);
}

typedef struct failed_arg {
    const char *remote; /* a remote="..." label */
    double before;
} failed_arg;

static bool remote_call_failed(void *arg)
{
    failed_arg *a = arg;
    return metric(&order_svc, "remote_calls_total", a->remote, "outcome=\"service-unavailable\"") >
           a->before;
}

typedef struct check_arg {
    const char *name;
    const char *want;
} check_arg;

static bool readiness_check_is(void *arg)
{
    check_arg *a = arg;
    tc_response r = call_h(&order_svc, "GET", "/health/ready", NULL, NULL);
    cJSON *j = tc_json(&r);
    const cJSON *c = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "checks"), a->name);
    bool ok = strcmp(str(c, "status"), a->want) == 0 && r.status == 200;
    cJSON_Delete(j);
    tc_response_free(&r);
    return ok;
}

/* With the user service stopped, an order stays pending: the saga cannot check the customer,
 * its calls fail as unavailable and it decides nothing. Once user is back on its address, the
 * order confirms, and its stock is reserved once. */
static void test_user_away(void **state)
{
    (void)state;
    char customer[UUID_STR_LEN], sku[32], id[UUID_STR_LEN];
    new_customer(customer);
    new_sku(sku, sizeof sku, 6);
    ts_app_stop_clean(&user_svc);
    failed_arg f = {"remote=\"user\"", 0};
    f.before =
        metric(&order_svc, "remote_calls_total", f.remote, "outcome=\"service-unavailable\"");
    const char *skus[] = {sku};
    int two[] = {2};
    place(customer, skus, two, 1, id);
    if (ts_wait_until(remote_call_failed, &f, TS_HANG_GUARD_MS) != 0)
        fail_msg("the saga never tried the stopped user service");
    order_state s = {.id = id};
    read_order(&s);
    assert_string_equal(s.status, "pending");
    expect_stock(sku, 6, 0);
    /* The order service stays ready (it serves what needs no user service) and says which
     * remote fails once its breaker opens. */
    check_arg degraded = {"remote.user", "degraded"}, up = {"remote.user", "up"};
    if (ts_wait_until(readiness_check_is, &degraded, TS_HANG_GUARD_MS) != 0)
        fail_msg("readiness never showed remote.user degraded");

    start_owner(&user_svc, "user");
    expect_outcome(id, "confirmed", "");
    expect_stock(sku, 6, 2);
    if (ts_wait_until(readiness_check_is, &up, TS_HANG_GUARD_MS) != 0)
        fail_msg("readiness never showed remote.user up again");
}

/* The internal endpoints answer only trusted peers with the token: anything else is 403
 * problem+json, and nothing runs. */
static void test_internal_endpoints_closed(void **state)
{
    (void)state;
    char sku[32], id[UUID_STR_LEN], body[512], path[160];
    uuid_v4(id);
    snprintf(sku, sizeof sku, "I-%.8s", id);
    for (char *p = sku; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    snprintf(body, sizeof body,
             "{\"payload\":{\"sku\":\"%s\",\"name\":\"Part\",\"price\":{\"amount\":1,\"currency\":"
             "\"EUR\"},\"stock\":1},\"timeoutMs\":5000}",
             sku);
    const char *path_create = "/internal/v1/commands/inventory.create_product";
    const char *const no_token[] = {"Content-Type: application/json", NULL};
    const char *const bad_token[] = {"Content-Type: application/json",
                                     "Authorization: Bearer not-the-token", NULL};
    const char *const *refused[] = {no_token, bad_token};
    for (size_t i = 0; i < 2; i++) {
        tc_response r = call_h(&inventory_svc, "POST", path_create, refused[i], body);
        assert_int_equal(r.status, 403);
        assert_non_null(strstr(tc_header(&r, "Content-Type"), "application/problem+json"));
        assert_null(tc_header(&r, "X-App-Bus-Reply"));
        tc_response_free(&r);
    }
    snprintf(path, sizeof path, "/v1/products/%s", sku);
    tc_response r = call_h(&inventory_svc, "GET", path, NULL, NULL);
    assert_int_equal(r.status, 404); /* nothing ran */
    tc_response_free(&r);

    /* With the token, the same call runs, and its answer is marked as the bus's. */
    const char *const good[] = {"Content-Type: application/json", "Authorization: Bearer " TOKEN,
                                NULL};
    r = call_h(&inventory_svc, "POST", path_create, good, body);
    assert_int_equal(r.status, 200);
    assert_string_equal(tc_header(&r, "X-App-Bus-Reply"), "1");
    cJSON *j = tc_json(&r);
    assert_string_equal(str(cJSON_GetObjectItem(j, "result"), "sku"), sku);
    cJSON_Delete(j);
    tc_response_free(&r);

    /* An error comes back whole: its code (the problem type), message and field errors. */
    r = call_h(&inventory_svc, "POST", path_create, good, body);
    assert_int_equal(r.status, 409);
    j = tc_json(&r);
    assert_string_equal(str(j, "type"), "https://problems.app.dev/conflict");
    assert_true(str(j, "message")[0] != '\0');
    cJSON_Delete(j);
    tc_response_free(&r);
    r = call_h(&inventory_svc, "POST", "/internal/v1/commands/inventory.create_product", good,
               "{\"payload\":{\"sku\":\"\"},\"timeoutMs\":5000}");
    assert_int_equal(r.status, 422);
    j = tc_json(&r);
    assert_true(cJSON_GetArraySize(cJSON_GetObjectItem(j, "errors")) >= 1);
    cJSON_Delete(j);
    tc_response_free(&r);

    /* A process never passes a call on: the order service does not serve inventory's. */
    char ask[256];
    snprintf(ask, sizeof ask, "{\"payload\":{\"sku\":\"%s\"},\"timeoutMs\":5000}", sku);
    r = call_h(&order_svc, "POST", "/internal/v1/queries/inventory.describe_product", good, ask);
    assert_int_equal(r.status, 503);
    tc_response_free(&r);
    r = call_h(&inventory_svc, "POST", "/internal/v1/queries/inventory.describe_product", good,
               ask);
    assert_int_equal(r.status, 200);
    tc_response_free(&r);
}

/* The order context alone, with no remote for inventory: the start is refused, naming the
 * message and the key, instead of leaving orders pending until their deadline. */
static void test_owner_nowhere_refuses_the_start(void **state)
{
    (void)state;
    char cmd[512], out[4096];
    snprintf(cmd, sizeof cmd,
             "APP_CONTEXTS=order APP_REMOTE_USER=http://127.0.0.1:1 %s --config config/app.yaml "
             "check-config",
             ts_app_binary());
    assert_int_equal(ts_run(cmd, out, sizeof out), 2);
    assert_non_null(strstr(out, "context order sends \"inventory."));
    assert_non_null(strstr(out, "remote.inventory"));
}

static void test_services_stop_cleanly(void **state)
{
    (void)state;
    ts_app_stop_clean(&order_svc);
    ts_app_stop_clean(&inventory_svc);
    ts_app_stop_clean(&user_svc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_orders_confirm),
        cmocka_unit_test(test_out_of_stock_releases),
        cmocka_unit_test(test_deactivated_customer),
        cmocka_unit_test(test_user_away),
        cmocka_unit_test(test_internal_endpoints_closed),
        cmocka_unit_test(test_owner_nowhere_refuses_the_start),
        cmocka_unit_test(test_services_stop_cleanly),
    };
    return cmocka_run_group_tests_name("e2e split deployment", tests, group_start, group_end);
}
