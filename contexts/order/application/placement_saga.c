/* The order-placement saga. It follows the order log (at least once, in order) and talks to
 * the user and inventory contexts only through the bus:
 *   placed    -> check the customer -> check the skus placed without a price -> reserve
 *                every line -> confirm; or release what was reserved and cancel with the reason
 *   cancelled -> release every line (a confirmed order's stock, or a timeout's leftovers)
 *   shipped   -> commit every line: the reserved stock leaves the stock on hand
 * So a product holds reservations of open orders only. Every step is idempotent (reservations are
 * per order, settling twice changes nothing), so a crash or a redelivery resumes it where it was.
 * Its state and deadline are saved with the order's events; the deadline task cancels what has not
 * settled in time. Each step is a span of the trace that placed the order ("order.placement
 * reserve"), the parent of the messages it sends and the events it appends. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "contexts/order/application/order_app.h"
#include "contexts/order/application/order_stream.h"
#include "core/json.h"
#include "core/trace.h"

#define ORD_DUE_BATCH 100

/* bus_send/bus_ask name with {"<k1>": v1, "<k2>": v2, ["quantity": q]}. */
static int saga_call(const bus_ctx *ctx, bool command, const char *name, const char *k1,
                     const char *v1, const char *k2, const char *v2, int64_t quantity, cJSON **out,
                     app_error *err)
{
    cJSON *p = cJSON_CreateObject();
    bool ok = p && cJSON_AddStringToObject(p, k1, v1) &&
              (!k2 || cJSON_AddStringToObject(p, k2, v2)) &&
              (quantity <= 0 || cJSON_AddNumberToObject(p, "quantity", (double)quantity));
    if (!ok) {
        cJSON_Delete(p);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    int rc = command ? bus_send(ctx->bus, name, p, ctx->meta, out, err)
                     : bus_ask(ctx->bus, name, p, ctx->meta, out, err);
    cJSON_Delete(p);
    return rc;
}

/* A step of the saga: a span, child of the event's handling, and a copy of the handling's
 * context whose messages and appends are the span's children. Only continues a trace: an
 * event placed untraced makes no spans. */
typedef struct saga_step {
    trace_span span;
    trace_ctx outer;
    bus_meta meta;
    bus_ctx ctx;
} saga_step;

static const bus_ctx *saga_step_begin(saga_step *st, const bus_ctx *ctx, const char *step)
{
    trace_continue_tp(&st->span, "", TRACE_INTERNAL, ctx->meta ? ctx->meta->traceparent : NULL);
    trace_name(&st->span, ORD_PROCESS " %s", step);
    st->ctx = *ctx;
    if (trace_enabled() && ctx->meta) {
        st->meta = *ctx->meta;
        trace_ctx_format(&st->span.ctx, st->meta.traceparent);
        st->ctx.meta = &st->meta;
    }
    st->outer = trace_enter(&st->span);
    return &st->ctx;
}

static int saga_step_end(saga_step *st, int rc, const app_error *err)
{
    if (rc != 0)
        trace_fail(&st->span, err->message);
    trace_end(&st->span);
    trace_leave(&st->outer);
    return rc;
}

/* The customer's standing: the local copy when there is one, else the user context's
 * authoritative answer. *reason is NONE when the order may go on. */
static int saga_check_customer(const bus_ctx *ctx, const char *customer, ord_reason *reason,
                               app_error *err)
{
    *reason = ORD_REASON_NONE;
    char key[sizeof ORD_CUSTOMER_COPY + UUID_STR_LEN], *text = NULL;
    snprintf(key, sizeof key, "%s%s", ORD_CUSTOMER_COPY, customer);
    app_error rerr = APP_ERROR_INIT;
    const char *status = NULL;
    cJSON *answer = NULL;
    if (ctx->reads->ops->get(ctx->reads->self, key, &text, &rerr) == 0 && text) {
        answer = json_parse_n(text, strlen(text));
        free(text);
    }
    status = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(answer, "status"));
    if (!status) {
        /* A customer registered a moment ago may not be in the copy yet. */
        cJSON_Delete(answer);
        answer = NULL;
        int rc = saga_call(ctx, false, ORD_ASK_DESCRIBE_CUSTOMER, "id", customer, NULL, NULL, 0,
                           &answer, err);
        if (rc == APP_ENOTFOUND) {
            *reason = ORD_REASON_UNKNOWN_CUSTOMER;
            return 0;
        }
        if (rc != 0)
            return rc;
        status = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(answer, "status"));
    }
    if (status && strcmp(status, "deactivated") == 0)
        *reason = ORD_REASON_CUSTOMER_DEACTIVATED;
    cJSON_Delete(answer);
    return 0;
}

