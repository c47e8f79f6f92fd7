/* The inventory context's application layer against the in-memory stores of
 * test/support/fake_stores.h: commands through a real bus (conflict retries included), the
 * never-oversold invariant under concurrency, the projection, the queries and the routes. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "contexts/inventory/application/inventory_app.h"
#include "contexts/inventory/application/product_stream.h"
#include "contexts/inventory/inventory_module.h"
#include "core/config.h"
#include "core/metrics.h"
#include "core/uuid.h"
#include "kernel/bus.h"
#include "kernel/upcast.h"
#include "test/support/fake_stores.h"
#include "test/support/services.h"

static const char *const order_a = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
static const char *const order_b = "1f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";

typedef struct fixture {
    fake_es es;
    fake_rs rs;
    es_store stored;      /* the fake as it is */
    upcast_store *upcast; /* in front of it, as main.c puts it */
    es_store events;
    rs_store reads;
    bus *bus;
    bus_meta meta;
    bus_ctx ctx; /* for calling handlers and the projection directly */
} fixture;

/* snapshots.product and snapshots.cache through the module's configure phase, as main.c
 * does. */
static void configure_loads(int every, int cache)
{
    app_config cfg;
    config_defaults(&cfg);
    cfg.snapshots.product = every;
    cfg.snapshots.cache = cache;
    app_error err = APP_ERROR_INIT;
    assert_non_null(inventory_module.configure);
    assert_int_equal(inventory_module.configure(&cfg, &err), 0);
}

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    fake_es_init(&fx->es, "inventory");
    fake_rs_init(&fx->rs);
    fx->stored = fake_es_port(&fx->es);
    fx->reads = fake_rs_port(&fx->rs);
    app_error err = APP_ERROR_INIT;
    assert_int_equal(upcast_store_new(&fx->upcast, &fx->stored, app_modules, &err), 0);
    fx->events = upcast_store_port(fx->upcast);
    bus_options opts = {.events = &fx->events,
                        .reads = &fx->reads,
                        .clock = &app_system_clock,
                        .max_conflict_retries = 1000};
    assert_int_equal(bus_new(&fx->bus, &opts, &err), 0);
    assert_int_equal(bus_register(fx->bus, BUS_COMMAND, inventory_module.commands, &err), 0);
    assert_int_equal(bus_register(fx->bus, BUS_QUERY, inventory_module.queries, &err), 0);
    bus_meta_init(&fx->meta, "corr-1", "cause-1");
    fx->ctx = (bus_ctx){.events = &fx->events,
                        .reads = &fx->reads,
                        .clock = &app_system_clock,
                        .bus = fx->bus,
                        .meta = &fx->meta};
    /* Tests that want snapshots ask for them; the cache is on, as it is by default. */
    configure_loads(0, 256);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    bus_free(fx->bus);
    upcast_store_free(fx->upcast);
    fake_es_free(&fx->es);
    fake_rs_free(&fx->rs);
    free(fx);
    metrics_reset();
    return 0;
}

/* Sends (BUS_COMMAND) or asks (BUS_QUERY) name with the payload text through the bus. */
static int call(fixture *fx, bus_kind kind, const char *name, const char *payload, cJSON **out,
                app_error *err)
{
    cJSON *p = cJSON_Parse(payload);
    assert_non_null(p);
    app_error_clear(err);
    *out = NULL;
    bus_meta meta;
    bus_meta_init(&meta, "corr-2", NULL);
    int rc = kind == BUS_COMMAND ? bus_send(fx->bus, name, p, &meta, out, err)
                                 : bus_ask(fx->bus, name, p, &meta, out, err);
    cJSON_Delete(p);
    if (rc != 0) {
        assert_null(*out);
        assert_int_equal(err->code, rc);
    } else {
        assert_non_null(*out);
    }
    return rc;
}

static const char *sget(const cJSON *o, const char *name)
{
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, name));
    if (!s)
        fail_msg("no string member %s", name);
    return s;
}

static int64_t iget(const cJSON *o, const char *name)
{
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsNumber(n))
        fail_msg("no number member %s", name);
    return (int64_t)n->valuedouble;
}

/* Creates sku with stock through the bus; fails the test if refused. */
static void create(fixture *fx, const char *sku, int64_t stock)
{
    char payload[256];
    snprintf(payload, sizeof payload,
             "{\"sku\":\"%s\",\"name\":\"Widget\",\"price\":{\"amount\":1250,"
             "\"currency\":\"EUR\"},\"stock\":%lld}",
             sku, (long long)stock);
    cJSON *out;
    app_error err;
    if (call(fx, BUS_COMMAND, "inventory.create_product", payload, &out, &err) != 0)
        fail_msg("create %s: %s", sku, err.message);
    cJSON_Delete(out);
}

static int add_stock(fixture *fx, const char *sku, const char *quantity, cJSON **out,
                     app_error *err)
{
    char payload[256];
    snprintf(payload, sizeof payload, "{\"sku\":\"%s\",\"quantity\":%s}", sku, quantity);
    return call(fx, BUS_COMMAND, "inventory.add_stock", payload, out, err);
}

/* Reserves and answers the outcome ("reserved", "out_of_stock") or fails the test. */
static int reserve(fixture *fx, const char *sku, const char *order_id, const char *quantity,
                   cJSON **out, app_error *err)
{
    char payload[256];
    snprintf(payload, sizeof payload, "{\"sku\":\"%s\",\"orderId\":\"%s\",\"quantity\":%s}", sku,
             order_id, quantity);
    return call(fx, BUS_COMMAND, "inventory.reserve_stock", payload, out, err);
}

static int release(fixture *fx, const char *sku, const char *order_id, cJSON **out, app_error *err)
{
    char payload[256];
    snprintf(payload, sizeof payload, "{\"sku\":\"%s\",\"orderId\":\"%s\"}", sku, order_id);
    return call(fx, BUS_COMMAND, "inventory.release_stock", payload, out, err);
}

static int commit_stock(fixture *fx, const char *sku, const char *order_id, cJSON **out,
                        app_error *err)
{
    char payload[256];
    snprintf(payload, sizeof payload, "{\"sku\":\"%s\",\"orderId\":\"%s\"}", sku, order_id);
    return call(fx, BUS_COMMAND, "inventory.commit_stock", payload, out, err);
}

static cJSON *describe(fixture *fx, const char *sku)
{
    char payload[128];
    snprintf(payload, sizeof payload, "{\"sku\":\"%s\"}", sku);
    cJSON *out;
    app_error err;
    if (call(fx, BUS_QUERY, "inventory.describe_product", payload, &out, &err) != 0)
        fail_msg("describe %s: %s", sku, err.message);
    return out;
}

static fake_stream *stream_of(fixture *fx, const char *sku)
{
    char id[64];
    snprintf(id, sizeof id, "product-%s", sku);
    return fake_es_stream(&fx->es, id);
}

static size_t stream_len(fixture *fx, const char *sku)
{
    fake_stream *s = stream_of(fx, sku);
    return s ? s->len : 0;
}

/* The data of event version (from 1) of sku's stream, parsed; the caller frees it. */
static cJSON *event_data(fixture *fx, const char *sku, size_t version, const char *type)
{
    fake_stream *s = stream_of(fx, sku);
    assert_non_null(s);
    assert_true(version >= 1 && version <= s->len);
    assert_string_equal(s->events[version - 1].type, type);
    assert_int_equal(s->events[version - 1].schema_version,
                     strcmp(type, INV_EVENT_CREATED) == 0 ? 2 : 1);
    cJSON *d = cJSON_Parse(s->events[version - 1].data);
    assert_non_null(d);
    return d;
}

/* ---- commands ---------------------------------------------------------------------- */

static void test_create(void **state)
{
    fixture *fx = *state;
    cJSON *out;
    app_error err;
    assert_int_equal(call(fx, BUS_COMMAND, "inventory.create_product",
                          "{\"sku\":\"SKU-1\",\"name\":\"  Blue Widget \",\"price\":{\"amount\":"
                          "1250,\"currency\":\"EUR\"},\"stock\":5,\"extra\":true}",
                          &out, &err),
                     0);
    assert_string_equal(sget(out, "sku"), "SKU-1");
    assert_string_equal(sget(out, "name"), "Blue Widget");
    assert_int_equal(iget(cJSON_GetObjectItem(out, "price"), "amount"), 1250);
    assert_string_equal(sget(cJSON_GetObjectItem(out, "price"), "currency"), "EUR");
    assert_int_equal(iget(out, "onHand"), 5);
    assert_int_equal(iget(out, "reserved"), 0);
    assert_int_equal(iget(out, "available"), 5);
    assert_int_equal(iget(out, "version"), 1);
    assert_int_equal(cJSON_GetArraySize(out), 7);
    cJSON_Delete(out);

    /* The event of the contract, with the request's metadata. */
    cJSON *d = event_data(fx, "SKU-1", 1, "inventory.product.created");
    assert_string_equal(sget(d, "sku"), "SKU-1");
    assert_string_equal(sget(d, "name"), "Blue Widget");
    assert_int_equal(iget(cJSON_GetObjectItem(d, "price"), "amount"), 1250);
    assert_string_equal(sget(cJSON_GetObjectItem(d, "price"), "currency"), "EUR");
    assert_int_equal(iget(d, "initialStock"), 5);
    assert_null(cJSON_GetObjectItemCaseSensitive(d, "stock"));
    assert_int_equal(cJSON_GetArraySize(d), 4);
    cJSON_Delete(d);
    cJSON *md = cJSON_Parse(stream_of(fx, "SKU-1")->events[0].metadata);
    assert_string_equal(sget(md, "correlationId"), "corr-2");
    cJSON_Delete(md);

    /* The same sku again, whatever the rest: 409, nothing appended, not retried. */
    assert_int_equal(call(fx, BUS_COMMAND, "inventory.create_product",
                          "{\"sku\":\"SKU-1\",\"name\":\"Other\",\"price\":{\"amount\":1,"
                          "\"currency\":\"USD\"},\"stock\":0}",
                          &out, &err),
                     APP_ECONFLICT);
    assert_string_equal(err.message, "sku already exists");
    assert_string_equal(err.fields[0].field, "sku");
    assert_int_equal(stream_len(fx, "SKU-1"), 1);
    assert_int_equal(fx->es.conflicts, 1);

    /* Zero stock is a product; the store being down passes through. */
    create(fx, "ZERO", 0);
    fx->es.fail_next = APP_EUNAVAIL;
    assert_int_equal(call(fx, BUS_COMMAND, "inventory.create_product",
                          "{\"sku\":\"DOWN\",\"name\":\"x\",\"price\":{\"amount\":1,"
                          "\"currency\":\"EUR\"},\"stock\":0}",
                          &out, &err),
                     APP_EUNAVAIL);
    assert_null(stream_of(fx, "DOWN"));
}

