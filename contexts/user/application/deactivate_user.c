/* Command user.deactivate_user {"id"}: idempotent; a second call changes nothing and answers
 * the user as it is. The email stays claimed: the user still exists. */
#include "contexts/user/application/user_app.h"
#include "contexts/user/application/user_stream.h"
#include "contexts/user/domain/user.h"

int user_deactivate_user(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    *out = NULL;
    app_error_clear(err);
    const char *id = NULL;
    int rc = user_payload_id(payload, &id, err);
    if (rc != 0)
        return rc;
    user_state state;
    rc = user_load(ctx, id, &state, err);
    if (rc != 0)
        return rc;
    user_event evs[USER_MAX_DECIDED];
    size_t n = 0;
    rc = user_decide_deactivate(&state, evs, &n, err);
    if (rc != 0 || n == 0)
        return rc != 0 ? rc : user_reply(&state, out, err);
    user_state after = state;
    for (size_t i = 0; i < n; i++)
        user_apply(&after, &evs[i]);
    rc = user_append(ctx, id, state.version, evs, n, NULL, &after, err);
    if (rc != 0)
        return rc; /* APP_EVERSION: the bus runs us again on the fresh stream */
    user_committed(ctx, state.version, &after);
    return user_reply(&after, out, err);
}
