/* The user aggregate: decisions and folding, plus the JSON form of its events. Pure: no
 * I/O and no ports; ids and values arrive already made. */
#include "contexts/user/domain/user.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

const char *user_status_name(user_status status)
{
    switch (status) {
    case USER_STATUS_ACTIVE:
        return "active";
    case USER_STATUS_DEACTIVATED:
        return "deactivated";
    case USER_STATUS_NONE:
        break;
    }
    return "unknown";
}

/* Copies src into a buffer of size n; false when it does not fit. */
static bool user_copy(char *dst, size_t n, const char *src)
{
    size_t len = strlen(src);
    if (len >= n)
        return false;
    memcpy(dst, src, len + 1);
    return true;
}

void user_decide_register(const char *id, const user_email *email, const user_name *name,
                          user_event *out)
{
    memset(out, 0, sizeof *out);
    out->kind = USER_EV_REGISTERED;
    user_copy(out->user_id, sizeof out->user_id, id);
    user_copy(out->email, sizeof out->email, email->value);
    user_copy(out->name, sizeof out->name, name->value);
}

int user_decide_change_email(const user_state *state, const user_email *email,
                             user_event out[USER_MAX_DECIDED], size_t *n_out, app_error *err)
{
    *n_out = 0;
    if (state->status == USER_STATUS_NONE)
        return app_error_set(err, APP_ENOTFOUND, "user not found");
    if (state->status == USER_STATUS_DEACTIVATED) {
        app_error_set(err, APP_ECONFLICT, "user is deactivated");
        return app_error_detail(err, "a deactivated user's email cannot be changed");
    }
    /* A case-only change is a change: the address is shown as the user typed it. */
    if (strcmp(state->email, email->value) == 0)
        return 0;
    memset(&out[0], 0, sizeof out[0]);
    out[0].kind = USER_EV_EMAIL_CHANGED;
    user_copy(out[0].user_id, sizeof out[0].user_id, state->id);
    user_copy(out[0].email, sizeof out[0].email, email->value);
    user_copy(out[0].previous_email, sizeof out[0].previous_email, state->email);
    *n_out = 1;
    return 0;
}

int user_decide_deactivate(const user_state *state, user_event out[USER_MAX_DECIDED], size_t *n_out,
                           app_error *err)
{
    *n_out = 0;
    if (state->status == USER_STATUS_NONE)
        return app_error_set(err, APP_ENOTFOUND, "user not found");
    if (state->status == USER_STATUS_DEACTIVATED)
        return 0;
    memset(&out[0], 0, sizeof out[0]);
    out[0].kind = USER_EV_DEACTIVATED;
    user_copy(out[0].user_id, sizeof out[0].user_id, state->id);
    *n_out = 1;
    return 0;
}

void user_apply(user_state *state, const user_event *ev)
{
    switch (ev->kind) {
    case USER_EV_REGISTERED:
        user_copy(state->id, sizeof state->id, ev->user_id);
        user_copy(state->email, sizeof state->email, ev->email);
        user_copy(state->name, sizeof state->name, ev->name);
        state->status = USER_STATUS_ACTIVE;
        break;
    case USER_EV_EMAIL_CHANGED:
        user_copy(state->email, sizeof state->email, ev->email);
        break;
    case USER_EV_DEACTIVATED:
        state->status = USER_STATUS_DEACTIVATED;
        break;
    case USER_EV_UNKNOWN:
        break;
    }
    state->version++;
}

const char *user_event_type(user_event_kind kind)
{
    switch (kind) {
    case USER_EV_REGISTERED:
        return USER_EVENT_REGISTERED;
    case USER_EV_EMAIL_CHANGED:
        return USER_EVENT_EMAIL_CHANGED;
    case USER_EV_DEACTIVATED:
        return USER_EVENT_DEACTIVATED;
    case USER_EV_UNKNOWN:
        break;
    }
    return NULL;
}

