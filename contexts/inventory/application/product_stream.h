/* What the inventory handlers share: the payload sku, loading a product from its stream,
 * appending decided events, and the product's JSON form. Private to the context. */
#ifndef INVENTORY_APPLICATION_PRODUCT_STREAM_H
#define INVENTORY_APPLICATION_PRODUCT_STREAM_H

#include <cjson/cJSON.h>

#include "contexts/inventory/domain/product.h"
#include "core/error.h"
#include "kernel/bus.h"

/* The "sku" of a payload, borrowed: APP_EBADREQ for wrong types, APP_EINVAL when missing,
 * APP_ENOTFOUND when it cannot be a sku (no product can have it). */
int inv_payload_sku(const cJSON *payload, const char **out, app_error *err);

void inv_stream_id(char out[INV_STREAM_ID_LEN], const char *sku);

/* Events a load reads from the log at a time: however long the stream, a load holds one page
 * of it. */
#define INV_LOAD_PAGE 1000

/* Folds the stream of sku up to max_version (0 for all) into *out (free with
 * inv_product_free, also on failure). The latest state starts from the process's cached one
 * when the log confirms it (kernel/agg_cache.h), else, as a load up to a version does, from
 * the stream's snapshot when it has a usable one. A product with no events has exists ==
 * false. */
int inv_load(const bus_ctx *ctx, const char *sku, int64_t max_version, inv_product *out,
             app_error *err);

/* Folds ev, decided on *p, into *p and appends it with p's former version as the expected
 * one; on success *p is the committed state (and cached), on failure it is to be thrown
 * away. When the
 * stream crosses a multiple of snapshots.product that state is saved as a snapshot (best
 * effort: a failure is logged, never returned). For a new product *p is all zero and ev the
 * created event. With reply non-NULL the command answers the product: *reply is set to it
 * on success (owned by the caller), and recorded with the event under an Idempotency-Key. */
int inv_commit(const bus_ctx *ctx, inv_product *p, const inv_event *ev, cJSON **reply,
               app_error *err);

/* Appends evs[0..n), decided in order on *p at version before and applied to it since, so
 * that *p is the state after the last; each event carries metas[i], the metadata of the
 * command that decided it. On success *p is cached (and snapshotted) as committed; on
 * failure it is to be thrown away. n == 0 appends nothing. */
int inv_commit_many(const bus_ctx *ctx, inv_product *p, int64_t before, const inv_event *evs,
                    const bus_meta *const *metas, size_t n, app_error *err);

/* {"sku","name","price","onHand","reserved","available","version"}; NULL on no memory. */
cJSON *inv_product_to_json(const inv_product *p);
int inv_reply(const inv_product *p, cJSON **out, app_error *err);

#endif
