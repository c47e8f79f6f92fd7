/* The user context's application layer: command and query handlers (bus rows), the
 * projection that keeps the "user:<id>" read model, and the HTTP routes. */
#ifndef USER_APPLICATION_USER_APP_H
#define USER_APPLICATION_USER_APP_H

#include <cjson/cJSON.h>

#include "core/config.h"
#include "core/error.h"
#include "kernel/bus.h"
#include "kernel/http_types.h"
#include "ports/event_store.h"

#define USER_CONTEXT         "user"
#define USER_CLAIM_EMAIL     "email" /* claim scope of the lower-cased email */
#define USER_READ_KEY_PREFIX "user:"

/* Keeps what the context needs of the configuration (the snapshot policy). */
int user_configure(const app_config *cfg, app_error *err);

/* Commands. Payloads and replies as in contexts/user/user_module.c's table. */
int user_register_user(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err);
int user_change_user_email(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err);
int user_deactivate_user(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err);

/* Queries. */
int user_get_user(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err);
int user_get_user_events(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err);
int user_describe_customer(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err);

/* The projection: folds user events into "user:<id>"; idempotent by stream version. */
int user_projection_handle(const bus_ctx *ctx, const es_event *ev, app_error *err);
/* The read model user_projection_handle reads for ev ("user:<id>"); false for events of
 * other streams. */
bool user_projection_key(const es_event *ev, char *out, size_t size);

/* The HTTP routes, {0} terminated. */
extern const http_route_def user_routes[];

#endif
