/* Loading and saving the product aggregate through the event-store port, and its JSON form. */
#include "contexts/inventory/application/product_stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "contexts/inventory/application/inventory_app.h"
#include "core/json.h"
#include "kernel/agg_cache.h"
#include "kernel/event_json.h"
#include "kernel/idempotency.h"
#include "kernel/snapshots.h"

/* snapshots.product and the products kept folded (snapshots.cache): set at start-up,
 * before any handler runs. */
static int inv_snapshot_every;
static agg_cache *inv_cache;

static bool inv_product_copy(void *dst, const void *src)
{
    inv_product *to = dst;
    const inv_product *from = src;
    *to = *from;
    to->reservations = NULL;
    to->cap_reservations = from->n_reservations;
    if (from->n_reservations == 0)
        return true;
    to->reservations = malloc(from->n_reservations * sizeof *to->reservations);
    if (!to->reservations)
        return false;
    memcpy(to->reservations, from->reservations, from->n_reservations * sizeof *to->reservations);
    return true;
}

static void inv_product_release(void *state)
{
    inv_product_free(state);
}

static const agg_cache_kind inv_cache_kind = {sizeof(inv_product), inv_product_copy,
                                              inv_product_release};

int inv_configure(const app_config *cfg, app_error *err)
{
    inv_snapshot_every = cfg->snapshots.product;
    agg_cache_free(inv_cache);
    inv_cache = NULL;
    if (cfg->snapshots.cache > 0 &&
        !(inv_cache = agg_cache_new(&inv_cache_kind, (size_t)cfg->snapshots.cache)))
        return app_error_set(err, APP_ENOMEM, "out of memory for the product cache");
    return 0;
}

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

/* Starts *out from the stream's snapshot when there is a usable one at or below
 * max_version (0: any); returns the version to read the events after. */
static int64_t inv_from_snapshot(const bus_ctx *ctx, const char *sku, const char *stream,
                                 int64_t max_version, inv_product *out)
{
    es_snapshot snap;
    snap_load(ctx, INV_CONTEXT, stream, INV_SNAPSHOT_SCHEMA_VERSION, &snap);
    int64_t after = 0;
    if (snap.state && (max_version == 0 || snap.version <= max_version)) {
        app_error serr = APP_ERROR_INIT;
        if (inv_snapshot_decode(snap.state, snap.version, out, &serr) != 0)
            snap_ignored(INV_CONTEXT, stream, snap.version, serr.message);
        else if (strcmp(out->sku, sku) != 0)
            snap_ignored(INV_CONTEXT, stream, snap.version, "it is another product's");
        else
            after = snap.version;
        if (after == 0) {
            inv_product_free(out);
            memset(out, 0, sizeof *out);
        }
    }
    es_snapshot_free(&snap);
    return after;
}

/* Folds list from index first into out, up to max_version (0: all); last_id gets the id of
 * the last event folded, if any. */
static int inv_fold(const es_event_list *list, size_t first, int64_t max_version, inv_product *out,
                    char *last_id, size_t last_size, app_error *err)
{
    for (size_t i = first; i < list->len; i++) {
        const es_event *e = &list->items[i];
        if (max_version > 0 && e->version > max_version)
            break;
        inv_event ev;
        int rc = inv_event_decode(e->type, e->schema_version, e->data, &ev, err);
        if (rc == 0)
            rc = inv_apply(out, &ev, err);
        if (rc != 0)
            return rc;
        out->version = e->version;
        snprintf(last_id, last_size, "%s", e->event_id);
    }
    return 0;
}

int inv_load(const bus_ctx *ctx, const char *sku, int64_t max_version, inv_product *out,
             app_error *err)
{
    memset(out, 0, sizeof *out);
    char stream[INV_STREAM_ID_LEN], last_id[64] = "";
    inv_stream_id(stream, sku);
    es_event_list list = {0};
    size_t first = 0;
    int64_t after = 0;
    int rc = 0;
    /* The latest state only: a load up to a version (a projection filling a gap) folds. */
    if (max_version == 0)
        rc = agg_cache_begin(inv_cache, ctx->events, INV_CONTEXT, stream, out, &after, &list,
                             &first, err);
    if (rc == 0 && after > 0)
        rc = inv_fold(&list, first, 0, out, last_id, sizeof last_id, err);
    else if (rc == 0) {
        /* From the snapshot, a page at a time: a product's stream runs to thousands of events,
         * and a load holds one page of them, never the whole stream. Up to a version, no more
         * rows than that. */
        after = inv_from_snapshot(ctx, sku, stream, max_version, out);
        const es_store_ops *ops = ctx->events->ops;
        for (bool more = max_version == 0 || max_version > after; rc == 0 && more;) {
            es_event_list_free(&list);
            size_t limit = INV_LOAD_PAGE;
            if (max_version > 0 && (size_t)(max_version - after) < limit)
                limit = (size_t)(max_version - after);
            rc = ops->read_stream
                     ? ops->read_stream(ctx->events->self, INV_CONTEXT, stream, after, limit, &list,
                                        err)
                     : ops->load_stream(ctx->events->self, INV_CONTEXT, stream, after, &list, err);
            if (rc == 0)
                rc = inv_fold(&list, 0, max_version, out, last_id, sizeof last_id, err);
            more = ops->read_stream && list.len == limit && out->version > after &&
                   (max_version == 0 || out->version < max_version);
            after = out->version;
        }
    }
    if (rc == 0 && max_version == 0 && last_id[0])
        agg_cache_put(inv_cache, stream, out, out->version, last_id);
    es_event_list_free(&list);
    return rc;
}

