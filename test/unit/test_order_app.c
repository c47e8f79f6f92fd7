/* The order context's application layer against the in-memory stores of
 * test/support/fake_stores.h and a fake of the inventory and user contexts on a real bus:
 * placing (prices from the local copy or the owner), the placement saga step by step
 * (redelivery, transient failures, races), the deadline task, the projections and queries,
 * and the user context's authoritative user.describe_customer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "contexts/order/application/order_app.h"
#include "contexts/order/application/order_stream.h"
#include "contexts/order/order_module.h"
#include "contexts/user/application/user_app.h"
#include "core/config.h"
#include "core/json.h"
#include "core/metrics.h"
#include "core/uuid.h"
#include "kernel/bus.h"
#include "kernel/event_json.h"
#include "test/support/fake_stores.h"

#define CUSTOMER "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
#define STRANGER "2f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
#define T0       1795000000000LL /* 2026-11-18T..., a fixed "now" */

/* ---- a fake of the other contexts, answering on the bus ------------------------------ */

#define REMOTE_MAX 16

typedef struct remote_product {
    const char *sku;
    int64_t price; /* EUR cents, or USD when usd */
    bool usd;
    int64_t stock;
    char holders[REMOTE_MAX][UUID_STR_LEN]; /* orders holding a reservation */
    int64_t held[REMOTE_MAX];
    size_t n_holders;
} remote_product;

typedef struct remote {
    remote_product products[REMOTE_MAX];
    size_t n_products;
    const char *customers[REMOTE_MAX];
    const char *statuses[REMOTE_MAX];
    size_t n_customers;
    bool inventory_down; /* reserve, release and describe answer APP_EUNAVAIL */
    int reserves, releases, describes, customer_asks;
    bus_meta last_meta; /* of the last inventory command */
} remote;

static remote world;

static remote_product *remote_find(const char *sku)
{
    for (size_t i = 0; sku && i < world.n_products; i++)
        if (strcmp(world.products[i].sku, sku) == 0)
            return &world.products[i];
    return NULL;
}

static int64_t remote_reserved(const remote_product *p)
{
    int64_t n = 0;
    for (size_t i = 0; i < p->n_holders; i++)
        n += p->held[i];
    return n;
}

static void remote_product_add(const char *sku, int64_t price, int64_t stock)
{
    assert_true(world.n_products < REMOTE_MAX);
    world.products[world.n_products++] =
        (remote_product){.sku = sku, .price = price, .stock = stock};
}

static void remote_customer_add(const char *id, const char *status)
{
    world.customers[world.n_customers] = id;
    world.statuses[world.n_customers++] = status;
}

static const char *pstr(const cJSON *p, const char *name)
{
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(p, name));
}

static int reply_with(cJSON *o, cJSON **out, app_error *err)
{
    if (!o)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    *out = o;
    return 0;
}

static int reply_outcome(const char *outcome, cJSON **out, app_error *err)
{
    cJSON *o = cJSON_CreateObject();
    assert_non_null(o);
    assert_non_null(cJSON_AddStringToObject(o, "outcome", outcome));
    return reply_with(o, out, err);
}

static int fake_describe_product(const bus_ctx *ctx, const cJSON *payload, cJSON **out,
                                 app_error *err)
{
    (void)ctx;
    world.describes++;
    if (world.inventory_down)
        return app_error_set(err, APP_EUNAVAIL, "inventory is away");
    const remote_product *p = remote_find(pstr(payload, "sku"));
    if (!p)
        return app_error_set(err, APP_ENOTFOUND, "product not found");
    char text[160];
    snprintf(text, sizeof text, "{\"sku\":\"%s\",\"price\":{\"amount\":%lld,\"currency\":\"%s\"}}",
             p->sku, (long long)p->price, p->usd ? "USD" : "EUR");
    return reply_with(cJSON_Parse(text), out, err);
}

static int fake_reserve(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    world.reserves++;
    world.last_meta = *ctx->meta;
    if (world.inventory_down)
        return app_error_set(err, APP_EUNAVAIL, "inventory is away");
    remote_product *p = remote_find(pstr(payload, "sku"));
    const char *order = pstr(payload, "orderId");
    int64_t qty = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(payload, "quantity"));
    if (!p)
        return app_error_set(err, APP_ENOTFOUND, "unknown product");
    assert_non_null(order);
    const char *outcome = "reserved";
    size_t i = 0;
    while (i < p->n_holders && strcmp(p->holders[i], order) != 0)
        i++;
    if (i == p->n_holders) {
        if (p->stock - remote_reserved(p) < qty) {
            outcome = "out_of_stock";
        } else {
            assert_true(p->n_holders < REMOTE_MAX);
            snprintf(p->holders[p->n_holders], UUID_STR_LEN, "%s", order);
            p->held[p->n_holders++] = qty;
        }
    }
    return reply_outcome(outcome, out, err);
}

static int fake_release(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    world.releases++;
    world.last_meta = *ctx->meta;
    if (world.inventory_down)
        return app_error_set(err, APP_EUNAVAIL, "inventory is away");
    remote_product *p = remote_find(pstr(payload, "sku"));
    const char *order = pstr(payload, "orderId");
    if (!p)
        return app_error_set(err, APP_ENOTFOUND, "unknown product");
    const char *outcome = "nothing_reserved";
    for (size_t i = 0; i < p->n_holders; i++)
        if (strcmp(p->holders[i], order) == 0) {
            p->n_holders--;
            memcpy(p->holders[i], p->holders[p->n_holders], UUID_STR_LEN);
            p->held[i] = p->held[p->n_holders];
            outcome = "released";
            break;
        }
    return reply_outcome(outcome, out, err);
}

static int fake_describe_customer(const bus_ctx *ctx, const cJSON *payload, cJSON **out,
                                  app_error *err)
{
    (void)ctx;
    world.customer_asks++;
    const char *id = pstr(payload, "id");
    for (size_t i = 0; id && i < world.n_customers; i++)
        if (strcmp(world.customers[i], id) == 0) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "id", id);
            cJSON_AddStringToObject(o, "status", world.statuses[i]);
            return reply_with(o, out, err);
        }
    return app_error_set(err, APP_ENOTFOUND, "user not found");
}

