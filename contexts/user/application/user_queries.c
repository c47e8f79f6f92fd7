/* Queries user.get_user {"id"} (from the read model) and user.get_user_events {"id"} (the
 * audit trail, straight from the event log). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "contexts/user/application/user_app.h"
#include "contexts/user/application/user_stream.h"
#include "core/json.h"
#include "kernel/event_json.h"

int user_get_user(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    *out = NULL;
    app_error_clear(err);
    const char *id = NULL;
    int rc = user_payload_id(payload, &id, err);
    if (rc != 0)
        return rc;
    if (!ctx->reads || !ctx->reads->ops)
        return app_error_set(err, APP_EINTERNAL, "user query called without a read store");
    char key[sizeof USER_READ_KEY_PREFIX + UUID_STR_LEN];
    snprintf(key, sizeof key, "%s%s", USER_READ_KEY_PREFIX, id);
    char *text = NULL;
    rc = ctx->reads->ops->get(ctx->reads->self, key, &text, err);
    if (rc != 0)
        return rc;
    if (!text)
        return app_error_set(err, APP_ENOTFOUND, "user not found");
    cJSON *user = json_parse_n(text, strlen(text));
    free(text);
    if (!cJSON_IsObject(user)) {
        cJSON_Delete(user);
        return app_error_set(err, APP_EINTERNAL, "read model %s is not a JSON object", key);
    }
    *out = user;
    return 0;
}

int user_get_user_events(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    *out = NULL;
    app_error_clear(err);
    const char *id = NULL;
    int rc = user_payload_id(payload, &id, err);
    if (rc != 0)
        return rc;
    if (!ctx->events || !ctx->events->ops)
        return app_error_set(err, APP_EINTERNAL, "user query called without an event store");
    char stream[USER_STREAM_ID_LEN];
    user_stream_id(stream, id);
    es_event_list list = {0};
    rc = ctx->events->ops->load_stream(ctx->events->self, USER_CONTEXT, stream, 0, &list, err);
    if (rc != 0)
        return rc;
    if (list.len == 0) {
        es_event_list_free(&list);
        return app_error_set(err, APP_ENOTFOUND, "user not found");
    }
    cJSON *reply = cJSON_CreateObject();
    cJSON *items = reply ? cJSON_AddArrayToObject(reply, "items") : NULL;
    for (size_t i = 0; items && i < list.len; i++) {
        cJSON *ev = event_to_json(&list.items[i]);
        if (!ev || !cJSON_AddItemToArray(items, ev)) {
            cJSON_Delete(ev);
            items = NULL;
        }
    }
    es_event_list_free(&list);
    if (!items) {
        cJSON_Delete(reply);
        return app_error_set(err, APP_ENOMEM, "out of memory rendering user events");
    }
    *out = reply;
    return 0;
}
