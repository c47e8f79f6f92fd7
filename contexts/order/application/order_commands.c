/* order.place_order, order.cancel_order and order.ship_order. Placing takes prices from the order
 * context's own copy of the catalogue, or from the inventory context when the copy lags; it never
 * refuses an order for a copy that lags: the saga decides on authoritative answers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "contexts/order/application/order_app.h"
#include "contexts/order/application/order_stream.h"
#include "core/json.h"
#include "core/text.h"

static int placement_timeout_ms = 30000;

int ord_configure(const app_config *cfg, app_error *err)
{
    placement_timeout_ms = cfg->order.placement_timeout_ms;
    return ord_stream_configure(cfg, err);
}

static int ord_wrong_type(app_error *err, const char *field, const char *what)
{
    app_error_set(err, APP_EBADREQ, "wrong JSON types");
    app_error_field(err, field, "must be %s", what);
    return APP_EBADREQ;
}

/* The customer's request into draft, with JSON type errors (400) before value errors. */
static int ord_parse(const cJSON *payload, ord_order *draft, app_error *err)
{
    if (!cJSON_IsObject(payload))
        return app_error_set(err, APP_EBADREQ, "payload must be a JSON object");
    const cJSON *customer = cJSON_GetObjectItemCaseSensitive(payload, "customerId");
    const cJSON *lines = cJSON_GetObjectItemCaseSensitive(payload, "lines");
    if (customer && !cJSON_IsNull(customer) && !cJSON_IsString(customer))
        return ord_wrong_type(err, "customerId", "a string");
    if (lines && !cJSON_IsNull(lines) && !cJSON_IsArray(lines))
        return ord_wrong_type(err, "lines", "an array");
    if (!cJSON_IsString(customer))
        text_field_invalid(err, "customerId", "is required");
    else if (json_string_has_nul(customer))
        text_field_invalid(err, "customerId", "must not contain U+0000");
    else if (strlen(customer->valuestring) < sizeof draft->customer_id)
        memcpy(draft->customer_id, customer->valuestring, strlen(customer->valuestring) + 1);
    if (!cJSON_IsArray(lines))
        return text_field_invalid(err, "lines", "is required");
    int n = cJSON_GetArraySize(lines);
    if (n < 1 || n > ORD_MAX_LINES)
        return text_field_invalid(err, "lines", "must have 1 to %d lines", ORD_MAX_LINES);
    int i = 0;
    const cJSON *l;
    cJSON_ArrayForEach(l, lines)
    {
        char field[48];
        ord_line *line = &draft->lines[draft->n_lines++];
        snprintf(field, sizeof field, "lines[%d]", i);
        if (!cJSON_IsObject(l))
            return ord_wrong_type(err, field, "an object with sku and quantity");
        const cJSON *sku = cJSON_GetObjectItemCaseSensitive(l, "sku");
        const cJSON *qty = cJSON_GetObjectItemCaseSensitive(l, "quantity");
        snprintf(field, sizeof field, "lines[%d].sku", i);
        if (sku && !cJSON_IsNull(sku) && !cJSON_IsString(sku))
            return ord_wrong_type(err, field, "a string");
        if (!cJSON_IsString(sku))
            text_field_invalid(err, field, "is required");
        else if (json_string_has_nul(sku))
            text_field_invalid(err, field, "must not contain U+0000");
        else if (strlen(sku->valuestring) < sizeof line->sku)
            memcpy(line->sku, sku->valuestring, strlen(sku->valuestring) + 1);
        else
            text_field_invalid(err, field, "is too long");
        snprintf(field, sizeof field, "lines[%d].quantity", i);
        /* The range (1..1000) is the domain's to check, in ord_validate_place. */
        if (qty && !cJSON_IsNull(qty) && !json_exact_int(qty, &line->quantity))
            return ord_wrong_type(err, field, "an integer");
        if (!cJSON_IsNumber(qty))
            text_field_invalid(err, field, "is required");
        i++;
    }
    if (err->code != 0)
        return err->code;
    return ord_validate_place(draft, err);
}

/* The price of sku: the local copy, else the inventory context's answer. *found is false
 * only when the inventory context says it does not know the sku. */
