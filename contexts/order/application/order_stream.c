/* Loading and saving the order aggregate through the event-store port, and its JSON form. */
#include "contexts/order/application/order_stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "contexts/order/application/order_app.h"
#include "core/json.h"
#include "kernel/agg_cache.h"
#include "kernel/event_json.h"
#include "kernel/idempotency.h"
#include "kernel/snapshots.h"

#define ORD_SETTLE_ATTEMPTS 10

/* snapshots.order and the orders kept folded (snapshots.cache): set at start-up, before
 * any handler runs. An order owns no memory beyond itself: a copy is a memcpy. */
static int ord_snapshot_every;
static agg_cache *ord_cache;
static const agg_cache_kind ord_cache_kind = {sizeof(ord_order), NULL, NULL};

int ord_stream_configure(const app_config *cfg, app_error *err)
{
    ord_snapshot_every = cfg->snapshots.order;
    agg_cache_free(ord_cache);
    ord_cache = NULL;
    if (cfg->snapshots.cache > 0 &&
        !(ord_cache = agg_cache_new(&ord_cache_kind, (size_t)cfg->snapshots.cache)))
        return app_error_set(err, APP_ENOMEM, "out of memory for the order cache");
    return 0;
}

int ord_payload_id(const cJSON *payload, const char **out, app_error *err)
{
    *out = NULL;
    if (!cJSON_IsObject(payload))
        return app_error_set(err, APP_EBADREQ, "payload must be a JSON object");
    int rc = json_req_string(payload, "id", out, err);
    if (rc == 0 && !uuid_valid(*out))
        rc = app_error_set(err, APP_ENOTFOUND, "order not found");
    return rc;
}

void ord_stream_id(char out[ORD_STREAM_ID_LEN], const char *id)
{
    snprintf(out, ORD_STREAM_ID_LEN, "%s%s", ORD_STREAM_PREFIX, id);
}

/* Starts *out from the stream's snapshot when there is a usable one at or below max_version
 * (0: any); returns the version to read the events after. */
static int64_t ord_from_snapshot(const bus_ctx *ctx, const char *id, const char *stream,
                                 int64_t max_version, ord_order *out)
{
    es_snapshot snap;
    snap_load(ctx, ORD_CONTEXT, stream, ORD_SNAPSHOT_SCHEMA_VERSION, &snap);
    int64_t after = 0;
    if (snap.state && (max_version == 0 || snap.version <= max_version)) {
        app_error serr = APP_ERROR_INIT;
        if (ord_snapshot_decode(snap.state, snap.version, out, &serr) != 0)
            snap_ignored(ORD_CONTEXT, stream, snap.version, serr.message);
        else if (strcmp(out->id, id) != 0)
            snap_ignored(ORD_CONTEXT, stream, snap.version, "it is another order's");
        else
            after = snap.version;
        if (after == 0)
            memset(out, 0, sizeof *out);
    }
    es_snapshot_free(&snap);
    return after;
}

int ord_load(const bus_ctx *ctx, const char *id, int64_t max_version, ord_order *out,
             app_error *err)
{
    memset(out, 0, sizeof *out);
    char stream[ORD_STREAM_ID_LEN];
    ord_stream_id(stream, id);
    es_event_list list = {0};
    size_t first = 0;
    int64_t after = 0;
    int rc = 0;
    /* The latest state only: a load up to a version (a projection filling a gap) folds. */
    if (max_version == 0)
        rc = agg_cache_begin(ord_cache, ctx->events, ORD_CONTEXT, stream, out, &after, &list,
                             &first, err);
    if (rc == 0 && after == 0) {
        after = ord_from_snapshot(ctx, id, stream, max_version, out);
        rc = ctx->events->ops->load_stream(ctx->events->self, ORD_CONTEXT, stream, after, &list,
                                           err);
    }
    ord_event *ev = rc == 0 && list.len > first ? malloc(sizeof *ev) : NULL;
    if (rc == 0 && list.len > first && !ev)
        rc = app_error_set(err, APP_ENOMEM, "out of memory loading an order");
    const char *last = NULL;
    for (size_t i = first; rc == 0 && i < list.len; i++) {
        if (max_version > 0 && list.items[i].version > max_version)
            break;
        rc = ord_event_decode(list.items[i].type, list.items[i].schema_version, list.items[i].data,
                              ev, err);
        if (rc == 0) {
            ord_apply(out, ev);
            out->version = list.items[i].version;
            last = list.items[i].event_id;
        }
    }
    if (rc == 0 && max_version == 0 && last)
        agg_cache_put(ord_cache, stream, out, out->version, last);
    free(ev);
    es_event_list_free(&list);
    return rc;
}

