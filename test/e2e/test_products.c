/* End to end: the product endpoints of API.md against ./app, private PostgreSQL and Redis. */
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

static tc_response call(const char *method, const char *path, const char *body)
{
    tc_response r;
    memset(&r, 0, sizeof r);
    assert_int_equal(tc_http("127.0.0.1", app.port, method, path, body ? json_headers : NULL, body,
                             body ? strlen(body) : 0, &r),
                     0);
    return r;
}

static void unique_sku(char *out, size_t n, const char *tag)
{
    char id[UUID_STR_LEN];
    uuid_v4(id);
    snprintf(out, n, "%s-%.8s", tag, id);
    for (char *p = out; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
}

static int64_t member(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItem(o, name);
    if (!cJSON_IsNumber(v))
        fail_msg("member %s missing", name);
    return (int64_t)v->valuedouble;
}

static void create(const char *sku, int64_t stock)
{
    char body[256];
    snprintf(body, sizeof body,
             "{\"sku\":\"%s\",\"name\":\"Widget\",\"price\":{\"amount\":1250,"
             "\"currency\":\"EUR\"},\"stock\":%lld}",
             sku, (long long)stock);
    tc_response r = call("POST", "/v1/products", body);
    if (r.status != 201)
        fail_msg("create %s: %d %.*s", sku, r.status, (int)r.body_len, r.body);
    tc_response_free(&r);
}

typedef struct want {
    const char *path;
    int64_t on_hand;
} want;

static bool product_has(void *p)
{
    want *w = p;
    tc_response r = call("GET", w->path, NULL);
    bool ok = false;
    if (r.status == 200) {
        cJSON *j = tc_json(&r);
        ok = member(j, "onHand") == w->on_hand;
        cJSON_Delete(j);
    }
    tc_response_free(&r);
    return ok;
}

static void assert_problem(tc_response *r, int status)
{
    if (r->status != status)
        fail_msg("expected %d, got %d: %.*s", status, r->status, (int)r->body_len,
                 r->body ? r->body : "");
    assert_non_null(strstr(tc_header(r, "Content-Type"), "application/problem+json"));
}

static void test_create_read_and_add_stock(void **state)
{
    (void)state;
    char sku[48], path[96];
    unique_sku(sku, sizeof sku, "WID");
    char body[256];
    snprintf(body, sizeof body,
             "{\"sku\":\"%s\",\"name\":\"  Widget  \",\"price\":{\"amount\":1250,"
             "\"currency\":\"EUR\"},\"stock\":5}",
             sku);
    tc_response r = call("POST", "/v1/products", body);
    assert_int_equal(r.status, 201);
    snprintf(path, sizeof path, "/v1/products/%s", sku);
    assert_string_equal(tc_header(&r, "Location"), path);
    assert_string_equal(tc_header(&r, "ETag"), "\"1\"");
    cJSON *p = tc_json(&r);
    assert_string_equal(cJSON_GetObjectItem(p, "name")->valuestring, "Widget");
    assert_int_equal(member(p, "onHand"), 5);
    assert_int_equal(member(p, "available"), 5);
    assert_int_equal(member(cJSON_GetObjectItem(p, "price"), "amount"), 1250);
    cJSON_Delete(p);
    tc_response_free(&r);

    want w = {path, 5};
    assert_int_equal(ts_wait_until(product_has, &w, 10000), 0);
    r = call("GET", path, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(tc_header(&r, "ETag"), "\"1\"");
    p = tc_json(&r);
    assert_string_equal(cJSON_GetObjectItem(p, "sku")->valuestring, sku);
    assert_int_equal(member(p, "reserved"), 0);
    assert_int_equal(member(p, "available"), 5);
    assert_int_equal(member(p, "version"), 1);
    cJSON_Delete(p);
    tc_response_free(&r);

    r = call("POST", "/v1/products", body);
    assert_problem(&r, 409);
    tc_response_free(&r);

    char stock_path[128];
    snprintf(stock_path, sizeof stock_path, "/v1/products/%s/stock", sku);
    r = call("POST", stock_path, "{\"quantity\":7}");
    assert_int_equal(r.status, 200);
    assert_string_equal(tc_header(&r, "ETag"), "\"2\"");
    p = tc_json(&r);
    assert_int_equal(member(p, "onHand"), 12);
    assert_int_equal(member(p, "version"), 2);
    cJSON_Delete(p);
    tc_response_free(&r);
    w.on_hand = 12;
    assert_int_equal(ts_wait_until(product_has, &w, 10000), 0);

    char events[128];
    snprintf(events, sizeof events, "/v1/products/%s/events", sku);
    r = call("GET", events, NULL);
    assert_int_equal(r.status, 200);
    cJSON *e = tc_json(&r);
    const cJSON *items = cJSON_GetObjectItem(e, "items");
    assert_int_equal(cJSON_GetArraySize(items), 2);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(items, 0), "type")->valuestring,
                        "inventory.product.created");
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(items, 1), "type")->valuestring,
                        "inventory.product.stock_added");
    cJSON_Delete(e);
    tc_response_free(&r);
}