static void test_create_invalid(void **state)
{
    fixture *fx = *state;
    char long_name[1024] = "", payload[1400];
    for (int i = 0; i < 201; i++)
        strcat(long_name, "\xc3\xa9");
    static const struct {
        const char *payload;
        int code;
        const char *field; /* first field error, or NULL */
    } cases[] = {
        {"{\"sku\":\"lower\",\"name\":\"x\",\"price\":{\"amount\":1,\"currency\":\"EUR\"},"
         "\"stock\":1}",
         APP_EINVAL, "sku"},
        {"{\"sku\":\"-LEAD\",\"name\":\"x\",\"price\":{\"amount\":1,\"currency\":\"EUR\"},"
         "\"stock\":1}",
         APP_EINVAL, "sku"},
        {"{\"sku\":\"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456\",\"name\":\"x\",\"price\":{\"amount\":1,"
         "\"currency\":\"EUR\"},\"stock\":1}",
         APP_EINVAL, "sku"},
        {"{\"sku\":\"\",\"name\":\"x\",\"price\":{\"amount\":1,\"currency\":\"EUR\"},"
         "\"stock\":1}",
         APP_EINVAL, "sku"},
        {"{\"sku\":\"A\",\"name\":\"   \",\"price\":{\"amount\":1,\"currency\":\"EUR\"},"
         "\"stock\":1}",
         APP_EINVAL, "name"},
        {"{\"sku\":\"A\",\"name\":\"x\",\"price\":{\"amount\":1,\"currency\":\"EUR\"},"
         "\"stock\":-1}",
         APP_EINVAL, "stock"},
        {"{\"sku\":\"A\",\"name\":\"x\",\"price\":{\"amount\":1,\"currency\":\"EUR\"},"
         "\"stock\":1000001}",
         APP_EINVAL, "stock"},
        {"{\"sku\":\"A\",\"name\":\"x\",\"price\":{\"amount\":1,\"currency\":\"XXY\"},"
         "\"stock\":1}",
         APP_EINVAL, "price.currency"},
        {"{\"sku\":\"A\",\"name\":\"x\",\"price\":{\"amount\":1.5,\"currency\":\"EUR\"},"
         "\"stock\":1}",
         APP_EINVAL, "price.amount"},
        {"{\"sku\":\"A\",\"name\":\"x\",\"price\":{\"amount\":-1,\"currency\":\"EUR\"},"
         "\"stock\":1}",
         APP_EINVAL, "price.amount"},
        {"{\"sku\":\"A\",\"name\":\"x\",\"price\":{\"currency\":\"EUR\"},\"stock\":1}", APP_EINVAL,
         "price.amount"},
        {"{\"sku\":\"A\"}", APP_EINVAL, "name"},
        {"{\"sku\":5,\"name\":\"x\",\"price\":{\"amount\":1,\"currency\":\"EUR\"},\"stock\":1}",
         APP_EBADREQ, "sku"},
        {"{\"sku\":\"A\",\"name\":[],\"price\":{\"amount\":1,\"currency\":\"EUR\"},\"stock\":1}",
         APP_EBADREQ, "name"},
        {"{\"sku\":\"A\",\"name\":\"x\",\"price\":\"12 EUR\",\"stock\":1}", APP_EBADREQ, "price"},
        {"{\"sku\":\"A\",\"name\":\"x\",\"price\":{\"amount\":\"1\",\"currency\":\"EUR\"},"
         "\"stock\":1}",
         APP_EBADREQ, "price.amount"},
        {"{\"sku\":\"A\",\"name\":\"x\",\"price\":{\"amount\":1,\"currency\":\"EUR\"},"
         "\"stock\":\"1\"}",
         APP_EBADREQ, "stock"},
        {"{\"sku\":\"A\",\"name\":\"x\",\"price\":{\"amount\":1,\"currency\":\"EUR\"},"
         "\"stock\":1.5}",
         APP_EBADREQ, "stock"},
        /* A wrong type outranks an invalid value. */
        {"{\"sku\":\"bad\",\"name\":\"x\",\"price\":{\"amount\":1,\"currency\":\"EUR\"},"
         "\"stock\":true}",
         APP_EBADREQ, NULL},
        {"[1]", APP_EBADREQ, NULL},
    };
    cJSON *out;
    app_error err;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = call(fx, BUS_COMMAND, "inventory.create_product", cases[i].payload, &out, &err);
        if (rc != cases[i].code)
            fail_msg("case %zu: expected %d, got %d (%s)", i, cases[i].code, rc, err.message);
        if (cases[i].field && (err.n_fields == 0 || strcmp(err.fields[0].field, cases[i].field)))
            fail_msg("case %zu: expected a field error for %s, got %s", i, cases[i].field,
                     err.n_fields ? err.fields[0].field : "none");
    }

    /* Every missing member is named in one answer. */
    assert_int_equal(call(fx, BUS_COMMAND, "inventory.create_product", "{}", &out, &err),
                     APP_EINVAL);
    assert_int_equal(err.n_fields, 4);

    /* Names count code points: 201 is too many, 200 is fine. */
    snprintf(payload, sizeof payload,
             "{\"sku\":\"LONG\",\"name\":\"%s\",\"price\":{\"amount\":1,\"currency\":\"EUR\"},"
             "\"stock\":1}",
             long_name);
    assert_int_equal(call(fx, BUS_COMMAND, "inventory.create_product", payload, &out, &err),
                     APP_EINVAL);
    assert_string_equal(err.fields[0].field, "name");
    assert_int_equal(fx->es.appends, 0);
    long_name[strlen(long_name) - 2] = '\0';
    snprintf(payload, sizeof payload,
             "{\"sku\":\"LONG\",\"name\":\"%s\",\"price\":{\"amount\":1,\"currency\":\"EUR\"},"
             "\"stock\":1}",
             long_name);
    assert_int_equal(call(fx, BUS_COMMAND, "inventory.create_product", payload, &out, &err), 0);
    cJSON_Delete(out);
    assert_int_equal(fx->es.appends, 1);
}

