/* The inventory context's HTTP routes (API.md, "Inventory"): each turns a request into one
 * bus message and the reply into a response with its status, Location and ETag. */
#include <stdio.h>
#include <string.h>

#include "contexts/inventory/application/inventory_app.h"
#include "contexts/inventory/domain/product.h"

/* {"sku": <path sku>} plus a copy of body's member with, if any. */
static int route_payload(const http_req *req, const char *with, cJSON **out, app_error *err)
{
    const char *sku = http_req_param(req, "sku");
    if (!sku || !inv_sku_valid(sku))
        return app_error_set(err, APP_ENOTFOUND, "unknown product");
    cJSON *p = cJSON_CreateObject();
    const cJSON *item = with ? cJSON_GetObjectItemCaseSensitive(req->body, with) : NULL;
    cJSON *copy = item ? cJSON_Duplicate(item, true) : NULL;
    if (!p || !cJSON_AddStringToObject(p, "sku", sku) || (item && !copy) ||
        (copy && !cJSON_AddItemToObject(p, with, copy))) {
        cJSON_Delete(copy);
        cJSON_Delete(p);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    *out = p;
    return 0;
}

static int route_create(bus *b, const http_req *req, http_res *res, app_error *err)
{
    cJSON *product = NULL;
    int rc = bus_send(b, "inventory.create_product", req->body, &req->meta, &product, err);
    if (rc != 0)
        return rc;
    const char *sku = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(product, "sku"));
    snprintf(res->location, sizeof res->location, "/v1/products/%s", sku ? sku : "");
    return http_res_versioned(res, 201, product, err);
}

/* Sends or asks name with the path sku (and body member with), answering with the reply. */
static int route_call(bus *b, bus_kind kind, const char *name, const char *with,
                      const http_req *req, cJSON **out, app_error *err)
{
    cJSON *payload = NULL;
    int rc = route_payload(req, with, &payload, err);
    if (rc != 0)
        return rc;
    rc = kind == BUS_COMMAND ? bus_send(b, name, payload, &req->meta, out, err)
                             : bus_ask(b, name, payload, &req->meta, out, err);
    cJSON_Delete(payload);
    return rc;
}

static int route_get(bus *b, const http_req *req, http_res *res, app_error *err)
{
    cJSON *product = NULL;
    int rc = route_call(b, BUS_QUERY, "inventory.get_product", NULL, req, &product, err);
    return rc != 0 ? rc : http_res_versioned(res, 200, product, err);
}

static int route_model(const http_req *req, cJSON *product, http_res *res, app_error *err)
{
    (void)req;
    return http_res_versioned(res, 200, product, err);
}

/* GET /v1/products/{sku} answered from the read model inventory.get_product reads, on the loop
 * thread. */
static const http_read_model route_product_model = {.query = "inventory.get_product",
                                                    .key_prefix = INV_READ_KEY_PREFIX,
                                                    .param = "sku",
                                                    .valid = inv_sku_valid,
                                                    .reply = route_model,
                                                    .as_stored = true};

static int route_add_stock(bus *b, const http_req *req, http_res *res, app_error *err)
{
    cJSON *product = NULL;
    int rc = route_call(b, BUS_COMMAND, "inventory.add_stock", "quantity", req, &product, err);
    return rc != 0 ? rc : http_res_versioned(res, 200, product, err);
}

static int route_events(bus *b, const http_req *req, http_res *res, app_error *err)
{
    cJSON *payload = NULL, *events = NULL;
    int rc = route_payload(req, NULL, &payload, err);
    if (rc == 0)
        rc = http_req_page(req, payload, err);
    if (rc == 0)
        rc = bus_ask(b, "inventory.get_product_events", payload, &req->meta, &events, err);
    cJSON_Delete(payload);
    return rc != 0 ? rc : http_res_page(res, req, events, err);
}

const http_route_def inv_routes[] = {
    {HTTP_M_POST, "/v1/products", route_create, HTTP_ROUTE_JSON_BODY | HTTP_ROUTE_ADMIN,
     "/v1/products", NULL},
    {HTTP_M_GET, "/v1/products/{sku}", route_get, 0, "/v1/products/{sku}", &route_product_model},
    {HTTP_M_POST, "/v1/products/{sku}/stock", route_add_stock,
     HTTP_ROUTE_JSON_BODY | HTTP_ROUTE_ADMIN, "/v1/products/{sku}/stock", NULL},
    {HTTP_M_GET, "/v1/products/{sku}/events", route_events, HTTP_ROUTE_ADMIN,
     "/v1/products/{sku}/events", NULL},
    {0},
};
