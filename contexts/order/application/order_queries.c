/* The order queries: an order and a customer's orders from the read models in Redis (an order
 * they have not caught up with yet from the event log, so that a client reads what it wrote),
 * the audit trail from the event log. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "contexts/order/application/order_app.h"
#include "contexts/order/application/order_stream.h"
#include "core/json.h"
#include "kernel/event_json.h"

/* The read model of order id: *out NULL when missing. */
static int ord_read(const bus_ctx *ctx, const char *id, cJSON **out, app_error *err)
{
    *out = NULL;
    char key[sizeof ORD_READ_KEY_PREFIX + UUID_STR_LEN], *text = NULL;
    snprintf(key, sizeof key, "%s%s", ORD_READ_KEY_PREFIX, id);
    int rc = ctx->reads->ops->get(ctx->reads->self, key, &text, err);
    if (rc != 0 || !text)
        return rc;
    *out = json_parse_n(text, strlen(text));
    free(text);
    return *out ? 0 : app_error_set(err, APP_EINTERNAL, "unreadable order read model");
}

int ord_get_order(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    const char *id = NULL;
    int rc = ord_payload_id(payload, &id, err);
    if (rc == 0)
        rc = ord_read(ctx, id, out, err);
    if (rc != 0 || *out)
        return rc;
    /* The read model follows the log a moment later: an order just placed is read from the
     * log instead, so that a client reads what it wrote. */
    ord_order *o = malloc(sizeof *o);
    if (!o)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    rc = ord_load(ctx, id, 0, o, err);
    if (rc == 0 && o->status == ORD_STATUS_NONE)
        rc = app_error_set(err, APP_ENOTFOUND, "order not found");
    if (rc == 0)
        rc = ord_reply(o, out, err);
    free(o);
    return rc;
}

int ord_list_customer_orders(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    const char *customer = NULL;
    if (!cJSON_IsObject(payload))
        return app_error_set(err, APP_EBADREQ, "payload must be a JSON object");
    int rc = json_req_string(payload, "customerId", &customer, err);
    if (rc != 0)
        return rc;
    cJSON *reply = cJSON_CreateObject();
    cJSON *items = reply ? cJSON_AddArrayToObject(reply, "items") : NULL;
    if (!items) {
        cJSON_Delete(reply);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    /* A page: the cursor "after" counts the newer orders earlier pages showed. */
    size_t limit;
    int64_t after;
    rc = http_page_of(payload, &limit, &after, err);
    if (rc != 0) {
        cJSON_Delete(reply);
        return rc;
    }
    size_t from = (size_t)after;
    if (uuid_valid(customer)) {
        char key[sizeof ORD_CUSTOMER_ORDERS + UUID_STR_LEN], **ids = NULL;
        size_t n = 0;
        snprintf(key, sizeof key, "%s%s", ORD_CUSTOMER_ORDERS, customer);
        /* One more than the page, to know whether another follows. */
        rc = ctx->reads->ops->zrevrange(ctx->reads->self, key, from, from + limit, &ids, &n, err);
        for (size_t i = 0; rc == 0 && i < n && i < limit; i++) {
            cJSON *order = NULL;
            rc = ord_read(ctx, ids[i], &order, err);
            if (rc == 0 && order)
                cJSON_AddItemToArray(items, order);
        }
        if (rc == 0 && n > limit) {
            char next[32];
            snprintf(next, sizeof next, "%zu", from + limit);
            if (!cJSON_AddStringToObject(reply, "next", next))
                rc = app_error_set(err, APP_ENOMEM, "out of memory");
        }
        rs_strings_free(ids, n);
    }
    if (rc != 0) {
        cJSON_Delete(reply);
        return rc;
    }
    *out = reply;
    return 0;
}

int ord_get_order_events(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    const char *id = NULL;
    int rc = ord_payload_id(payload, &id, err);
    if (rc != 0)
        return rc;
    char stream[ORD_STREAM_ID_LEN];
    ord_stream_id(stream, id);
    return event_stream_reply(ctx, ORD_CONTEXT, stream, payload, "order not found", out, err);
}
