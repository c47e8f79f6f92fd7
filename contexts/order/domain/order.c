/* The order aggregate's rules. Placement only checks what the customer asked for; whether
 * the customer and the stock are there is the saga's business, decided on the owning
 * contexts' answers. */
#include "contexts/order/domain/order.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/text.h"

static const char *const ord_reasons[] = {
    [ORD_REASON_OUT_OF_STOCK] = "out_of_stock",
    [ORD_REASON_UNKNOWN_PRODUCT] = "unknown_product",
    [ORD_REASON_UNKNOWN_CUSTOMER] = "unknown_customer",
    [ORD_REASON_CUSTOMER_DEACTIVATED] = "customer_deactivated",
    [ORD_REASON_CANCELLED_BY_CUSTOMER] = "cancelled_by_customer",
    [ORD_REASON_TIMEOUT] = "timeout",
};

const char *ord_status_name(ord_status s)
{
    switch (s) {
    case ORD_STATUS_PENDING:
        return "pending";
    case ORD_STATUS_CONFIRMED:
        return "confirmed";
    case ORD_STATUS_CANCELLED:
        return "cancelled";
    case ORD_STATUS_SHIPPED:
        return "shipped";
    default:
        return "unknown";
    }
}

const char *ord_reason_name(ord_reason r)
{
    return r > ORD_REASON_NONE && r <= ORD_REASON_TIMEOUT ? ord_reasons[r] : NULL;
}

ord_reason ord_reason_parse(const char *name)
{
    for (int r = ORD_REASON_OUT_OF_STOCK; name && r <= ORD_REASON_TIMEOUT; r++)
        if (strcmp(name, ord_reasons[r]) == 0)
            return (ord_reason)r;
    return ORD_REASON_NONE;
}

bool ord_sku_valid(const char *sku)
{
    size_t n = sku ? strlen(sku) : 0;
    if (n == 0 || n > ORD_SKU_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = sku[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || (i > 0 && c == '-')))
            return false;
    }
    return true;
}

int ord_validate_place(const ord_order *draft, app_error *err)
{
    int rc = 0;
    if (!uuid_valid(draft->customer_id))
        rc = text_field_invalid(err, "customerId", "must be a lower-case UUID");
    if (draft->n_lines < 1 || draft->n_lines > ORD_MAX_LINES)
        rc = text_field_invalid(err, "lines", "must have 1 to %d lines", ORD_MAX_LINES);
    for (size_t i = 0; i < draft->n_lines && i < ORD_MAX_LINES; i++) {
        const ord_line *l = &draft->lines[i];
        char field[48];
        snprintf(field, sizeof field, "lines[%zu].sku", i);
        if (!ord_sku_valid(l->sku)) {
            rc = text_field_invalid(err, field, "must match ^[A-Z0-9][A-Z0-9-]{0,31}$");
        } else {
            for (size_t j = 0; j < i; j++)
                if (strcmp(draft->lines[j].sku, l->sku) == 0) {
                    rc = text_field_invalid(err, field, "appears in an earlier line");
                    break;
                }
        }
        snprintf(field, sizeof field, "lines[%zu].quantity", i);
        if (l->quantity < 1 || l->quantity > ORD_MAX_QUANTITY)
            rc = text_field_invalid(err, field, "must be between 1 and %d", ORD_MAX_QUANTITY);
    }
    return rc;
}

int ord_price(ord_order *draft, app_error *err)
{
    money total = {0, ""};
    bool all = true;
    for (size_t i = 0; i < draft->n_lines; i++) {
        const ord_line *l = &draft->lines[i];
        if (!l->priced) {
            all = false;
            continue;
        }
        money line;
        app_error merr = APP_ERROR_INIT;
        /* Prices in two currencies, or a total past the largest amount: the request is
         * sound, the products' prices are what it conflicts with. */
        if (money_mul(&l->unit_price, l->quantity, &line, &merr) != 0 ||
            money_add(&total, &line, &merr) != 0)
            return app_error_set(err, APP_ECONFLICT, "the products' prices give no total: %s",
                                 merr.message);
    }
    draft->has_total = all;
    draft->total = total;
    return 0;
}

void ord_decide_place(const ord_order *draft, ord_event *out)
{
    memset(out, 0, sizeof *out);
    out->kind = ORD_EV_PLACED;
    out->order = *draft;
    out->order.status = ORD_STATUS_NONE;
    out->order.reason = ORD_REASON_NONE;
    out->order.version = 0;
}

static void ord_event_for(const ord_order *o, ord_event_kind kind, ord_event *out)
{
    memset(out, 0, sizeof *out);
    out->kind = kind;
    snprintf(out->order.id, sizeof out->order.id, "%s", o->id);
}

int ord_decide_confirm(const ord_order *o, ord_event *out, size_t *n_out, app_error *err)
{
    *n_out = 0;
    if (o->status == ORD_STATUS_NONE)
        return app_error_set(err, APP_ENOTFOUND, "order not found");
    if (o->status == ORD_STATUS_CANCELLED)
        return app_error_set(err, APP_ECONFLICT, "order is cancelled");
    if (o->status == ORD_STATUS_PENDING) {
        ord_event_for(o, ORD_EV_CONFIRMED, out);
        *n_out = 1;
    }
    return 0;
}

