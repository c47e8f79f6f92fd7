/* Rendering events and event metadata as JSON, for handlers that append and for routes
 * that show the audit trail. */
#include "kernel/event_json.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "core/json.h"
#include "kernel/http_types.h"

/* Adds name: value when value is non-empty, or always when required. */
static bool event_add(cJSON *o, const char *name, const char *value, bool required)
{
    if (!required && (!value || !*value))
        return true;
    return cJSON_AddStringToObject(o, name, value ? value : "") != NULL;
}

char *event_metadata_from_meta(const bus_meta *meta)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = o != NULL;
    if (ok && meta) {
        ok = event_add(o, "correlationId", meta->correlation_id, true) &&
             event_add(o, "causationId", meta->causation_id, true) &&
             event_add(o, "messageId", meta->message_id, false) &&
             event_add(o, "actor", meta->actor, false) &&
             event_add(o, "traceparent", meta->traceparent, false);
    }
    char *text = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return text;
}

/* Parses a stored JSON object; anything else (never written by this code) becomes {}. */
static cJSON *event_object(const char *text)
{
    cJSON *o = text ? json_parse_n(text, strlen(text)) : NULL;
    if (cJSON_IsObject(o))
        return o;
    cJSON_Delete(o);
    return cJSON_CreateObject();
}

/* Adds item to o under name, taking it over; false (item freed) when it cannot. */
static bool event_add_item(cJSON *o, const char *name, cJSON *item)
{
    if (!item)
        return false;
    if (!cJSON_AddItemToObject(o, name, item)) {
        cJSON_Delete(item);
        return false;
    }
    return true;
}

cJSON *event_to_json(const es_event *ev)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    bool ok = event_add(o, "eventId", ev->event_id, true) && event_add(o, "type", ev->type, true) &&
              cJSON_AddNumberToObject(o, "schemaVersion", ev->schema_version) &&
              event_add(o, "streamId", ev->stream_id, true) &&
              cJSON_AddNumberToObject(o, "version", (double)ev->version) &&
              cJSON_AddNumberToObject(o, "position", (double)ev->position) &&
              event_add_item(o, "data", event_object(ev->data)) &&
              event_add_item(o, "metadata", event_object(ev->metadata)) &&
              event_add(o, "recordedAt", ev->recorded_at, true);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

int event_stream_reply(const bus_ctx *ctx, const char *context, const char *stream_id,
                       const cJSON *payload, const char *not_found, cJSON **out, app_error *err)
{
    *out = NULL;
    size_t limit;
    int64_t after;
    int rc = http_page_of(payload, &limit, &after, err);
    if (rc != 0)
        return rc;
    es_event_list list = {0};
    const es_store_ops *ops = ctx->events->ops;
    /* One more than the page, to know whether another follows. */
    rc = ops->read_stream
             ? ops->read_stream(ctx->events->self, context, stream_id, after, limit + 1, &list, err)
             : ops->load_stream(ctx->events->self, context, stream_id, after, &list, err);
    if (rc != 0)
        return rc;
    if (list.len == 0 && after == 0) {
        es_event_list_free(&list);
        return app_error_set(err, APP_ENOTFOUND, "%s", not_found);
    }
    bool more = list.len > limit;
    size_t shown = more ? limit : list.len;
    cJSON *reply = cJSON_CreateObject();
    cJSON *items = reply ? cJSON_AddArrayToObject(reply, "items") : NULL;
    for (size_t i = 0; items && i < shown; i++) {
        cJSON *ev = event_to_json(&list.items[i]);
        if (!ev || !cJSON_AddItemToArray(items, ev)) {
            cJSON_Delete(ev);
            items = NULL;
        }
    }
    char next[32];
    snprintf(next, sizeof next, "%lld", shown ? (long long)list.items[shown - 1].version : 0LL);
    es_event_list_free(&list);
    if (items && more && !cJSON_AddStringToObject(reply, "next", next))
        items = NULL;
    if (!items) {
        cJSON_Delete(reply);
        return app_error_set(err, APP_ENOMEM, "out of memory rendering events");
    }
    *out = reply;
    return 0;
}

void event_bus_meta(const es_event *ev, bus_meta *meta)
{
    const char *correlation = NULL, *traceparent = NULL;
    cJSON *md = cJSON_Parse(ev->metadata ? ev->metadata : "{}");
    if (md) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(md, "correlationId");
        if (cJSON_IsString(c))
            correlation = c->valuestring;
        c = cJSON_GetObjectItemCaseSensitive(md, "traceparent");
        if (cJSON_IsString(c))
            traceparent = c->valuestring;
    }
    bus_meta_init(meta, correlation, ev->event_id);
    snprintf(meta->actor, sizeof meta->actor, "subscriber");
    /* What handling the event causes joins the trace of the request that caused the event. */
    if (traceparent && strlen(traceparent) < sizeof meta->traceparent)
        snprintf(meta->traceparent, sizeof meta->traceparent, "%s", traceparent);
    cJSON_Delete(md);
}
