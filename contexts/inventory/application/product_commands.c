/* The inventory commands: create a product, add stock, reserve an order's stock, and
 * release it (the order is cancelled) or commit it (the order ships). Each loads the product, lets
 * the domain decide, and appends with the loaded version; the bus re-runs all but the first after a
 * version conflict. */
#include <stdio.h>
#include <string.h>

#include "contexts/inventory/application/inventory_app.h"
#include "contexts/inventory/application/product_stream.h"
#include "core/json.h"

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

int inv_reserve_stock(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    const char *sku = NULL, *order_id = NULL;
    int64_t quantity = 0;
    int rc = inv_payload_sku(payload, &sku, err);
    if (rc == 0)
        rc = json_req_string(payload, "orderId", &order_id, err);
    if (rc == 0)
        rc = json_req_int(payload, "quantity", &quantity, err);
    if (rc != 0)
        return rc;
    inv_product p;
    inv_event ev = {0};
    size_t n = 0;
    bool out_of_stock = false;
    rc = inv_load(ctx, sku, 0, &p, err);
    if (rc == 0)
        rc = inv_decide_reserve(&p, order_id, quantity, &ev, &n, &out_of_stock, err);
    if (rc == 0 && n == 1)
        rc = inv_commit(ctx, &p, &ev, NULL, err);
    inv_product_free(&p);
    if (rc != 0)
        return rc;
    return inv_outcome(out_of_stock ? "out_of_stock" : "reserved", sku, order_id, quantity, out,
                       err);
}

/* Ends an order's reservation of sku, by release or by commit (decide); the reply's outcome
 * is done, or "nothing_reserved" when the order held nothing (ended before: idempotent). */
static int inv_end_reservation(const bus_ctx *ctx, const cJSON *payload,
                               int (*decide)(const inv_product *, const char *, inv_event *,
                                             size_t *, app_error *),
                               const char *done, cJSON **out, app_error *err)
{
    const char *sku = NULL, *order_id = NULL;
    int rc = inv_payload_sku(payload, &sku, err);
    if (rc == 0)
        rc = json_req_string(payload, "orderId", &order_id, err);
    if (rc != 0)
        return rc;
    inv_product p;
    inv_event ev = {0};
    size_t n = 0;
    rc = inv_load(ctx, sku, 0, &p, err);
    if (rc == 0)
        rc = decide(&p, order_id, &ev, &n, err);
    if (rc == 0 && n == 1)
        rc = inv_commit(ctx, &p, &ev, NULL, err);
    inv_product_free(&p);
    if (rc != 0)
        return rc;
    return inv_outcome(n == 1 ? done : "nothing_reserved", sku, order_id, n == 1 ? ev.quantity : -1,
                       out, err);
}

int inv_release_stock(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    return inv_end_reservation(ctx, payload, inv_decide_release, "released", out, err);
}

int inv_commit_stock(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    return inv_end_reservation(ctx, payload, inv_decide_commit, "committed", out, err);
}