int ord_decide_ship(const ord_order *o, ord_event *out, size_t *n_out, app_error *err)
{
    *n_out = 0;
    switch (o->status) {
    case ORD_STATUS_NONE:
        return app_error_set(err, APP_ENOTFOUND, "order not found");
    case ORD_STATUS_PENDING:
        return app_error_set(err, APP_ECONFLICT, "order is pending: it ships once confirmed");
    case ORD_STATUS_CANCELLED:
        return app_error_set(err, APP_ECONFLICT, "order is cancelled");
    case ORD_STATUS_CONFIRMED:
        ord_event_for(o, ORD_EV_SHIPPED, out);
        *n_out = 1;
        return 0;
    case ORD_STATUS_SHIPPED:
        return 0;
    }
    return 0;
}

int ord_decide_cancel(const ord_order *o, ord_reason reason, ord_event *out, size_t *n_out,
                      app_error *err)
{
    *n_out = 0;
    if (o->status == ORD_STATUS_NONE)
        return app_error_set(err, APP_ENOTFOUND, "order not found");
    /* A deadline only ends a placement still pending: once confirmed, the order stands. */
    if (o->status == ORD_STATUS_CANCELLED ||
        (o->status != ORD_STATUS_PENDING && reason == ORD_REASON_TIMEOUT))
        return 0;
    if (o->status == ORD_STATUS_SHIPPED)
        return app_error_set(err, APP_ECONFLICT, "order has shipped: it cannot be cancelled");
    ord_event_for(o, ORD_EV_CANCELLED, out);
    out->reason = reason;
    *n_out = 1;
    return 0;
}

void ord_apply(ord_order *o, const ord_event *ev)
{
    switch (ev->kind) {
    case ORD_EV_PLACED: {
        int64_t version = o->version;
        *o = ev->order;
        o->version = version;
        o->status = ORD_STATUS_PENDING;
        o->reason = ORD_REASON_NONE;
        break;
    }
    case ORD_EV_CONFIRMED:
        o->status = ORD_STATUS_CONFIRMED;
        break;
    case ORD_EV_CANCELLED:
        o->status = ORD_STATUS_CANCELLED;
        o->reason = ev->reason;
        break;
    case ORD_EV_SHIPPED:
        o->status = ORD_STATUS_SHIPPED;
        break;
    case ORD_EV_UNKNOWN:
        break;
    }
    o->version++;
}

static const char *const ord_types[] = {
    [ORD_EV_PLACED] = ORD_EVENT_PLACED,
    [ORD_EV_CONFIRMED] = ORD_EVENT_CONFIRMED,
    [ORD_EV_CANCELLED] = ORD_EVENT_CANCELLED,
    [ORD_EV_SHIPPED] = ORD_EVENT_SHIPPED,
};

const char *ord_event_type(ord_event_kind kind)
{
    return kind > ORD_EV_UNKNOWN && kind <= ORD_EV_SHIPPED ? ord_types[kind] : NULL;
}

static bool ord_add_money(cJSON *o, const char *name, bool have, const money *m)
{
    cJSON *v = have ? money_to_json(m) : cJSON_CreateNull();
    if (v && cJSON_AddItemToObject(o, name, v))
        return true;
    cJSON_Delete(v);
    return false;
}

/* The placed event's fields of o (all but "orderId") into j; false when out of memory. */
static bool ord_placed_json(cJSON *j, const ord_order *o)
{
    cJSON *lines = NULL;
    bool ok = cJSON_AddStringToObject(j, "customerId", o->customer_id) &&
              (lines = cJSON_AddArrayToObject(j, "lines")) != NULL;
    for (size_t i = 0; ok && i < o->n_lines; i++) {
        cJSON *l = cJSON_CreateObject();
        if (!l || !cJSON_AddItemToArray(lines, l)) {
            cJSON_Delete(l);
            return false;
        }
        ok = cJSON_AddStringToObject(l, "sku", o->lines[i].sku) &&
             cJSON_AddNumberToObject(l, "quantity", (double)o->lines[i].quantity) &&
             ord_add_money(l, "unitPrice", o->lines[i].priced, &o->lines[i].unit_price);
    }
    return ok && ord_add_money(j, "total", o->has_total, &o->total) &&
           cJSON_AddStringToObject(j, "createdAt", o->created_at);
}

int ord_event_encode(const ord_event *ev, char **out, app_error *err)
{
    *out = NULL;
    const ord_order *o = &ev->order;
    cJSON *j = cJSON_CreateObject();
    bool ok = j && cJSON_AddStringToObject(j, "orderId", o->id);
    if (ev->kind == ORD_EV_PLACED) {
        ok = ok && ord_placed_json(j, o);
    } else if (ev->kind == ORD_EV_CANCELLED) {
        ok = ok && ord_reason_name(ev->reason) &&
             cJSON_AddStringToObject(j, "reason", ord_reason_name(ev->reason));
    }
    *out = ok ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!*out)
        return app_error_set(err, APP_ENOMEM, "could not encode an order event");
    return 0;
}

