/* The split deployment end to end: three processes of the same binary, one context each, each
 * with a database of its own that it reaches as its context's role, the real Kafka broker
 * between them, and every request sent to the service that owns its route, as
 * deploy/kong/kong.yml routes it. The order service sends user and inventory commands and
 * queries over HTTP (their internal endpoints, kernel/remote.h) and reads their events from
 * Kafka into its inbox (adapters/kafka/kfk_inbox.h). */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "core/sha256.h"
#include "core/uuid.h"
#include "test/support/http_client.h"
#include "test/support/services.h"

#define TOKEN "split-test-internal-token"

static ts_app user_svc, inventory_svc, order_svc;
static char token_sha256[SHA256_HEX_LEN];
static const char *brokers; /* NULL: no broker, every test skips */
static char prefix[64];     /* of this run's topics, consumer groups and Redis keys */
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

/* Everything a service of context runs with; as_admin: the harness's user (the migrations),
 * else the context's role. */
typedef struct svc_env {
    char kv[20][320];
    const char *list[21];
    size_t n;
} svc_env;

static void env_add(svc_env *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void env_add(svc_env *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->kv[e->n], sizeof e->kv[e->n], fmt, ap);
    va_end(ap);
    e->list[e->n] = e->kv[e->n];
    e->n++;
    e->list[e->n] = NULL;
}

static void service_env(svc_env *e, const char *context, bool as_admin)
{
    e->n = 0;
    char db[64], role[64], dsn[512];
    snprintf(db, sizeof db, "split_%s", context);
    snprintf(role, sizeof role, "%s_service", context);
    ts_dsn_with(ts_env("APP_POSTGRES_DSN"), db, as_admin ? NULL : role, dsn, sizeof dsn);
    env_add(e, "APP_CONTEXTS=%s", context);
    env_add(e, "APP_POSTGRES_DSN=%s", dsn);
    env_add(e, "APP_POSTGRES_CONTEXT_ROLES=%s", as_admin ? "true" : "false");
    env_add(e, "APP_REDIS_KEY_PREFIX=%s%s:", prefix, context);
    env_add(e, "APP_KAFKA_ENABLED=true");
    env_add(e, "APP_KAFKA_BROKERS=%s", brokers);
    env_add(e, "APP_KAFKA_TOPIC_PREFIX=%s", prefix);
    env_add(e, "APP_KAFKA_RETRY_BACKOFF_MAX_MS=1000");
    env_add(e, "APP_KAFKA_MESSAGE_TIMEOUT_MS=3000");
    env_add(e, "APP_INTERNAL_TOKEN_SHA256=%s", token_sha256);
    if (strcmp(context, "order") != 0)
        return;
    env_add(e, "APP_KAFKA_INBOX=true");
    env_add(e, "APP_REMOTE_USER=http://127.0.0.1:%d", user_svc.port > 0 ? user_svc.port : 1);
    env_add(e, "APP_REMOTE_INVENTORY=http://127.0.0.1:%d",
            inventory_svc.port > 0 ? inventory_svc.port : 1);
    env_add(e, "APP_REMOTE_TOKEN=" TOKEN);
    /* Long enough that nothing here settles by the deadline: every outcome is the saga's
     * own. A short breaker keeps the recovery after an outage quick. */
    env_add(e, "APP_ORDER_PLACEMENT_TIMEOUT_MS=300000");
    env_add(e, "APP_REMOTE_BREAKER_OPEN_MS=200");
}

/* The administrator's migrate: the context's schema (and the order service's inboxes) then
 * belong to its role, which the service connects as. */
static void migrate_as_admin(const char *context)
{
    svc_env e;
    service_env(&e, context, true);
    ts_app m;
    static const char *const args[] = {"--config", "config/app.yaml", "migrate", NULL};
    ts_app_spawn(&m, args, e.list);
    if (ts_app_wait(&m, TS_HANG_GUARD_MS) != 0) {
        ts_app_dump_log(&m, 4000);
        fail_msg("migrate of %s failed", context);
    }
}

static void start_service(ts_app *svc, const char *context)
{
    svc_env e;
    service_env(&e, context, false);
    if (svc->port > 0 && svc->pid == 0)
        assert_int_equal(ts_app_restart(svc, e.list), 0);
    else
        assert_int_equal(ts_app_start(svc, e.list), 0);
}