static const bus_handler_def remote_commands[] = {
    {"inventory.reserve_stock", fake_reserve, 0},
    {"inventory.release_stock", fake_release, 0},
    {NULL, NULL, 0},
};

static const bus_handler_def remote_queries[] = {
    {"inventory.describe_product", fake_describe_product, 0},
    {"user.describe_customer", fake_describe_customer, 0},
    {NULL, NULL, 0},
};

/* ---- fixture -------------------------------------------------------------------------- */

static int64_t now_ms = T0;

static int64_t test_now(void *self)
{
    (void)self;
    return now_ms;
}

static const app_clock test_clock = {test_now, NULL};

typedef struct fixture {
    fake_es es;
    fake_rs rs;
    es_store events;
    rs_store reads;
    bus *bus;
    bus_meta meta;
    bus_ctx ctx;
    int64_t saga_at, projection_at; /* checkpoints */
} fixture;

static void configure(int timeout_ms)
{
    app_config *cfg = calloc(1, sizeof *cfg);
    assert_non_null(cfg);
    cfg->order.placement_timeout_ms = timeout_ms;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(order_module.configure(cfg, &err), 0);
    free(cfg);
}

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    memset(&world, 0, sizeof world);
    now_ms = T0;
    configure(30000);
    fake_es_init(&fx->es, "order");
    fake_rs_init(&fx->rs);
    fx->events = fake_es_port(&fx->es);
    fx->reads = fake_rs_port(&fx->rs);
    app_error err = APP_ERROR_INIT;
    bus_options opts = {.events = &fx->events,
                        .reads = &fx->reads,
                        .clock = &test_clock,
                        .max_conflict_retries = 5};
    assert_int_equal(bus_new(&fx->bus, &opts, &err), 0);
    assert_int_equal(bus_register(fx->bus, BUS_COMMAND, order_module.commands, &err), 0);
    assert_int_equal(bus_register(fx->bus, BUS_QUERY, order_module.queries, &err), 0);
    assert_int_equal(bus_register(fx->bus, BUS_COMMAND, remote_commands, &err), 0);
    assert_int_equal(bus_register(fx->bus, BUS_QUERY, remote_queries, &err), 0);
    bus_meta_init(&fx->meta, "corr-task", NULL);
    snprintf(fx->meta.actor, sizeof fx->meta.actor, "task");
    fx->ctx = (bus_ctx){.events = &fx->events,
                        .reads = &fx->reads,
                        .clock = &test_clock,
                        .bus = fx->bus,
                        .meta = &fx->meta};
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    bus_free(fx->bus);
    fake_es_free(&fx->es);
    fake_rs_free(&fx->rs);
    free(fx);
    metrics_reset();
    return 0;
}

