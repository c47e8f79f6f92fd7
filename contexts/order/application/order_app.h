/* The order context's application layer: command and query handlers (bus rows), the
 * placement saga, the local copies of customers and products, the projection, the routes. */
#ifndef ORDER_APPLICATION_ORDER_APP_H
#define ORDER_APPLICATION_ORDER_APP_H

#include <cjson/cJSON.h>

#include "core/config.h"
#include "core/error.h"
#include "kernel/bus.h"
#include "kernel/http_types.h"
#include "ports/event_store.h"

#define ORD_CONTEXT         "order"
#define ORD_PROCESS         "order.placement" /* the saga's process name */
#define ORD_READ_KEY_PREFIX "order:"
#define ORD_CUSTOMER_ORDERS "customer-orders:" /* sorted set of a customer's order ids */
#define ORD_PRODUCT_COPY    "order:product:"   /* local copy of a product's price */
#define ORD_CUSTOMER_COPY   "order:customer:"  /* local copy of a customer's status */

/* What the order context asks of the others (its contract, order_module.c's sends). */
#define ORD_ASK_DESCRIBE_CUSTOMER "user.describe_customer"     /* query {"id"} */
#define ORD_ASK_DESCRIBE_PRODUCT  "inventory.describe_product" /* query {"sku"} */
#define ORD_ASK_RESERVE_STOCK     "inventory.reserve_stock"    /* {"sku","orderId","quantity"} */
#define ORD_ASK_RELEASE_STOCK     "inventory.release_stock"    /* {"sku","orderId"} */
#define ORD_ASK_COMMIT_STOCK      "inventory.commit_stock"     /* {"sku","orderId"} */

/* Keeps order.placement_timeout_ms. */
int ord_configure(const app_config *cfg, app_error *err);

/* Commands. */
int ord_place_order(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err);
int ord_cancel_order(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err);
int ord_ship_order(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err);

/* Queries. */
int ord_get_order(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err);
int ord_list_customer_orders(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err);
int ord_get_order_events(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err);

/* Subscriptions. */
int ord_saga_handle(const bus_ctx *ctx, const es_event *ev, app_error *err);
int ord_projection_handle(const bus_ctx *ctx, const es_event *ev, app_error *err);
int ord_product_copy_handle(const bus_ctx *ctx, const es_event *ev, app_error *err);
int ord_customer_copy_handle(const bus_ctx *ctx, const es_event *ev, app_error *err);
/* The read models the projection and the customer directory read for ev (their read_key);
 * false when they read none. */
bool ord_projection_key(const es_event *ev, char *out, size_t size);
bool ord_customer_copy_key(const es_event *ev, char *out, size_t size);

/* The deadline task: cancels pending orders past order.placement_timeout_ms. */
int ord_deadlines_run(const bus_ctx *ctx, app_error *err);

extern const http_route_def ord_routes[];

#endif