static void test_add_stock(void **state)
{
    fixture *fx = *state;
    create(fx, "ADD", 5);
    cJSON *out;
    app_error err;
    assert_int_equal(add_stock(fx, "ADD", "7", &out, &err), 0);
    assert_int_equal(iget(out, "onHand"), 12);
    assert_int_equal(iget(out, "available"), 12);
    assert_int_equal(iget(out, "version"), 2);
    assert_string_equal(sget(out, "name"), "Widget");
    cJSON_Delete(out);
    cJSON *d = event_data(fx, "ADD", 2, "inventory.product.stock_added");
    assert_string_equal(sget(d, "sku"), "ADD");
    assert_int_equal(iget(d, "quantity"), 7);
    assert_int_equal(cJSON_GetArraySize(d), 2);
    cJSON_Delete(d);

    static const struct {
        const char *quantity;
        int code;
    } bad[] = {
        {"0", APP_EINVAL},      {"-3", APP_EINVAL},   {"1000001", APP_EINVAL},
        {"\"5\"", APP_EBADREQ}, {"2.5", APP_EBADREQ}, {"null", APP_EINVAL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = add_stock(fx, "ADD", bad[i].quantity, &out, &err);
        if (rc != bad[i].code)
            fail_msg("quantity %s: expected %d, got %d", bad[i].quantity, bad[i].code, rc);
        assert_string_equal(err.fields[0].field, "quantity");
    }
    assert_int_equal(call(fx, BUS_COMMAND, "inventory.add_stock", "{\"sku\":\"ADD\"}", &out, &err),
                     APP_EINVAL);
    assert_int_equal(add_stock(fx, "NOPE", "1", &out, &err), APP_ENOTFOUND);
    assert_string_equal(err.message, "unknown product");
    assert_int_equal(add_stock(fx, "no such", "1", &out, &err), APP_ENOTFOUND);
    assert_int_equal(
        call(fx, BUS_COMMAND, "inventory.add_stock", "{\"sku\":1,\"quantity\":1}", &out, &err),
        APP_EBADREQ);
    assert_int_equal(stream_len(fx, "ADD"), 2);
    assert_null(stream_of(fx, "NOPE"));
}

static void test_stock_ceiling(void **state)
{
    fixture *fx = *state;
    create(fx, "FULL", 1000000);
    /* 999 further additions of a million, in one batch: on hand reaches 10^9 exactly. */
    static es_new_event rows[999];
    char ids[999][UUID_STR_LEN];
    for (size_t i = 0; i < 999; i++) {
        uuid_v4(ids[i]);
        rows[i] = (es_new_event){ids[i], "inventory.product.stock_added", 1,
                                 "{\"sku\":\"FULL\",\"quantity\":1000000}", "{}"};
    }
    es_append_req req = {.context = "inventory",
                         .stream_id = "product-FULL",
                         .expected_version = 1,
                         .events = rows,
                         .n_events = 999};
    app_error err = APP_ERROR_INIT;
    assert_int_equal(fx->events.ops->append(fx->events.self, &req, NULL, &err), 0);
    cJSON *out = describe(fx, "FULL");
    assert_int_equal(iget(out, "onHand"), 1000000000);
    assert_int_equal(iget(out, "version"), 1000);
    cJSON_Delete(out);
    assert_int_equal(add_stock(fx, "FULL", "1", &out, &err), APP_EINVAL);
    assert_string_equal(err.fields[0].field, "quantity");
    assert_int_equal(stream_len(fx, "FULL"), 1000);
}

/* ---- reservations ------------------------------------------------------------------ */

static void assert_outcome(const cJSON *out, const char *outcome, const char *sku,
                           const char *order_id)
{
    assert_string_equal(sget(out, "outcome"), outcome);
    assert_string_equal(sget(out, "sku"), sku);
    assert_string_equal(sget(out, "orderId"), order_id);
}

static void assert_counts(fixture *fx, const char *sku, int64_t on_hand, int64_t reserved)
{
    cJSON *p = describe(fx, sku);
    assert_int_equal(iget(p, "onHand"), on_hand);
    assert_int_equal(iget(p, "reserved"), reserved);
    assert_int_equal(iget(p, "available"), on_hand - reserved);
    cJSON_Delete(p);
}

static void test_reserve_and_release(void **state)
{
    fixture *fx = *state;
    create(fx, "RES", 5);
    cJSON *out;
    app_error err;

    assert_int_equal(reserve(fx, "RES", order_a, "3", &out, &err), 0);
    assert_outcome(out, "reserved", "RES", order_a);
    assert_int_equal(iget(out, "quantity"), 3);
    cJSON_Delete(out);
    cJSON *d = event_data(fx, "RES", 2, "inventory.product.stock_reserved");
    assert_string_equal(sget(d, "sku"), "RES");
    assert_string_equal(sget(d, "orderId"), order_a);
    assert_int_equal(iget(d, "quantity"), 3);
    assert_int_equal(cJSON_GetArraySize(d), 3);
    cJSON_Delete(d);
    assert_counts(fx, "RES", 5, 3);

    /* At least once: the same order again is "reserved" and changes nothing. */
    assert_int_equal(reserve(fx, "RES", order_a, "3", &out, &err), 0);
    assert_outcome(out, "reserved", "RES", order_a);
    cJSON_Delete(out);
    assert_int_equal(stream_len(fx, "RES"), 2);

    /* Another order of 3 with 2 available: out of stock, no event. */
    assert_int_equal(reserve(fx, "RES", order_b, "3", &out, &err), 0);
    assert_outcome(out, "out_of_stock", "RES", order_b);
    assert_int_equal(iget(out, "quantity"), 3);
    cJSON_Delete(out);
    assert_int_equal(stream_len(fx, "RES"), 2);
    assert_counts(fx, "RES", 5, 3);

    /* Exactly what is available is fine. */
    assert_int_equal(reserve(fx, "RES", order_b, "2", &out, &err), 0);
    assert_outcome(out, "reserved", "RES", order_b);
    cJSON_Delete(out);
    assert_counts(fx, "RES", 5, 5);

    /* Release: the order's whole reservation, once. */
    assert_int_equal(release(fx, "RES", order_a, &out, &err), 0);
    assert_outcome(out, "released", "RES", order_a);
    cJSON_Delete(out);
    d = event_data(fx, "RES", 4, "inventory.product.reservation_released");
    assert_string_equal(sget(d, "orderId"), order_a);
    assert_int_equal(iget(d, "quantity"), 3);
    cJSON_Delete(d);
    assert_int_equal(release(fx, "RES", order_a, &out, &err), 0);
    assert_outcome(out, "nothing_reserved", "RES", order_a);
    cJSON_Delete(out);
    assert_int_equal(stream_len(fx, "RES"), 4);
    assert_counts(fx, "RES", 5, 2);

    /* A released order may reserve again (a new decision, not a duplicate). */
    assert_int_equal(reserve(fx, "RES", order_a, "1", &out, &err), 0);
    assert_outcome(out, "reserved", "RES", order_a);
    cJSON_Delete(out);
    assert_counts(fx, "RES", 5, 3);
}

/* Commit (the order shipped): the reservation's quantity leaves onHand and reserved, once;
 * a committed order has nothing left to release. */
static void test_commit_stock(void **state)
{
    fixture *fx = *state;
    create(fx, "SHIP", 5);
    cJSON *out;
    app_error err;
    assert_int_equal(reserve(fx, "SHIP", order_a, "3", &out, &err), 0);
    cJSON_Delete(out);
    assert_int_equal(reserve(fx, "SHIP", order_b, "1", &out, &err), 0);
    cJSON_Delete(out);
    assert_int_equal(commit_stock(fx, "SHIP", order_a, &out, &err), 0);
    assert_outcome(out, "committed", "SHIP", order_a);
    assert_int_equal(iget(out, "quantity"), 3);
    cJSON_Delete(out);
    cJSON *d = event_data(fx, "SHIP", 4, "inventory.product.reservation_committed");
    assert_string_equal(sget(d, "orderId"), order_a);
    assert_int_equal(iget(d, "quantity"), 3);
    cJSON_Delete(d);
    assert_counts(fx, "SHIP", 2, 1);
    assert_int_equal(commit_stock(fx, "SHIP", order_a, &out, &err), 0);
    assert_outcome(out, "nothing_reserved", "SHIP", order_a);
    cJSON_Delete(out);
    assert_int_equal(release(fx, "SHIP", order_a, &out, &err), 0);
    assert_outcome(out, "nothing_reserved", "SHIP", order_a);
    cJSON_Delete(out);
    assert_int_equal(stream_len(fx, "SHIP"), 4);
    assert_counts(fx, "SHIP", 2, 1);
    assert_int_equal(commit_stock(fx, "NOPE", order_a, &out, &err), APP_ENOTFOUND);
}

static void test_reservation_errors(void **state)
{
    fixture *fx = *state;
    create(fx, "ERR", 5);
    cJSON *out;
    app_error err;
    assert_int_equal(reserve(fx, "NOPE", order_a, "1", &out, &err), APP_ENOTFOUND);
    assert_string_equal(err.message, "unknown product");
    assert_int_equal(release(fx, "NOPE", order_a, &out, &err), APP_ENOTFOUND);
    assert_string_equal(err.message, "unknown product");
    assert_int_equal(reserve(fx, "not a sku", order_a, "1", &out, &err), APP_ENOTFOUND);
    assert_int_equal(reserve(fx, "ERR", order_a, "0", &out, &err), APP_EINVAL);
    assert_string_equal(err.fields[0].field, "quantity");
    assert_int_equal(reserve(fx, "ERR", order_a, "1001", &out, &err), APP_EINVAL);
    assert_int_equal(reserve(fx, "ERR", "not-a-uuid", "1", &out, &err), APP_EINVAL);
    assert_string_equal(err.fields[0].field, "orderId");
    assert_int_equal(reserve(fx, "ERR", order_a, "\"1\"", &out, &err), APP_EBADREQ);
    assert_int_equal(call(fx, BUS_COMMAND, "inventory.reserve_stock",
                          "{\"sku\":\"ERR\",\"quantity\":1}", &out, &err),
                     APP_EINVAL);
    assert_string_equal(err.fields[0].field, "orderId");
    assert_int_equal(
        call(fx, BUS_COMMAND, "inventory.release_stock", "{\"sku\":\"ERR\"}", &out, &err),
        APP_EINVAL);
    assert_int_equal(call(fx, BUS_COMMAND, "inventory.release_stock",
                          "{\"sku\":\"ERR\",\"orderId\":7}", &out, &err),
                     APP_EBADREQ);
    /* Releasing for an id that could hold nothing is simply nothing. */
    assert_int_equal(release(fx, "ERR", "not-a-uuid", &out, &err), 0);
    assert_outcome(out, "nothing_reserved", "ERR", "not-a-uuid");
    cJSON_Delete(out);
    assert_int_equal(stream_len(fx, "ERR"), 1);
}

/* ---- concurrency ------------------------------------------------------------------- */

typedef struct rival {
    const char *sku;
    char order_id[UUID_STR_LEN]; /* of its last reservation */
    int64_t quantity;
    int times; /* appends to play before the next command appends */
} rival;

/* A concurrent writer: reserves for a new order of its own just before a command appends. */
static void rival_reserves(fake_es *f, const es_append_req *req, void *arg)
{
    rival *r = arg;
    if (r->times == 0)
        return;
    r->times--;
    char data[256], id[UUID_STR_LEN];
    uuid_v4(r->order_id);
    snprintf(data, sizeof data, "{\"sku\":\"%s\",\"orderId\":\"%s\",\"quantity\":%lld}", r->sku,
             r->order_id, (long long)r->quantity);
    uuid_v4(id);
    es_new_event row = {id, "inventory.product.stock_reserved", 1, data, "{}"};
    es_append_req mine = {.context = "inventory",
                          .stream_id = req->stream_id,
                          .expected_version = ES_ANY_VERSION,
                          .events = &row,
                          .n_events = 1};
    es_store port = fake_es_port(f);
    app_error err = APP_ERROR_INIT;
    assert_int_equal(port.ops->append(port.self, &mine, NULL, &err), 0);
}

/* A conflicting append makes the bus run the command again against the new state: the
 * retried reservation sees the rival's and reports out of stock instead of overselling. */
static void test_conflict_is_decided_again(void **state)
{
    fixture *fx = *state;
    create(fx, "RACE", 5);
    rival r = {"RACE", "", 4, 1};
    fx->es.before_append = rival_reserves;
    fx->es.hook_arg = &r;
    cJSON *out;
    app_error err;
    assert_int_equal(reserve(fx, "RACE", order_a, "3", &out, &err), 0);
    assert_outcome(out, "out_of_stock", "RACE", order_a);
    cJSON_Delete(out);
    assert_int_equal(fx->es.conflicts, 1);
    assert_counts(fx, "RACE", 5, 4);
    char first[UUID_STR_LEN];
    snprintf(first, sizeof first, "%s", r.order_id);

    /* Additions are not lost either: the rival's reservation does not eat the new stock. */
    r.times = 1;
    r.quantity = 1;
    assert_int_equal(add_stock(fx, "RACE", "10", &out, &err), 0);
    assert_int_equal(iget(out, "onHand"), 15);
    assert_int_equal(iget(out, "reserved"), 5);
    assert_int_equal(iget(out, "version"), 4);
    cJSON_Delete(out);
    assert_counts(fx, "RACE", 15, 5);

    /* A release retried after a conflict still releases exactly the order's quantity. */
    r.times = 1;
    assert_int_equal(release(fx, "RACE", first, &out, &err), 0);
    assert_outcome(out, "released", "RACE", first);
    cJSON_Delete(out);
    assert_counts(fx, "RACE", 15, 2);

    /* A writer that never lets go: the retries run out and the caller sees a conflict. */
    bus_free(fx->bus);
    bus_options opts = {.events = &fx->events,
                        .reads = &fx->reads,
                        .clock = &app_system_clock,
                        .max_conflict_retries = 2};
    assert_int_equal(bus_new(&fx->bus, &opts, &err), 0);
    assert_int_equal(bus_register(fx->bus, BUS_COMMAND, inventory_module.commands, &err), 0);
    assert_int_equal(bus_register(fx->bus, BUS_QUERY, inventory_module.queries, &err), 0);
    r.times = 3;
    size_t conflicts = fx->es.conflicts;
    assert_int_equal(add_stock(fx, "RACE", "1", &out, &err), APP_ECONFLICT);
    assert_int_equal(fx->es.conflicts - conflicts, 3);
    fx->es.before_append = NULL;
}

typedef struct racer {
    fixture *fx;
    const char *sku;
    int n;         /* commands to send */
    int reserved;  /* outcomes */
    int short_;    /* out_of_stock */
    int failed;    /* anything else */
    bool add_only; /* adds 1 stock per command instead of reserving 1 */
} racer;

static void *race(void *arg)
{
    racer *r = arg;
    for (int i = 0; i < r->n; i++) {
        char payload[256], id[UUID_STR_LEN];
        uuid_v4(id);
        if (r->add_only)
            snprintf(payload, sizeof payload, "{\"sku\":\"%s\",\"quantity\":1}", r->sku);
        else
            snprintf(payload, sizeof payload, "{\"sku\":\"%s\",\"orderId\":\"%s\",\"quantity\":1}",
                     r->sku, id);
        cJSON *p = cJSON_Parse(payload), *out = NULL;
        app_error err = APP_ERROR_INIT;
        bus_meta meta;
        bus_meta_init(&meta, NULL, NULL);
        int rc = p ? bus_send(r->fx->bus,
                              r->add_only ? "inventory.add_stock" : "inventory.reserve_stock", p,
                              &meta, &out, &err)
                   : APP_ENOMEM;
        const char *outcome = cJSON_GetStringValue(cJSON_GetObjectItem(out, "outcome"));
        if (rc == 0 && (r->add_only || (outcome && strcmp(outcome, "reserved") == 0)))
            r->reserved++;
        else if (rc == 0 && outcome && strcmp(outcome, "out_of_stock") == 0)
            r->short_++;
        else
            r->failed++;
        cJSON_Delete(out);
        cJSON_Delete(p);
    }
    return NULL;
}

/* Threads racing for one product through the bus: every command either reserves or is
 * refused, reserved never exceeds on hand, and no addition is lost. */
static void test_concurrent_reservations(void **state)
{
    fixture *fx = *state;
    create(fx, "HOT", 20);
    enum { THREADS = 8, EACH = 6 };
    racer racers[THREADS + 2];
    pthread_t th[THREADS + 2];
    for (int i = 0; i < THREADS; i++)
        racers[i] = (racer){fx, "HOT", EACH, 0, 0, 0, false};
    /* Two threads add 5 units meanwhile: 25 or more reservations may succeed in all. */
    for (int i = THREADS; i < THREADS + 2; i++)
        racers[i] = (racer){fx, "HOT", 5, 0, 0, 0, true};
    for (int i = 0; i < THREADS + 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, race, &racers[i]), 0);
    for (int i = 0; i < THREADS + 2; i++)
        pthread_join(th[i], NULL);
    int reserved = 0, short_ = 0, added = 0;
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(racers[i].failed, 0);
        reserved += racers[i].reserved;
        short_ += racers[i].short_;
    }
    for (int i = THREADS; i < THREADS + 2; i++) {
        assert_int_equal(racers[i].failed, 0);
        added += racers[i].reserved;
    }
    assert_int_equal(added, 10);
    assert_int_equal(reserved + short_, THREADS * EACH);
    assert_true(reserved >= 20 && reserved <= 30);
    assert_counts(fx, "HOT", 30, reserved);
    /* Every stored reservation is for a distinct order and the fold matches the count. */
    assert_int_equal(stream_len(fx, "HOT"), 1 + 10 + (size_t)reserved);
    printf("      %d reserved, %d out of stock, %zu conflicts retried\n", reserved, short_,
           fx->es.conflicts);
}