static int group_start(void **state)
{
    (void)state;
    brokers = getenv("APP_TEST_KAFKA_BROKERS");
    if (!brokers || !*brokers)
        return 0; /* each test skips, saying why */
    snprintf(prefix, sizeof prefix, "split-%ld-%d.", (long)time(NULL), (int)getpid());
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, TOKEN, strlen(TOKEN));
    sha256_final_hex(&c, token_sha256);
    static const char *const contexts[] = {"user", "inventory", "order"};
    for (size_t i = 0; i < 3; i++) {
        char db[64];
        snprintf(db, sizeof db, "split_%s", contexts[i]);
        fresh_database(db);
        migrate_as_admin(contexts[i]);
    }
    start_service(&user_svc, "user");
    start_service(&inventory_svc, "inventory");
    start_service(&order_svc, "order");
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

/* The order service's database answers sql with a number. */
static long long order_db_int(const char *sql)
{
    char dsn[512], cmd[2048], out[512];
    ts_dsn_with(ts_env("APP_POSTGRES_DSN"), "split_order", NULL, dsn, sizeof dsn);
    snprintf(cmd, sizeof cmd, "psql \"%s\" -qtAX -v ON_ERROR_STOP=1 -c \"%s\"", dsn, sql);
    if (ts_run(cmd, out, sizeof out) != 0)
        fail_msg("%s: %s", sql, out);
    return strtoll(out, NULL, 10);
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

/* The checkpoint of subscriber name in the order service's readiness (-1: not listed). */
/* The order service's readiness answer (the caller deletes it), and in *status its HTTP
 * status. */
static cJSON *order_readiness(int *status)
{
    tc_response r = call_h(&order_svc, "GET", "/health/ready", NULL, NULL);
    cJSON *j = tc_json(&r);
    if (status)
        *status = r.status;
    tc_response_free(&r);
    return j;
}

static long long order_checkpoint(const char *name)
{
    cJSON *j = order_readiness(NULL);
    const cJSON *cp = cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "subscriptions"), name), "checkpoint");
    long long v = cJSON_IsNumber(cp) ? (long long)cp->valuedouble : -1;
    cJSON_Delete(j);
    return v;
}

typedef struct mirrored_arg {
    const char *inbox;      /* "user_inbox" */
    const char *stream;     /* "user-<id>" */
    const char *type;       /* event type, or NULL for any */
    const char *subscriber; /* the copy that must have read it, or NULL */
} mirrored_arg;

/* The event is in the inbox (it came through Kafka) and the subscriber read past it. */
static bool mirrored(void *arg)
{
    mirrored_arg *a = arg;
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT coalesce(max(global_position), 0) FROM %s.events WHERE stream_id = '%s'%s%s%s",
             a->inbox, a->stream, a->type ? " AND event_type = '" : "", a->type ? a->type : "",
             a->type ? "'" : "");
    long long pos = order_db_int(sql);
    return pos > 0 && (!a->subscriber || order_checkpoint(a->subscriber) >= pos);
}

static void expect_mirrored(const char *inbox, const char *stream, const char *type,
                            const char *subscriber)
{
    mirrored_arg a = {inbox, stream, type, subscriber};
    if (ts_wait_until(mirrored, &a, TS_HANG_GUARD_MS) != 0)
        fail_msg("%s %s never reached %s%s%s", stream, type ? type : "", inbox,
                 subscriber ? " and " : "", subscriber ? subscriber : "");
}

typedef struct check_arg {
    const char *name;
    const char *want;
} check_arg;

static bool readiness_check_is(void *arg)
{
    check_arg *a = arg;
    int status = 0;
    cJSON *j = order_readiness(&status);
    const cJSON *c = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "checks"), a->name);
    bool ok = strcmp(str(c, "status"), a->want) == 0 && status == 200;
    cJSON_Delete(j);
    return ok;
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

/* ---- the tests ----------------------------------------------------------------------------- */

/* Users on user, products on inventory, orders on order: the order service asks for the
 * customer and the products and reserves the stock over the internal endpoints. */
