/* The product aggregate's rules. Stock is never oversold: a reservation is decided against
 * the folded state and appended with that state's version, so a concurrent change makes the
 * append fail and the command decide again. */
#include "contexts/inventory/domain/product.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/text.h"

void inv_product_free(inv_product *p)
{
    if (!p)
        return;
    free(p->reservations);
    p->reservations = NULL;
    p->n_reservations = p->cap_reservations = 0;
}

bool inv_sku_valid(const char *sku)
{
    size_t n = sku ? strlen(sku) : 0;
    if (n == 0 || n > INV_SKU_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = sku[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || (i > 0 && c == '-');
        if (!ok)
            return false;
    }
    return true;
}

int inv_decide_create(const char *sku, const char *name, const money *price, int64_t stock,
                      inv_event *out, app_error *err)
{
    memset(out, 0, sizeof *out);
    int rc = 0;
    if (!inv_sku_valid(sku))
        rc = text_field_invalid(err, "sku", "must match ^[A-Z0-9][A-Z0-9-]{0,31}$");
    else
        snprintf(out->sku, sizeof out->sku, "%s", sku);
    if (text_display_name(out->name, sizeof out->name, name, INV_NAME_MAX_CHARS, "name", err))
        rc = APP_EINVAL;
    if (stock < 0 || stock > INV_STOCK_MAX)
        rc = text_field_invalid(err, "stock", "must be between 0 and %lld",
                                (long long)INV_STOCK_MAX);
    if (rc != 0)
        return err->code;
    out->kind = INV_EV_CREATED;
    out->price = *price;
    out->quantity = stock;
    return 0;
}

static int inv_need(const inv_product *p, app_error *err)
{
    return p->exists ? 0 : app_error_set(err, APP_ENOTFOUND, "unknown product");
}

int inv_decide_add_stock(const inv_product *p, int64_t quantity, inv_event *out, app_error *err)
{
    memset(out, 0, sizeof *out);
    int rc = inv_need(p, err);
    if (rc != 0)
        return rc;
    if (quantity < 1 || quantity > INV_STOCK_MAX)
        return text_field_invalid(err, "quantity", "must be between 1 and %lld",
                                  (long long)INV_STOCK_MAX);
    if (p->on_hand + quantity > INV_ON_HAND_MAX)
        return text_field_invalid(err, "quantity", "would take the stock past %lld",
                                  (long long)INV_ON_HAND_MAX);
    out->kind = INV_EV_STOCK_ADDED;
    snprintf(out->sku, sizeof out->sku, "%s", p->sku);
    out->quantity = quantity;
    return 0;
}

int64_t inv_reserved_for(const inv_product *p, const char *order_id)
{
    for (size_t i = 0; i < p->n_reservations; i++)
        if (strcmp(p->reservations[i].order_id, order_id) == 0)
            return p->reservations[i].quantity;
    return 0;
}

int inv_decide_reserve(const inv_product *p, const char *order_id, int64_t quantity, inv_event *out,
                       size_t *n_out, bool *out_of_stock, app_error *err)
{
    memset(out, 0, sizeof *out);
    *n_out = 0;
    *out_of_stock = false;
    int rc = inv_need(p, err);
    if (rc != 0)
        return rc;
    if (!uuid_valid(order_id))
        return text_field_invalid(err, "orderId", "must be a lower-case UUID");
    if (quantity < 1 || quantity > INV_RESERVE_MAX)
        return text_field_invalid(err, "quantity", "must be between 1 and %lld",
                                  (long long)INV_RESERVE_MAX);
    if (inv_reserved_for(p, order_id) > 0)
        return 0; /* reserved before: at-least-once delivery may ask twice */
    if (p->on_hand - p->reserved < quantity) {
        *out_of_stock = true;
        return 0;
    }
    out->kind = INV_EV_STOCK_RESERVED;
    snprintf(out->sku, sizeof out->sku, "%s", p->sku);
    snprintf(out->order_id, sizeof out->order_id, "%s", order_id);
    out->quantity = quantity;
    *n_out = 1;
    return 0;
}

/* Ends order_id's reservation with a kind event (released or committed), or with none when
 * the order holds nothing. */
static int inv_decide_end(const inv_product *p, const char *order_id, inv_event_kind kind,
                          inv_event *out, size_t *n_out, app_error *err)
{
    memset(out, 0, sizeof *out);
    *n_out = 0;
    int rc = inv_need(p, err);
    if (rc != 0)
        return rc;
    int64_t held = uuid_valid(order_id) ? inv_reserved_for(p, order_id) : 0;
    if (held == 0)
        return 0;
    out->kind = kind;
    snprintf(out->sku, sizeof out->sku, "%s", p->sku);
    snprintf(out->order_id, sizeof out->order_id, "%s", order_id);
    out->quantity = held;
    *n_out = 1;
    return 0;
}

int inv_decide_release(const inv_product *p, const char *order_id, inv_event *out, size_t *n_out,
                       app_error *err)
{
    return inv_decide_end(p, order_id, INV_EV_RELEASED, out, n_out, err);
}

int inv_decide_commit(const inv_product *p, const char *order_id, inv_event *out, size_t *n_out,
                      app_error *err)
{
    return inv_decide_end(p, order_id, INV_EV_COMMITTED, out, n_out, err);
}

int inv_apply(inv_product *p, const inv_event *ev, app_error *err)
{
    switch (ev->kind) {
    case INV_EV_CREATED:
        p->exists = true;
        snprintf(p->sku, sizeof p->sku, "%s", ev->sku);
        snprintf(p->name, sizeof p->name, "%s", ev->name);
        p->price = ev->price;
        p->on_hand = ev->quantity;
        break;
    case INV_EV_STOCK_ADDED:
        p->on_hand += ev->quantity;
        break;
    case INV_EV_STOCK_RESERVED:
        if (p->n_reservations == p->cap_reservations) {
            size_t cap = p->cap_reservations ? p->cap_reservations * 2 : 8;
            inv_reservation *grown = realloc(p->reservations, cap * sizeof *grown);
            if (!grown)
                return app_error_set(err, APP_ENOMEM, "out of memory folding a product");
            p->reservations = grown;
            p->cap_reservations = cap;
        }
        p->reservations[p->n_reservations].quantity = ev->quantity;
        snprintf(p->reservations[p->n_reservations].order_id, UUID_STR_LEN, "%s", ev->order_id);
        p->n_reservations++;
        p->reserved += ev->quantity;
        break;
    case INV_EV_RELEASED:
    case INV_EV_COMMITTED:
        for (size_t i = 0; i < p->n_reservations; i++) {
            if (strcmp(p->reservations[i].order_id, ev->order_id) == 0) {
                p->reserved -= p->reservations[i].quantity;
                if (ev->kind == INV_EV_COMMITTED)
                    p->on_hand -= p->reservations[i].quantity; /* shipped: the stock left */
                p->reservations[i] = p->reservations[--p->n_reservations];
                break;
            }
        }
        break;
    case INV_EV_UNKNOWN:
        break;
    }
    p->version++;
    return 0;
}

static const char *const inv_types[] = {
    [INV_EV_CREATED] = INV_EVENT_CREATED,
    [INV_EV_STOCK_ADDED] = INV_EVENT_STOCK_ADDED,
    [INV_EV_STOCK_RESERVED] = INV_EVENT_STOCK_RESERVED,
    [INV_EV_RELEASED] = INV_EVENT_RELEASED,
    [INV_EV_COMMITTED] = INV_EVENT_COMMITTED,
};

static const int inv_versions[] = {
    [INV_EV_CREATED] = INV_CREATED_SCHEMA_VERSION,
    [INV_EV_STOCK_ADDED] = INV_EVENT_SCHEMA_VERSION,
    [INV_EV_STOCK_RESERVED] = INV_EVENT_SCHEMA_VERSION,
    [INV_EV_RELEASED] = INV_EVENT_SCHEMA_VERSION,
    [INV_EV_COMMITTED] = INV_EVENT_SCHEMA_VERSION,
};

const char *inv_event_type(inv_event_kind kind)
{
    return kind > INV_EV_UNKNOWN && kind <= INV_EV_COMMITTED ? inv_types[kind] : NULL;
}

int inv_event_schema_version(inv_event_kind kind)
{
    return kind > INV_EV_UNKNOWN && kind <= INV_EV_COMMITTED ? inv_versions[kind] : 0;
}

int inv_event_encode(const inv_event *ev, char **out, app_error *err)
{
    *out = NULL;
    cJSON *o = cJSON_CreateObject();
    bool ok = o && cJSON_AddStringToObject(o, "sku", ev->sku);
    switch (ev->kind) {
    case INV_EV_CREATED: {
        cJSON *price = money_to_json(&ev->price);
        ok = ok && cJSON_AddStringToObject(o, "name", ev->name) && price &&
             cJSON_AddItemToObject(o, "price", price) &&
             cJSON_AddNumberToObject(o, "initialStock", (double)ev->quantity);
        if (!ok && price && !cJSON_GetObjectItemCaseSensitive(o, "price"))
            cJSON_Delete(price);
        break;
    }
    case INV_EV_STOCK_ADDED:
        ok = ok && cJSON_AddNumberToObject(o, "quantity", (double)ev->quantity);
        break;
    case INV_EV_STOCK_RESERVED:
    case INV_EV_RELEASED:
    case INV_EV_COMMITTED:
        ok = ok && cJSON_AddStringToObject(o, "orderId", ev->order_id) &&
             cJSON_AddNumberToObject(o, "quantity", (double)ev->quantity);
        break;
    case INV_EV_UNKNOWN:
        ok = false;
        break;
    }
    *out = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!*out)
        return app_error_set(err, APP_ENOMEM, "could not encode a product event");
    return 0;
}