/* Holds the first append of the test until released, so that commands queue behind it. */
static atomic_int append_holding, append_held;

static bool append_released(void *arg)
{
    (void)arg;
    return !atomic_load(&append_holding);
}

static bool append_is_held(void *arg)
{
    (void)arg;
    return atomic_load(&append_held);
}

static void hold_first_append(fake_es *f, const es_append_req *req, void *arg)
{
    (void)f, (void)req, (void)arg;
    /* On the reserving thread, where cmocka cannot fail the test: past the guard the append
     * goes on, and the test's own checks say what went wrong. */
    if (atomic_exchange(&append_held, 1) == 0)
        (void)ts_wait_until(append_released, NULL, TS_HANG_GUARD_MS);
}

typedef struct grouped {
    fixture *fx;
    char order_id[UUID_STR_LEN], correlation[UUID_STR_LEN];
    int rc;
    char outcome[32];
    pthread_t thread;
} grouped;

static void *reserve_grouped(void *arg)
{
    grouped *g = arg;
    char payload[256];
    snprintf(payload, sizeof payload, "{\"sku\":\"GROUP\",\"orderId\":\"%s\",\"quantity\":1}",
             g->order_id);
    cJSON *p = cJSON_Parse(payload), *out = NULL;
    app_error err = APP_ERROR_INIT;
    bus_meta meta;
    bus_meta_init(&meta, g->correlation, NULL);
    g->rc = bus_send(g->fx->bus, "inventory.reserve_stock", p, &meta, &out, &err);
    const char *outcome = cJSON_GetStringValue(cJSON_GetObjectItem(out, "outcome"));
    snprintf(g->outcome, sizeof g->outcome, "%s", outcome ? outcome : "");
    cJSON_Delete(out);
    cJSON_Delete(p);
    return NULL;
}

/* Reservations of one product that arrive while one is being appended are decided together,
 * in turn, and appended at once: each event carries its own command's metadata, each
 * command gets its own answer, and the stock is never oversold. */
static void test_reservations_are_grouped(void **state)
{
    fixture *fx = *state;
    create(fx, "GROUP", 5);
    enum { N = 9 };
    static grouped g[N];
    for (int i = 0; i < N; i++) {
        g[i] = (grouped){.fx = fx};
        uuid_v4(g[i].order_id);
        uuid_v4(g[i].correlation);
    }
    size_t appends = fx->es.appends;
    atomic_store(&append_holding, 1);
    atomic_store(&append_held, 0);
    fx->es.before_append = hold_first_append;
    assert_int_equal(pthread_create(&g[0].thread, NULL, reserve_grouped, &g[0]), 0);
    if (ts_wait_until(append_is_held, NULL, TS_HANG_GUARD_MS) != 0)
        fail_msg("the first reservation never reached its append");
    /* The first is appending; the others arrive meanwhile and wait for it. */
    for (int i = 1; i < N; i++)
        assert_int_equal(pthread_create(&g[i].thread, NULL, reserve_grouped, &g[i]), 0);
    usleep(300 * 1000);
    atomic_store(&append_holding, 0);
    int reserved = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(g[i].thread, NULL);
        assert_int_equal(g[i].rc, 0);
        reserved += strcmp(g[i].outcome, "reserved") == 0;
        if (strcmp(g[i].outcome, "reserved") != 0)
            assert_string_equal(g[i].outcome, "out_of_stock");
    }
    fx->es.before_append = NULL;
    assert_int_equal(reserved, 5);
    assert_counts(fx, "GROUP", 5, 5);
    /* One append for the first, one for the rest (one more if a thread was slow to arrive),
     * where one by one would take five. */
    printf("      %zu appends for %d reservations\n", fx->es.appends - appends, reserved);
    assert_true(fx->es.appends - appends <= 3);
    assert_int_equal(fx->es.conflicts, 0);
    /* Every reserved event is its own command's: its order, and its request's metadata. */
    fake_stream *s = stream_of(fx, "GROUP");
    assert_int_equal(s->len, 1 + 5);
    for (size_t v = 1; v < s->len; v++) {
        cJSON *data = cJSON_Parse(s->events[v].data), *md = cJSON_Parse(s->events[v].metadata);
        const char *order = sget(data, "orderId");
        int sender = -1;
        for (int i = 0; i < N; i++)
            if (strcmp(g[i].order_id, order) == 0)
                sender = i;
        assert_true(sender >= 0);
        assert_string_equal(g[sender].outcome, "reserved");
        assert_string_equal(sget(md, "correlationId"), g[sender].correlation);
        cJSON_Delete(data);
        cJSON_Delete(md);
    }
}