void ord_committed(const bus_ctx *ctx, int64_t before, const ord_order *o)
{
    if (!snap_due(ord_snapshot_every, before, o->version))
        return;
    char stream[ORD_STREAM_ID_LEN], *text = NULL;
    app_error serr = APP_ERROR_INIT;
    ord_stream_id(stream, o->id);
    if (ord_snapshot_encode(o, &text, &serr) == 0)
        snap_save(ctx, ORD_CONTEXT, stream, o->version, ORD_SNAPSHOT_SCHEMA_VERSION, text);
    free(text);
}

static const char *ord_event_step(ord_event_kind kind)
{
    switch (kind) {
    case ORD_EV_PLACED:
        return "placed";
    case ORD_EV_CONFIRMED:
        return "confirmed";
    case ORD_EV_SHIPPED:
        return "shipped";
    default:
        return "cancelled";
    }
}

/* The saga's state after ev: its step and, from the placement on, what the deadline task
 * needs so that a timeout carries the placing request's correlation id and is caused by the
 * placed event. JSON text owned by the caller; NULL when out of memory. */
static char *ord_process_state(const ord_event *ev, const char *event_id, const bus_meta *meta)
{
    cJSON *s = cJSON_CreateObject();
    bool ok = s && cJSON_AddStringToObject(s, "step", ord_event_step(ev->kind));
    if (ok && ev->kind == ORD_EV_PLACED)
        ok = cJSON_AddStringToObject(s, "placedEventId", event_id) &&
             (!meta || !meta->correlation_id[0] ||
              cJSON_AddStringToObject(s, "correlationId", meta->correlation_id));
    char *text = ok ? cJSON_PrintUnformatted(s) : NULL;
    cJSON_Delete(s);
    return text;
}

int ord_append(const bus_ctx *ctx, const char *id, int64_t expected_version, const ord_event *ev,
               int64_t deadline_ms, bool done, const ord_order *after, app_error *err)
{
    char *data = NULL, *state = NULL, event_id[UUID_STR_LEN], stream[ORD_STREAM_ID_LEN];
    char *metadata = event_metadata_from_meta(ctx->meta);
    uuid_v4(event_id);
    int rc = metadata ? ord_event_encode(ev, &data, err)
                      : app_error_set(err, APP_ENOMEM, "out of memory encoding metadata");
    if (rc == 0 && !(state = ord_process_state(ev, event_id, ctx->meta)))
        rc = app_error_set(err, APP_ENOMEM, "out of memory encoding the saga state");
    if (rc == 0) {
        ord_stream_id(stream, id);
        es_new_event row = {event_id, ord_event_type(ev->kind), ORD_EVENT_SCHEMA_VERSION, data,
                            metadata};
        es_process process = {ORD_PROCESS, id, state, deadline_ms, done};
        es_append_req req = {
            .context = ORD_CONTEXT,
            .stream_id = stream,
            .expected_version = expected_version,
            .events = &row,
            .n_events = 1,
            .process = &process,
        };
        cJSON *reply = ctx->idem && after ? ord_to_json(after) : NULL;
        rc = ctx->idem && after && !reply
                 ? app_error_set(err, APP_ENOMEM, "out of memory rendering an order")
                 : bus_append(ctx, &req, reply, NULL, err);
        cJSON_Delete(reply);
        if (rc == 0 && after)
            agg_cache_put(ord_cache, stream, after, after->version, event_id);
    }
    free(state);
    free(data);
    free(metadata);
    return rc;
}

/* Decides kind (confirmed, cancelled with reason, shipped) on order id as it is now (first
 * on *known when the caller has just loaded it) and appends what was decided; a version
 * conflict reads the order back and decides again. */
