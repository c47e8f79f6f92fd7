/* The product projection: keeps "product:<sku>" = {"sku","name","price","onHand","reserved",
 * "available","version"}. Delivery is at least once, so an event at or below the stored
 * version is skipped; the next version is applied to the stored counts; a gap (a lost or
 * stale read model) is filled by folding the stream up to the event. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "contexts/inventory/application/inventory_app.h"
#include "contexts/inventory/application/product_stream.h"
#include "core/json.h"

/* A whole number int64_t holds exactly; anything else makes the stored model unusable. */
static bool proj_int(const cJSON *o, const char *name, int64_t *out)
{
    return json_exact_int(cJSON_GetObjectItemCaseSensitive(o, name), out);
}

/* The stored read model as a product without its reservation table; false if unusable. */
static bool proj_parse(const char *text, inv_product *out)
{
    memset(out, 0, sizeof *out);
    cJSON *o = json_parse_n(text, strlen(text));
    const cJSON *sku = cJSON_GetObjectItemCaseSensitive(o, "sku");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(o, "name");
    app_error perr = APP_ERROR_INIT;
    bool ok = cJSON_IsString(sku) && strlen(sku->valuestring) <= INV_SKU_MAX &&
              cJSON_IsString(name) && strlen(name->valuestring) <= INV_NAME_MAX_BYTES &&
              money_from_json(o, "price", &out->price, &perr) == 0 &&
              proj_int(o, "onHand", &out->on_hand) && proj_int(o, "reserved", &out->reserved) &&
              proj_int(o, "version", &out->version);
    if (ok) {
        out->exists = true;
        snprintf(out->sku, sizeof out->sku, "%s", sku->valuestring);
        snprintf(out->name, sizeof out->name, "%s", name->valuestring);
    }
    cJSON_Delete(o);
    return ok;
}

bool inv_projection_key(const es_event *ev, char *out, size_t size)
{
    const size_t prefix = sizeof INV_STREAM_PREFIX - 1;
    return ev->stream_id && strncmp(ev->stream_id, INV_STREAM_PREFIX, prefix) == 0 &&
           inv_sku_valid(ev->stream_id + prefix) &&
           (size_t)snprintf(out, size, "%s%s", INV_READ_KEY_PREFIX, ev->stream_id + prefix) < size;
}

int inv_projection_handle(const bus_ctx *ctx, const es_event *ev, app_error *err)
{
    char key[sizeof INV_READ_KEY_PREFIX + INV_SKU_MAX], *text = NULL;
    if (!inv_projection_key(ev, key, sizeof key))
        return 0; /* not a product stream */
    const char *sku = ev->stream_id + sizeof INV_STREAM_PREFIX - 1;
    inv_event iev;
    int rc = inv_event_decode(ev->type, ev->schema_version, ev->data, &iev, err);
    if (rc != 0 || iev.kind == INV_EV_UNKNOWN)
        return rc;

    rc = ctx->reads->ops->get(ctx->reads->self, key, &text, err);
    if (rc != 0)
        return rc;
    inv_product p;
    bool have = text && proj_parse(text, &p);
    free(text);
    if (have && p.version >= ev->version)
        return 0; /* seen already */
    if (have && p.version == ev->version - 1) {
        /* Counts only: released and committed events carry their quantity, so no table is
         * needed. */
        if (iev.kind == INV_EV_STOCK_ADDED)
            p.on_hand += iev.quantity;
        else if (iev.kind == INV_EV_STOCK_RESERVED)
            p.reserved += iev.quantity;
        else if (iev.kind == INV_EV_RELEASED)
            p.reserved -= iev.quantity;
        else if (iev.kind == INV_EV_COMMITTED) {
            p.reserved -= iev.quantity;
            p.on_hand -= iev.quantity;
        }
        p.version = ev->version;
    } else if ((rc = inv_load(ctx, sku, ev->version, &p, err)) != 0) {
        inv_product_free(&p);
        return rc;
    }
    cJSON *json = p.exists ? inv_product_to_json(&p) : NULL;
    inv_product_free(&p);
    if (!json)
        return p.exists ? app_error_set(err, APP_ENOMEM, "out of memory rendering a product") : 0;
    char *value = cJSON_PrintUnformatted(json);
    cJSON_Delete(json);
    if (!value)
        return app_error_set(err, APP_ENOMEM, "out of memory rendering a product");
    rc = ctx->reads->ops->set(ctx->reads->self, key, value, err);
    free(value);
    return rc;
}
