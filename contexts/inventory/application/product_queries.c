/* The inventory queries: the read model from Redis, the audit trail and the authoritative
 * state from the event store (what other contexts ask when their copies lag). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "contexts/inventory/application/inventory_app.h"
#include "contexts/inventory/application/product_stream.h"
#include "core/json.h"
#include "kernel/event_json.h"

int inv_get_product(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    const char *sku = NULL;
    int rc = inv_payload_sku(payload, &sku, err);
    if (rc != 0)
        return rc;
    char key[sizeof INV_READ_KEY_PREFIX + INV_SKU_MAX], *text = NULL;
    snprintf(key, sizeof key, "%s%s", INV_READ_KEY_PREFIX, sku);
    rc = ctx->reads->ops->get(ctx->reads->self, key, &text, err);
    if (rc != 0)
        return rc;
    if (!text)
        return app_error_set(err, APP_ENOTFOUND, "unknown product");
    *out = json_parse_n(text, strlen(text));
    free(text);
    return *out ? 0 : app_error_set(err, APP_EINTERNAL, "unreadable product read model");
}

int inv_get_product_events(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    const char *sku = NULL;
    int rc = inv_payload_sku(payload, &sku, err);
    if (rc != 0)
        return rc;
    char stream[INV_STREAM_ID_LEN];
    inv_stream_id(stream, sku);
    es_event_list list = {0};
    rc = ctx->events->ops->load_stream(ctx->events->self, INV_CONTEXT, stream, 0, &list, err);
    if (rc != 0)
        return rc;
    if (list.len == 0) {
        es_event_list_free(&list);
        return app_error_set(err, APP_ENOTFOUND, "unknown product");
    }
    cJSON *body = cJSON_CreateObject();
    cJSON *items = body ? cJSON_AddArrayToObject(body, "items") : NULL;
    for (size_t i = 0; items && i < list.len; i++) {
        cJSON *ev = event_to_json(&list.items[i]);
        if (!ev || !cJSON_AddItemToArray(items, ev)) {
            cJSON_Delete(ev);
            items = NULL;
        }
    }
    es_event_list_free(&list);
    if (!items) {
        cJSON_Delete(body);
        return app_error_set(err, APP_ENOMEM, "out of memory rendering events");
    }
    *out = body;
    return 0;
}

int inv_describe_product(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    const char *sku = NULL;
    int rc = inv_payload_sku(payload, &sku, err);
    if (rc != 0)
        return rc;
    inv_product p;
    rc = inv_load(ctx, sku, 0, &p, err);
    if (rc == 0 && !p.exists)
        rc = app_error_set(err, APP_ENOTFOUND, "unknown product");
    if (rc == 0)
        rc = inv_reply(&p, out, err);
    inv_product_free(&p);
    return rc;
}