/* ---- projection -------------------------------------------------------------------- */

static void project(fixture *fx, const char *sku, size_t from, size_t to)
{
    fake_stream *s = stream_of(fx, sku);
    assert_non_null(s);
    for (size_t v = from; v <= to; v++) {
        app_error err = APP_ERROR_INIT;
        if (inv_projection_handle(&fx->ctx, &s->events[v - 1], &err) != 0)
            fail_msg("projection of %s v%zu: %s", sku, v, err.message);
    }
}

static cJSON *read_model(fixture *fx, const char *sku)
{
    char key[64];
    snprintf(key, sizeof key, "product:%s", sku);
    const char *v = fake_rs_value(&fx->rs, key);
    return v ? cJSON_Parse(v) : NULL;
}

static void assert_read_model(fixture *fx, const char *sku, int64_t on_hand, int64_t reserved,
                              int64_t version)
{
    cJSON *rm = read_model(fx, sku);
    assert_non_null(rm);
    assert_string_equal(sget(rm, "sku"), sku);
    assert_string_equal(sget(rm, "name"), "Widget");
    assert_int_equal(iget(cJSON_GetObjectItem(rm, "price"), "amount"), 1250);
    assert_int_equal(iget(rm, "onHand"), on_hand);
    assert_int_equal(iget(rm, "reserved"), reserved);
    assert_int_equal(iget(rm, "available"), on_hand - reserved);
    assert_int_equal(iget(rm, "version"), version);
    assert_int_equal(cJSON_GetArraySize(rm), 7);
    cJSON_Delete(rm);
}

static void test_projection(void **state)
{
    fixture *fx = *state;
    cJSON *out;
    app_error err;
    create(fx, "PROJ", 5);
    assert_int_equal(add_stock(fx, "PROJ", "5", &out, &err), 0);
    cJSON_Delete(out);
    assert_int_equal(reserve(fx, "PROJ", order_a, "4", &out, &err), 0);
    cJSON_Delete(out);
    assert_int_equal(reserve(fx, "PROJ", order_b, "3", &out, &err), 0);
    cJSON_Delete(out);
    assert_int_equal(release(fx, "PROJ", order_a, &out, &err), 0);
    cJSON_Delete(out);

    project(fx, "PROJ", 1, 1);
    assert_read_model(fx, "PROJ", 5, 0, 1);
    project(fx, "PROJ", 2, 5);
    assert_read_model(fx, "PROJ", 10, 3, 5);
    assert_int_equal(fx->rs.sets, 5);

    /* At least once: redeliveries change nothing. */
    project(fx, "PROJ", 1, 5);
    assert_int_equal(fx->rs.sets, 5);

    /* A lost read model is folded again from the stream, up to the delivered event only. */
    assert_int_equal(fx->reads.ops->del(fx->reads.self, "product:PROJ", &err), 0);
    project(fx, "PROJ", 3, 3);
    assert_read_model(fx, "PROJ", 10, 4, 3);
    project(fx, "PROJ", 4, 5);
    assert_read_model(fx, "PROJ", 10, 3, 5);

    /* A stale one (an event skipped) is refolded, reservations included. */
    assert_int_equal(fx->reads.ops->set(fx->reads.self, "product:PROJ",
                                        "{\"sku\":\"PROJ\",\"name\":\"Widget\",\"price\":{"
                                        "\"amount\":1250,\"currency\":\"EUR\"},\"onHand\":5,"
                                        "\"reserved\":0,\"available\":5,\"version\":1}",
                                        &err),
                     0);
    project(fx, "PROJ", 4, 4);
    assert_read_model(fx, "PROJ", 10, 7, 4);

    /* An unreadable one is replaced. */
    assert_int_equal(
        fx->reads.ops->set(fx->reads.self, "product:PROJ", "{\"version\":1e400}", &err), 0);
    project(fx, "PROJ", 5, 5);
    assert_read_model(fx, "PROJ", 10, 3, 5);

    /* Unknown types, newer schema versions and other streams are ignored. */
    fake_stream *s = stream_of(fx, "PROJ");
    size_t sets = fx->rs.sets;
    es_event unknown = s->events[4];
    unknown.type = (char *)(uintptr_t) "inventory.product.renamed";
    unknown.version = 6;
    assert_int_equal(inv_projection_handle(&fx->ctx, &unknown, &err), 0);
    es_event newer = s->events[1];
    newer.schema_version = 2;
    newer.version = 6;
    assert_int_equal(inv_projection_handle(&fx->ctx, &newer, &err), 0);
    es_event foreign = s->events[1];
    foreign.stream_id = (char *)(uintptr_t) "order-0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
    assert_int_equal(inv_projection_handle(&fx->ctx, &foreign, &err), 0);
    foreign.stream_id = (char *)(uintptr_t) "product-lower";
    assert_int_equal(inv_projection_handle(&fx->ctx, &foreign, &err), 0);
    assert_int_equal(fx->rs.sets, sets);

    /* A known event that does not fit stops the subscriber; an outage is reported. */
    es_event broken = s->events[1];
    broken.data = (char *)(uintptr_t) "{\"sku\":\"PROJ\",\"quantity\":\"five\"}";
    broken.version = 6;
    assert_int_equal(inv_projection_handle(&fx->ctx, &broken, &err), APP_EINTERNAL);
    fx->rs.down = true;
    assert_int_equal(inv_projection_handle(&fx->ctx, &s->events[0], &err), APP_EUNAVAIL);
    fx->rs.down = false;
}

/* ---- queries ----------------------------------------------------------------------- */

static void test_queries(void **state)
{
    fixture *fx = *state;
    cJSON *out;
    app_error err;
    create(fx, "Q-1", 3);
    assert_int_equal(reserve(fx, "Q-1", order_a, "2", &out, &err), 0);
    cJSON_Delete(out);

    /* The read model knows only what was projected; describe_product knows everything. A
     * product the read model has not seen yet is read from the log. */
    assert_int_equal(call(fx, BUS_QUERY, "inventory.get_product", "{\"sku\":\"Q-1\"}", &out, &err),
                     0);
    assert_int_equal(iget(out, "reserved"), 2);
    cJSON_Delete(out);
    assert_int_equal(
        call(fx, BUS_QUERY, "inventory.get_product", "{\"sku\":\"NEVER\"}", &out, &err),
        APP_ENOTFOUND);
    assert_string_equal(err.message, "unknown product");
    project(fx, "Q-1", 1, 1);
    assert_int_equal(call(fx, BUS_QUERY, "inventory.get_product", "{\"sku\":\"Q-1\"}", &out, &err),
                     0);
    assert_int_equal(iget(out, "version"), 1);
    assert_int_equal(iget(out, "reserved"), 0);
    cJSON_Delete(out);
    out = describe(fx, "Q-1");
    assert_string_equal(sget(out, "sku"), "Q-1");
    assert_string_equal(sget(out, "name"), "Widget");
    assert_string_equal(sget(cJSON_GetObjectItem(out, "price"), "currency"), "EUR");
    assert_int_equal(iget(out, "onHand"), 3);
    assert_int_equal(iget(out, "reserved"), 2);
    assert_int_equal(iget(out, "available"), 1);
    assert_int_equal(iget(out, "version"), 2);
    assert_int_equal(cJSON_GetArraySize(out), 7);
    cJSON_Delete(out);

    static const char *const names[] = {"inventory.get_product", "inventory.describe_product",
                                        "inventory.get_product_events"};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(call(fx, BUS_QUERY, names[i], "{\"sku\":\"NOPE\"}", &out, &err),
                         APP_ENOTFOUND);
        assert_string_equal(err.message, "unknown product");
        assert_int_equal(call(fx, BUS_QUERY, names[i], "{\"sku\":\"lower\"}", &out, &err),
                         APP_ENOTFOUND);
        assert_int_equal(call(fx, BUS_QUERY, names[i], "{\"sku\":3}", &out, &err), APP_EBADREQ);
        assert_int_equal(call(fx, BUS_QUERY, names[i], "{}", &out, &err), APP_EINVAL);
    }
    fx->rs.down = true;
    assert_int_equal(call(fx, BUS_QUERY, "inventory.get_product", "{\"sku\":\"Q-1\"}", &out, &err),
                     APP_EUNAVAIL);
    fx->rs.down = false;

    assert_int_equal(
        call(fx, BUS_QUERY, "inventory.get_product_events", "{\"sku\":\"Q-1\"}", &out, &err), 0);
    const cJSON *items = cJSON_GetObjectItem(out, "items");
    assert_int_equal(cJSON_GetArraySize(items), 2);
    const cJSON *e0 = cJSON_GetArrayItem(items, 0), *e1 = cJSON_GetArrayItem(items, 1);
    assert_string_equal(sget(e0, "type"), "inventory.product.created");
    assert_string_equal(sget(e1, "type"), "inventory.product.stock_reserved");
    assert_string_equal(sget(e1, "streamId"), "product-Q-1");
    assert_int_equal(iget(e1, "version"), 2);
    assert_string_equal(sget(cJSON_GetObjectItem(e1, "data"), "orderId"), order_a);
    assert_string_equal(sget(cJSON_GetObjectItem(e1, "metadata"), "correlationId"), "corr-2");
    cJSON_Delete(out);
}

