/* What the user handlers share: the payload id, loading the aggregate from its stream,
 * appending decided events, and the user's JSON form. Private to the user context. */
#ifndef USER_APPLICATION_USER_STREAM_H
#define USER_APPLICATION_USER_STREAM_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "contexts/user/domain/user.h"
#include "core/error.h"
#include "kernel/bus.h"
#include "ports/event_store.h"

/* The "id" of a payload object, borrowed. APP_EBADREQ for a non-object payload or a
 * non-string id, APP_EINVAL when missing, APP_ENOTFOUND when it is not a canonical UUID
 * (no user can have it). */
int user_payload_id(const cJSON *payload, const char **out, app_error *err);

/* "user-<id>" into out. */
void user_stream_id(char out[USER_STREAM_ID_LEN], const char *id);

/* Folds the stream of user id into *out, from its snapshot when it has a usable one.
 * APP_ENOTFOUND when the stream has no events; the store's errors pass through. */
int user_load(const bus_ctx *ctx, const char *id, user_state *out, app_error *err);

/* Optional unique-key changes that go with an append. */
typedef struct user_claims {
    const es_claim *claims;
    size_t n_claims;
    const es_claim *releases;
    size_t n_releases;
} user_claims;

/* Appends n decided events (at most USER_MAX_DECIDED) to the stream of user id with the
 * given expected version, each with a new event id and metadata from ctx->meta. after is the
 * user the events make, the command's reply: recorded with them under an Idempotency-Key.
 * The store's errors (APP_EVERSION, APP_ECONFLICT, APP_EUNAVAIL) pass through. */
int user_append(const bus_ctx *ctx, const char *id, int64_t expected_version,
                const user_event *events, size_t n, const user_claims *claims,
                const user_state *after, app_error *err);

/* After an append from version before took the user to *state (committed): saves the state
 * as a snapshot when the stream crossed a multiple of snapshots.user. Best effort. */
void user_committed(const bus_ctx *ctx, int64_t before, const user_state *state);

/* {"id","email","name","status","version"}; owned by the caller, NULL when out of memory. */
cJSON *user_state_to_json(const user_state *s);
/* Sets *out to user_state_to_json(s), or APP_ENOMEM. */
int user_reply(const user_state *s, cJSON **out, app_error *err);
/* The error for an email claimed by another user: APP_ECONFLICT with field "email". */
int user_email_taken(app_error *err);

#endif
