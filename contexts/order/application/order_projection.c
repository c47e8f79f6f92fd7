/* The order projections: "order:<id>" (the order as API.md shows it) and
 * "customer-orders:<customerId>" (the customer's order ids, newest first), and the order
 * context's own copies of what it needs from other contexts: product prices and customer
 * statuses, fed by their published events. All idempotent: delivery is at least once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "contexts/order/application/order_app.h"
#include "contexts/order/application/order_stream.h"
#include "core/json.h"

static int64_t ord_stored_version(const char *text)
{
    cJSON *j = text ? json_parse_n(text, strlen(text)) : NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "version");
    int64_t version = 0;
    if (!json_exact_int(v, &version))
        version = 0;
    cJSON_Delete(j);
    return version;
}

/* Unix ms of an RFC 3339 UTC time as the order context writes it ("...T12:34:56.789Z");
 * 0 when it does not read (the order then sorts as the oldest). */
static int64_t ord_created_ms(const char *rfc3339)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    int ms = 0, used = 0;
    if (sscanf(rfc3339, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
               &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &used) != 6)
        return 0;
    const char *frac = rfc3339 + used;
    int scale = 100;
    if (*frac == '.')
        for (frac++; *frac >= '0' && *frac <= '9' && scale > 0; frac++, scale /= 10)
            ms += (*frac - '0') * scale;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t secs = timegm(&tm);
    return secs < 0 ? 0 : (int64_t)secs * 1000 + ms;
}

/* The stored read model one event further: a settlement or the shipment changes only the
 * status, the reason and the version. *value is owned by the caller; NULL when text does not read.
 */
static int ord_patch_stored(const char *text, const ord_event *oev, int64_t version, char **value,
                            app_error *err)
{
    *value = NULL;
    cJSON *j = json_parse_n(text, strlen(text));
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return 0;
    }
    ord_order changed = {.status = ORD_STATUS_PENDING};
    ord_apply(&changed, oev);
    const char *reason = ord_reason_name(changed.reason);
    bool ok =
        cJSON_ReplaceItemInObjectCaseSensitive(
            j, "status", cJSON_CreateString(ord_status_name(changed.status))) &&
        cJSON_ReplaceItemInObjectCaseSensitive(j, "version", cJSON_CreateNumber((double)version));
    if (ok && oev->kind == ORD_EV_CANCELLED)
        ok = cJSON_ReplaceItemInObjectCaseSensitive(
            j, "reason", reason ? cJSON_CreateString(reason) : cJSON_CreateNull());
    *value = ok ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    return *value ? 0 : app_error_set(err, APP_ENOMEM, "out of memory rendering an order");
}

bool ord_projection_key(const es_event *ev, char *out, size_t size)
{
    const size_t prefix = sizeof ORD_STREAM_PREFIX - 1;
    return ev->stream_id && strncmp(ev->stream_id, ORD_STREAM_PREFIX, prefix) == 0 &&
           uuid_valid(ev->stream_id + prefix) &&
           (size_t)snprintf(out, size, "%s%s", ORD_READ_KEY_PREFIX, ev->stream_id + prefix) < size;
}

int ord_projection_handle(const bus_ctx *ctx, const es_event *ev, app_error *err)
{
    char key[sizeof ORD_READ_KEY_PREFIX + UUID_STR_LEN], *text = NULL;
    if (!ord_projection_key(ev, key, sizeof key))
        return 0;
    const char *id = ev->stream_id + sizeof ORD_STREAM_PREFIX - 1;
    int rc = ctx->reads->ops->get(ctx->reads->self, key, &text, err);
    if (rc != 0)
        return rc;
    int64_t stored = ord_stored_version(text);
    if (stored >= ev->version) {
        free(text);
        return 0; /* seen already */
    }

    /* The next event of what is stored is applied to it; otherwise (a gap, a lost read
     * model) the stream is folded, which is short: placed, then at most one settlement. */
    ord_event *oev = malloc(sizeof *oev);
    ord_order *o = calloc(1, sizeof *o);
    rc = oev && o ? ord_event_decode(ev->type, ev->schema_version, ev->data, oev, err)
                  : app_error_set(err, APP_ENOMEM, "out of memory");
    char *value = NULL;
    bool placed = false;
    if (rc == 0 && stored == ev->version - 1 && oev->kind == ORD_EV_PLACED) {
        ord_apply(o, oev);
        placed = true;
    } else if (rc == 0 && stored == ev->version - 1 && text &&
               (oev->kind == ORD_EV_CONFIRMED || oev->kind == ORD_EV_CANCELLED ||
                oev->kind == ORD_EV_SHIPPED)) {
        rc = ord_patch_stored(text, oev, ev->version, &value, err);
    }
    if (rc == 0 && !placed && !value) {
        rc = ord_load(ctx, id, ev->version, o, err);
        placed = rc == 0;
    }
    free(text);
    if (rc == 0 && placed && o->status != ORD_STATUS_NONE) {
        cJSON *json = ord_to_json(o);
        value = json ? cJSON_PrintUnformatted(json) : NULL;
        cJSON_Delete(json);
        if (!value)
            rc = app_error_set(err, APP_ENOMEM, "out of memory rendering an order");
        /* The list entry first: an order readable by id is always in its customer's list. */
        char list[sizeof ORD_CUSTOMER_ORDERS + UUID_STR_LEN];
        snprintf(list, sizeof list, "%s%s", ORD_CUSTOMER_ORDERS, o->customer_id);
        if (rc == 0)
            rc = ctx->reads->ops->zadd(ctx->reads->self, list,
                                       (double)ord_created_ms(o->created_at), id, err);
    }
    if (rc == 0 && value)
        rc = ctx->reads->ops->set(ctx->reads->self, key, value, err);
    free(value);
    free(o);
    free(oev);
    return rc;
}

