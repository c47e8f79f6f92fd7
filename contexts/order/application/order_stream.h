/* What the order handlers share: the payload id, loading an order, appending its events
 * with the saga's state, settling it (confirm or cancel), shipping it, and its JSON form. */
#ifndef ORDER_APPLICATION_ORDER_STREAM_H
#define ORDER_APPLICATION_ORDER_STREAM_H

#include <cjson/cJSON.h>

#include "contexts/order/domain/order.h"
#include "core/config.h"
#include "core/error.h"
#include "kernel/bus.h"

/* The "id" of a payload, borrowed; APP_ENOTFOUND when it is not a canonical UUID. */
int ord_payload_id(const cJSON *payload, const char **out, app_error *err);

void ord_stream_id(char out[ORD_STREAM_ID_LEN], const char *id);

/* Keeps snapshots.order and makes the cache of snapshots.cache orders; called by the
 * context's configure phase. */
int ord_stream_configure(const app_config *cfg, app_error *err);

/* Folds the stream of order id up to max_version (0 for all) into *out; status NONE when
 * there are no events. The latest state starts from the process's cached one when the log
 * confirms it (kernel/agg_cache.h), else, as a load up to a version does, from the stream's
 * snapshot when it has a usable one. */
int ord_load(const bus_ctx *ctx, const char *id, int64_t max_version, ord_order *out,
             app_error *err);

/* Appends ev to the order stream with the expected version and the saga's state: the
 * deadline (0 for none) and whether the placement is settled. after (may be NULL) is the
 * order ev makes, the command's reply: recorded with it under an Idempotency-Key, and cached
 * once appended. */
int ord_append(const bus_ctx *ctx, const char *id, int64_t expected_version, const ord_event *ev,
               int64_t deadline_ms, bool done, const ord_order *after, app_error *err);

/* After an append from version before took the order to *o (committed): saves o as a
 * snapshot when the stream crossed a multiple of snapshots.order. Best effort. */
void ord_committed(const bus_ctx *ctx, int64_t before, const ord_order *o);

/* Confirms (reason NONE) or cancels (with reason) order id, idempotently, retrying past
 * concurrent changes. *out (may be NULL) gets the order as it is afterwards. */
int ord_settle(const bus_ctx *ctx, const char *id, ord_reason reason, ord_order *out,
               app_error *err);

/* ord_settle of *o, an order just loaded: decided first on *o as it is, and read back only
 * when that meets a concurrent change. */
int ord_settle_loaded(const bus_ctx *ctx, const ord_order *o, ord_reason reason, app_error *err);

/* Ships order id (confirmed -> shipped), idempotently, retrying past concurrent changes;
 * APP_ECONFLICT when it is pending or cancelled. *out (may be NULL) as for ord_settle. */
int ord_ship(const bus_ctx *ctx, const char *id, ord_order *out, app_error *err);

/* The order in the shape of docs/openapi.yaml; NULL when out of memory. */
cJSON *ord_to_json(const ord_order *o);
int ord_reply(const ord_order *o, cJSON **out, app_error *err);

#endif