static bool inv_copy(const cJSON *o, const char *name, char *dst, size_t n)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= n)
        return false;
    memcpy(dst, v->valuestring, strlen(v->valuestring) + 1);
    return true;
}

/* A stored event is trusted, yet converting an out-of-range double would be undefined
 * behaviour, so a number that is not an exact whole one is refused instead. */
static bool inv_int(const cJSON *o, const char *name, int64_t *out)
{
    return json_exact_int(cJSON_GetObjectItemCaseSensitive(o, name), out);
}

int inv_event_decode(const char *type, int schema_version, const char *data, inv_event *out,
                     app_error *err)
{
    memset(out, 0, sizeof *out);
    inv_event_kind kind = INV_EV_UNKNOWN;
    for (int k = INV_EV_CREATED; k <= INV_EV_COMMITTED; k++)
        if (type && strcmp(type, inv_types[k]) == 0)
            kind = (inv_event_kind)k;
    if (kind == INV_EV_UNKNOWN || schema_version > inv_versions[kind])
        return 0; /* written by newer code: skipped, as an unknown type is */
    if (schema_version < inv_versions[kind])
        return app_error_set(err, APP_EINTERNAL,
                             "stored %s event in schema version %d was not upcast to %d", type,
                             schema_version, inv_versions[kind]);
    cJSON *o = json_parse_n(data, data ? strlen(data) : 0);
    bool ok = cJSON_IsObject(o) && inv_copy(o, "sku", out->sku, sizeof out->sku);
    switch (kind) {
    case INV_EV_CREATED: {
        app_error perr = APP_ERROR_INIT;
        ok = ok && inv_copy(o, "name", out->name, sizeof out->name) &&
             money_from_json(o, "price", &out->price, &perr) == 0 &&
             inv_int(o, "initialStock", &out->quantity);
        break;
    }
    case INV_EV_STOCK_ADDED:
        ok = ok && inv_int(o, "quantity", &out->quantity);
        break;
    default:
        ok = ok && inv_copy(o, "orderId", out->order_id, sizeof out->order_id) &&
             inv_int(o, "quantity", &out->quantity);
        break;
    }
    cJSON_Delete(o);
    if (!ok)
        return app_error_set(err, APP_EINTERNAL, "stored %s event does not fit its schema", type);
    out->kind = kind;
    return 0;
}