/* Writes key = {"<field>": value...} built by the caller. */
static int ord_copy_set(const bus_ctx *ctx, const char *key, cJSON *copy, app_error *err)
{
    char *value = copy ? cJSON_PrintUnformatted(copy) : NULL;
    cJSON_Delete(copy);
    if (!value)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    int rc = ctx->reads->ops->set(ctx->reads->self, key, value, err);
    free(value);
    return rc;
}

/* inventory.product.created -> "order:product:<sku>" = {"sku","price"}. */
int ord_product_copy_handle(const bus_ctx *ctx, const es_event *ev, app_error *err)
{
    if (strcmp(ev->type, "inventory.product.created") != 0)
        return 0;
    cJSON *data = json_parse_n(ev->data, strlen(ev->data));
    const cJSON *sku = cJSON_GetObjectItemCaseSensitive(data, "sku");
    cJSON *price = cJSON_DetachItemFromObjectCaseSensitive(data, "price");
    int rc = 0;
    if (cJSON_IsString(sku) && ord_sku_valid(sku->valuestring) && cJSON_IsObject(price)) {
        char key[sizeof ORD_PRODUCT_COPY + ORD_SKU_MAX];
        snprintf(key, sizeof key, "%s%s", ORD_PRODUCT_COPY, sku->valuestring);
        cJSON *copy = cJSON_CreateObject();
        if (copy && cJSON_AddStringToObject(copy, "sku", sku->valuestring) &&
            cJSON_AddItemToObject(copy, "price", price))
            price = NULL;
        rc = ord_copy_set(ctx, key, copy, err);
    }
    cJSON_Delete(price);
    cJSON_Delete(data);
    return rc;
}

/* The customer's id, from a user stream's id; NULL for any other stream. */
static const char *ord_customer_id(const es_event *ev)
{
    const char *id =
        ev->stream_id && strncmp(ev->stream_id, "user-", 5) == 0 ? ev->stream_id + 5 : "";
    return uuid_valid(id) ? id : NULL;
}

bool ord_customer_copy_key(const es_event *ev, char *out, size_t size)
{
    const char *id = ord_customer_id(ev);
    return id && strcmp(ev->type, "user.user.registered") == 0 &&
           (size_t)snprintf(out, size, "%s%s", ORD_CUSTOMER_COPY, id) < size;
}

/* user.user.registered / deactivated -> "order:customer:<id>" = {"status"}. */
int ord_customer_copy_handle(const bus_ctx *ctx, const es_event *ev, app_error *err)
{
    const char *status = strcmp(ev->type, "user.user.registered") == 0    ? "active"
                         : strcmp(ev->type, "user.user.deactivated") == 0 ? "deactivated"
                                                                          : NULL;
    const char *id = ord_customer_id(ev);
    if (!status || !id)
        return 0;
    char key[sizeof ORD_CUSTOMER_COPY + UUID_STR_LEN];
    snprintf(key, sizeof key, "%s%s", ORD_CUSTOMER_COPY, id);
    if (strcmp(status, "active") == 0) {
        /* A replayed registration must not bring a deactivated customer back. */
        char *text = NULL;
        int rc = ctx->reads->ops->get(ctx->reads->self, key, &text, err);
        bool known = text != NULL;
        free(text);
        if (rc != 0 || known)
            return rc;
    }
    cJSON *copy = cJSON_CreateObject();
    if (copy && !cJSON_AddStringToObject(copy, "status", status)) {
        cJSON_Delete(copy);
        copy = NULL;
    }
    return ord_copy_set(ctx, key, copy, err);
}
