/* The inventory commands through the real bus and the PostgreSQL event store: stock is
 * never oversold, whatever the concurrency, and reservations are idempotent per order. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "adapters/postgres/pg_event_store.h"
#include "adapters/postgres/pg_migrate.h"
#include "contexts/inventory/application/product_stream.h"
#include "contexts/inventory/inventory_module.h"
#include "core/uuid.h"
#include "kernel/bus.h"
#include "kernel/upcast.h"

static pg_event_store *store;
static es_store stored;        /* the adapter's port, as main.c keeps it */
static upcast_store *upcaster; /* in front of it */
static es_store port;          /* what the handlers use */
static bus *b;

static int setup(void **state)
{
    (void)state;
    const char *dsn = getenv("APP_POSTGRES_DSN");
    if (!dsn || !*dsn) {
        fprintf(stderr, "APP_POSTGRES_DSN is not set: run this test through test/run.sh\n");
        return -1;
    }
    pg_event_store_options opts = PG_EVENT_STORE_OPTIONS_INIT;
    opts.dsn = dsn;
    app_error err = APP_ERROR_INIT;
    if (pg_event_store_new(&store, &opts, &err) != 0 ||
        pg_migrate_context(pg_event_store_pool(store), "inventory_ctx", pg_store_migrations,
                           inventory_migrations, NULL, &err) != 0) {
        fprintf(stderr, "setup: %s: %s\n", err.message, err.detail);
        return -1;
    }
    stored = pg_event_store_port(store);
    if (upcast_store_new(&upcaster, &stored, app_modules, &err) != 0) {
        fprintf(stderr, "setup: %s\n", err.message);
        return -1;
    }
    port = upcast_store_port(upcaster);
    bus_options bo = {.events = &port, .clock = &app_system_clock, .max_conflict_retries = 50};
    if (bus_new(&b, &bo, &err) || bus_register(b, BUS_COMMAND, inventory_module.commands, &err) ||
        bus_register(b, BUS_QUERY, inventory_module.queries, &err)) {
        fprintf(stderr, "setup: %s\n", err.message);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    bus_free(b);
    upcast_store_free(upcaster);
    pg_event_store_free(store);
    return 0;
}

static void unique_sku(char *out, size_t n)
{
    char id[UUID_STR_LEN];
    uuid_v4(id);
    snprintf(out, n, "STOCK-%.8s", id);
    for (char *p = out; *p; p++)
        if (*p >= 'a' && *p <= 'f')
            *p = (char)(*p - 'a' + 'A');
}

static int send(const char *name, const char *payload, cJSON **out)
{
    bus_meta meta;
    bus_meta_init(&meta, NULL, NULL);
    cJSON *p = cJSON_Parse(payload);
    assert_non_null(p);
    app_error err = APP_ERROR_INIT;
    cJSON *reply = NULL;
    int rc = bus_send(b, name, p, &meta, &reply, &err);
    cJSON_Delete(p);
    if (out)
        *out = reply;
    else
        cJSON_Delete(reply);
    return rc;
}

static void create(const char *sku, int stock)
{
    char payload[256];
    snprintf(payload, sizeof payload,
             "{\"sku\":\"%s\",\"name\":\"Stock\",\"price\":{\"amount\":100,\"currency\":\"EUR\"},"
             "\"stock\":%d}",
             sku, stock);
    assert_int_equal(send("inventory.create_product", payload, NULL), 0);
}

static const char *outcome(const cJSON *reply)
{
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(reply, "outcome"));
}

static cJSON *describe(const char *sku)
{
    char payload[96];
    snprintf(payload, sizeof payload, "{\"sku\":\"%s\"}", sku);
    cJSON *p = cJSON_Parse(payload), *out = NULL;
    bus_meta meta;
    bus_meta_init(&meta, NULL, NULL);
    app_error err = APP_ERROR_INIT;
    assert_int_equal(bus_ask(b, "inventory.describe_product", p, &meta, &out, &err), 0);
    cJSON_Delete(p);
    return out;
}

static int64_t member(const cJSON *o, const char *name)
{
    return (int64_t)cJSON_GetObjectItemCaseSensitive(o, name)->valuedouble;
}

typedef struct reserver {
    const char *sku;
    char order[UUID_STR_LEN];
    int rc;
    bool reserved;
} reserver;

static void *reserve_one(void *arg)
{
    reserver *r = arg;
    char payload[192];
    snprintf(payload, sizeof payload, "{\"sku\":\"%s\",\"orderId\":\"%s\",\"quantity\":1}", r->sku,
             r->order);
    cJSON *reply = NULL;
    r->rc = send("inventory.reserve_stock", payload, &reply);
    r->reserved = r->rc == 0 && strcmp(outcome(reply), "reserved") == 0;
    cJSON_Delete(reply);
    return NULL;
}