/* ---- schema evolution ------------------------------------------------------------------ */

int inv_upcast_created_v1(cJSON *data, app_error *err)
{
    int64_t stock = 0;
    cJSON *old = cJSON_DetachItemFromObjectCaseSensitive(data, "stock");
    if (!json_exact_int(old, &stock) || cJSON_GetObjectItemCaseSensitive(data, "initialStock")) {
        cJSON_Delete(old);
        return app_error_set(err, APP_EINVAL,
                             "inventory.product.created v1 needs a whole-number \"stock\"");
    }
    if (!cJSON_AddItemToObject(data, "initialStock", old)) {
        cJSON_Delete(old);
        return app_error_set(err, APP_ENOMEM, "out of memory upcasting an event");
    }
    return 0;
}

/* ---- snapshots ------------------------------------------------------------------------ */

int inv_snapshot_encode(const inv_product *p, char **out, app_error *err)
{
    *out = NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON *price = money_to_json(&p->price);
    bool ok = o && price && cJSON_AddStringToObject(o, "sku", p->sku) &&
              cJSON_AddStringToObject(o, "name", p->name) &&
              cJSON_AddItemToObject(o, "price", price);
    if (!ok && price && !cJSON_GetObjectItemCaseSensitive(o, "price"))
        cJSON_Delete(price);
    ok = ok && cJSON_AddNumberToObject(o, "onHand", (double)p->on_hand) &&
         cJSON_AddNumberToObject(o, "reserved", (double)p->reserved);
    cJSON *rows = ok ? cJSON_AddArrayToObject(o, "reservations") : NULL;
    ok = ok && rows;
    for (size_t i = 0; ok && i < p->n_reservations; i++) {
        cJSON *r = cJSON_CreateObject();
        ok = r && cJSON_AddItemToArray(rows, r);
        if (!ok)
            cJSON_Delete(r);
        ok = ok && cJSON_AddStringToObject(r, "orderId", p->reservations[i].order_id) &&
             cJSON_AddNumberToObject(r, "quantity", (double)p->reservations[i].quantity);
    }
    *out = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return *out ? 0 : app_error_set(err, APP_ENOMEM, "could not encode a product snapshot");
}

