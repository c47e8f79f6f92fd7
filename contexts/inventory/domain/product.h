/* The product aggregate of the inventory context: one per sku, with its price, stock on
 * hand and the stock reserved per open order: a reservation ends when the order ships (it is
 * committed: the stock leaves) or is cancelled (it is released), so the table holds only
 * orders that are still open. Pure: decide functions turn a command into events
 * (or an error), apply folds an event into the state. Invariant: reserved <= on_hand. */
#ifndef INVENTORY_DOMAIN_PRODUCT_H
#define INVENTORY_DOMAIN_PRODUCT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "core/error.h"
#include "core/money.h"
#include "core/uuid.h"

#define INV_EVENT_CREATED        "inventory.product.created"
#define INV_EVENT_STOCK_ADDED    "inventory.product.stock_added"
#define INV_EVENT_STOCK_RESERVED "inventory.product.stock_reserved"
#define INV_EVENT_RELEASED       "inventory.product.reservation_released"
#define INV_EVENT_COMMITTED      "inventory.product.reservation_committed"

/* Current schema versions, the ones this code writes and decodes:
 *   created v2  {"sku","name","price":{"amount","currency"},"initialStock"}
 *               (v1 called initialStock "stock", which read like the stock on hand that
 *               later events change; inv_upcast_created_v1 renames it on read)
 *   stock_added v1  {"sku","quantity"}
 *   stock_reserved, reservation_released, reservation_committed v1
 *               {"sku","orderId","quantity"} */
#define INV_CREATED_SCHEMA_VERSION 2
#define INV_EVENT_SCHEMA_VERSION   1 /* every other product event */

/* The shape of a product snapshot's state; a snapshot in another version is not read. */
#define INV_SNAPSHOT_SCHEMA_VERSION 1

#define INV_SKU_MAX        32
#define INV_NAME_MAX_CHARS 200
#define INV_NAME_MAX_BYTES (INV_NAME_MAX_CHARS * 4)
#define INV_STOCK_MAX      INT64_C(1000000)    /* initial stock and one addition */
#define INV_ON_HAND_MAX    INT64_C(1000000000) /* stock on hand, ever */
#define INV_RESERVE_MAX    INT64_C(1000)       /* one order line */
#define INV_STREAM_PREFIX  "product-"
#define INV_STREAM_ID_LEN  (sizeof INV_STREAM_PREFIX + INV_SKU_MAX)

typedef struct inv_reservation {
    char order_id[UUID_STR_LEN];
    int64_t quantity;
} inv_reservation;

typedef struct inv_product {
    bool exists;
    char sku[INV_SKU_MAX + 1];
    char name[INV_NAME_MAX_BYTES + 1];
    money price;
    int64_t on_hand;
    int64_t reserved;              /* sum of the reservations */
    inv_reservation *reservations; /* owned; inv_product_free frees it */
    size_t n_reservations;
    size_t cap_reservations;
    int64_t version; /* stream version of the last applied event */
} inv_product;

typedef enum inv_event_kind {
    INV_EV_UNKNOWN = 0, /* a type this code does not know: skipped */
    INV_EV_CREATED,
    INV_EV_STOCK_ADDED,
    INV_EV_STOCK_RESERVED,
    INV_EV_RELEASED,
    INV_EV_COMMITTED,
} inv_event_kind;

typedef struct inv_event {
    inv_event_kind kind;
    char sku[INV_SKU_MAX + 1];
    char name[INV_NAME_MAX_BYTES + 1]; /* created */
    money price;                       /* created */
    int64_t quantity;                  /* created (stock), added, reserved, released, committed */
    char order_id[UUID_STR_LEN];       /* reserved, released, committed */
} inv_event;

void inv_product_free(inv_product *p); /* frees what p owns, not p */

/* True for ^[A-Z0-9][A-Z0-9-]{0,31}$. */
bool inv_sku_valid(const char *sku);

/* Create: validates every value (field errors "sku", "name", "stock"; the price comes
 * validated) and decides the created event. */
int inv_decide_create(const char *sku, const char *name, const money *price, int64_t stock,
                      inv_event *out, app_error *err);
/* Add stock: quantity 1..INV_STOCK_MAX, on hand never past INV_ON_HAND_MAX (APP_EINVAL);
 * APP_ENOTFOUND for no product. */
int inv_decide_add_stock(const inv_product *p, int64_t quantity, inv_event *out, app_error *err);
/* Reserve for an order: *n_out = 1 and a reserved event when the stock is there; 0 events
 * and *out_of_stock when it is not; 0 events when the order already holds a reservation
 * (idempotent). APP_ENOTFOUND for no product, APP_EINVAL for a quantity outside 1..1000. */
int inv_decide_reserve(const inv_product *p, const char *order_id, int64_t quantity, inv_event *out,
                       size_t *n_out, bool *out_of_stock, app_error *err);
/* Release an order's reservation: one released event, or none when it holds nothing. */
int inv_decide_release(const inv_product *p, const char *order_id, inv_event *out, size_t *n_out,
                       app_error *err);

/* Commit an order's reservation when the order ships: one committed event, which takes the
 * quantity off the stock on hand and off the reserved stock, or none when the order holds
 * nothing (committed before: idempotent). */
int inv_decide_commit(const inv_product *p, const char *order_id, inv_event *out, size_t *n_out,
                      app_error *err);

/* Quantity reserved for order_id (0 for none). */
int64_t inv_reserved_for(const inv_product *p, const char *order_id);

/* Folds ev into p. APP_ENOMEM when the reservation table cannot grow. */
int inv_apply(inv_product *p, const inv_event *ev, app_error *err);

const char *inv_event_type(inv_event_kind kind);
/* The schema version this code writes for kind (0 for INV_EV_UNKNOWN). */
int inv_event_schema_version(inv_event_kind kind);
/* JSON object text of the event's data; *out owned by the caller. */
int inv_event_encode(const inv_event *ev, char **out, app_error *err);
/* Decodes the current schema version only (older ones are upcast on read, see
 * inv_upcast_created_v1). Unknown types and newer schema versions give INV_EV_UNKNOWN and 0
 * (skipped); an older version that reached here without its upcaster, or data that does not
 * fit, is APP_EINTERNAL. */
int inv_event_decode(const char *type, int schema_version, const char *data, inv_event *out,
                     app_error *err);

/* Upcaster (a mod_upcast_fn): inventory.product.created v1 -> v2, "stock" renamed to
 * "initialStock", in place. APP_EINVAL when data has no whole-number "stock". */
int inv_upcast_created_v1(cJSON *data, app_error *err);

/* The state of p as snapshot JSON (INV_SNAPSHOT_SCHEMA_VERSION): {"sku","name","price",
 * "onHand","reserved","reservations":[{"orderId","quantity"}]}; *out owned by the caller. */
int inv_snapshot_encode(const inv_product *p, char **out, app_error *err);
/* The product that snapshot text describes at stream version; *out must be zeroed and is
 * freed again on failure. APP_EINVAL when the text does not fit the shape or its counts
 * disagree (reserved is not the sum of the reservations, or exceeds onHand). */
int inv_snapshot_decode(const char *text, int64_t version, inv_product *out, app_error *err);

#endif
