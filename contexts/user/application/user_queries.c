/* Queries user.get_user {"id"} (from the read model; from the log while the read model has
 * not caught up with a new user), user.get_user_events {"id"} (the
 * audit trail) and user.describe_customer {"id"} (the authoritative status other contexts
 * ask for when their own copies lag), both straight from the event log. */
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
    if (!text) {
        /* The read model follows the log a moment later: a user just registered is read from
         * the log instead, so that a client reads what it wrote. */
        user_state state;
        rc = user_load(ctx, id, &state, err);
        return rc != 0 ? rc : user_reply(&state, out, err);
    }
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
    char stream[USER_STREAM_ID_LEN];
    user_stream_id(stream, id);
    return event_stream_reply(ctx, USER_CONTEXT, stream, payload, "user not found", out, err);
}

int user_describe_customer(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    *out = NULL;
    const char *id = NULL;
    user_state state;
    int rc = user_payload_id(payload, &id, err);
    if (rc == 0)
        rc = user_load(ctx, id, &state, err);
    if (rc != 0)
        return rc;
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddStringToObject(o, "id", state.id) ||
        !cJSON_AddStringToObject(o, "status", user_status_name(state.status))) {
        cJSON_Delete(o);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    *out = o;
    return 0;
}
