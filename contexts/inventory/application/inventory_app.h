/* The inventory context's application layer: command and query handlers (bus rows), the
 * projection that keeps the "product:<sku>" read model, and the HTTP routes. */
#ifndef INVENTORY_APPLICATION_INVENTORY_APP_H
#define INVENTORY_APPLICATION_INVENTORY_APP_H

#include <cjson/cJSON.h>

#include "core/config.h"
#include "core/error.h"
#include "kernel/bus.h"
#include "kernel/http_types.h"
#include "ports/event_store.h"

#define INV_CONTEXT         "inventory"
#define INV_READ_KEY_PREFIX "product:"

/* Keeps what the context needs of the configuration (the snapshot policy). */
int inv_configure(const app_config *cfg, app_error *err);

/* Commands: payloads and replies as in contexts/inventory/inventory_module.c's table. */
int inv_create_product(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err);
int inv_add_stock(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err);
int inv_reserve_stock(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err);
int inv_release_stock(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err);
int inv_commit_stock(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err);

/* Queries. */
int inv_get_product(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err);
int inv_get_product_events(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err);
int inv_describe_product(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err);

/* The projection: folds product events into "product:<sku>"; idempotent by version. */
int inv_projection_handle(const bus_ctx *ctx, const es_event *ev, app_error *err);
/* The read model inv_projection_handle reads for ev ("product:<sku>"); false for events
 * of other streams. */
bool inv_projection_key(const es_event *ev, char *out, size_t size);

extern const http_route_def inv_routes[];

#endif
