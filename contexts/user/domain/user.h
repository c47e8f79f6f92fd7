/* The user aggregate: its state, its events, the pure decide functions that turn a command
 * into events (or an error), and apply, which folds an event into the state. */
#ifndef USER_DOMAIN_USER_H
#define USER_DOMAIN_USER_H

#include <stddef.h>
#include <stdint.h>

#include "contexts/user/domain/email.h"
#include "contexts/user/domain/name.h"
#include "core/error.h"
#include "core/uuid.h"

#define USER_EVENT_REGISTERED     "user.user.registered"
#define USER_EVENT_EMAIL_CHANGED  "user.user.email_changed"
#define USER_EVENT_DEACTIVATED    "user.user.deactivated"
#define USER_EVENT_SCHEMA_VERSION 1

/* The shape of a user snapshot's state; a snapshot in another version is not read. */
#define USER_SNAPSHOT_SCHEMA_VERSION 1

#define USER_STREAM_PREFIX "user-"
#define USER_STREAM_ID_LEN (sizeof USER_STREAM_PREFIX - 1 + UUID_STR_LEN)

typedef enum user_status {
    USER_STATUS_NONE = 0, /* no events yet */
    USER_STATUS_ACTIVE,
    USER_STATUS_DEACTIVATED,
} user_status;

typedef struct user_state {
    char id[UUID_STR_LEN];
    char email[USER_EMAIL_MAX + 1];
    char name[USER_NAME_MAX_BYTES + 1];
    user_status status;
    int64_t version; /* stream version of the last applied event, 0 for none */
} user_state;

typedef enum user_event_kind {
    USER_EV_UNKNOWN = 0, /* a type this code does not know: skipped, for forward compatibility */
    USER_EV_REGISTERED,
    USER_EV_EMAIL_CHANGED,
    USER_EV_DEACTIVATED,
} user_event_kind;

/* A domain event; which fields are set depends on kind. */
typedef struct user_event {
    user_event_kind kind;
    char user_id[UUID_STR_LEN];
    char email[USER_EMAIL_MAX + 1];          /* registered, email_changed */
    char previous_email[USER_EMAIL_MAX + 1]; /* email_changed */
    char name[USER_NAME_MAX_BYTES + 1];      /* registered */
} user_event;

/* At most this many events come out of one decision. */
#define USER_MAX_DECIDED 1

/* "active", "deactivated" (or "unknown" for NONE). */
const char *user_status_name(user_status status);

/* Register: always one registered event for the new id (ids come from the caller). */
void user_decide_register(const char *id, const user_email *email, const user_name *name,
                          user_event *out);
/* Change email: APP_ENOTFOUND for no user, APP_ECONFLICT "user is deactivated"; *n_out = 0
 * when email is exactly the current one, else one email_changed event in out[0]. */
int user_decide_change_email(const user_state *state, const user_email *email,
                             user_event out[USER_MAX_DECIDED], size_t *n_out, app_error *err);
/* Deactivate: idempotent, *n_out = 0 when already deactivated. APP_ENOTFOUND for no user. */
int user_decide_deactivate(const user_state *state, user_event out[USER_MAX_DECIDED], size_t *n_out,
                           app_error *err);

/* Folds ev into state and advances its version by one. Unknown kinds only advance it. */
void user_apply(user_state *state, const user_event *ev);

/* The event type name of a kind, or NULL for USER_EV_UNKNOWN. */
const char *user_event_type(user_event_kind kind);
/* JSON object text of the event's data; *out owned by the caller (free). APP_ENOMEM. */
int user_event_encode(const user_event *ev, char **out, app_error *err);
/* Decodes a stored event. An unknown type, or a schema version newer than this code knows,
 * gives kind USER_EV_UNKNOWN and 0; a known type whose data does not fit is APP_EINTERNAL. */
int user_event_decode(const char *type, int schema_version, const char *data, user_event *out,
                      app_error *err);

/* The state as snapshot JSON (USER_SNAPSHOT_SCHEMA_VERSION): {"id","email","name","status"};
 * *out owned by the caller. APP_EINVAL for a state with no user. */
int user_snapshot_encode(const user_state *state, char **out, app_error *err);
/* The user that snapshot text describes at stream version. APP_EINVAL when it does not fit. */
int user_snapshot_decode(const char *text, int64_t version, user_state *out, app_error *err);

#endif
