/* The inventory commands: create a product, add stock, reserve an order's stock, and
 * release it (the order is cancelled) or commit it (the order ships). Each loads the product, lets
 * the domain decide, and appends with the loaded version; the bus re-runs all but the first after a
 * version conflict. Reservations and their ends are decided in groups by product. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "contexts/inventory/application/inventory_app.h"
#include "contexts/inventory/application/product_stream.h"
#include "core/json.h"
#include "kernel/combiner.h"

int inv_create_product(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    if (!cJSON_IsObject(payload))
        return app_error_set(err, APP_EBADREQ, "payload must be a JSON object");
    const char *sku = NULL, *name = NULL;
    int64_t stock = 0;
    money price = {0};
    /* Every field is checked so that one answer names every problem. */
    json_req_string(payload, "sku", &sku, err);
    json_req_string(payload, "name", &name, err);
    money_from_json(payload, "price", &price, err);
    json_req_int(payload, "stock", &stock, err);
    if (err->code != 0)
        return err->code;
    inv_event ev = {0};
    inv_product p = {0};
    int rc = inv_decide_create(sku, name, &price, stock, &ev, err);
    if (rc == 0)
        rc = inv_commit(ctx, &p, &ev, out, err);
    inv_product_free(&p);
    if (rc == APP_EVERSION) {
        app_error_set(err, APP_ECONFLICT, "sku already exists");
        app_error_detail(err, "a product with sku %s exists already", ev.sku);
        app_error_field(err, "sku", "already exists");
        return APP_ECONFLICT;
    }
    return rc;
}

int inv_add_stock(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    const char *sku = NULL;
    int64_t quantity = 0;
    int rc = inv_payload_sku(payload, &sku, err);
    if (rc == 0)
        rc = json_req_int(payload, "quantity", &quantity, err);
    if (rc != 0)
        return rc;
    inv_product p;
    inv_event ev = {0};
    rc = inv_load(ctx, sku, 0, &p, err);
    if (rc == 0)
        rc = inv_decide_add_stock(&p, quantity, &ev, err);
    if (rc == 0)
        rc = inv_commit(ctx, &p, &ev, out, err);
    inv_product_free(&p);
    return rc;
}

static int inv_outcome(const char *outcome, const char *sku, const char *order_id, int64_t quantity,
                       cJSON **out, app_error *err)
{
    cJSON *o = cJSON_CreateObject();
    if (o && cJSON_AddStringToObject(o, "outcome", outcome) &&
        cJSON_AddStringToObject(o, "sku", sku) && cJSON_AddStringToObject(o, "orderId", order_id) &&
        (quantity < 0 || cJSON_AddNumberToObject(o, "quantity", (double)quantity))) {
        *out = o;
        return 0;
    }
    cJSON_Delete(o);
    return app_error_set(err, APP_ENOMEM, "out of memory");
}

/* A reservation, or the end of one, on a product: the commands the placement saga sends,
 * many at a time on few products. They are decided in groups by product (kernel/combiner.h):
 * one load, each decided in turn on what the ones before it left, one append. */
typedef enum inv_change_kind {
    INV_CHANGE_RESERVE,
    INV_CHANGE_RELEASE,
    INV_CHANGE_COMMIT
} inv_change_kind;

typedef struct inv_change {
    const bus_ctx *ctx; /* the command's: its metadata goes with its event */
    inv_change_kind kind;
    const char *sku, *order_id;
    int64_t quantity; /* reserve */
    /* Decided: */
    inv_event ev;
    size_t n; /* events: 0 or 1 */
    bool out_of_stock;
} inv_change;

static comb_table *inv_changes;
static pthread_once_t inv_changes_once = PTHREAD_ONCE_INIT;

static void inv_changes_init(void)
{
    inv_changes = comb_table_new(256); /* kept for the life of the process */
}

static int inv_change_decide(inv_product *p, inv_change *c, app_error *err)
{
    c->n = 0;
    c->out_of_stock = false;
    memset(&c->ev, 0, sizeof c->ev);
    switch (c->kind) {
    case INV_CHANGE_RESERVE:
        return inv_decide_reserve(p, c->order_id, c->quantity, &c->ev, &c->n, &c->out_of_stock,
                                  err);
    case INV_CHANGE_RELEASE:
        return inv_decide_release(p, c->order_id, &c->ev, &c->n, err);
    case INV_CHANGE_COMMIT:
        return inv_decide_commit(p, c->order_id, &c->ev, &c->n, err);
    }
    return app_error_set(err, APP_EINTERNAL, "unknown change of stock");
}

