/* Command user.change_user_email {"id","email","expectedVersion"?}: moves the email claim
 * from the old address to the new one in the same append as the event. */
#include <string.h>

#include "contexts/user/application/user_app.h"
#include "contexts/user/application/user_stream.h"
#include "contexts/user/domain/user.h"
#include "core/json.h"

/* Reads the optional expectedVersion; *has is false when it is absent or null. */
static int change_expected_version(const cJSON *payload, bool *has, int64_t *out, app_error *err)
{
    *has = false;
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(payload, "expectedVersion");
    if (!item || cJSON_IsNull(item))
        return 0;
    int rc = json_req_int(payload, "expectedVersion", out, err);
    if (rc == 0)
        *has = true;
    return rc;
}

static int change_mismatch(app_error *err, int64_t expected, int64_t current)
{
    app_error_set(err, APP_EPRECOND, "version mismatch");
    return app_error_detail(err, "expected version %lld but the user is at version %lld",
                            (long long)expected, (long long)current);
}

int user_change_user_email(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    *out = NULL;
    app_error_clear(err);
    const char *id = NULL, *email_in = NULL;
    int rc = user_payload_id(payload, &id, err);
    if (rc != 0)
        return rc;
    bool has_expected;
    int64_t expected = 0;
    user_email email;
    if (json_req_string(payload, "email", &email_in, err) == 0)
        user_email_parse(&email, email_in, err);
    change_expected_version(payload, &has_expected, &expected, err);
    if (err->code != 0)
        return err->code;

    user_state state;
    rc = user_load(ctx, id, &state, err);
    if (rc != 0)
        return rc;
    if (has_expected && expected != state.version)
        return change_mismatch(err, expected, state.version);
    user_event evs[USER_MAX_DECIDED];
    size_t n = 0;
    rc = user_decide_change_email(&state, &email, evs, &n, err);
    if (rc != 0)
        return rc;
    if (n == 0)
        return user_reply(&state, out, err);

    char old_key[USER_EMAIL_MAX + 1];
    user_email_key(old_key, state.email);
    es_claim claim = {USER_CLAIM_EMAIL, email.key};
    es_claim release = {USER_CLAIM_EMAIL, old_key};
    user_claims claims = {0};
    if (strcmp(old_key, email.key) != 0) /* a case-only change keeps its key */
        claims = (user_claims){&claim, 1, &release, 1};
    user_state after = state;
    for (size_t i = 0; i < n; i++)
        user_apply(&after, &evs[i]);
    rc = user_append(ctx, id, state.version, evs, n, &claims, &after, err);
    if (rc == APP_EVERSION && has_expected) {
        app_error_set(err, APP_EPRECOND, "version mismatch");
        return app_error_detail(err, "expected version %lld but the user changed meanwhile",
                                (long long)expected);
    }
    if (rc == APP_ECONFLICT)
        return user_email_taken(err);
    if (rc != 0)
        return rc; /* APP_EVERSION without a precondition: the bus runs us again */
    user_committed(ctx, state.version, &after);
    return user_reply(&after, out, err);
}