/* Sends or asks name with the payload text, as a request with X-Request-ID corr. */
static int call_as(fixture *fx, const char *corr, bus_kind kind, const char *name,
                   const char *payload, cJSON **out, app_error *err)
{
    cJSON *p = cJSON_Parse(payload);
    assert_non_null(p);
    app_error_clear(err);
    *out = NULL;
    bus_meta meta;
    bus_meta_init(&meta, corr, NULL);
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

static int call(fixture *fx, bus_kind kind, const char *name, const char *payload, cJSON **out,
                app_error *err)
{
    return call_as(fx, "corr-req", kind, name, payload, out, err);
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

/* Places {"customerId": customer, "lines": lines}; the new order's id into id. */
static void place(fixture *fx, const char *customer, const char *lines, char id[UUID_STR_LEN])
{
    char payload[1024];
    snprintf(payload, sizeof payload, "{\"customerId\":\"%s\",\"lines\":%s}", customer, lines);
    cJSON *out;
    app_error err;
    if (call(fx, BUS_COMMAND, "order.place_order", payload, &out, &err) != 0)
        fail_msg("place: %s", err.message);
    assert_string_equal(sget(out, "status"), "pending");
    snprintf(id, UUID_STR_LEN, "%s", sget(out, "id"));
    cJSON_Delete(out);
}

/* Delivers the order log from *at to handle the way the kernel does (meta from the event);
 * stops at the first failure without moving past it. */
static int deliver(fixture *fx, int64_t *at, mod_event_fn handle, app_error *err)
{
    es_event_list list = {0};
    assert_int_equal(fx->events.ops->read_log(fx->events.self, "order", *at, 1000, &list, err), 0);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < list.len; i++) {
        const es_event *ev = &list.items[i];
        cJSON *md = cJSON_Parse(ev->metadata);
        bus_meta meta;
        bus_meta_init(&meta, pstr(md, "correlationId"), ev->event_id);
        snprintf(meta.actor, sizeof meta.actor, "subscriber");
        cJSON_Delete(md);
        bus_ctx ctx = {.events = &fx->events,
                       .reads = &fx->reads,
                       .clock = &test_clock,
                       .bus = fx->bus,
                       .meta = &meta};
        app_error_clear(err);
        rc = handle(&ctx, ev, err);
        if (rc == 0)
            *at = ev->position;
    }
    es_event_list_free(&list);
    return rc;
}

static void run_saga(fixture *fx)
{
    app_error err = APP_ERROR_INIT;
    if (deliver(fx, &fx->saga_at, ord_saga_handle, &err) != 0)
        fail_msg("saga: %s", err.message);
}

/* The order folded from its stream (authoritative, not the read model). */
static ord_order *load(fixture *fx, const char *id)
{
    ord_order *o = malloc(sizeof *o);
    assert_non_null(o);
    app_error err = APP_ERROR_INIT;
    assert_int_equal(ord_load(&fx->ctx, id, 0, o, &err), 0);
    return o;
}

static void expect_order(fixture *fx, const char *id, ord_status status, ord_reason reason,
                         int64_t version)
{
    ord_order *o = load(fx, id);
    assert_int_equal(o->status, status);
    assert_int_equal(o->reason, reason);
    assert_int_equal(o->version, version);
    free(o);
}

static const fake_stream *order_stream(fixture *fx, const char *id)
{
    char stream[ORD_STREAM_ID_LEN];
    ord_stream_id(stream, id);
    const fake_stream *s = fake_es_stream(&fx->es, stream);
    assert_non_null(s);
    return s;
}

/* Puts sku's price in the order context's local copy of the catalogue. */
static void copy_price(fixture *fx, const char *sku, int64_t amount)
{
    char key[64], value[128];
    snprintf(key, sizeof key, "order:product:%s", sku);
    snprintf(value, sizeof value,
             "{\"sku\":\"%s\",\"price\":{\"amount\":%lld,\"currency\":\"EUR\"}}", sku,
             (long long)amount);
    app_error err = APP_ERROR_INIT;
    assert_int_equal(fx->reads.ops->set(fx->reads.self, key, value, &err), 0);
}

static int64_t held(const char *sku)
{
    return remote_reserved(remote_find(sku));
}

/* ---- placing ------------------------------------------------------------------------- */

static void test_place_prices_and_saga_state(void **state)
{
    fixture *fx = *state;
    configure(5000);
    app_error err = APP_ERROR_INIT;
    /* A from the local copy; B only known to its owner (the copy lags). */
    assert_int_equal(fx->reads.ops->set(fx->reads.self, "order:product:A",
                                        "{\"sku\":\"A\",\"price\":{\"amount\":250,"
                                        "\"currency\":\"EUR\"}}",
                                        &err),
                     0);
    remote_product_add("B", 100, 10);
    cJSON *out;
    assert_int_equal(call_as(fx, "req-1", BUS_COMMAND, "order.place_order",
                             "{\"customerId\":\"" CUSTOMER "\",\"lines\":[{\"sku\":\"A\","
                             "\"quantity\":2},{\"sku\":\"B\",\"quantity\":3}]}",
                             &out, &err),
                     0);
    assert_string_equal(sget(out, "status"), "pending");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(out, "reason")));
    assert_int_equal(iget(out, "version"), 1);
    assert_string_equal(sget(out, "customerId"), CUSTOMER);
    assert_string_equal(sget(out, "createdAt"), "2026-11-18T11:06:40.000Z");
    const cJSON *total = cJSON_GetObjectItem(out, "total");
    assert_int_equal(iget(total, "amount"), 800);
    assert_string_equal(sget(total, "currency"), "EUR");
    const cJSON *lines = cJSON_GetObjectItem(out, "lines");
    assert_int_equal(cJSON_GetArraySize(lines), 2);
    assert_int_equal(iget(cJSON_GetObjectItem(cJSON_GetArrayItem(lines, 0), "unitPrice"), "amount"),
                     250);
    assert_int_equal(iget(cJSON_GetObjectItem(cJSON_GetArrayItem(lines, 1), "unitPrice"), "amount"),
                     100);
    assert_int_equal(world.describes, 1); /* only B was asked about */
    char id[UUID_STR_LEN];
    snprintf(id, sizeof id, "%s", sget(out, "id"));
    assert_true(uuid_valid(id));
    cJSON_Delete(out);

    /* The placed event, with the request's correlation id, and the saga's state with it. */
    const fake_stream *s = order_stream(fx, id);
    assert_int_equal(s->len, 1);
    assert_string_equal(s->events[0].type, "order.order.placed");
    cJSON *md = cJSON_Parse(s->events[0].metadata);
    assert_string_equal(sget(md, "correlationId"), "req-1");
    cJSON_Delete(md);
    const fake_process *p = fake_es_process(&fx->es, "order.placement", id);
    assert_non_null(p);
    assert_false(p->done);
    assert_int_equal(p->deadline_ms, T0 + 5000);
    cJSON *st = cJSON_Parse(p->state);
    assert_string_equal(sget(st, "step"), "placed");
    assert_string_equal(sget(st, "correlationId"), "req-1");
    assert_string_equal(sget(st, "placedEventId"), s->events[0].event_id);
    cJSON_Delete(st);
}

static void test_place_unknown_sku_and_currencies(void **state)
{
    fixture *fx = *state;
    remote_product_add("A", 250, 10);
    remote_product_add("D", 300, 10);
    world.products[1].usd = true;
    cJSON *out;
    app_error err;
    /* The owner does not know GHOST: placed all the same, without a price or a total. */
    assert_int_equal(call(fx, BUS_COMMAND, "order.place_order",
                          "{\"customerId\":\"" CUSTOMER "\",\"lines\":[{\"sku\":\"A\","
                          "\"quantity\":1},{\"sku\":\"GHOST\",\"quantity\":1}]}",
                          &out, &err),
                     0);
    const cJSON *lines = cJSON_GetObjectItem(out, "lines");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetArrayItem(lines, 1), "unitPrice")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(out, "total")));
    cJSON_Delete(out);

    /* Prices of two currencies in one order are refused: a conflict with the products' state
     * (the same request goes through once their prices agree), not a malformed request. */
    size_t before = fx->es.appends;
    assert_int_equal(call(fx, BUS_COMMAND, "order.place_order",
                          "{\"customerId\":\"" CUSTOMER "\",\"lines\":[{\"sku\":\"A\","
                          "\"quantity\":1},{\"sku\":\"D\",\"quantity\":1}]}",
                          &out, &err),
                     APP_ECONFLICT);
    assert_non_null(strstr(err.message, "cannot add"));
    assert_int_equal(fx->es.appends, before);

    /* An owner that cannot answer is not taken for "unknown": 503, nothing placed. */
    world.inventory_down = true;
    size_t appends = fx->es.appends;
    assert_int_equal(call(fx, BUS_COMMAND, "order.place_order",
                          "{\"customerId\":\"" CUSTOMER "\",\"lines\":[{\"sku\":\"E\","
                          "\"quantity\":1}]}",
                          &out, &err),
                     APP_EUNAVAIL);
    assert_int_equal(fx->es.appends, appends);
}