/* ---- routes, through the bus ------------------------------------------------------- */

typedef struct route_call {
    http_req req;
    http_res res;
    app_error err;
    char sku[64];
} route_call;

static const http_route_def *find_route(unsigned method, const char *pattern)
{
    for (const http_route_def *r = inv_routes; r->pattern; r++)
        if ((r->methods & method) && strcmp(r->pattern, pattern) == 0)
            return r;
    fail_msg("no route %s", pattern);
    return NULL;
}

/* Runs the route of pattern with {sku} = sku (may be NULL) and body text (may be NULL). The
 * caller calls route_done. */
static int call_route(fixture *fx, route_call *rc, unsigned method, const char *pattern,
                      const char *sku, const char *body)
{
    memset(rc, 0, sizeof *rc);
    rc->req.method = (http_method)method;
    rc->req.path = pattern;
    if (sku) {
        snprintf(rc->sku, sizeof rc->sku, "%s", sku);
        rc->req.param_names[0] = "sku";
        rc->req.param_values[0] = rc->sku;
        rc->req.n_params = 1;
    }
    rc->req.body = body ? cJSON_Parse(body) : NULL;
    bus_meta_init(&rc->req.meta, "route-test", NULL);
    const http_route_def *r = find_route(method, pattern);
    if (r->flags & HTTP_ROUTE_JSON_BODY)
        assert_true(cJSON_IsObject(rc->req.body));
    int code = r->fn(fx->bus, &rc->req, &rc->res, &rc->err);
    if (code != 0) {
        assert_null(rc->res.body);
        assert_int_equal(rc->err.code, code);
    }
    return code;
}

static void route_done(route_call *rc)
{
    cJSON_Delete(rc->req.body);
    cJSON_Delete(rc->res.body);
}

static void test_routes(void **state)
{
    fixture *fx = *state;
    route_call rc;
    assert_int_equal(call_route(fx, &rc, HTTP_M_POST, "/v1/products", NULL,
                                "{\"sku\":\"R-1\",\"name\":\"Widget\",\"price\":{\"amount\":1250,"
                                "\"currency\":\"EUR\"},\"stock\":2}"),
                     0);
    assert_int_equal(rc.res.status, 201);
    assert_string_equal(rc.res.location, "/v1/products/R-1");
    assert_string_equal(rc.res.etag, "\"1\"");
    assert_int_equal(iget(rc.res.body, "onHand"), 2);
    route_done(&rc);
    cJSON *md = cJSON_Parse(stream_of(fx, "R-1")->events[0].metadata);
    assert_string_equal(sget(md, "correlationId"), "route-test");
    cJSON_Delete(md);

    assert_int_equal(call_route(fx, &rc, HTTP_M_POST, "/v1/products", NULL,
                                "{\"sku\":\"R-1\",\"name\":\"Widget\",\"price\":{\"amount\":1250,"
                                "\"currency\":\"EUR\"},\"stock\":2}"),
                     APP_ECONFLICT);
    route_done(&rc);
    assert_int_equal(call_route(fx, &rc, HTTP_M_POST, "/v1/products", NULL, "{\"sku\":\"R-2\"}"),
                     APP_EINVAL);
    route_done(&rc);

    /* GET reads the read model; before the projection, the log. */
    assert_int_equal(call_route(fx, &rc, HTTP_M_GET, "/v1/products/{sku}", "R-1", NULL), 0);
    route_done(&rc);
    assert_int_equal(call_route(fx, &rc, HTTP_M_GET, "/v1/products/{sku}", "NEVER", NULL),
                     APP_ENOTFOUND);
    route_done(&rc);
    project(fx, "R-1", 1, 1);
    assert_int_equal(call_route(fx, &rc, HTTP_M_GET, "/v1/products/{sku}", "R-1", NULL), 0);
    assert_int_equal(rc.res.status, 200);
    assert_string_equal(rc.res.etag, "\"1\"");
    assert_int_equal(iget(rc.res.body, "available"), 2);
    route_done(&rc);

    /* Adding stock answers from the aggregate, ahead of the read model. */
    assert_int_equal(call_route(fx, &rc, HTTP_M_POST, "/v1/products/{sku}/stock", "R-1",
                                "{\"quantity\":3,\"note\":\"ignored\"}"),
                     0);
    assert_int_equal(rc.res.status, 200);
    assert_string_equal(rc.res.etag, "\"2\"");
    assert_int_equal(iget(rc.res.body, "onHand"), 5);
    assert_int_equal(iget(rc.res.body, "version"), 2);
    route_done(&rc);
    assert_int_equal(call_route(fx, &rc, HTTP_M_GET, "/v1/products/{sku}", "R-1", NULL), 0);
    assert_int_equal(iget(rc.res.body, "onHand"), 2);
    route_done(&rc);
    assert_int_equal(call_route(fx, &rc, HTTP_M_POST, "/v1/products/{sku}/stock", "R-1", "{}"),
                     APP_EINVAL);
    assert_string_equal(rc.err.fields[0].field, "quantity");
    route_done(&rc);
    assert_int_equal(
        call_route(fx, &rc, HTTP_M_POST, "/v1/products/{sku}/stock", "R-1", "{\"quantity\":[]}"),
        APP_EBADREQ);
    route_done(&rc);
    /* The sku comes from the path, never from the body. */
    assert_int_equal(call_route(fx, &rc, HTTP_M_POST, "/v1/products/{sku}/stock", "R-1",
                                "{\"quantity\":1,\"sku\":\"OTHER\"}"),
                     0);
    assert_string_equal(sget(rc.res.body, "sku"), "R-1");
    route_done(&rc);

    assert_int_equal(call_route(fx, &rc, HTTP_M_GET, "/v1/products/{sku}/events", "R-1", NULL), 0);
    assert_int_equal(rc.res.status, 200);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(rc.res.body, "items")), 3);
    route_done(&rc);

    /* A path segment that cannot be a sku is an unknown product on every route. */
    static const struct {
        unsigned method;
        const char *pattern;
        const char *body;
    } routes[] = {
        {HTTP_M_GET, "/v1/products/{sku}", NULL},
        {HTTP_M_POST, "/v1/products/{sku}/stock", "{\"quantity\":1}"},
        {HTTP_M_GET, "/v1/products/{sku}/events", NULL},
    };
    static const char *const skus[] = {"lower", "-X", "NOPE", "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456"};
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        for (size_t j = 0; j < sizeof skus / sizeof skus[0]; j++) {
            int code =
                call_route(fx, &rc, routes[i].method, routes[i].pattern, skus[j], routes[i].body);
            if (code != APP_ENOTFOUND)
                fail_msg("%s with %s: expected 404, got %d", routes[i].pattern, skus[j], code);
            route_done(&rc);
        }
    }
}

/* ---- snapshots --------------------------------------------------------------------- */

#define SNAP_SKU    "SNAP"
#define SNAP_STREAM "product-SNAP"

/* Appends n reservations of 1 (fresh order ids) straight through the port, in batches. */
static void append_reservations(fixture *fx, size_t n)
{
    enum { BATCH = 500 };
    static char ids[BATCH][UUID_STR_LEN], orders[BATCH][UUID_STR_LEN];
    static char *data[BATCH];
    es_new_event rows[BATCH];
    app_error err = APP_ERROR_INIT;
    while (n > 0) {
        size_t k = n < BATCH ? n : BATCH;
        for (size_t i = 0; i < k; i++) {
            inv_event ev = {.kind = INV_EV_STOCK_RESERVED, .sku = SNAP_SKU, .quantity = 1};
            uuid_v4(ids[i]);
            uuid_v4(orders[i]);
            snprintf(ev.order_id, sizeof ev.order_id, "%s", orders[i]);
            assert_int_equal(inv_event_encode(&ev, &data[i], &err), 0);
            rows[i] = (es_new_event){ids[i], INV_EVENT_STOCK_RESERVED, 1, data[i], "{}"};
        }
        es_append_req req = {.context = "inventory",
                             .stream_id = SNAP_STREAM,
                             .expected_version = ES_ANY_VERSION,
                             .events = rows,
                             .n_events = k};
        assert_int_equal(fx->events.ops->append(fx->events.self, &req, NULL, &err), 0);
        for (size_t i = 0; i < k; i++)
            free(data[i]);
        n -= k;
    }
}

/* The snapshot text of the product as loaded through ctx: two loads that give the same text
 * give the same state, reservations and version included. Caller frees. */
static char *loaded_state(const bus_ctx *ctx, int64_t *version)
{
    inv_product p;
    app_error err = APP_ERROR_INIT;
    char *text = NULL;
    if (inv_load(ctx, SNAP_SKU, 0, &p, &err) != 0)
        fail_msg("load: %s", err.message);
    assert_true(p.exists);
    assert_int_equal(inv_snapshot_encode(&p, &text, &err), 0);
    *version = p.version;
    inv_product_free(&p);
    return text;
}

