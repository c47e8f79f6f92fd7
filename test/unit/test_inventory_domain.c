/* The product aggregate without I/O: creation rules, stock, idempotent reservations and
 * releases, the reserved <= on hand invariant, and the event round trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "contexts/inventory/domain/product.h"

static const money eur = {1250, "EUR"};
static const char *const order_a = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
static const char *const order_b = "1f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";

/* A product created with stock, through decide and apply. */
static void made(inv_product *p, int64_t stock)
{
    memset(p, 0, sizeof *p);
    inv_event ev;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(inv_decide_create("SKU-1", "Widget", &eur, stock, &ev, &err), 0);
    assert_int_equal(inv_apply(p, &ev, &err), 0);
}

static void test_sku(void **state)
{
    (void)state;
    assert_true(inv_sku_valid("A"));
    assert_true(inv_sku_valid("SKU-1"));
    assert_true(inv_sku_valid("0123456789ABCDEF0123456789ABCDEF"));
    assert_false(inv_sku_valid("0123456789ABCDEF0123456789ABCDEF0"));
    assert_false(inv_sku_valid("-SKU"));
    assert_false(inv_sku_valid("sku"));
    assert_false(inv_sku_valid("SKU 1"));
    assert_false(inv_sku_valid(""));
}

static void test_create_validation(void **state)
{
    (void)state;
    inv_event ev;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(inv_decide_create("bad", "  ", &eur, -1, &ev, &err), APP_EINVAL);
    assert_int_equal(err.n_fields, 3);
    memset(&err, 0, sizeof err);
    assert_int_equal(inv_decide_create("OK", " Widget ", &eur, 1000000, &ev, &err), 0);
    assert_string_equal(ev.name, "Widget");
    memset(&err, 0, sizeof err);
    assert_int_equal(inv_decide_create("OK", "W", &eur, 1000001, &ev, &err), APP_EINVAL);
}