static void test_place_bad_input(void **state)
{
    fixture *fx = *state;
    static const struct {
        const char *payload;
        int code;
        const char *field;
    } cases[] = {
        {"[]", APP_EBADREQ, NULL},
        {"{\"customerId\":7,\"lines\":[{\"sku\":\"A\",\"quantity\":1}]}", APP_EBADREQ,
         "customerId"},
        {"{\"customerId\":\"" CUSTOMER "\",\"lines\":{}}", APP_EBADREQ, "lines"},
        {"{\"customerId\":\"" CUSTOMER "\",\"lines\":[1]}", APP_EBADREQ, "lines[0]"},
        {"{\"customerId\":\"" CUSTOMER "\",\"lines\":[{\"sku\":1,\"quantity\":1}]}", APP_EBADREQ,
         "lines[0].sku"},
        {"{\"customerId\":\"" CUSTOMER "\",\"lines\":[{\"sku\":\"A\",\"quantity\":\"1\"}]}",
         APP_EBADREQ, "lines[0].quantity"},
        {"{\"customerId\":\"" CUSTOMER "\",\"lines\":[{\"sku\":\"A\",\"quantity\":1.5}]}",
         APP_EBADREQ, "lines[0].quantity"},
        {"{\"customerId\":\"" CUSTOMER "\",\"lines\":[]}", APP_EINVAL, "lines"},
        {"{\"customerId\":\"0F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9\",\"lines\":[{\"sku\":\"A\","
         "\"quantity\":1}]}",
         APP_EINVAL, "customerId"},
        {"{\"lines\":[{\"sku\":\"A\",\"quantity\":1}]}", APP_EINVAL, "customerId"},
        {"{\"customerId\":\"" CUSTOMER "\",\"lines\":[{\"sku\":\"A\",\"quantity\":1},{\"sku\":"
         "\"B\",\"quantity\":1},{\"sku\":\"C\",\"quantity\":1001}]}",
         APP_EINVAL, "lines[2].quantity"},
        {"{\"customerId\":\"" CUSTOMER "\",\"lines\":[{\"sku\":\"A\",\"quantity\":0}]}", APP_EINVAL,
         "lines[0].quantity"},
        {"{\"customerId\":\"" CUSTOMER "\",\"lines\":[{\"sku\":\"A\",\"quantity\":1},{\"sku\":"
         "\"A\",\"quantity\":2}]}",
         APP_EINVAL, "lines[1].sku"},
        {"{\"customerId\":\"" CUSTOMER "\",\"lines\":[{\"sku\":\"-A\",\"quantity\":1}]}",
         APP_EINVAL, "lines[0].sku"},
        {"{\"customerId\":\"" CUSTOMER
         "\",\"lines\":[{\"sku\":\"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456\","
         "\"quantity\":1}]}",
         APP_EINVAL, "lines[0].sku"},
        {"{\"customerId\":\"" CUSTOMER "\",\"lines\":[{\"quantity\":1}]}", APP_EINVAL,
         "lines[0].sku"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *out;
        app_error err;
        int rc = call(fx, BUS_COMMAND, "order.place_order", cases[i].payload, &out, &err);
        if (rc != cases[i].code)
            fail_msg("case %zu: expected %d, got %d (%s)", i, cases[i].code, rc, err.message);
        if (cases[i].field) {
            assert_true(err.n_fields >= 1);
            assert_string_equal(err.fields[0].field, cases[i].field);
        }
    }
    /* 101 lines. */
    char payload[4096];
    size_t o =
        (size_t)snprintf(payload, sizeof payload, "{\"customerId\":\"%s\",\"lines\":[", CUSTOMER);
    for (int i = 0; i < 101; i++)
        o += (size_t)snprintf(payload + o, sizeof payload - o, "%s{\"sku\":\"S%d\",\"quantity\":1}",
                              i ? "," : "", i);
    snprintf(payload + o, sizeof payload - o, "]}");
    cJSON *out;
    app_error err;
    assert_int_equal(call(fx, BUS_COMMAND, "order.place_order", payload, &out, &err), APP_EINVAL);
    assert_string_equal(err.fields[0].field, "lines");
    assert_int_equal(fx->es.appends, 0);
    assert_int_equal(world.describes, 0);
}

/* ---- the saga ---------------------------------------------------------------------- */

static void test_saga_confirms_with_causation(void **state)
{
    fixture *fx = *state;
    remote_product_add("A", 250, 5);
    remote_customer_add(CUSTOMER, "active");
    char id[UUID_STR_LEN];
    place(fx, CUSTOMER, "[{\"sku\":\"A\",\"quantity\":3}]", id);
    run_saga(fx);
    expect_order(fx, id, ORD_STATUS_CONFIRMED, ORD_REASON_NONE, 2);
    assert_int_equal(held("A"), 3);
    assert_int_equal(world.customer_asks, 1); /* no local copy: the owner was asked */

    /* Every event and every command the saga caused: the request's correlation, caused by
     * the placed event. */
    const fake_stream *s = order_stream(fx, id);
    assert_string_equal(world.last_meta.correlation_id, "corr-req");
    assert_string_equal(world.last_meta.causation_id, s->events[0].event_id);
    cJSON *md = cJSON_Parse(s->events[1].metadata);
    assert_string_equal(sget(md, "correlationId"), "corr-req");
    assert_string_equal(sget(md, "causationId"), s->events[0].event_id);
    cJSON_Delete(md);
    const fake_process *p = fake_es_process(&fx->es, "order.placement", id);
    assert_true(p->done);

    /* A second order of 3 is short: cancelled, and nothing held for it. */
    char second[UUID_STR_LEN];
    place(fx, CUSTOMER, "[{\"sku\":\"A\",\"quantity\":3}]", second);
    run_saga(fx);
    expect_order(fx, second, ORD_STATUS_CANCELLED, ORD_REASON_OUT_OF_STOCK, 2);
    assert_int_equal(held("A"), 3);
    assert_true(fake_es_process(&fx->es, "order.placement", second)->done);

    /* Redelivering the whole log changes nothing. */
    size_t appends = fx->es.appends;
    fx->saga_at = 0;
    run_saga(fx);
    assert_int_equal(fx->es.appends, appends);
    assert_int_equal(held("A"), 3);
}

static void test_saga_last_line_short_releases_all(void **state)
{
    fixture *fx = *state;
    remote_product_add("A", 100, 10);
    remote_product_add("B", 100, 10);
    remote_product_add("C", 100, 1);
    remote_customer_add(CUSTOMER, "active");
    char id[UUID_STR_LEN];
    place(fx, CUSTOMER,
          "[{\"sku\":\"A\",\"quantity\":2},{\"sku\":\"B\",\"quantity\":3},{\"sku\":\"C\","
          "\"quantity\":2}]",
          id);
    run_saga(fx);
    expect_order(fx, id, ORD_STATUS_CANCELLED, ORD_REASON_OUT_OF_STOCK, 2);
    assert_int_equal(held("A"), 0);
    assert_int_equal(held("B"), 0);
    assert_int_equal(held("C"), 0);
}

static void test_saga_customer_reasons(void **state)
{
    fixture *fx = *state;
    remote_product_add("A", 100, 10);
    remote_customer_add(CUSTOMER, "deactivated");
    char unknown[UUID_STR_LEN], deactivated[UUID_STR_LEN], copied[UUID_STR_LEN];
    place(fx, STRANGER, "[{\"sku\":\"A\",\"quantity\":1}]", unknown);
    place(fx, CUSTOMER, "[{\"sku\":\"A\",\"quantity\":1}]", deactivated);
    run_saga(fx);
    expect_order(fx, unknown, ORD_STATUS_CANCELLED, ORD_REASON_UNKNOWN_CUSTOMER, 2);
    expect_order(fx, deactivated, ORD_STATUS_CANCELLED, ORD_REASON_CUSTOMER_DEACTIVATED, 2);
    assert_int_equal(world.reserves, 0);
    assert_int_equal(held("A"), 0);

    /* The local copy, when it has the customer, is enough: the owner is not asked. */
    app_error err = APP_ERROR_INIT;
    assert_int_equal(fx->reads.ops->set(fx->reads.self, "order:customer:" STRANGER,
                                        "{\"status\":\"deactivated\"}", &err),
                     0);
    int asks = world.customer_asks;
    place(fx, STRANGER, "[{\"sku\":\"A\",\"quantity\":1}]", copied);
    run_saga(fx);
    expect_order(fx, copied, ORD_STATUS_CANCELLED, ORD_REASON_CUSTOMER_DEACTIVATED, 2);
    assert_int_equal(world.customer_asks, asks);
}

static void test_saga_unknown_product(void **state)
{
    fixture *fx = *state;
    remote_product_add("A", 100, 10);
    remote_customer_add(CUSTOMER, "active");
    char id[UUID_STR_LEN], late[UUID_STR_LEN];
    place(fx, CUSTOMER, "[{\"sku\":\"A\",\"quantity\":1},{\"sku\":\"GHOST\",\"quantity\":1}]", id);
    /* A product unknown at placement that exists by the time the saga runs. */
    place(fx, CUSTOMER, "[{\"sku\":\"LATE\",\"quantity\":2}]", late);
    remote_product_add("LATE", 100, 5);
    run_saga(fx);
    expect_order(fx, id, ORD_STATUS_CANCELLED, ORD_REASON_UNKNOWN_PRODUCT, 2);
    expect_order(fx, late, ORD_STATUS_CONFIRMED, ORD_REASON_NONE, 2);
    assert_int_equal(world.reserves, 1); /* the doomed order held nothing, even for a while */
    assert_int_equal(held("A"), 0);
    assert_int_equal(held("LATE"), 2);
}

static void test_saga_resumes_after_transient_failure(void **state)
{
    fixture *fx = *state;
    remote_product_add("A", 100, 10);
    remote_product_add("B", 100, 10);
    remote_customer_add(CUSTOMER, "active");
    char id[UUID_STR_LEN];
    place(fx, CUSTOMER, "[{\"sku\":\"A\",\"quantity\":1},{\"sku\":\"B\",\"quantity\":1}]", id);
    world.inventory_down = true;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(deliver(fx, &fx->saga_at, ord_saga_handle, &err), APP_EUNAVAIL);
    assert_int_equal(fx->saga_at, 0); /* the checkpoint stays before the placed event */
    expect_order(fx, id, ORD_STATUS_PENDING, ORD_REASON_NONE, 1);

    /* As if A had been reserved before a crash: the saga starts again from the top. */
    world.inventory_down = false;
    snprintf(world.products[0].holders[0], UUID_STR_LEN, "%s", id);
    world.products[0].held[0] = 1;
    world.products[0].n_holders = 1;
    run_saga(fx);
    expect_order(fx, id, ORD_STATUS_CONFIRMED, ORD_REASON_NONE, 2);
    assert_int_equal(held("A"), 1); /* reserved once, not twice */
    assert_int_equal(held("B"), 1);
}

/* The order as JSON, folded through ctx: equal texts, equal orders. Caller frees. */
static char *order_text(const bus_ctx *ctx, const char *id)
{
    ord_order *o = malloc(sizeof *o);
    assert_non_null(o);
    app_error err = APP_ERROR_INIT;
    assert_int_equal(ord_load(ctx, id, 0, o, &err), 0);
    cJSON *j = ord_to_json(o);
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    free(o);
    assert_non_null(text);
    return text;
}

/* With snapshots.order 1 every committed append leaves a snapshot; loading starts after it
 * and gives the order the whole stream gives; a snapshot that does not fit is ignored. */
static void test_snapshots(void **state)
{
    fixture *fx = *state;
    app_config *cfg = calloc(1, sizeof *cfg);
    assert_non_null(cfg);
    cfg->order.placement_timeout_ms = 30000;
    cfg->snapshots.order = 1;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(order_module.configure(cfg, &err), 0);
    free(cfg);
    remote_product_add("A", 100, 4);
    remote_product_add("B", 250, 4);
    remote_customer_add(CUSTOMER, "active");
    char id[UUID_STR_LEN], payload[96];
    place(fx, CUSTOMER, "[{\"sku\":\"A\",\"quantity\":1},{\"sku\":\"B\",\"quantity\":2}]", id);
    const fake_stream *s = order_stream(fx, id);
    assert_int_equal(s->snapshot.version, 1);
    run_saga(fx);
    assert_int_equal(s->snapshot.version, 2);
    snprintf(payload, sizeof payload, "{\"id\":\"%s\"}", id);
    cJSON *out;
    assert_int_equal(call(fx, BUS_COMMAND, "order.cancel_order", payload, &out, &err), 0);
    cJSON_Delete(out);
    assert_int_equal(s->snapshot.version, 3);

    es_store_ops ops = *fx->events.ops;
    ops.load_snapshot = NULL;
    es_store plain = {&ops, fx->events.self};
    bus_ctx plain_ctx = fx->ctx;
    plain_ctx.events = &plain;
    char *full = order_text(&plain_ctx, id);
    size_t loaded = fx->es.loaded;
    char *from_snap = order_text(&fx->ctx, id);
    assert_int_equal(fx->es.last_after_version, 3);
    assert_int_equal(fx->es.loaded, loaded);
    assert_string_equal(from_snap, full);
    free(from_snap);
    expect_order(fx, id, ORD_STATUS_CANCELLED, ORD_REASON_CANCELLED_BY_CUSTOMER, 3);

    /* Cancelled without a reason, an unknown status, another schema version: ignored. */
    char *good = strdup(s->snapshot.state);
    assert_non_null(good);
    char stream[ORD_STREAM_ID_LEN];
    ord_stream_id(stream, id);
    static const char *const bad[] = {
        "{\"orderId\":\"x\"}",
        "{\"status\":\"pending\"}",
    };
    for (size_t i = 0; i < 3; i++) {
        assert_true(fake_es_put_snapshot(&fx->es, stream, 3, i < 2 ? 1 : 2, i < 2 ? bad[i] : good));
        char *text = order_text(&fx->ctx, id);
        assert_int_equal(fx->es.last_after_version, 0);
        assert_string_equal(text, full);
        free(text);
    }
    free(good);
    free(full);
}

static void test_cancel_releases_and_is_idempotent(void **state)
{
    fixture *fx = *state;
    remote_product_add("A", 100, 4);
    remote_customer_add(CUSTOMER, "active");
    char id[UUID_STR_LEN], payload[96];
    place(fx, CUSTOMER, "[{\"sku\":\"A\",\"quantity\":4}]", id);
    run_saga(fx);
    assert_int_equal(held("A"), 4);
    snprintf(payload, sizeof payload, "{\"id\":\"%s\"}", id);
    cJSON *out;
    app_error err;
    assert_int_equal(call(fx, BUS_COMMAND, "order.cancel_order", payload, &out, &err), 0);
    assert_string_equal(sget(out, "status"), "cancelled");
    assert_string_equal(sget(out, "reason"), "cancelled_by_customer");
    assert_int_equal(iget(out, "version"), 3);
    cJSON_Delete(out);
    run_saga(fx);
    assert_int_equal(held("A"), 0);
    assert_int_equal(call(fx, BUS_COMMAND, "order.cancel_order", payload, &out, &err), 0);
    assert_int_equal(iget(out, "version"), 3);
    assert_string_equal(sget(out, "reason"), "cancelled_by_customer");
    cJSON_Delete(out);
    assert_int_equal(order_stream(fx, id)->len, 3);

    assert_int_equal(call(fx, BUS_COMMAND, "order.cancel_order", "{\"id\":\"nope\"}", &out, &err),
                     APP_ENOTFOUND);
    assert_int_equal(
        call(fx, BUS_COMMAND, "order.cancel_order", "{\"id\":\"" STRANGER "\"}", &out, &err),
        APP_ENOTFOUND);
    snprintf(payload, sizeof payload, "{\"id\":\"%s\",\"reason\":\"bored\"}", id);
    assert_int_equal(call(fx, BUS_COMMAND, "order.cancel_order", payload, &out, &err), APP_EINVAL);
}

/* The customer cancels while the saga reserves: the confirmation loses the race, and the
 * cancelled event then releases what the saga had reserved. */
static void cancel_first(fake_es *f, const es_append_req *req, void *arg)
{
    fixture *fx = arg;
    (void)f;
    if (strcmp(req->events[0].type, "order.order.confirmed") != 0)
        return;
    ord_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = ORD_EV_CANCELLED;
    ev.reason = ORD_REASON_CANCELLED_BY_CUSTOMER;
    snprintf(ev.order.id, sizeof ev.order.id, "%s", req->process->id);
    app_error err = APP_ERROR_INIT;
    assert_int_equal(ord_append(&fx->ctx, ev.order.id, ES_ANY_VERSION, &ev, 0, true, NULL, &err),
                     0);
}

static void test_saga_loses_race_to_cancel(void **state)
{
    fixture *fx = *state;
    remote_product_add("A", 100, 4);
    remote_customer_add(CUSTOMER, "active");
    char id[UUID_STR_LEN];
    place(fx, CUSTOMER, "[{\"sku\":\"A\",\"quantity\":2}]", id);
    fx->es.before_append = cancel_first;
    fx->es.hook_arg = fx;
    run_saga(fx);
    fx->es.before_append = NULL;
    expect_order(fx, id, ORD_STATUS_CANCELLED, ORD_REASON_CANCELLED_BY_CUSTOMER, 2);
    assert_int_equal(held("A"), 2); /* reserved, and not confirmed */
    run_saga(fx);                   /* the cancelled event, next in the log */
    assert_int_equal(held("A"), 0);
    assert_int_equal(order_stream(fx, id)->len, 2);
}

/* ---- the deadline task --------------------------------------------------------------- */

static void test_deadline_cancels_pending_only(void **state)
{
    fixture *fx = *state;
    configure(1500);
    remote_product_add("A", 100, 4);
    copy_price(fx, "A", 100);
    remote_customer_add(CUSTOMER, "active");
    char stalled[UUID_STR_LEN], confirmed[UUID_STR_LEN], raced[UUID_STR_LEN];
    place(fx, CUSTOMER, "[{\"sku\":\"A\",\"quantity\":1}]", confirmed);
    run_saga(fx);
    world.inventory_down = true;
    place(fx, CUSTOMER, "[{\"sku\":\"A\",\"quantity\":1}]", stalled);
    app_error err = APP_ERROR_INIT;
    assert_int_equal(deliver(fx, &fx->saga_at, ord_saga_handle, &err), APP_EUNAVAIL);

    /* Confirmed behind the deadline's back, with its process left open (a crash between two
     * steps, say): the timeout must not undo the confirmation. */
    place(fx, CUSTOMER, "[{\"sku\":\"A\",\"quantity\":1}]", raced);
    ord_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = ORD_EV_CONFIRMED;
    snprintf(ev.order.id, sizeof ev.order.id, "%s", raced);
    assert_int_equal(ord_append(&fx->ctx, raced, 1, &ev, T0 + 1500, false, NULL, &err), 0);

    now_ms = T0 + 1000;
    assert_int_equal(ord_deadlines_run(&fx->ctx, &err), 0);
    expect_order(fx, stalled, ORD_STATUS_PENDING, ORD_REASON_NONE, 1);

    now_ms = T0 + 1500;
    assert_int_equal(ord_deadlines_run(&fx->ctx, &err), 0);
    expect_order(fx, stalled, ORD_STATUS_CANCELLED, ORD_REASON_TIMEOUT, 2);
    expect_order(fx, confirmed, ORD_STATUS_CONFIRMED, ORD_REASON_NONE, 2);
    expect_order(fx, raced, ORD_STATUS_CONFIRMED, ORD_REASON_NONE, 2);
    assert_true(fake_es_process(&fx->es, "order.placement", stalled)->done);

    /* The timeout belongs to the placing request's trail, caused by the placed event. */
    const fake_stream *s = order_stream(fx, stalled);
    cJSON *md = cJSON_Parse(s->events[1].metadata);
    assert_string_equal(sget(md, "correlationId"), "corr-req");
    assert_string_equal(sget(md, "causationId"), s->events[0].event_id);
    cJSON_Delete(md);

    /* Nothing is due any more; once inventory is back, the saga resumes and releases. */
    size_t appends = fx->es.appends;
    now_ms = T0 + 60000;
    assert_int_equal(ord_deadlines_run(&fx->ctx, &err), 0);
    assert_int_equal(fx->es.appends, appends);
    world.inventory_down = false;
    run_saga(fx);
    expect_order(fx, stalled, ORD_STATUS_CANCELLED, ORD_REASON_TIMEOUT, 2);
    assert_int_equal(held("A"), 1); /* only the first order's unit */
}

/* ---- projections and queries -------------------------------------------------------- */

static void run_projection(fixture *fx)
{
    app_error err = APP_ERROR_INIT;
    if (deliver(fx, &fx->projection_at, ord_projection_handle, &err) != 0)
        fail_msg("projection: %s", err.message);
}

static void test_projection_and_queries(void **state)
{
    fixture *fx = *state;
    remote_product_add("A", 100, 1);
    remote_customer_add(CUSTOMER, "active");
    char first[UUID_STR_LEN], second[UUID_STR_LEN], path[96];
    place(fx, CUSTOMER, "[{\"sku\":\"A\",\"quantity\":1}]", first);
    now_ms = T0 + 1;
    place(fx, CUSTOMER, "[{\"sku\":\"A\",\"quantity\":1}]", second);
    run_projection(fx);

    cJSON *out;
    app_error err;
    snprintf(path, sizeof path, "{\"id\":\"%s\"}", first);
    assert_int_equal(call(fx, BUS_QUERY, "order.get_order", path, &out, &err), 0);
    assert_string_equal(sget(out, "status"), "pending");
    assert_int_equal(iget(out, "version"), 1);
    cJSON_Delete(out);

    run_saga(fx);
    run_projection(fx);
    assert_int_equal(call(fx, BUS_QUERY, "order.get_order", path, &out, &err), 0);
    assert_string_equal(sget(out, "status"), "confirmed");
    assert_int_equal(iget(out, "version"), 2);
    cJSON_Delete(out);

    /* Redelivery never takes the read model back to an older version. */
    fx->projection_at = 0;
    size_t sets = fx->rs.sets;
    run_projection(fx);
    assert_int_equal(fx->rs.sets, sets);

    /* A read model lost behind the projection's back (a gap): the next event folds the
     * stream instead of patching what is not there. */
    char key[64], stream[64];
    snprintf(key, sizeof key, "order:%s", first);
    snprintf(stream, sizeof stream, "order-%s", first);
    rs_store rs = fake_rs_port(&fx->rs);
    assert_int_equal(rs.ops->del(rs.self, key, &err), 0);
    fake_stream *fs = fake_es_stream(&fx->es, stream);
    assert_non_null(fs);
    assert_int_equal(fs->len, 2);
    fx->projection_at = fs->events[1].position - 1; /* only the confirmation again */
    run_projection(fx);
    assert_int_equal(call(fx, BUS_QUERY, "order.get_order", path, &out, &err), 0);
    assert_string_equal(sget(out, "status"), "confirmed");
    assert_int_equal(iget(out, "version"), 2);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(out, "lines")), 1);
    cJSON_Delete(out);

    /* The customer's orders, newest first. */
    assert_int_equal(call(fx, BUS_QUERY, "order.list_customer_orders",
                          "{\"customerId\":\"" CUSTOMER "\"}", &out, &err),
                     0);
    const cJSON *items = cJSON_GetObjectItem(out, "items");
    assert_int_equal(cJSON_GetArraySize(items), 2);
    assert_string_equal(sget(cJSON_GetArrayItem(items, 0), "id"), second);
    assert_string_equal(sget(cJSON_GetArrayItem(items, 0), "reason"), "out_of_stock");
    assert_string_equal(sget(cJSON_GetArrayItem(items, 1), "id"), first);
    cJSON_Delete(out);
    assert_int_equal(call(fx, BUS_QUERY, "order.list_customer_orders",
                          "{\"customerId\":\"" STRANGER "\"}", &out, &err),
                     0);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(out, "items")), 0);
    cJSON_Delete(out);

    /* The audit trail, and ids that are no order. */
    snprintf(path, sizeof path, "{\"id\":\"%s\"}", second);
    assert_int_equal(call(fx, BUS_QUERY, "order.get_order_events", path, &out, &err), 0);
    items = cJSON_GetObjectItem(out, "items");
    assert_int_equal(cJSON_GetArraySize(items), 2);
    assert_string_equal(sget(cJSON_GetArrayItem(items, 1), "type"), "order.order.cancelled");
    cJSON_Delete(out);
    const char *missing[] = {"{\"id\":\"nope\"}", "{\"id\":\"" STRANGER "\"}"};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(call(fx, BUS_QUERY, "order.get_order", missing[i], &out, &err),
                         APP_ENOTFOUND);
        assert_int_equal(call(fx, BUS_QUERY, "order.get_order_events", missing[i], &out, &err),
                         APP_ENOTFOUND);
    }
}