static int ord_lookup_price(const bus_ctx *ctx, const char *sku, bool *found, money *out,
                            app_error *err)
{
    char key[sizeof ORD_PRODUCT_COPY + ORD_SKU_MAX], *text = NULL;
    snprintf(key, sizeof key, "%s%s", ORD_PRODUCT_COPY, sku);
    app_error rerr = APP_ERROR_INIT;
    app_error perr = APP_ERROR_INIT;
    *found = false;
    if (ctx->reads->ops->get(ctx->reads->self, key, &text, &rerr) == 0 && text) {
        cJSON *copy = json_parse_n(text, strlen(text));
        free(text);
        *found = money_from_json(copy, "price", out, &perr) == 0;
        cJSON_Delete(copy);
        if (*found)
            return 0;
    }
    /* No copy yet (or Redis is down): ask the owner. */
    cJSON *q = cJSON_CreateObject(), *product = NULL;
    if (!q || !cJSON_AddStringToObject(q, "sku", sku)) {
        cJSON_Delete(q);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    app_error qerr = APP_ERROR_INIT;
    int rc = bus_ask(ctx->bus, ORD_ASK_DESCRIBE_PRODUCT, q, ctx->meta, &product, &qerr);
    cJSON_Delete(q);
    if (rc == APP_ENOTFOUND)
        return 0;
    if (rc != 0) {
        *err = qerr;
        return rc;
    }
    app_error_clear(&perr);
    *found = money_from_json(product, "price", out, &perr) == 0;
    cJSON_Delete(product);
    return *found ? 0 : app_error_set(err, APP_EINTERNAL, "inventory answered without a price");
}

static void ord_now_rfc3339(int64_t ms, char *out, size_t n)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, n, "%s.%03dZ", base, (int)(ms % 1000));
}

int ord_place_order(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    ord_order *draft = calloc(1, sizeof *draft);
    ord_event *ev = malloc(sizeof *ev);
    int rc = draft && ev ? ord_parse(payload, draft, err)
                         : app_error_set(err, APP_ENOMEM, "out of memory");
    for (size_t i = 0; rc == 0 && i < draft->n_lines; i++)
        rc = ord_lookup_price(ctx, draft->lines[i].sku, &draft->lines[i].priced,
                              &draft->lines[i].unit_price, err);
    if (rc == 0)
        rc = ord_price(draft, err);
    if (rc == 0) {
        int64_t now = ctx->clock->now_ms(ctx->clock->self);
        uuid_v4(draft->id);
        ord_now_rfc3339(now, draft->created_at, sizeof draft->created_at);
        ord_decide_place(draft, ev);
        char id[sizeof draft->id];
        memcpy(id, draft->id, sizeof id);
        memset(draft, 0, sizeof *draft); /* from here on: the order the event makes */
        ord_apply(draft, ev);
        rc = ord_append(ctx, id, ES_NO_STREAM, ev, now + placement_timeout_ms, false, draft, err);
        if (rc == 0) {
            ord_committed(ctx, 0, draft);
            rc = ord_reply(draft, out, err);
        }
    }
    free(draft);
    free(ev);
    return rc;
}

int ord_cancel_order(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    const char *id = NULL;
    int rc = ord_payload_id(payload, &id, err);
    if (rc != 0)
        return rc;
    const char *name = json_opt_string(payload, "reason");
    ord_reason reason = name ? ord_reason_parse(name) : ORD_REASON_CANCELLED_BY_CUSTOMER;
    if (reason == ORD_REASON_NONE)
        return text_field_invalid(err, "reason", "is not a cancellation reason");
    ord_order *o = malloc(sizeof *o);
    if (!o)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    rc = ord_settle(ctx, id, reason, o, err);
    if (rc == 0)
        rc = ord_reply(o, out, err);
    free(o);
    return rc;
}

int ord_ship_order(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    const char *id = NULL;
    int rc = ord_payload_id(payload, &id, err);
    if (rc != 0)
        return rc;
    ord_order *o = malloc(sizeof *o);
    if (!o)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    rc = ord_ship(ctx, id, o, err);
    if (rc == 0)
        rc = ord_reply(o, out, err);
    free(o);
    return rc;
}
