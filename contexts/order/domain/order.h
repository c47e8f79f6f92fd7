/* The order aggregate: a customer's lines (sku, quantity, unit price), their total, and a
 * status that goes from pending to confirmed and then to shipped, or to cancelled with a
 * reason (from pending or confirmed; a shipped order stays shipped). Pure: decide
 * functions turn a command into events (or an error), apply folds an event into the state. */
#ifndef ORDER_DOMAIN_ORDER_H
#define ORDER_DOMAIN_ORDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/money.h"
#include "core/uuid.h"

#define ORD_EVENT_PLACED         "order.order.placed"
#define ORD_EVENT_CONFIRMED      "order.order.confirmed"
#define ORD_EVENT_CANCELLED      "order.order.cancelled"
#define ORD_EVENT_SHIPPED        "order.order.shipped"
#define ORD_EVENT_SCHEMA_VERSION 1

/* The shape of an order snapshot's state; a snapshot in another version is not read. */
#define ORD_SNAPSHOT_SCHEMA_VERSION 1

#define ORD_MAX_LINES     100
#define ORD_MAX_QUANTITY  1000
#define ORD_SKU_MAX       32
#define ORD_STREAM_PREFIX "order-"
#define ORD_STREAM_ID_LEN (sizeof ORD_STREAM_PREFIX - 1 + UUID_STR_LEN)

typedef enum ord_status {
    ORD_STATUS_NONE = 0,
    ORD_STATUS_PENDING,
    ORD_STATUS_CONFIRMED,
    ORD_STATUS_CANCELLED,
    ORD_STATUS_SHIPPED,
} ord_status;

/* Why an order was cancelled (API.md). */
typedef enum ord_reason {
    ORD_REASON_NONE = 0,
    ORD_REASON_OUT_OF_STOCK,
    ORD_REASON_UNKNOWN_PRODUCT,
    ORD_REASON_UNKNOWN_CUSTOMER,
    ORD_REASON_CUSTOMER_DEACTIVATED,
    ORD_REASON_CANCELLED_BY_CUSTOMER,
    ORD_REASON_TIMEOUT,
} ord_reason;

typedef struct ord_line {
    char sku[ORD_SKU_MAX + 1];
    int64_t quantity;
    bool priced; /* false when no authoritative price was found: the saga cancels */
    money unit_price;
} ord_line;

typedef struct ord_order {
    char id[UUID_STR_LEN];
    char customer_id[UUID_STR_LEN];
    ord_line lines[ORD_MAX_LINES];
    size_t n_lines;
    bool has_total; /* false when a line has no price */
    money total;
    ord_status status;
    ord_reason reason;
    char created_at[40]; /* RFC 3339 UTC */
    int64_t version;
} ord_order;

typedef enum ord_event_kind {
    ORD_EV_UNKNOWN = 0,
    ORD_EV_PLACED,
    ORD_EV_CONFIRMED,
    ORD_EV_CANCELLED,
    ORD_EV_SHIPPED,
} ord_event_kind;

/* An event; placed carries the whole order, the others only its id (and a reason). */
typedef struct ord_event {
    ord_event_kind kind;
    ord_order order; /* placed: every field but status, reason and version */
    ord_reason reason;
} ord_event;

const char *ord_status_name(ord_status s);
/* "out_of_stock", ...; NULL for ORD_REASON_NONE. */
const char *ord_reason_name(ord_reason r);
/* The reason named name, or ORD_REASON_NONE. */
ord_reason ord_reason_parse(const char *name);

bool ord_sku_valid(const char *sku);

/* Checks what a customer asks for: customerId a UUID, 1..100 lines, each sku valid and once,
 * quantity 1..1000. Field errors "customerId", "lines", "lines[i].sku", "lines[i].quantity";
 * APP_EINVAL. The lines' prices are not looked at. */
int ord_validate_place(const ord_order *draft, app_error *err);

/* Prices the draft: total of the priced lines, has_total only when every line is priced.
 * APP_ECONFLICT when prices of two currencies meet, or the total passes the largest amount. */
int ord_price(ord_order *draft, app_error *err);

/* Place: the placed event for a validated, priced draft. */
void ord_decide_place(const ord_order *draft, ord_event *out);
/* Confirm: one event from pending; none when confirmed or shipped; APP_ECONFLICT when
 * cancelled; APP_ENOTFOUND for no order. */
int ord_decide_confirm(const ord_order *o, ord_event *out, size_t *n_out, app_error *err);
/* Cancel: one event from pending or confirmed; none when cancelled already (idempotent),
 * nor for a timeout of a confirmed or shipped order (the deadline raced the confirmation and
 * lost); APP_ECONFLICT for any other cancellation of a shipped order. */
int ord_decide_cancel(const ord_order *o, ord_reason reason, ord_event *out, size_t *n_out,
                      app_error *err);
/* Ship: one event from confirmed; none when shipped already (idempotent); APP_ECONFLICT when
 * pending (it ships once the saga confirms it) or cancelled; APP_ENOTFOUND for no order. */
int ord_decide_ship(const ord_order *o, ord_event *out, size_t *n_out, app_error *err);

void ord_apply(ord_order *o, const ord_event *ev);

const char *ord_event_type(ord_event_kind kind);
int ord_event_encode(const ord_event *ev, char **out, app_error *err);
/* Unknown types and newer schema versions give ORD_EV_UNKNOWN and 0; a known type whose
 * data does not fit is APP_EINTERNAL. */
int ord_event_decode(const char *type, int schema_version, const char *data, ord_event *out,
                     app_error *err);

/* The order as snapshot JSON (ORD_SNAPSHOT_SCHEMA_VERSION): the placed event's fields plus
 * "status" and "reason" (null unless cancelled); *out owned by the caller. APP_EINVAL for an
 * order that was never placed. */
int ord_snapshot_encode(const ord_order *o, char **out, app_error *err);
/* The order that snapshot text describes at stream version; APP_EINVAL when it does not fit. */
int ord_snapshot_decode(const char *text, int64_t version, ord_order *out, app_error *err);

#endif