/* The fold of the whole stream, through a port that has no snapshots at all. */
static char *full_fold(fixture *fx, int64_t *version)
{
    es_store_ops ops = *fx->events.ops;
    ops.load_snapshot = NULL;
    ops.save_snapshot = NULL;
    es_store plain = {&ops, fx->events.self};
    bus_ctx ctx = fx->ctx;
    ctx.events = &plain;
    return loaded_state(&ctx, version);
}

/* Loads through the real port and checks it read only the events after after_version and
 * gave the same state as the full fold. */
static void assert_load_after(fixture *fx, int64_t after_version, int64_t head)
{
    int64_t v_full = 0, v = 0;
    char *full = full_fold(fx, &v_full);
    size_t loaded = fx->es.loaded;
    char *got = loaded_state(&fx->ctx, &v);
    /* Pages of INV_LOAD_PAGE from after_version: the last starts at a multiple past it. */
    assert_int_equal(fx->es.last_after_version,
                     after_version + (head - after_version) / INV_LOAD_PAGE * INV_LOAD_PAGE);
    assert_int_equal(fx->es.loaded - loaded, (size_t)(head - after_version));
    assert_int_equal(v, head);
    assert_int_equal(v_full, head);
    assert_string_equal(got, full);
    free(full);
    free(got);
}

static void test_snapshots(void **state)
{
    fixture *fx = *state;
    cJSON *out = NULL;
    app_error err;
    configure_loads(100, 0); /* loads as they go without the cache */
    create(fx, SNAP_SKU, 1000000);
    append_reservations(fx, 9998); /* version 9,999 */
    assert_int_equal(stream_len(fx, SNAP_SKU), 9999);
    assert_null(stream_of(fx, SNAP_SKU)->snapshot.state); /* the port's appends do not */

    /* The command that takes the stream to 10,000 leaves a snapshot of its committed state. */
    assert_int_equal(reserve(fx, SNAP_SKU, order_a, "3", &out, &err), 0);
    cJSON_Delete(out);
    fake_stream *s = stream_of(fx, SNAP_SKU);
    assert_int_equal(s->snapshot.version, 10000);
    assert_int_equal(s->snapshot.schema_version, INV_SNAPSHOT_SCHEMA_VERSION);
    append_reservations(fx, 6);
    assert_int_equal(release(fx, SNAP_SKU, order_a, &out, &err), 0); /* 10,007 */
    cJSON_Delete(out);
    assert_int_equal(s->snapshot.version, 10000); /* no multiple of 100 crossed */

    /* Loading reads the 7 events after the snapshot, and folds to the same state. */
    assert_load_after(fx, 10000, 10007);
    cJSON *d = describe(fx, SNAP_SKU);
    assert_int_equal(iget(d, "onHand"), 1000000);
    assert_int_equal(iget(d, "reserved"), 9998 + 6);
    assert_int_equal(iget(d, "version"), 10007);
    cJSON_Delete(d);

    /* A snapshot is written from the committed state only: it matches the fold up to it. */
    char *snap_text = strdup(s->snapshot.state);
    assert_non_null(snap_text);
    bus_ctx plain_ctx = fx->ctx;
    es_store_ops ops = *fx->events.ops;
    ops.load_snapshot = NULL;
    es_store plain = {&ops, fx->events.self};
    plain_ctx.events = &plain;
    inv_product at;
    assert_int_equal(inv_load(&plain_ctx, SNAP_SKU, 10000, &at, &err), 0);
    char *at_text = NULL;
    assert_int_equal(inv_snapshot_encode(&at, &at_text, &err), 0);
    assert_string_equal(at_text, snap_text);
    inv_product_free(&at);
    free(at_text);

    /* A snapshot in another schema version (older or newer code) is not read. */
    assert_true(fake_es_put_snapshot(&fx->es, SNAP_STREAM, 10000, INV_SNAPSHOT_SCHEMA_VERSION + 1,
                                     snap_text));
    assert_load_after(fx, 0, 10007);
    assert_true(fake_es_put_snapshot(&fx->es, SNAP_STREAM, 10000, INV_SNAPSHOT_SCHEMA_VERSION - 1,
                                     snap_text));
    assert_load_after(fx, 0, 10007);

    /* Corrupt ones neither: bad JSON, a wrong type, counts that disagree, another sku. */
    static const char *const corrupt[] = {
        "{\"sku\":\"SNAP\"",
        "{\"sku\":\"SNAP\",\"name\":\"Widget\",\"price\":{\"amount\":1250,\"currency\":\"EUR\"},"
        "\"onHand\":\"lots\",\"reserved\":0,\"reservations\":[]}",
        "{\"sku\":\"SNAP\",\"name\":\"Widget\",\"price\":{\"amount\":1250,\"currency\":\"EUR\"},"
        "\"onHand\":10,\"reserved\":5,\"reservations\":[]}",
        "{\"sku\":\"OTHER\",\"name\":\"Widget\",\"price\":{\"amount\":1250,\"currency\":\"EUR\"},"
        "\"onHand\":10,\"reserved\":0,\"reservations\":[]}",
        "[]",
    };
    for (size_t i = 0; i < sizeof corrupt / sizeof corrupt[0]; i++) {
        assert_true(fake_es_put_snapshot(&fx->es, SNAP_STREAM, 10000, INV_SNAPSHOT_SCHEMA_VERSION,
                                         corrupt[i]));
        assert_load_after(fx, 0, 10007);
    }

    /* A failing snapshot write never fails the command that was committed. */
    assert_true(
        fake_es_put_snapshot(&fx->es, SNAP_STREAM, 10000, INV_SNAPSHOT_SCHEMA_VERSION, snap_text));
    fx->es.fail_snapshot = APP_EUNAVAIL;
    size_t saved = fx->es.snapshots_saved;
    append_reservations(fx, 92);                                   /* 10,099 */
    assert_int_equal(add_stock(fx, SNAP_SKU, "5", &out, &err), 0); /* 10,100 */
    assert_int_equal(iget(out, "version"), 10100);
    cJSON_Delete(out);
    assert_int_equal(fx->es.snapshots_saved, saved);
    assert_int_equal(s->snapshot.version, 10000);
    assert_load_after(fx, 10000, 10100);

    /* With the store back, the next crossing writes one; policy 0 writes none. */
    fx->es.fail_snapshot = 0;
    append_reservations(fx, 99);
    assert_int_equal(add_stock(fx, SNAP_SKU, "5", &out, &err), 0); /* 10,200 */
    cJSON_Delete(out);
    assert_int_equal(s->snapshot.version, 10200);
    assert_load_after(fx, 10200, 10200);
    configure_loads(0, 0);
    append_reservations(fx, 99);
    assert_int_equal(add_stock(fx, SNAP_SKU, "5", &out, &err), 0); /* 10,300 */
    cJSON_Delete(out);
    assert_int_equal(s->snapshot.version, 10200);
    assert_load_after(fx, 10200, 10300);
    free(snap_text);
}

/* ---- schema evolution -------------------------------------------------------------- */

/* A product created before the created event's v2, stored as it was: schema version 1 and
 * "stock" where v2 says "initialStock". */
static void put_v1_product(fixture *fx, const char *sku, int stock)
{
    char id[UUID_STR_LEN], stream[64], data[256];
    uuid_v4(id);
    snprintf(stream, sizeof stream, "product-%s", sku);
    snprintf(data, sizeof data,
             "{\"sku\":\"%s\",\"name\":\"Old lamp\",\"price\":{\"amount\":2490,"
             "\"currency\":\"EUR\"},\"stock\":%d}",
             sku, stock);
    es_new_event ev = {id, INV_EVENT_CREATED, 1, data, "{\"correlationId\":\"old\"}"};
    es_append_req req = {.context = "inventory",
                         .stream_id = stream,
                         .expected_version = 0,
                         .events = &ev,
                         .n_events = 1};
    app_error err = APP_ERROR_INIT;
    assert_int_equal(fx->stored.ops->append(fx->stored.self, &req, NULL, &err), 0);
}

/* The cache of folded products: a load after a command reads one event (the cached one, to
 * check it) instead of the stream; what another writer appended is folded on top; a store
 * that does not hold the cached event (another store, emptied, restored) is loaded in full,
 * never answered from the cache. */
/* A load up to a version (a projection filling a gap) reads the events up to it, not the
 * whole stream: a product's stream runs to thousands of events. */
static void test_load_up_to_a_version(void **state)
{
    fixture *fx = *state;
    configure_loads(0, 0);
    create(fx, SNAP_SKU, 50);
    append_reservations(fx, 30);
    inv_product p;
    app_error err = APP_ERROR_INIT;
    size_t loaded = fx->es.loaded;
    assert_int_equal(inv_load(&fx->ctx, SNAP_SKU, 3, &p, &err), 0);
    assert_int_equal(p.version, 3);
    assert_int_equal(p.reserved, 2);
    assert_int_equal(fx->es.loaded - loaded, 3);
    inv_product_free(&p);

    /* Past the head: the whole stream, no more. */
    loaded = fx->es.loaded;
    assert_int_equal(inv_load(&fx->ctx, SNAP_SKU, 100, &p, &err), 0);
    assert_int_equal(p.version, 31);
    assert_int_equal(p.reserved, 30);
    assert_int_equal(fx->es.loaded - loaded, 31);
    inv_product_free(&p);

    /* A long stream is read a page (1,000 events) at a time: the last page starts after
     * 2,000, and the fold is the whole stream's. */
    append_reservations(fx, 2470);
    loaded = fx->es.loaded;
    assert_int_equal(inv_load(&fx->ctx, SNAP_SKU, 0, &p, &err), 0);
    assert_int_equal(p.version, 2501);
    assert_int_equal(p.reserved, 2500);
    assert_int_equal(fx->es.loaded - loaded, 2501);
    assert_int_equal(fx->es.last_after_version, 2 * INV_LOAD_PAGE);
    inv_product_free(&p);
}