static es_event event_of(const char *stream, const char *type, const char *data)
{
    es_event ev;
    memset(&ev, 0, sizeof ev);
    ev.stream_id = (char *)(uintptr_t)stream;
    ev.type = (char *)(uintptr_t)type;
    ev.data = (char *)(uintptr_t)data;
    ev.metadata = (char *)(uintptr_t) "{}";
    ev.version = 1;
    return ev;
}

static void test_local_copies(void **state)
{
    fixture *fx = *state;
    app_error err = APP_ERROR_INIT;
    es_event ev = event_of("product-A1", "inventory.product.created",
                           "{\"sku\":\"A1\",\"name\":\"x\",\"price\":{\"amount\":5,"
                           "\"currency\":\"EUR\"},\"stock\":1}");
    assert_int_equal(ord_product_copy_handle(&fx->ctx, &ev, &err), 0);
    cJSON *copy = cJSON_Parse(fake_rs_value(&fx->rs, "order:product:A1"));
    assert_string_equal(sget(copy, "sku"), "A1");
    assert_int_equal(iget(cJSON_GetObjectItem(copy, "price"), "amount"), 5);
    cJSON_Delete(copy);
    ev = event_of("product-A1", "inventory.product.stock_added", "{\"sku\":\"A1\",\"quantity\":1}");
    assert_int_equal(ord_product_copy_handle(&fx->ctx, &ev, &err), 0);

    const char *key = "order:customer:" CUSTOMER;
    ev = event_of("user-" CUSTOMER, "user.user.registered", "{}");
    assert_int_equal(ord_customer_copy_handle(&fx->ctx, &ev, &err), 0);
    assert_string_equal(fake_rs_value(&fx->rs, key), "{\"status\":\"active\"}");
    ev = event_of("user-" CUSTOMER, "user.user.deactivated", "{}");
    assert_int_equal(ord_customer_copy_handle(&fx->ctx, &ev, &err), 0);
    assert_string_equal(fake_rs_value(&fx->rs, key), "{\"status\":\"deactivated\"}");
    ev = event_of("user-" CUSTOMER, "user.user.registered", "{}"); /* a replay */
    assert_int_equal(ord_customer_copy_handle(&fx->ctx, &ev, &err), 0);
    assert_string_equal(fake_rs_value(&fx->rs, key), "{\"status\":\"deactivated\"}");

    /* A placement priced from the copy does not ask the owner. */
    place(fx, CUSTOMER, "[{\"sku\":\"A1\",\"quantity\":2}]", (char[UUID_STR_LEN]){0});
    assert_int_equal(world.describes, 0);
}

