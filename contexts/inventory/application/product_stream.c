/* Loading and saving the product aggregate through the event-store port, and its JSON form. */
#include "contexts/inventory/application/product_stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "contexts/inventory/application/inventory_app.h"
#include "core/json.h"
#include "kernel/event_json.h"

int inv_payload_sku(const cJSON *payload, const char **out, app_error *err)
{
    *out = NULL;
    if (!cJSON_IsObject(payload))
        return app_error_set(err, APP_EBADREQ, "payload must be a JSON object");
    int rc = json_req_string(payload, "sku", out, err);
    if (rc == 0 && !inv_sku_valid(*out))
        rc = app_error_set(err, APP_ENOTFOUND, "unknown product");
    return rc;
}

void inv_stream_id(char out[INV_STREAM_ID_LEN], const char *sku)
{
    snprintf(out, INV_STREAM_ID_LEN, "%s%s", INV_STREAM_PREFIX, sku);
}

int inv_load(const bus_ctx *ctx, const char *sku, int64_t max_version, inv_product *out,
             app_error *err)
{
    memset(out, 0, sizeof *out);
    char stream[INV_STREAM_ID_LEN];
    inv_stream_id(stream, sku);
    es_event_list list = {0};
    int rc = ctx->events->ops->load_stream(ctx->events->self, INV_CONTEXT, stream, 0, &list, err);
    for (size_t i = 0; rc == 0 && i < list.len; i++) {
        if (max_version > 0 && list.items[i].version > max_version)
            break;
        inv_event ev;
        rc = inv_event_decode(list.items[i].type, list.items[i].schema_version, list.items[i].data,
                              &ev, err);
        if (rc == 0)
            rc = inv_apply(out, &ev, err);
        out->version = list.items[i].version;
    }
    es_event_list_free(&list);
    return rc;
}

int inv_append(const bus_ctx *ctx, const char *sku, int64_t expected_version, const inv_event *ev,
               app_error *err)
{
    char *data = NULL, id[UUID_STR_LEN], stream[INV_STREAM_ID_LEN];
    char *metadata = event_metadata_from_meta(ctx->meta);
    int rc = metadata ? inv_event_encode(ev, &data, err)
                      : app_error_set(err, APP_ENOMEM, "out of memory encoding metadata");
    if (rc == 0) {
        uuid_v4(id);
        inv_stream_id(stream, sku);
        es_new_event row = {id, inv_event_type(ev->kind), INV_EVENT_SCHEMA_VERSION, data, metadata};
        es_append_req req = {
            .context = INV_CONTEXT,
            .stream_id = stream,
            .expected_version = expected_version,
            .events = &row,
            .n_events = 1,
        };
        rc = ctx->events->ops->append(ctx->events->self, &req, NULL, err);
    }
    free(data);
    free(metadata);
    return rc;
}

cJSON *inv_product_to_json(const inv_product *p)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *price = money_to_json(&p->price);
    if (o && price && cJSON_AddStringToObject(o, "sku", p->sku) &&
        cJSON_AddStringToObject(o, "name", p->name) && cJSON_AddItemToObject(o, "price", price) &&
        cJSON_AddNumberToObject(o, "onHand", (double)p->on_hand) &&
        cJSON_AddNumberToObject(o, "reserved", (double)p->reserved) &&
        cJSON_AddNumberToObject(o, "available", (double)(p->on_hand - p->reserved)) &&
        cJSON_AddNumberToObject(o, "version", (double)p->version))
        return o;
    if (!cJSON_GetObjectItemCaseSensitive(o, "price"))
        cJSON_Delete(price);
    cJSON_Delete(o);
    return NULL;
}

int inv_reply(const inv_product *p, cJSON **out, app_error *err)
{
    *out = inv_product_to_json(p);
    return *out ? 0 : app_error_set(err, APP_ENOMEM, "out of memory rendering a product");
}
