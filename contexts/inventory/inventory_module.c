/* The inventory context's descriptor: what it owns (schema, migrations, commands, queries,
 * routes) and what it subscribes to. Every row points into contexts/inventory/application. */
#include "contexts/inventory/inventory_module.h"

#include "contexts/inventory/application/inventory_app.h"
#include "contexts/inventory/domain/product.h"

static const bus_handler_def inv_commands[] = {
    /* {"sku","name","price","stock"} -> product; 409 when the sku exists */
    {"inventory.create_product", inv_create_product, 0},
    /* {"sku","quantity"} -> product */
    {"inventory.add_stock", inv_add_stock, BUS_RETRY_ON_CONFLICT},
    /* {"sku","orderId","quantity"} -> {"outcome":"reserved"|"out_of_stock",...}; idempotent */
    {"inventory.reserve_stock", inv_reserve_stock, BUS_RETRY_ON_CONFLICT | BUS_IDEMPOTENT},
    /* {"sku","orderId"} -> {"outcome":"released"|"nothing_reserved",...}; idempotent */
    {"inventory.release_stock", inv_release_stock, BUS_RETRY_ON_CONFLICT | BUS_IDEMPOTENT},
    /* {"sku","orderId"} -> {"outcome":"committed"|"nothing_reserved",...}: the order shipped,
     * its reserved stock leaves the stock on hand; idempotent */
    {"inventory.commit_stock", inv_commit_stock, BUS_RETRY_ON_CONFLICT | BUS_IDEMPOTENT},
    {NULL, NULL, 0},
};

static const bus_handler_def inv_queries[] = {
    {"inventory.get_product", inv_get_product, 0},               /* read model */
    {"inventory.get_product_events", inv_get_product_events, 0}, /* {"items":[event]} */
    {"inventory.describe_product", inv_describe_product, 0},     /* authoritative */
    {NULL, NULL, 0},
};

static const char *const inv_read_keys[] = {INV_READ_KEY_PREFIX, NULL};

static const mod_subscription inv_subscriptions[] = {
    {.name = "inventory.projection",
     .source_context = "inventory",
     .handle = inv_projection_handle,
     .flags = MOD_SUB_PROJECTION,
     .keys = inv_read_keys,
     .read_key = inv_projection_key},
    {.name = NULL},
};

/* Older shapes of the context's events, brought to the current one on read. */
static const mod_upcaster inv_upcasters[] = {
    {INV_EVENT_CREATED, 1, inv_upcast_created_v1},
    {NULL, 0, NULL},
};

const app_module inventory_module = {
    .abi = APP_MODULE_ABI,
    .name = "inventory",
    .schema = "inventory_ctx",
    .migrations = inventory_migrations,
    .commands = inv_commands,
    .queries = inv_queries,
    .routes = inv_routes,
    .subscriptions = inv_subscriptions,
    .upcasters = inv_upcasters,
    .configure = inv_configure,
};
