/* The order context's HTTP routes (docs/openapi.yaml, "Orders", and GET /v1/users/{id}/orders):
 * each turns a request into one bus message and the reply into a response. */
#include <stdio.h>
#include <string.h>

#include "contexts/order/application/order_app.h"
#include "core/uuid.h"

/* Sends or asks name with {"<key>": <path id>}, and the page of a list when paged. */
static int route_call_paged(bus *b, bus_kind kind, const char *name, const char *key,
                            const http_req *req, bool paged, cJSON **out, app_error *err)
{
    const char *id = http_req_param(req, "id");
    if (!id || !uuid_valid(id))
        return app_error_set(err, APP_ENOTFOUND, "%s not found",
                             strcmp(key, "customerId") == 0 ? "user" : "order");
    cJSON *p = cJSON_CreateObject();
    if (!p || !cJSON_AddStringToObject(p, key, id)) {
        cJSON_Delete(p);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    int rc = paged ? http_req_page(req, p, err) : 0;
    if (rc == 0)
        rc = kind == BUS_COMMAND ? bus_send(b, name, p, &req->meta, out, err)
                                 : bus_ask(b, name, p, &req->meta, out, err);
    cJSON_Delete(p);
    return rc;
}

static int route_call(bus *b, bus_kind kind, const char *name, const char *key, const http_req *req,
                      cJSON **out, app_error *err)
{
    return route_call_paged(b, kind, name, key, req, false, out, err);
}

static int route_own_order(bus *b, const http_req *req, app_error *err)
{
    if (!req->meta.subject[0])
        return 0;
    cJSON *order = NULL;
    int rc = route_call(b, BUS_QUERY, "order.get_order", "id", req, &order, err);
    if (rc == 0) {
        const char *owner =
            cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(order, "customerId"));
        if (!owner || strcmp(owner, req->meta.subject) != 0)
            rc = app_error_set(err, APP_ENOTFOUND, "order not found");
    }
    cJSON_Delete(order);
    return rc;
}

static int route_place(bus *b, const http_req *req, http_res *res, app_error *err)
{
    if (req->meta.subject[0]) {
        const char *customer =
            cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(req->body, "customerId"));
        if (customer && strcmp(customer, req->meta.subject) != 0) {
            app_error_set(err, APP_EFORBIDDEN, "an end user may place orders only for itself");
            app_error_field(err, "customerId", "must be the end user's own id");
            return APP_EFORBIDDEN;
        }
    }
    cJSON *order = NULL;
    int rc = bus_send(b, "order.place_order", req->body, &req->meta, &order, err);
    if (rc != 0)
        return rc;
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(order, "id"));
    snprintf(res->location, sizeof res->location, "/v1/orders/%s", id ? id : "");
    return http_res_versioned(res, 202, order, err);
}

/* An order as order.get_order answers it: to an end user, only one of its own. */
static int route_order(const http_req *req, cJSON *order, http_res *res, app_error *err)
{
    const char *owner = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(order, "customerId"));
    if (req->meta.subject[0] && (!owner || strcmp(owner, req->meta.subject) != 0)) {
        cJSON_Delete(order);
        return app_error_set(err, APP_ENOTFOUND, "order not found");
    }
    return http_res_versioned(res, 200, order, err);
}

static int route_get(bus *b, const http_req *req, http_res *res, app_error *err)
{
    cJSON *order = NULL;
    int rc = route_call(b, BUS_QUERY, "order.get_order", "id", req, &order, err);
    return rc != 0 ? rc : route_order(req, order, res, err);
}

static bool route_id_valid(const char *id)
{
    return uuid_valid(id);
}

/* GET /v1/orders/{id} answered from the read model order.get_order reads, on the loop thread. */
static const http_read_model route_order_model = {.query = "order.get_order",
                                                  .key_prefix = ORD_READ_KEY_PREFIX,
                                                  .param = "id",
                                                  .valid = route_id_valid,
                                                  .reply = route_order,
                                                  .as_stored = true};

static int route_cancel(bus *b, const http_req *req, http_res *res, app_error *err)
{
    cJSON *order = NULL;
    int rc = route_own_order(b, req, err);
    if (rc == 0)
        rc = route_call(b, BUS_COMMAND, "order.cancel_order", "id", req, &order, err);
    return rc != 0 ? rc : http_res_versioned(res, 200, order, err);
}

static int route_ship(bus *b, const http_req *req, http_res *res, app_error *err)
{
    cJSON *order = NULL;
    int rc = route_call(b, BUS_COMMAND, "order.ship_order", "id", req, &order, err);
    return rc != 0 ? rc : http_res_versioned(res, 200, order, err);
}

static int route_list(bus *b, bus_kind kind, const char *name, const char *key, const http_req *req,
                      http_res *res, app_error *err)
{
    cJSON *list = NULL;
    int rc = route_call_paged(b, kind, name, key, req, true, &list, err);
    return rc != 0 ? rc : http_res_page(res, req, list, err);
}

static int route_events(bus *b, const http_req *req, http_res *res, app_error *err)
{
    int rc = route_own_order(b, req, err);
    return rc != 0 ? rc : route_list(b, BUS_QUERY, "order.get_order_events", "id", req, res, err);
}

static int route_customer_orders(bus *b, const http_req *req, http_res *res, app_error *err)
{
    return route_list(b, BUS_QUERY, "order.list_customer_orders", "customerId", req, res, err);
}

const http_route_def ord_routes[] = {
    {HTTP_M_POST, "/v1/orders", route_place, HTTP_ROUTE_JSON_BODY | HTTP_ROUTE_OWNED, "/v1/orders",
     NULL},
    {HTTP_M_GET, "/v1/orders/{id}", route_get, HTTP_ROUTE_OWNED, "/v1/orders/{id}",
     &route_order_model},
    {HTTP_M_POST, "/v1/orders/{id}/cancel", route_cancel, HTTP_ROUTE_OWNED,
     "/v1/orders/{id}/cancel", NULL},
    {HTTP_M_POST, "/v1/orders/{id}/ship", route_ship, HTTP_ROUTE_ADMIN, "/v1/orders/{id}/ship",
     NULL},
    {HTTP_M_GET, "/v1/orders/{id}/events", route_events, HTTP_ROUTE_ADMIN | HTTP_ROUTE_OWNED,
     "/v1/orders/{id}/events", NULL},
    {HTTP_M_GET, "/v1/users/{id}/orders", route_customer_orders, HTTP_ROUTE_SELF,
     "/v1/users/{id}/orders", NULL},
    {0},
};