static void test_never_oversold(void **state)
{
    (void)state;
    char sku[48];
    unique_sku(sku, sizeof sku);
    create(sku, 20);
    enum { N = 100 };
    static reserver rs[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        rs[i] = (reserver){.sku = sku};
        uuid_v4(rs[i].order);
        assert_int_equal(pthread_create(&th[i], NULL, reserve_one, &rs[i]), 0);
    }
    int reserved = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(rs[i].rc, 0);
        reserved += rs[i].reserved;
    }
    assert_int_equal(reserved, 20);
    cJSON *p = describe(sku);
    assert_int_equal(member(p, "onHand"), 20);
    assert_int_equal(member(p, "reserved"), 20);
    assert_int_equal(member(p, "available"), 0);
    cJSON_Delete(p);
}

static void test_idempotent_per_order(void **state)
{
    (void)state;
    char sku[48], order[UUID_STR_LEN], payload[192];
    unique_sku(sku, sizeof sku);
    uuid_v4(order);
    create(sku, 5);
    snprintf(payload, sizeof payload, "{\"sku\":\"%s\",\"orderId\":\"%s\",\"quantity\":3}", sku,
             order);
    for (int i = 0; i < 2; i++) {
        cJSON *reply = NULL;
        assert_int_equal(send("inventory.reserve_stock", payload, &reply), 0);
        assert_string_equal(outcome(reply), "reserved");
        cJSON_Delete(reply);
    }
    cJSON *p = describe(sku);
    assert_int_equal(member(p, "reserved"), 3);
    cJSON_Delete(p);

    snprintf(payload, sizeof payload, "{\"sku\":\"%s\",\"orderId\":\"%s\"}", sku, order);
    const char *want[] = {"released", "nothing_reserved"};
    for (int i = 0; i < 2; i++) {
        cJSON *reply = NULL;
        assert_int_equal(send("inventory.release_stock", payload, &reply), 0);
        assert_string_equal(outcome(reply), want[i]);
        cJSON_Delete(reply);
    }
    p = describe(sku);
    assert_int_equal(member(p, "reserved"), 0);
    assert_int_equal(member(p, "version"), 3);
    cJSON_Delete(p);

    snprintf(payload, sizeof payload, "{\"sku\":\"NO-SUCH-SKU\",\"orderId\":\"%s\",\"quantity\":1}",
             order);
    assert_int_equal(send("inventory.reserve_stock", payload, NULL), APP_ENOTFOUND);
}

/* The product's state as snapshot text: equal texts, equal states. Caller frees. */
static char *state_text(const inv_product *p)
{
    char *text = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(inv_snapshot_encode(p, &text, &err), 0);
    return text;
}

/* Folds sku up to max_version (0: all) from the events alone, with no snapshot. */
static char *fold_without_snapshot(const char *sku, int64_t max_version)
{
    es_store_ops ops = *port.ops;
    ops.load_snapshot = NULL;
    ops.save_snapshot = NULL;
    es_store plain = {&ops, port.self};
    bus_meta meta;
    bus_meta_init(&meta, NULL, NULL);
    bus_ctx ctx = {.events = &plain, .clock = &app_system_clock, .bus = b, .meta = &meta};
    inv_product p;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(inv_load(&ctx, sku, max_version, &p, &err), 0);
    char *text = state_text(&p);
    inv_product_free(&p);
    return text;
}

/* Many concurrent reservations and releases with a snapshot every 10 events: the stock is
 * right, the snapshot describes a committed version exactly, and loading from it gives the
 * state the whole stream gives. */