static bool ord_copy(const cJSON *o, const char *name, char *dst, size_t n)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= n)
        return false;
    memcpy(dst, v->valuestring, strlen(v->valuestring) + 1);
    return true;
}

/* A money member that may be null: *have says which. */
static bool ord_money(const cJSON *o, const char *name, bool *have, money *m)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    *have = v && !cJSON_IsNull(v);
    app_error merr = APP_ERROR_INIT;
    return !*have || money_from_json(o, name, m, &merr) == 0;
}

static bool ord_decode_placed(const cJSON *j, ord_order *o)
{
    const cJSON *lines = cJSON_GetObjectItemCaseSensitive(j, "lines");
    if (!ord_copy(j, "customerId", o->customer_id, sizeof o->customer_id) ||
        !ord_copy(j, "createdAt", o->created_at, sizeof o->created_at) ||
        !ord_money(j, "total", &o->has_total, &o->total) || !cJSON_IsArray(lines) ||
        cJSON_GetArraySize(lines) > ORD_MAX_LINES)
        return false;
    const cJSON *l;
    cJSON_ArrayForEach(l, lines)
    {
        ord_line *line = &o->lines[o->n_lines++];
        const cJSON *q = cJSON_GetObjectItemCaseSensitive(l, "quantity");
        if (!ord_copy(l, "sku", line->sku, sizeof line->sku) ||
            !json_exact_int(q, &line->quantity) ||
            !ord_money(l, "unitPrice", &line->priced, &line->unit_price))
            return false;
    }
    return true;
}

int ord_event_decode(const char *type, int schema_version, const char *data, ord_event *out,
                     app_error *err)
{
    memset(out, 0, sizeof *out);
    ord_event_kind kind = ORD_EV_UNKNOWN;
    for (int k = ORD_EV_PLACED; k <= ORD_EV_SHIPPED; k++)
        if (type && strcmp(type, ord_types[k]) == 0)
            kind = (ord_event_kind)k;
    if (kind == ORD_EV_UNKNOWN || schema_version > ORD_EVENT_SCHEMA_VERSION)
        return 0;
    cJSON *j = json_parse_n(data, data ? strlen(data) : 0);
    bool ok = cJSON_IsObject(j) && ord_copy(j, "orderId", out->order.id, sizeof out->order.id);
    if (ok && kind == ORD_EV_PLACED)
        ok = ord_decode_placed(j, &out->order);
    if (ok && kind == ORD_EV_CANCELLED) {
        out->reason =
            ord_reason_parse(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "reason")));
        ok = out->reason != ORD_REASON_NONE;
    }
    cJSON_Delete(j);
    if (!ok)
        return app_error_set(err, APP_EINTERNAL, "stored %s event does not fit its schema", type);
    out->kind = kind;
    return 0;
}

/* ---- snapshots ------------------------------------------------------------------------ */

int ord_snapshot_encode(const ord_order *o, char **out, app_error *err)
{
    *out = NULL;
    if (o->status == ORD_STATUS_NONE)
        return app_error_set(err, APP_EINVAL, "no order to snapshot");
    const char *reason = ord_reason_name(o->reason);
    cJSON *j = cJSON_CreateObject();
    bool ok = j && cJSON_AddStringToObject(j, "orderId", o->id) && ord_placed_json(j, o) &&
              cJSON_AddStringToObject(j, "status", ord_status_name(o->status)) &&
              (reason ? cJSON_AddStringToObject(j, "reason", reason) != NULL
                      : cJSON_AddNullToObject(j, "reason") != NULL);
    *out = ok ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    return *out ? 0 : app_error_set(err, APP_ENOMEM, "could not encode an order snapshot");
}

int ord_snapshot_decode(const char *text, int64_t version, ord_order *out, app_error *err)
{
    memset(out, 0, sizeof *out);
    cJSON *j = json_parse_n(text, text ? strlen(text) : 0);
    const char *status = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "status"));
    const cJSON *reason = cJSON_GetObjectItemCaseSensitive(j, "reason");
    bool ok = cJSON_IsObject(j) && version > 0 && ord_copy(j, "orderId", out->id, sizeof out->id) &&
              uuid_valid(out->id) && ord_decode_placed(j, out) && status;
    for (int st = ORD_STATUS_PENDING; ok && st <= ORD_STATUS_SHIPPED; st++)
        if (strcmp(status, ord_status_name((ord_status)st)) == 0)
            out->status = (ord_status)st;
    ok = ok && out->status != ORD_STATUS_NONE;
    if (ok && out->status == ORD_STATUS_CANCELLED)
        ok = (out->reason = ord_reason_parse(cJSON_GetStringValue(reason))) != ORD_REASON_NONE;
    else
        ok = ok && cJSON_IsNull(reason);
    cJSON_Delete(j);
    if (!ok) {
        memset(out, 0, sizeof *out);
        return app_error_set(err, APP_EINVAL, "order snapshot does not fit its schema");
    }
    out->version = version;
    return 0;
}