/* Ends every line's reservation for the order with name (release or commit). Unknown skus
 * hold nothing. */
static int saga_end_all(const bus_ctx *ctx, const char *name, const ord_order *o, app_error *err)
{
    for (size_t i = 0; i < o->n_lines; i++) {
        cJSON *reply = NULL;
        int rc =
            saga_call(ctx, true, name, "sku", o->lines[i].sku, "orderId", o->id, 0, &reply, err);
        cJSON_Delete(reply);
        if (rc == APP_ENOTFOUND) {
            app_error_clear(err);
            continue;
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int saga_release_all(const bus_ctx *ctx, const ord_order *o, app_error *err)
{
    return saga_end_all(ctx, ORD_ASK_RELEASE_STOCK, o, err);
}

/* A line placed without a price (no product by that sku, as far as the order context knew)
 * is asked about again: only the owner's "not found" cancels, never a copy that lagged; a
 * product that exists by now goes on to be reserved (its line keeps no price). Asking first
 * keeps a doomed order from holding other lines' stock while it is reserved. */
static int saga_check_products(const bus_ctx *ctx, const ord_order *o, ord_reason *reason,
                               app_error *err)
{
    *reason = ORD_REASON_NONE;
    for (size_t i = 0; i < o->n_lines && *reason == ORD_REASON_NONE; i++) {
        if (o->lines[i].priced)
            continue;
        cJSON *product = NULL;
        int rc = saga_call(ctx, false, ORD_ASK_DESCRIBE_PRODUCT, "sku", o->lines[i].sku, NULL, NULL,
                           0, &product, err);
        cJSON_Delete(product);
        if (rc == APP_ENOTFOUND) {
            app_error_clear(err);
            *reason = ORD_REASON_UNKNOWN_PRODUCT;
        } else if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* Reserves line by line; *reason says why the order cannot go on (NONE: all reserved). */
static int saga_reserve_all(const bus_ctx *ctx, const ord_order *o, ord_reason *reason,
                            app_error *err)
{
    *reason = ORD_REASON_NONE;
    for (size_t i = 0; i < o->n_lines && *reason == ORD_REASON_NONE; i++) {
        cJSON *reply = NULL;
        int rc = saga_call(ctx, true, ORD_ASK_RESERVE_STOCK, "sku", o->lines[i].sku, "orderId",
                           o->id, o->lines[i].quantity, &reply, err);
        if (rc == APP_ENOTFOUND) {
            app_error_clear(err);
            *reason = ORD_REASON_UNKNOWN_PRODUCT;
        } else if (rc != 0) {
            return rc;
        } else {
            const char *outcome =
                cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(reply, "outcome"));
            if (!outcome || strcmp(outcome, "reserved") != 0)
                *reason = ORD_REASON_OUT_OF_STOCK;
        }
        cJSON_Delete(reply);
    }
    return 0;
}

static int saga_on_placed(const bus_ctx *ctx, const ord_order *o, app_error *err)
{
    if (o->status != ORD_STATUS_PENDING)
        return 0; /* settled already: by an earlier delivery, the customer or the deadline */
    ord_reason reason = ORD_REASON_NONE;
    saga_step st;
    const bus_ctx *step = saga_step_begin(&st, ctx, "check_customer");
    int rc = saga_step_end(&st, saga_check_customer(step, o->customer_id, &reason, err), err);
    if (rc == 0 && reason == ORD_REASON_NONE) {
        step = saga_step_begin(&st, ctx, "check_products");
        rc = saga_step_end(&st, saga_check_products(step, o, &reason, err), err);
    }
    if (rc == 0 && reason == ORD_REASON_NONE) {
        step = saga_step_begin(&st, ctx, "reserve");
        rc = saga_step_end(&st, saga_reserve_all(step, o, &reason, err), err);
    }
    if (rc == 0 && reason != ORD_REASON_NONE) {
        step = saga_step_begin(&st, ctx, "release");
        rc = saga_step_end(&st, saga_release_all(step, o, err), err);
    }
    if (rc != 0)
        return rc;
    step = saga_step_begin(&st, ctx, reason == ORD_REASON_NONE ? "confirm" : "cancel");
    rc = saga_step_end(&st, ord_settle_loaded(step, o, reason, err), err);
    if (rc == APP_ECONFLICT && reason == ORD_REASON_NONE) {
        /* Cancelled while we reserved: its cancelled event (later in the log) releases. */
        app_error_clear(err);
        return 0;
    }
    return rc;
}

int ord_saga_handle(const bus_ctx *ctx, const es_event *ev, app_error *err)
{
    const size_t prefix = sizeof ORD_STREAM_PREFIX - 1;
    bool placed = strcmp(ev->type, ORD_EVENT_PLACED) == 0;
    bool shipped = strcmp(ev->type, ORD_EVENT_SHIPPED) == 0;
    if ((!placed && !shipped && strcmp(ev->type, ORD_EVENT_CANCELLED) != 0) ||
        strncmp(ev->stream_id, ORD_STREAM_PREFIX, prefix) != 0 ||
        !uuid_valid(ev->stream_id + prefix))
        return 0;
    ord_order *o = malloc(sizeof *o);
    if (!o)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    /* The order as it is now, not as of the event: a redelivered placed event of an order
     * that has settled since must not reserve again. A shipped order cannot be cancelled,
     * nor a cancelled one shipped, so a line is either released or committed, never both. */
    int rc = ord_load(ctx, ev->stream_id + prefix, 0, o, err);
    if (rc == 0 && placed) {
        rc = saga_on_placed(ctx, o, err);
    } else if (rc == 0) {
        saga_step st;
        const bus_ctx *step = saga_step_begin(&st, ctx, shipped ? "commit" : "release");
        rc = saga_step_end(
            &st, saga_end_all(step, shipped ? ORD_ASK_COMMIT_STOCK : ORD_ASK_RELEASE_STOCK, o, err),
            err);
    }
    free(o);
    return rc;
}

/* Sends order.cancel_order {"id","reason":"timeout"} for one due placement, as caused by
 * its placed event and correlated with the request that placed it (both kept in its state). */
static int saga_time_out(const bus_ctx *ctx, const es_due_process *due, app_error *err)
{
    cJSON *state = due->state ? json_parse_n(due->state, strlen(due->state)) : NULL;
    bus_meta meta;
    bus_meta_init(&meta,
                  cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(state, "correlationId")),
                  cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(state, "placedEventId")));
    cJSON_Delete(state);
    if (ctx->meta)
        memcpy(meta.actor, ctx->meta->actor, sizeof meta.actor);
    cJSON *reply = NULL;
    bus_ctx own = {.events = ctx->events,
                   .reads = ctx->reads,
                   .clock = ctx->clock,
                   .bus = ctx->bus,
                   .meta = &meta};
    int rc = saga_call(&own, true, "order.cancel_order", "id", due->id, "reason",
                       ord_reason_name(ORD_REASON_TIMEOUT), 0, &reply, err);
    cJSON_Delete(reply);
    return rc;
}

int ord_deadlines_run(const bus_ctx *ctx, app_error *err)
{
    es_due_list due = {0};
    int64_t now = ctx->clock->now_ms(ctx->clock->self);
    int rc = ctx->events->ops->due_processes(ctx->events->self, ORD_CONTEXT, ORD_PROCESS, now,
                                             ORD_DUE_BATCH, &due, err);
    /* One order that cannot be cancelled now does not hold the others back; the first
     * failure is reported and the order is due again at the next run. */
    app_error first = APP_ERROR_INIT;
    for (size_t i = 0; rc == 0 && i < due.len; i++) {
        app_error one = APP_ERROR_INIT;
        if (uuid_valid(due.items[i].id) && saga_time_out(ctx, &due.items[i], &one) != 0 &&
            first.code == 0)
            first = one;
    }
    es_due_list_free(&due);
    if (rc == 0 && first.code != 0) {
        *err = first;
        rc = first.code;
    }
    return rc;
}
