/* Command user.register_user {"email","name"}: a new user with a new id, its email claimed
 * in the same append, so two registrations of one address never both succeed. */
#include <string.h>

#include "contexts/user/application/user_app.h"
#include "contexts/user/application/user_stream.h"
#include "contexts/user/domain/user.h"
#include "core/json.h"
#include "core/uuid.h"

int user_register_user(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    *out = NULL;
    app_error_clear(err);
    if (!cJSON_IsObject(payload))
        return app_error_set(err, APP_EBADREQ, "payload must be a JSON object");
    /* Check every field before answering, so one reply lists every problem. */
    const char *email_in = NULL, *name_in = NULL;
    user_email email;
    user_name name;
    if (json_req_string(payload, "email", &email_in, err) == 0)
        user_email_parse(&email, email_in, err);
    if (json_req_string(payload, "name", &name_in, err) == 0)
        user_name_parse(&name, name_in, err);
    if (err->code != 0)
        return err->code;

    char id[UUID_STR_LEN];
    uuid_v4(id);
    user_event ev;
    user_decide_register(id, &email, &name, &ev);
    user_state state;
    memset(&state, 0, sizeof state);
    user_apply(&state, &ev);
    es_claim claim = {USER_CLAIM_EMAIL, email.key};
    user_claims claims = {.claims = &claim, .n_claims = 1};
    int rc = user_append(ctx, id, ES_NO_STREAM, &ev, 1, &claims, &state, err);
    if (rc == APP_ECONFLICT)
        return user_email_taken(err);
    if (rc == APP_EVERSION) /* a fresh random id: practically never */
        return app_error_set(err, APP_ECONFLICT, "user %s already exists", id);
    if (rc != 0)
        return rc;
    user_committed(ctx, 0, &state);
    return user_reply(&state, out, err);
}