static void test_stock_with_snapshots(void **state)
{
    (void)state;
    app_config cfg;
    config_defaults(&cfg);
    cfg.snapshots.product = 10;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(inventory_module.configure(&cfg, &err), 0);

    char sku[48], stream[64], payload[192];
    unique_sku(sku, sizeof sku);
    snprintf(stream, sizeof stream, "product-%s", sku);
    create(sku, 1000);
    enum { N = 60 };
    static reserver rs[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        rs[i] = (reserver){.sku = sku};
        uuid_v4(rs[i].order);
        assert_int_equal(pthread_create(&th[i], NULL, reserve_one, &rs[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(rs[i].rc, 0);
        assert_true(rs[i].reserved);
    }
    for (int i = 0; i < N; i += 3) {
        snprintf(payload, sizeof payload, "{\"sku\":\"%s\",\"orderId\":\"%s\"}", sku, rs[i].order);
        assert_int_equal(send("inventory.release_stock", payload, NULL), 0);
    }
    cJSON *p = describe(sku);
    assert_int_equal(member(p, "onHand"), 1000);
    assert_int_equal(member(p, "reserved"), N - N / 3);
    assert_int_equal(member(p, "available"), 1000 - (N - N / 3));
    assert_int_equal(member(p, "version"), 1 + N + N / 3);
    cJSON_Delete(p);

    es_snapshot snap;
    assert_int_equal(port.ops->load_snapshot(port.self, "inventory", stream, &snap, &err), 0);
    assert_int_equal(snap.version, 80); /* the last multiple of 10 at or below 81 */
    assert_int_equal(snap.schema_version, INV_SNAPSHOT_SCHEMA_VERSION);
    inv_product from_snap = {0};
    assert_int_equal(inv_snapshot_decode(snap.state, snap.version, &from_snap, &err), 0);
    char *snap_text = state_text(&from_snap), *fold_text = fold_without_snapshot(sku, 80);
    assert_string_equal(snap_text, fold_text);
    free(snap_text);
    free(fold_text);
    inv_product_free(&from_snap);
    es_snapshot_free(&snap);

    inv_product loaded;
    bus_meta meta;
    bus_meta_init(&meta, NULL, NULL);
    bus_ctx ctx = {.events = &port, .clock = &app_system_clock, .bus = b, .meta = &meta};
    assert_int_equal(inv_load(&ctx, sku, 0, &loaded, &err), 0);
    char *loaded_text = state_text(&loaded);
    fold_text = fold_without_snapshot(sku, 0);
    assert_string_equal(loaded_text, fold_text);
    assert_int_equal(loaded.version, 1 + N + N / 3);
    free(loaded_text);
    free(fold_text);
    inv_product_free(&loaded);
}

/* A product created before inventory.product.created v2 ("stock", schema version 1), read
 * back from PostgreSQL through the upcasting store: commands and queries work on it. */
static void test_old_created_event(void **state)
{
    (void)state;
    char sku[48], stream[64], data[256], id[UUID_STR_LEN], payload[192], order[UUID_STR_LEN];
    unique_sku(sku, sizeof sku);
    snprintf(stream, sizeof stream, "product-%s", sku);
    snprintf(data, sizeof data,
             "{\"sku\":\"%s\",\"name\":\"Old\",\"price\":{\"amount\":100,\"currency\":\"EUR\"},"
             "\"stock\":4}",
             sku);
    uuid_v4(id);
    es_new_event ev = {id, "inventory.product.created", 1, data, "{}"};
    es_append_req req = {.context = "inventory",
                         .stream_id = stream,
                         .expected_version = ES_NO_STREAM,
                         .events = &ev,
                         .n_events = 1};
    app_error err = APP_ERROR_INIT;
    assert_int_equal(stored.ops->append(stored.self, &req, NULL, &err), 0);

    uuid_v4(order);
    snprintf(payload, sizeof payload, "{\"sku\":\"%s\",\"orderId\":\"%s\",\"quantity\":3}", sku,
             order);
    cJSON *reply = NULL;
    assert_int_equal(send("inventory.reserve_stock", payload, &reply), 0);
    assert_string_equal(outcome(reply), "reserved");
    cJSON_Delete(reply);
    cJSON *p = describe(sku);
    assert_int_equal(member(p, "onHand"), 4);
    assert_int_equal(member(p, "available"), 1);
    assert_int_equal(member(p, "version"), 2);
    cJSON_Delete(p);

    /* Stored as written; read in the current shape. */
    es_event_list raw = {0}, up = {0};
    assert_int_equal(stored.ops->load_stream(stored.self, "inventory", stream, 0, &raw, &err), 0);
    assert_int_equal(port.ops->load_stream(port.self, "inventory", stream, 0, &up, &err), 0);
    assert_int_equal(raw.items[0].schema_version, 1);
    assert_non_null(strstr(raw.items[0].data, "\"stock\""));
    assert_int_equal(up.items[0].schema_version, 2);
    assert_non_null(strstr(up.items[0].data, "\"initialStock\":4"));
    assert_null(strstr(up.items[0].data, "\"stock\""));
    es_event_list_free(&raw);
    es_event_list_free(&up);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_never_oversold),
        cmocka_unit_test(test_idempotent_per_order),
        cmocka_unit_test(test_stock_with_snapshots),
        cmocka_unit_test(test_old_created_event),
    };
    return cmocka_run_group_tests_name("inventory stock", tests, setup, teardown);
}
