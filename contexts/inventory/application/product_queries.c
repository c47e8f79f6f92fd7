/* The inventory queries: the read model from Redis (the log for a product it has not caught up
 * with yet, so that a client reads what it wrote), the audit trail and the authoritative
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
    if (!text) /* not caught up with a new product yet: read the log */
        return inv_describe_product(ctx, payload, out, err);
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
    return event_stream_reply(ctx, INV_CONTEXT, stream, payload, "unknown product", out, err);
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
