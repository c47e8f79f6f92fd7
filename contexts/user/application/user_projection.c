/* The user projection: keeps "user:<id>" = {"id","email","name","status","version"} in the
 * read store. Delivery is at least once, so an event at or below the stored version is
 * skipped; a gap (a lost or stale read model) is filled by refolding the stream. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "contexts/user/application/user_app.h"
#include "contexts/user/application/user_stream.h"
#include "contexts/user/domain/user.h"
#include "core/json.h"
#include "core/uuid.h"

/* Copies a string member into dst; false when missing, not a string or too long. */
static bool proj_string(const cJSON *o, const char *name, char *dst, size_t n)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsString(item) || !item->valuestring || strlen(item->valuestring) >= n)
        return false;
    memcpy(dst, item->valuestring, strlen(item->valuestring) + 1);
    return true;
}

/* Parses a stored read model into *out; false when it is not one we wrote. */
static bool proj_parse(const char *text, user_state *out)
{
    memset(out, 0, sizeof *out);
    cJSON *o = json_parse_n(text, strlen(text));
    char status[16];
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(o, "version");
    bool ok = cJSON_IsObject(o) && proj_string(o, "id", out->id, sizeof out->id) &&
              proj_string(o, "email", out->email, sizeof out->email) &&
              proj_string(o, "name", out->name, sizeof out->name) &&
              proj_string(o, "status", status, sizeof status) &&
              json_exact_int(version, &out->version);
    if (ok) {
        out->status =
            strcmp(status, "deactivated") == 0 ? USER_STATUS_DEACTIVATED : USER_STATUS_ACTIVE;
    }
    cJSON_Delete(o);
    return ok;
}

/* Folds the stream of id up to and including version into *out. */
static int proj_refold(const bus_ctx *ctx, const char *id, int64_t version, user_state *out,
                       app_error *err)
{
    memset(out, 0, sizeof *out);
    if (!ctx->events || !ctx->events->ops)
        return app_error_set(err, APP_EINTERNAL, "user projection has no event store");
    char stream[USER_STREAM_ID_LEN];
    user_stream_id(stream, id);
    es_event_list list = {0};
    int rc = ctx->events->ops->load_stream(ctx->events->self, USER_CONTEXT, stream, 0, &list, err);
    for (size_t i = 0; rc == 0 && i < list.len && list.items[i].version <= version; i++) {
        user_event ev;
        rc = user_event_decode(list.items[i].type, list.items[i].schema_version, list.items[i].data,
                               &ev, err);
        if (rc == 0) {
            user_apply(out, &ev);
            out->version = list.items[i].version;
        }
    }
    es_event_list_free(&list);
    return rc;
}

/* The user's id, from a user stream's id; NULL for any other stream. */
static const char *proj_user_id(const es_event *ev)
{
    const size_t prefix = sizeof USER_STREAM_PREFIX - 1;
    return ev->stream_id && strncmp(ev->stream_id, USER_STREAM_PREFIX, prefix) == 0 &&
                   uuid_valid(ev->stream_id + prefix)
               ? ev->stream_id + prefix
               : NULL;
}

bool user_projection_key(const es_event *ev, char *out, size_t size)
{
    const char *id = proj_user_id(ev);
    return id && (size_t)snprintf(out, size, "%s%s", USER_READ_KEY_PREFIX, id) < size;
}

int user_projection_handle(const bus_ctx *ctx, const es_event *ev, app_error *err)
{
    char key[sizeof USER_READ_KEY_PREFIX + UUID_STR_LEN];
    if (!user_projection_key(ev, key, sizeof key))
        return 0; /* not a user stream */
    const char *id = proj_user_id(ev);
    user_event uev;
    int rc = user_event_decode(ev->type, ev->schema_version, ev->data, &uev, err);
    if (rc != 0)
        return rc;
    if (uev.kind == USER_EV_UNKNOWN)
        return 0; /* written by newer code: the next known event refolds past it */
    if (!ctx->reads || !ctx->reads->ops)
        return app_error_set(err, APP_EINTERNAL, "user projection has no read store");

    char *text = NULL;
    rc = ctx->reads->ops->get(ctx->reads->self, key, &text, err);
    if (rc != 0)
        return rc;
    user_state state;
    bool have = text && proj_parse(text, &state);
    free(text);
    if (have && state.version >= ev->version)
        return 0; /* seen already */
    if (!have)
        memset(&state, 0, sizeof state);
    if (state.version == ev->version - 1) {
        user_apply(&state, &uev);
        state.version = ev->version;
    } else {
        rc = proj_refold(ctx, id, ev->version, &state, err);
        if (rc != 0)
            return rc;
    }
    if (state.status == USER_STATUS_NONE)
        return 0; /* nothing a reader could use yet */

    cJSON *json = user_state_to_json(&state);
    char *value = json ? cJSON_PrintUnformatted(json) : NULL;
    cJSON_Delete(json);
    if (!value)
        return app_error_set(err, APP_ENOMEM, "out of memory rendering a user read model");
    rc = ctx->reads->ops->set(ctx->reads->self, key, value, err);
    free(value);
    return rc;
}