/* Decides ops in order on the product as loaded, each on what the ones before it left, and
 * appends their events at once, through the leader's context (ops[0]'s). A refused command
 * keeps its own answer; the others share the group's. A version conflict (another process
 * appended to the product) reaches each command, and the bus runs it again
 * (BUS_RETRY_ON_CONFLICT): they group again. */
static void inv_change_group(const char *stream, comb_op *const *ops, size_t n)
{
    (void)stream;
    const bus_ctx *ctx = ((const inv_change *)ops[0]->arg)->ctx;
    inv_event *evs = calloc(n, sizeof *evs);
    const bus_meta **metas = calloc(n, sizeof *metas);
    app_error err = APP_ERROR_INIT;
    inv_product p = {0};
    int rc = evs && metas ? inv_load(ctx, ((const inv_change *)ops[0]->arg)->sku, 0, &p, &err)
                          : app_error_set(&err, APP_ENOMEM, "out of memory changing stock");
    int64_t before = p.version;
    size_t m = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        inv_change *c = ops[i]->arg;
        ops[i]->rc = inv_change_decide(&p, c, &ops[i]->err);
        if (ops[i]->rc != 0 || c->n == 0)
            continue;
        rc = inv_apply(&p, &c->ev, &err);
        evs[m] = c->ev;
        metas[m++] = c->ctx->meta;
    }
    if (rc == 0)
        rc = inv_commit_many(ctx, &p, before, evs, metas, m, &err);
    inv_product_free(&p);
    for (size_t i = 0; rc != 0 && i < n; i++) {
        if (ops[i]->rc == 0) {
            ops[i]->rc = rc;
            ops[i]->err = err;
        }
    }
    free(evs);
    free((void *)metas);
}

static int inv_change_run(const bus_ctx *ctx, inv_change *c, app_error *err)
{
    pthread_once(&inv_changes_once, inv_changes_init);
    if (!inv_changes)
        return app_error_set(err, APP_ENOMEM, "out of memory changing stock");
    char stream[INV_STREAM_ID_LEN];
    inv_stream_id(stream, c->sku);
    c->ctx = ctx;
    comb_op op = {.arg = c};
    int rc = comb_run(inv_changes, stream, &op, inv_change_group);
    if (rc != 0)
        *err = op.err;
    return rc;
}

int inv_reserve_stock(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    inv_change c = {.kind = INV_CHANGE_RESERVE};
    int rc = inv_payload_sku(payload, &c.sku, err);
    if (rc == 0)
        rc = json_req_string(payload, "orderId", &c.order_id, err);
    if (rc == 0)
        rc = json_req_int(payload, "quantity", &c.quantity, err);
    if (rc == 0)
        rc = inv_change_run(ctx, &c, err);
    if (rc != 0)
        return rc;
    return inv_outcome(c.out_of_stock ? "out_of_stock" : "reserved", c.sku, c.order_id, c.quantity,
                       out, err);
}

/* Ends an order's reservation of sku, by release or by commit; the reply's outcome is done,
 * or "nothing_reserved" when the order held nothing (ended before: idempotent). */
static int inv_end_reservation(const bus_ctx *ctx, const cJSON *payload, inv_change_kind kind,
                               const char *done, cJSON **out, app_error *err)
{
    inv_change c = {.kind = kind};
    int rc = inv_payload_sku(payload, &c.sku, err);
    if (rc == 0)
        rc = json_req_string(payload, "orderId", &c.order_id, err);
    if (rc == 0)
        rc = inv_change_run(ctx, &c, err);
    if (rc != 0)
        return rc;
    return inv_outcome(c.n == 1 ? done : "nothing_reserved", c.sku, c.order_id,
                       c.n == 1 ? c.ev.quantity : -1, out, err);
}

int inv_release_stock(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    return inv_end_reservation(ctx, payload, INV_CHANGE_RELEASE, "released", out, err);
}

int inv_commit_stock(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    return inv_end_reservation(ctx, payload, INV_CHANGE_COMMIT, "committed", out, err);
}