static void test_orders_confirm(void **state)
{
    (void)state;
    ts_need_kafka();
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
    ts_need_kafka();
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

/* The deactivation reaches the order service through Kafka: once it is in the inbox and the
 * customer directory read it, the next order is cancelled as customer_deactivated even with
 * the user service stopped, so the copy decided, not a query. */
static void test_deactivated_customer_via_kafka(void **state)
{
    (void)state;
    ts_need_kafka();
    char customer[UUID_STR_LEN], sku[32], id[UUID_STR_LEN], path[96], stream[64];
    new_customer(customer);
    new_sku(sku, sizeof sku, 5);
    snprintf(path, sizeof path, "/v1/users/%s/deactivate", customer);
    cJSON_Delete(call_json(&user_svc, "POST", path, NULL, 200));
    snprintf(stream, sizeof stream, "user-%s", customer);
    expect_mirrored("user_inbox", stream, "user.user.deactivated", "order.customer_directory");

    ts_app_stop_clean(&user_svc);
    const char *skus[] = {sku};
    int one[] = {1};
    place(customer, skus, one, 1, id);
    expect_outcome(id, "cancelled", "customer_deactivated");
    expect_stock(sku, 5, 0);
    start_service(&user_svc, "user");
}

/* With inventory stopped, an order is still accepted (the price is in the order service's
 * copy, from Kafka) and stays pending: the saga's reservations fail as unavailable and it
 * decides nothing, and readiness shows the remote degraded. Once inventory is back on its
 * address, the order confirms and its stock is reserved once. */
static void test_inventory_away(void **state)
{
    (void)state;
    ts_need_kafka();
    char customer[UUID_STR_LEN], sku[32], id[UUID_STR_LEN], stream[64];
    new_customer(customer);
    new_sku(sku, sizeof sku, 6);
    snprintf(stream, sizeof stream, "product-%s", sku);
    expect_mirrored("inventory_inbox", stream, NULL, "order.product_catalog");
    snprintf(stream, sizeof stream, "user-%s", customer);
    expect_mirrored("user_inbox", stream, NULL, "order.customer_directory");

    ts_app_stop_clean(&inventory_svc);
    failed_arg f = {"remote=\"inventory\"", 0};
    f.before =
        metric(&order_svc, "remote_calls_total", f.remote, "outcome=\"service-unavailable\"");
    const char *skus[] = {sku};
    int two[] = {2};
    place(customer, skus, two, 1, id);
    if (ts_wait_until(remote_call_failed, &f, TS_HANG_GUARD_MS) != 0)
        fail_msg("the saga never tried the stopped inventory service");
    check_arg degraded = {"remote.inventory", "degraded"}, up = {"remote.inventory", "up"};
    if (ts_wait_until(readiness_check_is, &degraded, TS_HANG_GUARD_MS) != 0)
        fail_msg("readiness never showed remote.inventory degraded");
    order_state s = {.id = id};
    read_order(&s);
    assert_string_equal(s.status, "pending");

    start_service(&inventory_svc, "inventory");
    expect_outcome(id, "confirmed", "");
    expect_stock(sku, 6, 2);
    if (ts_wait_until(readiness_check_is, &up, TS_HANG_GUARD_MS) != 0)
        fail_msg("readiness never showed remote.inventory up again");
}

/* With the broker stopped, placement still works: the customer and the product are in no
 * copy yet, so the saga asks their owners over HTTP. The inbox catches up once the broker
 * is back. */
static void test_broker_stopped(void **state)
{
    (void)state;
    ts_need_kafka();
    assert_int_equal(ts_kafka_ctl("stop-broker"), 0);
    char customer[UUID_STR_LEN], sku[32], id[UUID_STR_LEN], stream[64];
    new_customer(customer);
    new_sku(sku, sizeof sku, 3);
    const char *skus[] = {sku};
    int one[] = {1};
    place(customer, skus, one, 1, id);
    expect_outcome(id, "confirmed", "");
    expect_stock(sku, 3, 1);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM user_inbox.events WHERE stream_id = 'user-%s'",
             customer);
    assert_int_equal(order_db_int(sql), 0); /* nothing came through Kafka meanwhile */

    assert_int_equal(ts_kafka_ctl("start-broker"), 0);
    snprintf(stream, sizeof stream, "user-%s", customer);
    expect_mirrored("user_inbox", stream, "user.user.registered", "order.customer_directory");
    snprintf(stream, sizeof stream, "product-%s", sku);
    expect_mirrored("inventory_inbox", stream, NULL, "order.product_catalog");
}

