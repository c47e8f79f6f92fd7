/* Loading and saving the user aggregate through the event-store port, and its JSON form. */
#include "contexts/user/application/user_stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "contexts/user/application/user_app.h"
#include "core/json.h"
#include "core/uuid.h"
#include "kernel/event_json.h"
#include "kernel/idempotency.h"
#include "kernel/snapshots.h"

/* snapshots.user: set once at start-up, before any handler runs. */
static int user_snapshot_every;

int user_configure(const app_config *cfg, app_error *err)
{
    (void)err;
    user_snapshot_every = cfg->snapshots.user;
    return 0;
}

int user_payload_id(const cJSON *payload, const char **out, app_error *err)
{
    *out = NULL;
    if (!cJSON_IsObject(payload))
        return app_error_set(err, APP_EBADREQ, "payload must be a JSON object");
    const char *id = NULL;
    int rc = json_req_string(payload, "id", &id, err);
    if (rc != 0)
        return rc;
    if (!uuid_valid(id))
        return app_error_set(err, APP_ENOTFOUND, "user not found");
    *out = id;
    return 0;
}

void user_stream_id(char out[USER_STREAM_ID_LEN], const char *id)
{
    snprintf(out, USER_STREAM_ID_LEN, "%s%s", USER_STREAM_PREFIX, id);
}

static int user_need_store(const bus_ctx *ctx, app_error *err)
{
    if (!ctx->events || !ctx->events->ops)
        return app_error_set(err, APP_EINTERNAL, "user handler called without an event store");
    return 0;
}

/* Starts *out from the stream's snapshot when it has a usable one; returns the version to
 * read the events after (0: the whole stream). */
static int64_t user_from_snapshot(const bus_ctx *ctx, const char *id, const char *stream,
                                  user_state *out)
{
    es_snapshot snap;
    snap_load(ctx, USER_CONTEXT, stream, USER_SNAPSHOT_SCHEMA_VERSION, &snap);
    int64_t after = 0;
    if (snap.state) {
        app_error serr = APP_ERROR_INIT;
        if (user_snapshot_decode(snap.state, snap.version, out, &serr) != 0)
            snap_ignored(USER_CONTEXT, stream, snap.version, serr.message);
        else if (strcmp(out->id, id) != 0)
            snap_ignored(USER_CONTEXT, stream, snap.version, "it is another user's");
        else
            after = snap.version;
        if (after == 0)
            memset(out, 0, sizeof *out);
    }
    es_snapshot_free(&snap);
    return after;
}

int user_load(const bus_ctx *ctx, const char *id, user_state *out, app_error *err)
{
    memset(out, 0, sizeof *out);
    int rc = user_need_store(ctx, err);
    if (rc != 0)
        return rc;
    char stream[USER_STREAM_ID_LEN];
    user_stream_id(stream, id);
    int64_t after = user_from_snapshot(ctx, id, stream, out);
    es_event_list list = {0};
    rc = ctx->events->ops->load_stream(ctx->events->self, USER_CONTEXT, stream, after, &list, err);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < list.len && rc == 0; i++) {
        user_event ev;
        rc = user_event_decode(list.items[i].type, list.items[i].schema_version, list.items[i].data,
                               &ev, err);
        if (rc == 0) {
            user_apply(out, &ev);
            out->version = list.items[i].version;
        }
    }
    es_event_list_free(&list);
    /* No events and no snapshot, or only events this code does not know: no user. */
    if (rc == 0 && out->status == USER_STATUS_NONE)
        rc = app_error_set(err, APP_ENOTFOUND, "user not found");
    return rc;
}

void user_committed(const bus_ctx *ctx, int64_t before, const user_state *state)
{
    if (!snap_due(user_snapshot_every, before, state->version))
        return;
    char stream[USER_STREAM_ID_LEN], *text = NULL;
    app_error serr = APP_ERROR_INIT;
    user_stream_id(stream, state->id);
    if (user_snapshot_encode(state, &text, &serr) == 0)
        snap_save(ctx, USER_CONTEXT, stream, state->version, USER_SNAPSHOT_SCHEMA_VERSION, text);
    free(text);
}

int user_append(const bus_ctx *ctx, const char *id, int64_t expected_version,
                const user_event *events, size_t n, const user_claims *claims,
                const user_state *after, app_error *err)
{
    int rc = user_need_store(ctx, err);
    if (rc != 0)
        return rc;
    if (n == 0 || n > USER_MAX_DECIDED)
        return app_error_set(err, APP_EINTERNAL, "cannot append %zu user events", n);
    char ids[USER_MAX_DECIDED][UUID_STR_LEN];
    char *data[USER_MAX_DECIDED] = {0};
    es_new_event rows[USER_MAX_DECIDED];
    char *metadata = event_metadata_from_meta(ctx->meta);
    if (!metadata)
        rc = app_error_set(err, APP_ENOMEM, "out of memory encoding event metadata");
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = user_event_encode(&events[i], &data[i], err);
        uuid_v4(ids[i]);
        rows[i] = (es_new_event){
            .event_id = ids[i],
            .type = user_event_type(events[i].kind),
            .schema_version = USER_EVENT_SCHEMA_VERSION,
            .data = data[i],
            .metadata = metadata,
        };
    }
    if (rc == 0) {
        char stream[USER_STREAM_ID_LEN];
        user_stream_id(stream, id);
        es_append_req req = {
            .context = USER_CONTEXT,
            .stream_id = stream,
            .expected_version = expected_version,
            .events = rows,
            .n_events = n,
        };
        if (claims) {
            req.claims = claims->claims;
            req.n_claims = claims->n_claims;
            req.releases = claims->releases;
            req.n_releases = claims->n_releases;
        }
        cJSON *reply = ctx->idem ? user_state_to_json(after) : NULL;
        rc = ctx->idem && !reply ? app_error_set(err, APP_ENOMEM, "out of memory rendering a user")
                                 : bus_append(ctx, &req, reply, NULL, err);
        cJSON_Delete(reply);
    }
    for (size_t i = 0; i < n; i++)
        free(data[i]);
    free(metadata);
    return rc;
}

cJSON *user_state_to_json(const user_state *s)
{
    cJSON *o = cJSON_CreateObject();
    if (o && cJSON_AddStringToObject(o, "id", s->id) &&
        cJSON_AddStringToObject(o, "email", s->email) &&
        cJSON_AddStringToObject(o, "name", s->name) &&
        cJSON_AddStringToObject(o, "status", user_status_name(s->status)) &&
        cJSON_AddNumberToObject(o, "version", (double)s->version))
        return o;
    cJSON_Delete(o);
    return NULL;
}

int user_reply(const user_state *s, cJSON **out, app_error *err)
{
    *out = user_state_to_json(s);
    if (!*out)
        return app_error_set(err, APP_ENOMEM, "out of memory rendering a user");
    return 0;
}

int user_email_taken(app_error *err)
{
    /* No detail: the message is the sentence clients see (emails compare case-blind). */
    app_error_set(err, APP_ECONFLICT, "email is already registered");
    app_error_field(err, "email", "is already registered");
    return APP_ECONFLICT;
}