static void test_bad_input(void **state)
{
    (void)state;
    char sku[48], path[128];
    unique_sku(sku, sizeof sku, "BAD");
    create(sku, 1);
    snprintf(path, sizeof path, "/v1/products/%s/stock", sku);
    static const struct {
        const char *method;
        int use_sku_path;
        const char *body;
        int status;
    } cases[] = {
        {"POST", 0,
         "{\"sku\":\"lower\",\"name\":\"x\",\"price\":{\"amount\":1,\"currency\":\"EUR\"},"
         "\"stock\":1}",
         422},
        {"POST", 0,
         "{\"sku\":\"-LEAD\",\"name\":\"x\",\"price\":{\"amount\":1,\"currency\":"
         "\"EUR\"},\"stock\":1}",
         422},
        {"POST", 0,
         "{\"sku\":\"NEG-STOCK\",\"name\":\"x\",\"price\":{\"amount\":1,\"currency\":"
         "\"EUR\"},\"stock\":-1}",
         422},
        {"POST", 0,
         "{\"sku\":\"BIG-STOCK\",\"name\":\"x\",\"price\":{\"amount\":1,\"currency\":"
         "\"EUR\"},\"stock\":1000001}",
         422},
        {"POST", 0,
         "{\"sku\":\"CUR\",\"name\":\"x\",\"price\":{\"amount\":1,\"currency\":"
         "\"XXY\"},\"stock\":1}",
         422},
        {"POST", 0,
         "{\"sku\":\"FRAC\",\"name\":\"x\",\"price\":{\"amount\":1.5,\"currency\":"
         "\"EUR\"},\"stock\":1}",
         422},
        {"POST", 0,
         "{\"sku\":\"NEGP\",\"name\":\"x\",\"price\":{\"amount\":-1,\"currency\":"
         "\"EUR\"},\"stock\":1}",
         422},
        {"POST", 0, "{\"sku\":\"MISSING\",\"name\":\"x\"}", 422},
        {"POST", 0, "{}", 422},
        {"POST", 0,
         "{\"sku\":\"EMPTY-NAME\",\"name\":\"  \",\"price\":{\"amount\":1,\"currency\":"
         "\"EUR\"},\"stock\":1}",
         422},
        {"POST", 0, "{\"sku\":\"NO-CUR\",\"name\":\"x\",\"price\":{\"amount\":1},\"stock\":1}",
         422},
        {"POST", 0,
         "{\"sku\":\"STR-AMT\",\"name\":\"x\",\"price\":{\"amount\":\"1\",\"currency\":"
         "\"EUR\"},\"stock\":1}",
         400},
        {"POST", 0,
         "{\"sku\":5,\"name\":\"x\",\"price\":{\"amount\":1,\"currency\":\"EUR\"},"
         "\"stock\":1}",
         400},
        {"POST", 0, "{\"sku\":\"TYPES\",\"name\":\"x\",\"price\":\"12 EUR\",\"stock\":1}", 400},
        {"POST", 0,
         "{\"sku\":\"TYPES2\",\"name\":\"x\",\"price\":{\"amount\":1,\"currency\":"
         "\"EUR\"},\"stock\":\"1\"}",
         400},
        {"POST", 1, "{\"quantity\":0}", 422},
        {"POST", 1, "{\"quantity\":1000001}", 422},
        {"POST", 1, "{\"quantity\":\"1\"}", 400},
        {"POST", 1, "{}", 422},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tc_response r =
            call(cases[i].method, cases[i].use_sku_path ? path : "/v1/products", cases[i].body);
        if (r.status != cases[i].status)
            fail_msg("case %zu (%s): expected %d, got %d: %.*s", i, cases[i].body, cases[i].status,
                     r.status, (int)r.body_len, r.body ? r.body : "");
        assert_problem(&r, cases[i].status);
        tc_response_free(&r);
    }
    tc_response r = call("GET", "/v1/products/NOPE-NOT-THERE", NULL);
    assert_problem(&r, 404);
    tc_response_free(&r);
    r = call("GET", "/v1/products/lower-case", NULL);
    assert_problem(&r, 404);
    tc_response_free(&r);
    r = call("POST", "/v1/products/NOPE-NOT-THERE/stock", "{\"quantity\":1}");
    assert_problem(&r, 404);
    tc_response_free(&r);
    r = call("GET", "/v1/products/NOPE-NOT-THERE/events", NULL);
    assert_problem(&r, 404);
    tc_response_free(&r);
}