/* ---- SIGKILL under load ---- */

#define LOAD_CUSTOMERS 4
#define LOAD_SKUS      3
#define LOAD_STOCK     12

static struct {
    pthread_mutex_t lock;
    bool stop;
    int accepted; /* 202s */
    char customers[LOAD_CUSTOMERS][UUID_STR_LEN];
    char skus[LOAD_SKUS][32];
} load = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Places orders one after another on the order service, whatever answers: while it is
 * killed, requests fail, and the loop goes on until told to stop. */
static void *load_run(void *arg)
{
    (void)arg;
    for (unsigned n = 0;; n++) {
        pthread_mutex_lock(&load.lock);
        bool stop = load.stop;
        pthread_mutex_unlock(&load.lock);
        if (stop)
            break;
        char body[512];
        snprintf(body, sizeof body,
                 "{\"customerId\":\"%s\",\"lines\":[{\"sku\":\"%s\",\"quantity\":%u},"
                 "{\"sku\":\"%s\",\"quantity\":1}]}",
                 load.customers[n % LOAD_CUSTOMERS], load.skus[n % LOAD_SKUS], 1 + n % 2,
                 load.skus[(n + 1) % LOAD_SKUS]);
        tc_response r;
        memset(&r, 0, sizeof r);
        int rc = tc_http("127.0.0.1", order_svc.port, "POST", "/v1/orders", json_headers, body,
                         strlen(body), &r);
        pthread_mutex_lock(&load.lock);
        if (rc == 0 && r.status == 202)
            load.accepted++;
        pthread_mutex_unlock(&load.lock);
        tc_response_free(&r);
        if (rc != 0) {
            struct timespec pause = {0, 20 * 1000 * 1000};
            nanosleep(&pause, NULL);
        }
    }
    return NULL;
}

static bool accepted_at_least(void *arg)
{
    int want = *(int *)arg;
    pthread_mutex_lock(&load.lock);
    bool ok = load.accepted >= want;
    pthread_mutex_unlock(&load.lock);
    return ok;
}

typedef struct settled_all {
    int orders, confirmed;
    int64_t reserved[LOAD_SKUS]; /* by the confirmed orders, per sku */
    char bad[256];
} settled_all;

/* Reads every order of the load's customers; true when none is pending. Each settled order
 * must have exactly one settling event in its trail. */
static bool caught_up(const char *subscriber)
{
    cJSON *j = order_readiness(NULL);
    const cJSON *sub = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "subscriptions"), subscriber);
    const cJSON *lag = cJSON_GetObjectItem(sub, "lagEvents");
    bool ok =
        strcmp(str(sub, "status"), "running") == 0 && cJSON_IsNumber(lag) && lag->valuedouble == 0;
    cJSON_Delete(j);
    return ok;
}

static bool all_settled(void *arg)
{
    settled_all *t = arg;
    memset(t, 0, sizeof *t);
    /* The lists are the projection's: complete once it has read the whole order log. */
    if (!caught_up("order.placement_saga") || !caught_up("order.projection"))
        return false;
    for (int c = 0; c < LOAD_CUSTOMERS; c++) {
        char path[128];
        snprintf(path, sizeof path, "/v1/users/%s/orders", load.customers[c]);
        tc_response r = call_h(&order_svc, "GET", path, NULL, NULL);
        cJSON *j = r.status == 200 ? tc_json(&r) : NULL;
        tc_response_free(&r);
        if (!j)
            return false;
        const cJSON *o;
        cJSON_ArrayForEach(o, cJSON_GetObjectItem(j, "items"))
        {
            t->orders++;
            if (strcmp(str(o, "status"), "pending") == 0) {
                cJSON_Delete(j);
                return false;
            }
            if (strcmp(str(o, "status"), "confirmed") != 0)
                continue;
            t->confirmed++;
            const cJSON *line;
            cJSON_ArrayForEach(line, cJSON_GetObjectItem(o, "lines"))
            {
                for (int k = 0; k < LOAD_SKUS; k++)
                    if (strcmp(str(line, "sku"), load.skus[k]) == 0)
                        t->reserved[k] += num(line, "quantity");
            }
        }
        cJSON_Delete(j);
    }
    return true;
}