/* ---- user.describe_customer (the user context's authoritative answer) ------------------ */

static void test_describe_customer(void **state)
{
    (void)state;
    fake_es ues;
    fake_rs urs;
    fake_es_init(&ues, "user");
    fake_rs_init(&urs);
    es_store events = fake_es_port(&ues);
    rs_store reads = fake_rs_port(&urs);
    bus_meta meta;
    bus_meta_init(&meta, NULL, NULL);
    bus_ctx ctx = {.events = &events, .reads = &reads, .clock = &test_clock, .meta = &meta};
    app_error err = APP_ERROR_INIT;
    cJSON *p = cJSON_Parse("{\"email\":\"ann@example.com\",\"name\":\"Ann\"}"), *out = NULL;
    assert_int_equal(user_register_user(&ctx, p, &out, &err), 0);
    cJSON_Delete(p);
    char id[UUID_STR_LEN], payload[64];
    snprintf(id, sizeof id, "%s", sget(out, "id"));
    cJSON_Delete(out);
    snprintf(payload, sizeof payload, "{\"id\":\"%s\"}", id);

    /* From the event log: the read store holds nothing and is not asked. */
    urs.down = true;
    p = cJSON_Parse(payload);
    assert_int_equal(user_describe_customer(&ctx, p, &out, &err), 0);
    assert_string_equal(sget(out, "id"), id);
    assert_string_equal(sget(out, "status"), "active");
    cJSON_Delete(out);
    urs.down = false;
    assert_int_equal(user_deactivate_user(&ctx, p, &out, &err), 0);
    cJSON_Delete(out);
    assert_int_equal(user_describe_customer(&ctx, p, &out, &err), 0);
    assert_string_equal(sget(out, "status"), "deactivated");
    cJSON_Delete(out);
    cJSON_Delete(p);

    const char *missing[] = {"{\"id\":\"" STRANGER "\"}", "{\"id\":\"nope\"}"};
    for (int i = 0; i < 2; i++) {
        p = cJSON_Parse(missing[i]);
        out = NULL;
        assert_int_equal(user_describe_customer(&ctx, p, &out, &err), APP_ENOTFOUND);
        assert_null(out);
        cJSON_Delete(p);
    }
    fake_es_free(&ues);
    fake_rs_free(&urs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_place_prices_and_saga_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_place_unknown_sku_and_currencies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_place_bad_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_saga_confirms_with_causation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_saga_last_line_short_releases_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_saga_customer_reasons, setup, teardown),
        cmocka_unit_test_setup_teardown(test_saga_unknown_product, setup, teardown),
        cmocka_unit_test_setup_teardown(test_saga_resumes_after_transient_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_releases_and_is_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_saga_loses_race_to_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline_cancels_pending_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_projection_and_queries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_local_copies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_describe_customer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshots, setup, teardown),
    };
    return cmocka_run_group_tests_name("order application layer", tests, NULL, NULL);
}