/* Appends evs[0..n), decided in order on the state at expected_version, each with its own
 * command's metadata (metas[i]); reply (may be NULL) is recorded with them when the command
 * runs under an Idempotency-Key. last_id gets the last event's id. */
static int inv_append(const bus_ctx *ctx, const char *sku, int64_t expected_version,
                      const inv_event *evs, const bus_meta *const *metas, size_t n,
                      const cJSON *reply, char last_id[UUID_STR_LEN], app_error *err)
{
    es_new_event *rows = calloc(n, sizeof *rows);
    char(*ids)[UUID_STR_LEN] = calloc(n, sizeof *ids);
    char **texts = calloc(2 * n, sizeof *texts); /* each event's data and metadata */
    int rc = rows && ids && texts ? 0 : app_error_set(err, APP_ENOMEM, "out of memory appending");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char **data = &texts[2 * i], **metadata = &texts[2 * i + 1];
        *metadata = event_metadata_from_meta(metas[i]);
        rc = *metadata ? inv_event_encode(&evs[i], data, err)
                       : app_error_set(err, APP_ENOMEM, "out of memory encoding metadata");
        uuid_v4(ids[i]);
        rows[i] = (es_new_event){ids[i], inv_event_type(evs[i].kind),
                                 inv_event_schema_version(evs[i].kind), *data, *metadata};
    }
    if (rc == 0) {
        char stream[INV_STREAM_ID_LEN];
        inv_stream_id(stream, sku);
        es_append_req req = {
            .context = INV_CONTEXT,
            .stream_id = stream,
            .expected_version = expected_version,
            .events = rows,
            .n_events = n,
        };
        rc = bus_append(ctx, &req, reply, NULL, err);
        memcpy(last_id, ids[n - 1], UUID_STR_LEN);
    }
    for (size_t i = 0; texts && i < 2 * n; i++)
        free(texts[i]);
    free(texts);
    free(rows);
    free(ids);
    return rc;
}

/* After p's events from before on are appended, as last_id last: caches p, and saves it as
 * a snapshot when the stream crossed a multiple of snapshots.product (best effort: a failure
 * is logged, never returned). */
static void inv_committed(const bus_ctx *ctx, const inv_product *p, int64_t before,
                          const char *last_id)
{
    char stream[INV_STREAM_ID_LEN];
    inv_stream_id(stream, p->sku);
    agg_cache_put(inv_cache, stream, p, p->version, last_id);
    if (snap_due(inv_snapshot_every, before, p->version)) {
        /* p is now the state the append committed, at the version it committed. */
        char *state = NULL;
        app_error serr = APP_ERROR_INIT;
        if (inv_snapshot_encode(p, &state, &serr) == 0)
            snap_save(ctx, INV_CONTEXT, stream, p->version, INV_SNAPSHOT_SCHEMA_VERSION, state);
        free(state);
    }
}

int inv_commit(const bus_ctx *ctx, inv_product *p, const inv_event *ev, cJSON **reply,
               app_error *err)
{
    int64_t before = p->version;
    char last_id[UUID_STR_LEN];
    int rc = inv_apply(p, ev, err);
    if (rc == 0 && reply)
        rc = inv_reply(p, reply, err);
    if (rc == 0)
        rc = inv_append(ctx, ev->sku, before, ev, &ctx->meta, 1, reply ? *reply : NULL, last_id,
                        err);
    if (rc != 0 && reply) {
        cJSON_Delete(*reply);
        *reply = NULL;
    }
    if (rc == 0)
        inv_committed(ctx, p, before, last_id);
    return rc;
}

int inv_commit_many(const bus_ctx *ctx, inv_product *p, int64_t before, const inv_event *evs,
                    const bus_meta *const *metas, size_t n, app_error *err)
{
    if (n == 0)
        return 0;
    char last_id[UUID_STR_LEN];
    int rc = inv_append(ctx, p->sku, before, evs, metas, n, NULL, last_id, err);
    if (rc == 0)
        inv_committed(ctx, p, before, last_id);
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