static void test_cached_loads(void **state)
{
    fixture *fx = *state;
    configure_loads(0, 256);
    cJSON *out = NULL;
    app_error err;
    create(fx, SNAP_SKU, 50);
    for (int i = 0; i < 3; i++) {
        char order[UUID_STR_LEN];
        uuid_v4(order);
        assert_int_equal(reserve(fx, SNAP_SKU, order, "2", &out, &err), 0);
        assert_outcome(out, "reserved", SNAP_SKU, order);
        cJSON_Delete(out);
        assert_int_equal(fx->es.last_after_version, i + 1 - 1); /* from the cached version */
    }
    size_t loaded = fx->es.loaded;
    cJSON *d = describe(fx, SNAP_SKU);
    assert_int_equal(iget(d, "reserved"), 6);
    assert_int_equal(iget(d, "version"), 4);
    cJSON_Delete(d);
    assert_int_equal(fx->es.last_after_version, 3);
    assert_int_equal(fx->es.loaded - loaded, 1);

    /* Another writer: its events are folded on top of the cached state. */
    append_reservations(fx, 5);
    loaded = fx->es.loaded;
    d = describe(fx, SNAP_SKU);
    assert_int_equal(iget(d, "reserved"), 11);
    assert_int_equal(iget(d, "version"), 9);
    cJSON_Delete(d);
    assert_int_equal(fx->es.loaded - loaded, 6);
    int64_t v_full = 0, v = 0;
    char *full = full_fold(fx, &v_full), *got = loaded_state(&fx->ctx, &v);
    assert_string_equal(got, full);
    assert_int_equal(v, 9);
    free(full);
    free(got);

    /* Another store with a product of the same sku at the same version (set up, it starts a
     * new cache): its own state, and then the first store's, loaded in full since the cache
     * holds the other store's. */
    void *other_state = NULL;
    assert_int_equal(setup(&other_state), 0);
    fixture *other = other_state;
    create(other, SNAP_SKU, 7);
    append_reservations(other, 8); /* version 9, as the first store's */
    d = describe(other, SNAP_SKU);
    assert_int_equal(iget(d, "onHand"), 7);
    assert_int_equal(iget(d, "reserved"), 8);
    assert_int_equal(iget(d, "version"), 9);
    cJSON_Delete(d);
    assert_int_equal(teardown(&other_state), 0);
    d = describe(fx, SNAP_SKU);
    assert_int_equal(fx->es.last_after_version, 0);
    assert_int_equal(iget(d, "onHand"), 50);
    assert_int_equal(iget(d, "reserved"), 11);
    cJSON_Delete(d);

    /* A command decides on what another writer appended since the cached version. */
    append_reservations(fx, 1);
    char order[UUID_STR_LEN];
    uuid_v4(order);
    assert_int_equal(reserve(fx, SNAP_SKU, order, "39", &out, &err), 0);
    assert_outcome(out, "out_of_stock", SNAP_SKU, order); /* 50 - 12 = 38 available */
    cJSON_Delete(out);
}

static void test_old_created_events(void **state)
{
    fixture *fx = *state;
    cJSON *out = NULL;
    app_error err;
    configure_loads(0, 0); /* every load decodes the stored events */
    put_v1_product(fx, "OLD-1", 5);
    assert_int_equal(stream_of(fx, "OLD-1")->events[0].schema_version, 1);

    /* The aggregate: commands decide on it. */
    assert_int_equal(add_stock(fx, "OLD-1", "2", &out, &err), 0);
    assert_int_equal(iget(out, "onHand"), 7);
    cJSON_Delete(out);
    assert_int_equal(reserve(fx, "OLD-1", order_a, "6", &out, &err), 0);
    assert_string_equal(sget(out, "outcome"), "reserved");
    cJSON_Delete(out);
    assert_int_equal(reserve(fx, "OLD-1", order_b, "2", &out, &err), 0);
    assert_string_equal(sget(out, "outcome"), "out_of_stock");
    cJSON_Delete(out);
    cJSON *d = describe(fx, "OLD-1");
    assert_string_equal(sget(d, "name"), "Old lamp");
    assert_int_equal(iget(d, "onHand"), 7);
    assert_int_equal(iget(d, "available"), 1);
    cJSON_Delete(d);

    /* The projection, fed from the log as the subscriber reads it. */
    es_event_list log = {0};
    assert_int_equal(fx->events.ops->read_log(fx->events.self, "inventory", 0, 100, &log, &err), 0);
    assert_int_equal(log.len, 3);
    assert_int_equal(log.items[0].schema_version, 2);
    for (size_t i = 0; i < log.len; i++)
        assert_int_equal(inv_projection_handle(&fx->ctx, &log.items[i], &err), 0);
    es_event_list_free(&log);
    cJSON *rm = cJSON_Parse(fake_rs_value(&fx->rs, "product:OLD-1"));
    assert_non_null(rm);
    assert_int_equal(iget(rm, "onHand"), 7);
    assert_int_equal(iget(rm, "reserved"), 6);
    assert_int_equal(iget(rm, "version"), 3);
    cJSON_Delete(rm);

    /* The audit trail shows the current shape; the store still holds the old one. */
    assert_int_equal(
        call(fx, BUS_QUERY, "inventory.get_product_events", "{\"sku\":\"OLD-1\"}", &out, &err), 0);
    const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(out, "items"), 0);
    assert_int_equal(iget(first, "schemaVersion"), 2);
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(first, "data");
    assert_int_equal(iget(data, "initialStock"), 5);
    assert_null(cJSON_GetObjectItemCaseSensitive(data, "stock"));
    cJSON_Delete(out);
    assert_non_null(strstr(stream_of(fx, "OLD-1")->events[0].data, "\"stock\":5"));

    /* Without the upcasting store the old event is refused, never misread. */
    bus_ctx raw = fx->ctx;
    raw.events = &fx->stored;
    inv_product p;
    assert_int_equal(inv_load(&raw, "OLD-1", 0, &p, &err), APP_EINTERNAL);
    inv_product_free(&p);

    /* An old event the upcaster refuses reaches the reader as stored: a clear error. */
    char id[UUID_STR_LEN];
    uuid_v4(id);
    es_new_event bad = {id, INV_EVENT_CREATED, 1, "{\"sku\":\"OLD-2\",\"stock\":\"five\"}", "{}"};
    es_append_req req = {.context = "inventory",
                         .stream_id = "product-OLD-2",
                         .expected_version = 0,
                         .events = &bad,
                         .n_events = 1};
    assert_int_equal(fx->stored.ops->append(fx->stored.self, &req, NULL, &err), 0);
    assert_int_equal(add_stock(fx, "OLD-2", "1", &out, &err), APP_EINTERNAL);
    assert_non_null(strstr(err.message, "was not upcast"));
}

static void test_descriptor(void **state)
{
    (void)state;
    assert_int_equal(inventory_module.abi, APP_MODULE_ABI);
    assert_string_equal(inventory_module.name, "inventory");
    assert_string_equal(inventory_module.schema, "inventory_ctx");
    assert_non_null(inventory_module.migrations[0].name);
    assert_non_null(strstr(inventory_module.migrations[0].sql, "inventory_ctx"));
    static const struct {
        const char *name;
        unsigned flags;
    } commands[] = {
        {"inventory.create_product", 0},
        {"inventory.add_stock", BUS_RETRY_ON_CONFLICT},
        /* Per order: a caller in another process may send them again after a lost answer. */
        {"inventory.reserve_stock", BUS_RETRY_ON_CONFLICT | BUS_IDEMPOTENT},
        {"inventory.release_stock", BUS_RETRY_ON_CONFLICT | BUS_IDEMPOTENT},
        {"inventory.commit_stock", BUS_RETRY_ON_CONFLICT | BUS_IDEMPOTENT},
    };
    size_t n = 0;
    for (const bus_handler_def *d = inventory_module.commands; d->name; d++, n++) {
        assert_true(n < 5);
        assert_string_equal(d->name, commands[n].name);
        assert_int_equal(d->flags, commands[n].flags);
    }
    assert_int_equal(n, 5);
    n = 0;
    for (const bus_handler_def *d = inventory_module.queries; d->name; d++, n++)
        assert_int_equal(strncmp(d->name, "inventory.", 10), 0);
    assert_int_equal(n, 3);
    assert_string_equal(inventory_module.subscriptions[0].name, "inventory.projection");
    assert_string_equal(inventory_module.subscriptions[0].source_context, "inventory");
    assert_true(inventory_module.subscriptions[0].flags & MOD_SUB_PROJECTION);
    assert_null(inventory_module.subscriptions[1].name);
    assert_string_equal(inventory_module.upcasters[0].event_type, INV_EVENT_CREATED);
    assert_int_equal(inventory_module.upcasters[0].from_version, 1);
    assert_null(inventory_module.upcasters[1].event_type);
    n = 0;
    for (const http_route_def *r = inventory_module.routes; r->pattern; r++, n++)
        assert_non_null(r->fn);
    assert_int_equal(n, 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_add_stock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stock_ceiling, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reserve_and_release, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_stock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reservation_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conflict_is_decided_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_reservations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reservations_are_grouped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_projection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_up_to_a_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cached_loads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_old_created_events, setup, teardown),
        cmocka_unit_test(test_descriptor),
    };
    return cmocka_run_group_tests_name("inventory application", tests, NULL, NULL);
}
