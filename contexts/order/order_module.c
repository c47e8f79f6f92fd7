/* The order context's descriptor: what it owns (schema, migrations, commands, queries,
 * routes), what it subscribes to (its own log for the saga and the read models; the user and
 * inventory logs for its local copies), and its deadline task. */
#include "contexts/order/order_module.h"

#include "contexts/order/application/order_app.h"

static const bus_handler_def ord_commands[] = {
    /* {"customerId","lines":[{"sku","quantity"}]} -> the pending order */
    {"order.place_order", ord_place_order, 0},
    /* {"id","reason"?} -> the order; idempotent */
    {"order.cancel_order", ord_cancel_order, 0},
    /* {"id"} -> the order, shipped; idempotent; 409 unless confirmed (or shipped) */
    {"order.ship_order", ord_ship_order, 0},
    {NULL, NULL, 0},
};

static const bus_handler_def ord_queries[] = {
    {"order.get_order", ord_get_order, 0},                       /* {"id"} */
    {"order.list_customer_orders", ord_list_customer_orders, 0}, /* {"customerId"} */
    {"order.get_order_events", ord_get_order_events, 0},         /* {"id"} */
    {NULL, NULL, 0},
};

static const char *const ord_order_keys[] = {ORD_READ_KEY_PREFIX, ORD_CUSTOMER_ORDERS, NULL};
static const char *const ord_product_keys[] = {ORD_PRODUCT_COPY, NULL};
static const char *const ord_customer_keys[] = {ORD_CUSTOMER_COPY, NULL};

static const mod_subscription ord_subscriptions[] = {
    {.name = "order.placement_saga",
     .source_context = "order",
     .handle = ord_saga_handle,
     .flags = MOD_SUB_BY_STREAM},
    {.name = "order.projection",
     .source_context = "order",
     .handle = ord_projection_handle,
     .flags = MOD_SUB_PROJECTION,
     .keys = ord_order_keys,
     .read_key = ord_projection_key},
    {.name = "order.product_catalog",
     .source_context = "inventory",
     .handle = ord_product_copy_handle,
     .flags = MOD_SUB_PROJECTION,
     .keys = ord_product_keys},
    {.name = "order.customer_directory",
     .source_context = "user",
     .handle = ord_customer_copy_handle,
     .flags = MOD_SUB_PROJECTION,
     .keys = ord_customer_keys,
     .read_key = ord_customer_copy_key},
    {.name = NULL},
};

/* Its contract with the other contexts: what the saga and the placement ask of them. */
static const char *const ord_sends[] = {
    ORD_ASK_DESCRIBE_CUSTOMER, ORD_ASK_DESCRIBE_PRODUCT, ORD_ASK_RESERVE_STOCK,
    ORD_ASK_RELEASE_STOCK,     ORD_ASK_COMMIT_STOCK,     NULL,
};

static const mod_task ord_tasks[] = {
    {"order.placement_deadlines", 1000, ord_deadlines_run},
    {NULL, 0, NULL},
};

const app_module order_module = {
    .abi = APP_MODULE_ABI,
    .name = "order",
    .schema = "order_ctx",
    .migrations = order_migrations,
    .commands = ord_commands,
    .queries = ord_queries,
    .routes = ord_routes,
    .subscriptions = ord_subscriptions,
    .tasks = ord_tasks,
    .configure = ord_configure,
    .sends = ord_sends,
};
