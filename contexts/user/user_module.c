/* The user context's descriptor: what it owns (schema, migrations, commands, queries, routes)
 * and what it subscribes to. Every row points into contexts/user/application. */
#include "contexts/user/user_module.h"

#include "contexts/user/application/user_app.h"

static const bus_handler_def user_commands[] = {
    /* {"email","name"} -> user */
    {"user.register_user", user_register_user, 0},
    /* {"id","email","expectedVersion"?} -> user; reloads the stream, so safe to rerun */
    {"user.change_user_email", user_change_user_email, BUS_RETRY_ON_CONFLICT},
    /* {"id"} -> user; idempotent */
    {"user.deactivate_user", user_deactivate_user, BUS_RETRY_ON_CONFLICT},
    {NULL, NULL, 0},
};

static const bus_handler_def user_queries[] = {
    {"user.get_user", user_get_user, 0},               /* {"id"} -> user (read model) */
    {"user.get_user_events", user_get_user_events, 0}, /* {"id"} -> {"items":[event]} */
    /* {"id"} -> {"id","status"} from the event log: authoritative */
    {"user.describe_customer", user_describe_customer, 0},
    {NULL, NULL, 0},
};

static const char *const user_read_keys[] = {USER_READ_KEY_PREFIX, NULL};

static const mod_subscription user_subscriptions[] = {
    {.name = "user.projection",
     .source_context = "user",
     .handle = user_projection_handle,
     .flags = MOD_SUB_PROJECTION,
     .keys = user_read_keys,
     .read_key = user_projection_key},
    {.name = NULL},
};

const app_module user_module = {
    .abi = APP_MODULE_ABI,
    .name = "user",
    .schema = "user_ctx",
    .migrations = user_migrations,
    .commands = user_commands,
    .queries = user_queries,
    .routes = user_routes,
    .subscriptions = user_subscriptions,
    .configure = user_configure,
};
