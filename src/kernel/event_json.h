/* Events as JSON, shared by every context: the metadata object a command's events carry
 * (from the bus metadata), and the audit-trail shape API.md gives for a stored event. */
#ifndef KERNEL_EVENT_JSON_H
#define KERNEL_EVENT_JSON_H

#include <cjson/cJSON.h>

#include "kernel/bus.h"
#include "ports/event_store.h"

/* {"correlationId","causationId","messageId","actor","traceparent"} from meta; the last
 * three are left out when empty. Returns JSON object text owned by the caller (free), or
 * NULL when out of memory. */
char *event_metadata_from_meta(const bus_meta *meta);

/* The metadata of a message caused by ev: ev's correlation id carries on, ev itself is the
 * cause; the actor is "subscriber". */
void event_bus_meta(const es_event *ev, bus_meta *meta);

/* {"eventId","type","schemaVersion","streamId","version","position","data":{...},
 * "metadata":{...},"recordedAt"}, with data and metadata parsed back into objects (an
 * unparsable one becomes {}). Owned by the caller (cJSON_Delete); NULL when out of memory. */
cJSON *event_to_json(const es_event *ev);

/* A page of the audit trail of one stream as {"items":[event, ...], "next"?}, oldest first:
 * the payload's "limit" events (100 when absent) after its "after" cursor, and "next", the
 * cursor of the following page, when more follow. APP_ENOTFOUND with the message not_found
 * when the stream has no events; APP_EBADREQ for a cursor it never gave; the store's errors
 * pass through. */
int event_stream_reply(const bus_ctx *ctx, const char *context, const char *stream_id,
                       const cJSON *payload, const char *not_found, cJSON **out, app_error *err);

#endif