int user_event_encode(const user_event *ev, char **out, app_error *err)
{
    *out = NULL;
    if (ev->kind == USER_EV_UNKNOWN)
        return app_error_set(err, APP_EINTERNAL, "cannot encode an unknown user event");
    cJSON *o = cJSON_CreateObject();
    bool ok = o && cJSON_AddStringToObject(o, "userId", ev->user_id);
    if (ok && (ev->kind == USER_EV_REGISTERED || ev->kind == USER_EV_EMAIL_CHANGED))
        ok = cJSON_AddStringToObject(o, "email", ev->email) != NULL;
    if (ok && ev->kind == USER_EV_REGISTERED)
        ok = cJSON_AddStringToObject(o, "name", ev->name) != NULL;
    if (ok && ev->kind == USER_EV_EMAIL_CHANGED)
        ok = cJSON_AddStringToObject(o, "previousEmail", ev->previous_email) != NULL;
    char *text = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!text)
        return app_error_set(err, APP_ENOMEM, "out of memory encoding a user event");
    *out = text;
    return 0;
}

/* Copies the string field name of o into dst; false when missing, not a string or too long. */
static bool user_field(const cJSON *o, const char *name, char *dst, size_t n)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(item) && item->valuestring && user_copy(dst, n, item->valuestring);
}

int user_event_decode(const char *type, int schema_version, const char *data, user_event *out,
                      app_error *err)
{
    memset(out, 0, sizeof *out);
    user_event_kind kind = USER_EV_UNKNOWN;
    if (type && strcmp(type, USER_EVENT_REGISTERED) == 0)
        kind = USER_EV_REGISTERED;
    else if (type && strcmp(type, USER_EVENT_EMAIL_CHANGED) == 0)
        kind = USER_EV_EMAIL_CHANGED;
    else if (type && strcmp(type, USER_EVENT_DEACTIVATED) == 0)
        kind = USER_EV_DEACTIVATED;
    if (kind == USER_EV_UNKNOWN || schema_version > USER_EVENT_SCHEMA_VERSION)
        return 0;
    cJSON *o = data ? cJSON_Parse(data) : NULL;
    bool ok = cJSON_IsObject(o) && user_field(o, "userId", out->user_id, sizeof out->user_id);
    if (ok && kind != USER_EV_DEACTIVATED)
        ok = user_field(o, "email", out->email, sizeof out->email);
    if (ok && kind == USER_EV_REGISTERED)
        ok = user_field(o, "name", out->name, sizeof out->name);
    if (ok && kind == USER_EV_EMAIL_CHANGED)
        ok = user_field(o, "previousEmail", out->previous_email, sizeof out->previous_email);
    cJSON_Delete(o);
    if (!ok) {
        app_error_set(err, APP_EINTERNAL, "malformed %s event", type);
        return app_error_detail(err,
                                "the stored data does not have the fields of schema "
                                "version %d",
                                schema_version);
    }
    out->kind = kind;
    return 0;
}

/* ---- snapshots ------------------------------------------------------------------------ */

int user_snapshot_encode(const user_state *state, char **out, app_error *err)
{
    *out = NULL;
    if (state->status == USER_STATUS_NONE)
        return app_error_set(err, APP_EINVAL, "no user to snapshot");
    cJSON *o = cJSON_CreateObject();
    bool ok = o && cJSON_AddStringToObject(o, "id", state->id) &&
              cJSON_AddStringToObject(o, "email", state->email) &&
              cJSON_AddStringToObject(o, "name", state->name) &&
              cJSON_AddStringToObject(o, "status", user_status_name(state->status));
    *out = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return *out ? 0 : app_error_set(err, APP_ENOMEM, "out of memory encoding a user snapshot");
}

int user_snapshot_decode(const char *text, int64_t version, user_state *out, app_error *err)
{
    memset(out, 0, sizeof *out);
    cJSON *o = text ? cJSON_Parse(text) : NULL;
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(o, "status");
    bool ok = cJSON_IsObject(o) && version > 0 && user_field(o, "id", out->id, sizeof out->id) &&
              uuid_valid(out->id) && user_field(o, "email", out->email, sizeof out->email) &&
              out->email[0] && user_field(o, "name", out->name, sizeof out->name) &&
              cJSON_IsString(status);
    if (ok && strcmp(status->valuestring, "active") == 0)
        out->status = USER_STATUS_ACTIVE;
    else if (ok && strcmp(status->valuestring, "deactivated") == 0)
        out->status = USER_STATUS_DEACTIVATED;
    else
        ok = false;
    cJSON_Delete(o);
    if (!ok) {
        memset(out, 0, sizeof *out);
        return app_error_set(err, APP_EINVAL, "user snapshot does not fit its schema");
    }
    out->version = version;
    return 0;
}