static bool inv_snapshot_rows(const cJSON *rows, inv_product *p)
{
    int n = cJSON_GetArraySize(rows);
    if (!cJSON_IsArray(rows) || n < 0)
        return false;
    if (n > 0 && !(p->reservations = calloc((size_t)n, sizeof *p->reservations)))
        return false;
    p->cap_reservations = (size_t)n;
    int64_t sum = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, rows)
    {
        inv_reservation *res = &p->reservations[p->n_reservations];
        if (!inv_copy(r, "orderId", res->order_id, sizeof res->order_id) ||
            !uuid_valid(res->order_id) || !inv_int(r, "quantity", &res->quantity) ||
            res->quantity < 1 || res->quantity > INV_RESERVE_MAX)
            return false;
        p->n_reservations++;
        sum += res->quantity;
    }
    return sum == p->reserved;
}

int inv_snapshot_decode(const char *text, int64_t version, inv_product *out, app_error *err)
{
    cJSON *o = json_parse_n(text, text ? strlen(text) : 0);
    app_error perr = APP_ERROR_INIT;
    bool ok = cJSON_IsObject(o) && version > 0 && inv_copy(o, "sku", out->sku, sizeof out->sku) &&
              inv_sku_valid(out->sku) && inv_copy(o, "name", out->name, sizeof out->name) &&
              money_from_json(o, "price", &out->price, &perr) == 0 &&
              inv_int(o, "onHand", &out->on_hand) && inv_int(o, "reserved", &out->reserved) &&
              out->on_hand >= 0 && out->on_hand <= INV_ON_HAND_MAX && out->reserved >= 0 &&
              out->reserved <= out->on_hand &&
              inv_snapshot_rows(cJSON_GetObjectItemCaseSensitive(o, "reservations"), out);
    cJSON_Delete(o);
    if (!ok) {
        inv_product_free(out);
        memset(out, 0, sizeof *out);
        return app_error_set(err, APP_EINVAL, "product snapshot does not fit its schema");
    }
    out->exists = true;
    out->version = version;
    return 0;
}