typedef struct adder {
    const char *path;
    int status;
    const char *const *headers; /* NULL: json_headers */
    char *body;                 /* the answer, owned */
} adder;

static void *add_one(void *p)
{
    adder *a = p;
    tc_response r;
    memset(&r, 0, sizeof r);
    if (tc_http("127.0.0.1", app.port, "POST", a->path, a->headers ? a->headers : json_headers,
                "{\"quantity\":1}", 14, &r) == 0) {
        a->status = r.status;
        a->body = strdup(r.body);
    }
    tc_response_free(&r);
    return NULL;
}

/* 50 concurrent additions to one product: each is retried past version conflicts, none is
 * lost. */
static void test_concurrent_stock_additions(void **state)
{
    (void)state;
    char sku[48], path[128], get[128];
    unique_sku(sku, sizeof sku, "RACE");
    create(sku, 0);
    snprintf(path, sizeof path, "/v1/products/%s/stock", sku);
    adder adders[50];
    pthread_t th[50];
    for (int i = 0; i < 50; i++) {
        adders[i] = (adder){path, 0, NULL, NULL};
        assert_int_equal(pthread_create(&th[i], NULL, add_one, &adders[i]), 0);
    }
    for (int i = 0; i < 50; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(adders[i].status, 200);
        free(adders[i].body);
    }
    snprintf(get, sizeof get, "/v1/products/%s", sku);
    want w = {get, 50};
    assert_int_equal(ts_wait_until(product_has, &w, 10000), 0);
    snprintf(get, sizeof get, "/v1/products/%s/events", sku);
    tc_response r = call("GET", get, NULL);
    assert_int_equal(r.status, 200);
    cJSON *e = tc_json(&r);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(e, "items")), 51);
    cJSON_Delete(e);
    tc_response_free(&r);
}

/* 20 concurrent retries of one request with one Idempotency-Key: the stock is added once,
 * and every retry gets the same answer, whether it found the record or lost the race to it. */
static void test_idempotent_retries(void **state)
{
    (void)state;
    char sku[48], path[128], get[128], key[96], id[UUID_STR_LEN];
    unique_sku(sku, sizeof sku, "IDEM");
    create(sku, 10);
    snprintf(path, sizeof path, "/v1/products/%s/stock", sku);
    uuid_v4(id);
    snprintf(key, sizeof key, "Idempotency-Key: restock-%s", id);
    const char *const headers[] = {"Content-Type: application/json", key, NULL};
    adder adders[20];
    pthread_t th[20];
    for (int i = 0; i < 20; i++) {
        adders[i] = (adder){path, 0, headers, NULL};
        assert_int_equal(pthread_create(&th[i], NULL, add_one, &adders[i]), 0);
    }
    for (int i = 0; i < 20; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(adders[i].status, 200);
        assert_string_equal(adders[i].body, adders[0].body);
    }
    cJSON *first = cJSON_Parse(adders[0].body);
    assert_int_equal(member(first, "onHand"), 11);
    cJSON_Delete(first);
    for (int i = 0; i < 20; i++)
        free(adders[i].body);
    snprintf(get, sizeof get, "/v1/products/%s/events", sku);
    tc_response r = call("GET", get, NULL);
    cJSON *e = tc_json(&r);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(e, "items")), 2);
    cJSON_Delete(e);
    tc_response_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_read_and_add_stock),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_concurrent_stock_additions),
        cmocka_unit_test(test_idempotent_retries),
        cmocka_unit_test(ts_test_app_stops_cleanly),
    };
    ts_app_share(&app);
    return cmocka_run_group_tests_name("e2e products", tests, ts_app_group_start, ts_app_group_end);
}