static int settling_events(const char *id)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/orders/%s/events", id);
    cJSON *j = call_json(&order_svc, "GET", path, NULL, 200);
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(j, "items"))
    {
        const char *type = str(e, "type");
        n += strcmp(type, "order.order.confirmed") == 0 ||
             strcmp(type, "order.order.cancelled") == 0;
    }
    cJSON_Delete(j);
    return n;
}

/* The order service is killed with SIGKILL while orders pour in, and started again: every
 * order it accepted settles exactly once, and no unit of stock is reserved twice or oversold. */
static void test_order_killed_under_load(void **state)
{
    (void)state;
    ts_need_kafka();
    for (int c = 0; c < LOAD_CUSTOMERS; c++)
        new_customer(load.customers[c]);
    for (int k = 0; k < LOAD_SKUS; k++)
        new_sku(load.skus[k], sizeof load.skus[k], LOAD_STOCK);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, load_run, NULL), 0);
    int want = 8;
    if (ts_wait_until(accepted_at_least, &want, TS_HANG_GUARD_MS) != 0)
        fail_msg("the load never got 8 orders accepted");
    assert_int_equal(ts_app_stop(&order_svc, SIGKILL), 128 + SIGKILL);
    start_service(&order_svc, "order");
    pthread_mutex_lock(&load.lock);
    want = load.accepted + 8;
    pthread_mutex_unlock(&load.lock);
    if (ts_wait_until(accepted_at_least, &want, TS_HANG_GUARD_MS) != 0)
        fail_msg("the restarted order service accepted no more orders");
    pthread_mutex_lock(&load.lock);
    load.stop = true;
    pthread_mutex_unlock(&load.lock);
    pthread_join(t, NULL);

    settled_all all;
    if (ts_wait_until(all_settled, &all, TS_HANG_GUARD_MS) != 0)
        fail_msg("orders stayed pending after the restart");
    assert_true(all.orders >= load.accepted);
    assert_true(all.confirmed > 0);
    print_message("SIGKILL under load: %d orders accepted, %d in the lists, %d confirmed\n",
                  load.accepted, all.orders, all.confirmed);
    for (int k = 0; k < LOAD_SKUS; k++) {
        assert_true(all.reserved[k] <= LOAD_STOCK);
        expect_stock(load.skus[k], LOAD_STOCK, all.reserved[k]);
    }
    for (int c = 0; c < LOAD_CUSTOMERS; c++) {
        char path[128];
        snprintf(path, sizeof path, "/v1/users/%s/orders", load.customers[c]);
        cJSON *j = call_json(&order_svc, "GET", path, NULL, 200);
        const cJSON *o;
        cJSON_ArrayForEach(o, cJSON_GetObjectItem(j, "items"))
        {
            if (settling_events(str(o, "id")) != 1)
                fail_msg("order %s settled %d times", str(o, "id"), settling_events(str(o, "id")));
        }
        cJSON_Delete(j);
    }
}

/* The internal endpoints answer only trusted peers with the token: anything else is 403
 * problem+json, and nothing runs. */
static void test_internal_endpoints_closed(void **state)
{
    (void)state;
    ts_need_kafka();
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
    ts_need_kafka();
    ts_app_stop_clean(&order_svc);
    ts_app_stop_clean(&inventory_svc);
    ts_app_stop_clean(&user_svc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_orders_confirm),
        cmocka_unit_test(test_out_of_stock_releases),
        cmocka_unit_test(test_deactivated_customer_via_kafka),
        cmocka_unit_test(test_inventory_away),
        cmocka_unit_test(test_broker_stopped),
        cmocka_unit_test(test_order_killed_under_load),
        cmocka_unit_test(test_internal_endpoints_closed),
        cmocka_unit_test(test_owner_nowhere_refuses_the_start),
        cmocka_unit_test(test_services_stop_cleanly),
    };
    return cmocka_run_group_tests_name("e2e split deployment", tests, group_start, group_end);
}