static int ord_change(const bus_ctx *ctx, const char *id, const ord_order *known,
                      ord_event_kind kind, ord_reason reason, ord_order *out, app_error *err)
{
    ord_order *o = malloc(sizeof *o);
    ord_event *ev = malloc(sizeof *ev);
    int rc = o && ev ? APP_EVERSION : app_error_set(err, APP_ENOMEM, "out of memory");
    /* A concurrent change (the customer cancels while the saga confirms, a timeout) is read
     * back and decided again: confirming a cancelled order is refused, cancelling twice is
     * nothing. */
    for (int attempt = 0; rc == APP_EVERSION && attempt < ORD_SETTLE_ATTEMPTS; attempt++) {
        app_error_clear(err);
        size_t n = 0;
        if (attempt == 0 && known) {
            *o = *known;
            rc = 0;
        } else {
            rc = ord_load(ctx, id, 0, o, err);
        }
        if (rc == 0 && o->status == ORD_STATUS_NONE)
            rc = app_error_set(err, APP_ENOTFOUND, "order not found");
        if (rc == 0)
            rc = kind == ORD_EV_CONFIRMED ? ord_decide_confirm(o, ev, &n, err)
                 : kind == ORD_EV_SHIPPED ? ord_decide_ship(o, ev, &n, err)
                                          : ord_decide_cancel(o, reason, ev, &n, err);
        int64_t before = o->version;
        if (rc == 0 && n == 1) {
            ord_apply(o, ev); /* the reply, recorded with the event under an Idempotency-Key */
            rc = ord_append(ctx, id, before, ev, 0, true, o, err);
        }
        if (rc == 0 && n == 1)
            ord_committed(ctx, before, o);
    }
    if (rc == 0 && out)
        *out = *o;
    free(o);
    free(ev);
    return rc;
}

int ord_settle(const bus_ctx *ctx, const char *id, ord_reason reason, ord_order *out,
               app_error *err)
{
    return ord_change(ctx, id, NULL,
                      reason == ORD_REASON_NONE ? ORD_EV_CONFIRMED : ORD_EV_CANCELLED, reason, out,
                      err);
}

int ord_settle_loaded(const bus_ctx *ctx, const ord_order *o, ord_reason reason, app_error *err)
{
    return ord_change(ctx, o->id, o,
                      reason == ORD_REASON_NONE ? ORD_EV_CONFIRMED : ORD_EV_CANCELLED, reason, NULL,
                      err);
}

int ord_ship(const bus_ctx *ctx, const char *id, ord_order *out, app_error *err)
{
    return ord_change(ctx, id, NULL, ORD_EV_SHIPPED, ORD_REASON_NONE, out, err);
}

cJSON *ord_to_json(const ord_order *o)
{
    cJSON *j = cJSON_CreateObject();
    cJSON *lines = NULL;
    bool ok = j && cJSON_AddStringToObject(j, "id", o->id) &&
              cJSON_AddStringToObject(j, "customerId", o->customer_id) &&
              (lines = cJSON_AddArrayToObject(j, "lines")) != NULL;
    for (size_t i = 0; ok && i < o->n_lines; i++) {
        const ord_line *l = &o->lines[i];
        cJSON *lj = cJSON_CreateObject();
        if (!lj || !cJSON_AddItemToArray(lines, lj)) {
            cJSON_Delete(lj);
            ok = false;
            break;
        }
        cJSON *price = l->priced ? money_to_json(&l->unit_price) : cJSON_CreateNull();
        ok = cJSON_AddStringToObject(lj, "sku", l->sku) &&
             cJSON_AddNumberToObject(lj, "quantity", (double)l->quantity) && price &&
             cJSON_AddItemToObject(lj, "unitPrice", price);
        if (!ok && price && !cJSON_GetObjectItemCaseSensitive(lj, "unitPrice"))
            cJSON_Delete(price);
    }
    cJSON *total = ok ? (o->has_total ? money_to_json(&o->total) : cJSON_CreateNull()) : NULL;
    const char *reason = ord_reason_name(o->reason);
    ok = ok && total && cJSON_AddItemToObject(j, "total", total);
    if (!ok && total && !cJSON_GetObjectItemCaseSensitive(j, "total"))
        cJSON_Delete(total);
    ok = ok && cJSON_AddStringToObject(j, "status", ord_status_name(o->status)) &&
         (reason ? cJSON_AddStringToObject(j, "reason", reason) != NULL
                 : cJSON_AddNullToObject(j, "reason") != NULL) &&
         cJSON_AddNumberToObject(j, "version", (double)o->version) &&
         cJSON_AddStringToObject(j, "createdAt", o->created_at);
    if (ok)
        return j;
    cJSON_Delete(j);
    return NULL;
}

int ord_reply(const ord_order *o, cJSON **out, app_error *err)
{
    *out = ord_to_json(o);
    return *out ? 0 : app_error_set(err, APP_ENOMEM, "out of memory rendering an order");
}