static void test_reserve_and_release(void **state)
{
    (void)state;
    inv_product p;
    made(&p, 5);
    inv_event ev;
    size_t n;
    bool short_;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(inv_decide_reserve(&p, order_a, 3, &ev, &n, &short_, &err), 0);
    assert_int_equal(n, 1);
    assert_false(short_);
    assert_int_equal(inv_apply(&p, &ev, &err), 0);
    assert_int_equal(p.reserved, 3);

    /* The same order again: reserved once. */
    assert_int_equal(inv_decide_reserve(&p, order_a, 3, &ev, &n, &short_, &err), 0);
    assert_int_equal(n, 0);
    assert_false(short_);

    /* Another order of 3 with 2 available: out of stock, no event. */
    assert_int_equal(inv_decide_reserve(&p, order_b, 3, &ev, &n, &short_, &err), 0);
    assert_int_equal(n, 0);
    assert_true(short_);
    assert_true(p.reserved <= p.on_hand);

    assert_int_equal(inv_decide_release(&p, order_a, &ev, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ev.quantity, 3);
    assert_int_equal(inv_apply(&p, &ev, &err), 0);
    assert_int_equal(p.reserved, 0);
    assert_int_equal(inv_reserved_for(&p, order_a), 0);
    assert_int_equal(inv_decide_release(&p, order_a, &ev, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_int_equal(p.version, 3);
    inv_product_free(&p);
}

static void test_many_reservations(void **state)
{
    (void)state;
    inv_product p;
    made(&p, 20);
    app_error err = APP_ERROR_INIT;
    char ids[25][UUID_STR_LEN];
    int reserved = 0, short_count = 0;
    for (int i = 0; i < 25; i++) {
        uuid_v4(ids[i]);
        inv_event ev;
        size_t n;
        bool short_;
        assert_int_equal(inv_decide_reserve(&p, ids[i], 1, &ev, &n, &short_, &err), 0);
        if (n == 1) {
            assert_int_equal(inv_apply(&p, &ev, &err), 0);
            reserved++;
        }
        short_count += short_;
        assert_true(p.reserved <= p.on_hand);
    }
    assert_int_equal(reserved, 20);
    assert_int_equal(short_count, 5);
    inv_product_free(&p);
}

static void test_errors(void **state)
{
    (void)state;
    inv_product none = {0};
    inv_event ev;
    size_t n;
    bool short_;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(inv_decide_add_stock(&none, 1, &ev, &err), APP_ENOTFOUND);
    assert_int_equal(inv_decide_reserve(&none, order_a, 1, &ev, &n, &short_, &err), APP_ENOTFOUND);
    inv_product p;
    made(&p, 1);
    memset(&err, 0, sizeof err);
    assert_int_equal(inv_decide_add_stock(&p, 0, &ev, &err), APP_EINVAL);
    memset(&err, 0, sizeof err);
    assert_int_equal(inv_decide_reserve(&p, order_a, 1001, &ev, &n, &short_, &err), APP_EINVAL);
    memset(&err, 0, sizeof err);
    assert_int_equal(inv_decide_reserve(&p, "not-a-uuid", 1, &ev, &n, &short_, &err), APP_EINVAL);
    inv_product_free(&p);
}

static void test_add_stock(void **state)
{
    (void)state;
    inv_product p;
    made(&p, 10);
    inv_event ev;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(inv_decide_add_stock(&p, INV_STOCK_MAX, &ev, &err), 0);
    assert_int_equal(ev.kind, INV_EV_STOCK_ADDED);
    assert_string_equal(ev.sku, "SKU-1");
    assert_int_equal(ev.quantity, INV_STOCK_MAX);
    assert_int_equal(inv_apply(&p, &ev, &err), 0);
    assert_int_equal(p.on_hand, INV_STOCK_MAX + 10);
    assert_int_equal(p.version, 2);
    memset(&err, 0, sizeof err);
    assert_int_equal(inv_decide_add_stock(&p, INV_STOCK_MAX + 1, &ev, &err), APP_EINVAL);
    assert_string_equal(err.fields[0].field, "quantity");

    /* On hand stops at 10^9: up to it is fine, one past is refused. */
    p.on_hand = INV_ON_HAND_MAX - 5;
    memset(&err, 0, sizeof err);
    assert_int_equal(inv_decide_add_stock(&p, 5, &ev, &err), 0);
    assert_int_equal(inv_decide_add_stock(&p, 6, &ev, &err), APP_EINVAL);
    assert_string_equal(err.fields[0].field, "quantity");
    inv_product_free(&p);
}

/* Folding is deterministic: the same events give the same state, and a release of an order
 * that holds nothing (never decided, but tolerated on read) only moves the version. */
static void test_fold(void **state)
{
    (void)state;
    inv_product p;
    made(&p, 9);
    app_error err = APP_ERROR_INIT;
    inv_event evs[4] = {
        {.kind = INV_EV_STOCK_RESERVED, .sku = "SKU-1", .quantity = 4},
        {.kind = INV_EV_STOCK_RESERVED, .sku = "SKU-1", .quantity = 5},
        {.kind = INV_EV_RELEASED, .sku = "SKU-1", .quantity = 4},
        {.kind = INV_EV_UNKNOWN},
    };
    strcpy(evs[0].order_id, order_a);
    strcpy(evs[1].order_id, order_b);
    strcpy(evs[2].order_id, order_a);
    for (int i = 0; i < 4; i++)
        assert_int_equal(inv_apply(&p, &evs[i], &err), 0);
    assert_int_equal(p.on_hand, 9);
    assert_int_equal(p.reserved, 5);
    assert_int_equal(p.n_reservations, 1);
    assert_int_equal(inv_reserved_for(&p, order_b), 5);
    assert_int_equal(inv_reserved_for(&p, order_a), 0);
    assert_int_equal(p.version, 5);
    inv_event stray = {.kind = INV_EV_RELEASED, .sku = "SKU-1", .quantity = 3};
    strcpy(stray.order_id, order_a);
    assert_int_equal(inv_apply(&p, &stray, &err), 0);
    assert_int_equal(p.reserved, 5);
    assert_int_equal(p.version, 6);

    /* Releasing for an id that is not an order is nothing, not an error. */
    inv_event ev;
    size_t n = 1;
    assert_int_equal(inv_decide_release(&p, "nope", &ev, &n, &err), 0);
    assert_int_equal(n, 0);
    inv_product_free(&p);
    inv_product_free(NULL);
}

/* Commit: the order shipped, so its reserved quantity leaves onHand and reserved, once. */
static void test_commit(void **state)
{
    (void)state;
    inv_product p;
    made(&p, 5);
    inv_event ev;
    size_t n;
    bool short_;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(inv_decide_commit(&p, order_a, &ev, &n, &err), 0);
    assert_int_equal(n, 0); /* holds nothing */
    assert_int_equal(inv_decide_reserve(&p, order_a, 3, &ev, &n, &short_, &err), 0);
    assert_int_equal(inv_apply(&p, &ev, &err), 0);
    assert_int_equal(inv_decide_reserve(&p, order_b, 1, &ev, &n, &short_, &err), 0);
    assert_int_equal(inv_apply(&p, &ev, &err), 0);
    assert_int_equal(p.reserved, 4);

    assert_int_equal(inv_decide_commit(&p, order_a, &ev, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ev.kind, INV_EV_COMMITTED);
    assert_int_equal(ev.quantity, 3);
    assert_string_equal(ev.order_id, order_a);
    assert_int_equal(inv_apply(&p, &ev, &err), 0);
    assert_int_equal(p.on_hand, 2);
    assert_int_equal(p.reserved, 1);
    assert_int_equal(p.n_reservations, 1);
    assert_int_equal(inv_reserved_for(&p, order_a), 0);
    assert_int_equal(inv_reserved_for(&p, order_b), 1);
    /* Committed once: again is nothing, and so is releasing it. */
    assert_int_equal(inv_decide_commit(&p, order_a, &ev, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_int_equal(inv_decide_release(&p, order_a, &ev, &n, &err), 0);
    assert_int_equal(n, 0);
    /* The stock that is left is what a new order can have. */
    assert_int_equal(inv_decide_reserve(&p, order_a, 2, &ev, &n, &short_, &err), 0);
    assert_true(short_);
    assert_int_equal(inv_decide_reserve(&p, order_a, 1, &ev, &n, &short_, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(p.version, 4);
    assert_int_equal(inv_decide_commit(&(inv_product){0}, order_a, &ev, &n, &err), APP_ENOTFOUND);
    inv_product_free(&p);
}

static void test_event_round_trip(void **state)
{
    (void)state;
    app_error err = APP_ERROR_INIT;
    inv_event in[5], out;
    assert_int_equal(inv_decide_create("SKU-9", "Wid\"get", &eur, 7, &in[0], &err), 0);
    in[1] = (inv_event){.kind = INV_EV_STOCK_RESERVED, .sku = "SKU-9", .quantity = 2};
    strcpy(in[1].order_id, order_a);
    in[2] = (inv_event){.kind = INV_EV_STOCK_ADDED, .sku = "SKU-9", .quantity = 4};
    in[3] = (inv_event){.kind = INV_EV_RELEASED, .sku = "SKU-9", .quantity = 2};
    strcpy(in[3].order_id, order_b);
    in[4] = (inv_event){.kind = INV_EV_COMMITTED, .sku = "SKU-9", .quantity = 5};
    strcpy(in[4].order_id, order_a);
    for (int i = 0; i < 5; i++) {
        char *data = NULL;
        assert_int_equal(inv_event_encode(&in[i], &data, &err), 0);
        assert_int_equal(inv_event_decode(inv_event_type(in[i].kind),
                                          inv_event_schema_version(in[i].kind), data, &out, &err),
                         0);
        assert_int_equal(out.kind, in[i].kind);
        assert_string_equal(out.sku, in[i].sku);
        assert_int_equal(out.quantity, in[i].quantity);
        assert_string_equal(out.order_id, in[i].order_id);
        assert_string_equal(out.name, in[i].name);
        assert_int_equal(out.price.amount, in[i].price.amount);
        free(data);
    }
    assert_string_equal(inv_event_type(INV_EV_RELEASED), "inventory.product.reservation_released");
    assert_string_equal(inv_event_type(INV_EV_COMMITTED),
                        "inventory.product.reservation_committed");
    assert_null(inv_event_type(INV_EV_UNKNOWN));
    /* Quantities that are not whole numbers int64_t holds are refused, not converted. */
    static const char *const bad[] = {
        "{\"sku\":\"A\",\"quantity\":1.5}",
        "{\"sku\":\"A\",\"quantity\":1e300}",
        "{\"sku\":\"A\",\"quantity\":\"1\"}",
        "not json",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(inv_event_decode(INV_EVENT_STOCK_ADDED, 1, bad[i], &out, &err),
                         APP_EINTERNAL);
    assert_int_equal(inv_event_decode("inventory.product.renamed", 1, "{}", &out, &err), 0);
    assert_int_equal(out.kind, INV_EV_UNKNOWN);
    assert_int_equal(inv_event_decode(INV_EVENT_CREATED, 3, "{}", &out, &err), 0);
    assert_int_equal(out.kind, INV_EV_UNKNOWN);
    assert_int_equal(inv_event_decode(INV_EVENT_STOCK_ADDED, 2, "{}", &out, &err), 0);
    assert_int_equal(out.kind, INV_EV_UNKNOWN);
    assert_int_equal(inv_event_decode(INV_EVENT_STOCK_ADDED, 1, "{\"sku\":\"A\"}", &out, &err),
                     APP_EINTERNAL);
}

/* The one schema change so far: created v1 said "stock" for what v2 calls "initialStock". */
static void test_created_schema_evolution(void **state)
{
    (void)state;
    app_error err = APP_ERROR_INIT;
    inv_event ev, out;
    assert_int_equal(inv_event_schema_version(INV_EV_CREATED), 2);
    assert_int_equal(inv_event_schema_version(INV_EV_STOCK_RESERVED), 1);
    assert_int_equal(inv_event_schema_version(INV_EV_UNKNOWN), 0);
    assert_int_equal(inv_decide_create("SKU-9", "Widget", &eur, 7, &ev, &err), 0);
    char *data = NULL;
    assert_int_equal(inv_event_encode(&ev, &data, &err), 0);
    cJSON *o = cJSON_Parse(data);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(o, "initialStock")->valueint, 7);
    assert_null(cJSON_GetObjectItemCaseSensitive(o, "stock"));
    cJSON_Delete(o);
    free(data);

    /* The old shape is refused by the decoder (never read as if it were current)... */
    const char *v1 = "{\"sku\":\"OLD-1\",\"name\":\"Lamp\",\"price\":{\"amount\":2490,"
                     "\"currency\":\"EUR\"},\"stock\":5}";
    assert_int_equal(inv_event_decode(INV_EVENT_CREATED, 1, v1, &out, &err), APP_EINTERNAL);
    assert_non_null(strstr(err.message, "was not upcast"));
    /* ...and the upcaster turns it into the current one. */
    o = cJSON_Parse(v1);
    assert_int_equal(inv_upcast_created_v1(o, &err), 0);
    data = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    assert_int_equal(inv_event_decode(INV_EVENT_CREATED, 2, data, &out, &err), 0);
    free(data);
    assert_int_equal(out.kind, INV_EV_CREATED);
    assert_int_equal(out.quantity, 5);
    assert_string_equal(out.name, "Lamp");
    assert_int_equal(out.price.amount, 2490);

    /* A v1 event without a usable stock, or already in the new shape, is refused. */
    static const char *const bad[] = {
        "{\"sku\":\"OLD-1\"}",
        "{\"sku\":\"OLD-1\",\"stock\":\"5\"}",
        "{\"sku\":\"OLD-1\",\"stock\":1.5}",
        "{\"sku\":\"OLD-1\",\"stock\":5,\"initialStock\":5}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o = cJSON_Parse(bad[i]);
        assert_int_equal(inv_upcast_created_v1(o, &err), APP_EINVAL);
        cJSON_Delete(o);
    }
}

/* A snapshot round trip keeps every count and reservation; a snapshot whose counts
 * disagree is refused. */
static void test_snapshot_codec(void **state)
{
    (void)state;
    app_error err = APP_ERROR_INIT;
    inv_product p;
    made(&p, 10);
    inv_event ev;
    size_t n;
    bool oos;
    assert_int_equal(inv_decide_reserve(&p, order_a, 3, &ev, &n, &oos, &err), 0);
    assert_int_equal(inv_apply(&p, &ev, &err), 0);
    assert_int_equal(inv_decide_reserve(&p, order_b, 2, &ev, &n, &oos, &err), 0);
    assert_int_equal(inv_apply(&p, &ev, &err), 0);
    char *text = NULL, *again = NULL;
    assert_int_equal(inv_snapshot_encode(&p, &text, &err), 0);
    inv_product q = {0};
    assert_int_equal(inv_snapshot_decode(text, p.version, &q, &err), 0);
    assert_true(q.exists);
    assert_int_equal(q.version, p.version);
    assert_int_equal(q.on_hand, 10);
    assert_int_equal(q.reserved, 5);
    assert_int_equal(inv_reserved_for(&q, order_b), 2);
    assert_int_equal(inv_snapshot_encode(&q, &again, &err), 0);
    assert_string_equal(again, text);
    free(again);
    free(text);
    inv_product_free(&q);
    inv_product_free(&p);
    const char *bad = "{\"sku\":\"SKU-1\",\"name\":\"W\",\"price\":{\"amount\":1,"
                      "\"currency\":\"EUR\"},\"onHand\":10,\"reserved\":4,\"reservations\":"
                      "[{\"orderId\":\"0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9\",\"quantity\":3}]}";
    assert_int_equal(inv_snapshot_decode(bad, 3, &q, &err), APP_EINVAL);
    assert_null(q.reservations);
    assert_false(q.exists);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sku),
        cmocka_unit_test(test_create_validation),
        cmocka_unit_test(test_reserve_and_release),
        cmocka_unit_test(test_commit),
        cmocka_unit_test(test_many_reservations),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_add_stock),
        cmocka_unit_test(test_fold),
        cmocka_unit_test(test_event_round_trip),
        cmocka_unit_test(test_created_schema_evolution),
        cmocka_unit_test(test_snapshot_codec),
    };
    return cmocka_run_group_tests_name("inventory domain", tests, NULL, NULL);
}
