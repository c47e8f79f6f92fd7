/* The command bus and the query bus: a table lookup, then the middleware chain, then the
 * one handler its context registered. Only start-up registers; dispatch is read-only. */
#include "kernel/bus.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/trace.h"
#include "core/uuid.h"

#define BUS_MAX_MIDDLEWARE 8

typedef struct bus_entry {
    bus_kind kind;
    const bus_handler_def *def;
    const bus_transport *via; /* NULL: handled here */
} bus_entry;

struct bus {
    bus_options opts;
    bus_entry *entries;
    size_t n_entries;
    size_t cap_entries;
    bus_middleware_fn middleware[BUS_MAX_MIDDLEWARE];
    size_t n_middleware;
};

static int bus_mw_retry(bus_call *call);

int bus_new(bus **out, const bus_options *opts, app_error *err)
{
    *out = NULL;
    bus *b = calloc(1, sizeof *b);
    if (!b)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    b->opts = *opts;
    if (b->opts.max_conflict_retries < 0)
        b->opts.max_conflict_retries = 0;
    if (b->opts.idempotency_ttl_s <= 0)
        b->opts.idempotency_ttl_s = 86400;
    metrics_declare("commands_total", METRIC_COUNTER, "Commands handled, by name and outcome.");
    metrics_declare("command_duration_seconds", METRIC_HISTOGRAM,
                    "Time to handle a command, from the bus to the reply.");
    metrics_declare("queries_total", METRIC_COUNTER, "Queries handled, by name and outcome.");
    metrics_declare("idempotent_replays_total", METRIC_COUNTER,
                    "Commands answered from their Idempotency-Key record instead of running.");
    metrics_declare("command_conflict_retries_total", METRIC_COUNTER,
                    "Commands run again after a stream version conflict.");
    *out = b;
    return 0;
}

void bus_free(bus *b)
{
    if (!b)
        return;
    free(b->entries);
    free(b);
}

const bus_options *bus_get_options(const bus *b)
{
    return &b->opts;
}

static const bus_entry *bus_lookup(const bus *b, bus_kind kind, const char *name)
{
    for (size_t i = 0; i < b->n_entries; i++)
        if (b->entries[i].kind == kind && strcmp(b->entries[i].def->name, name) == 0)
            return &b->entries[i];
    return NULL;
}

static int bus_add(bus *b, bus_kind kind, const bus_handler_def *table, const bus_transport *via,
                   app_error *err)
{
    for (const bus_handler_def *d = table; d && d->name; d++) {
        if (!d->fn && !via)
            return app_error_set(err, APP_EINTERNAL, "handler %s has no function", d->name);
        if (bus_lookup(b, kind, d->name))
            return app_error_set(err, APP_EINTERNAL, "%s %s is registered twice",
                                 kind == BUS_COMMAND ? "command" : "query", d->name);
        if (b->n_entries == b->cap_entries) {
            size_t cap = b->cap_entries ? b->cap_entries * 2 : 16;
            bus_entry *grown = realloc(b->entries, cap * sizeof *grown);
            if (!grown)
                return app_error_set(err, APP_ENOMEM, "out of memory");
            b->entries = grown;
            b->cap_entries = cap;
        }
        b->entries[b->n_entries++] = (bus_entry){kind, d, via};
    }
    return 0;
}

int bus_register(bus *b, bus_kind kind, const bus_handler_def *table, app_error *err)
{
    return bus_add(b, kind, table, NULL, err);
}

int bus_register_remote(bus *b, bus_kind kind, const bus_handler_def *table,
                        const bus_transport *via, app_error *err)
{
    return bus_add(b, kind, table, via, err);
}

int bus_use(bus *b, bus_middleware_fn fn, app_error *err)
{
    if (b->n_middleware == BUS_MAX_MIDDLEWARE)
        return app_error_set(err, APP_EINTERNAL, "too many bus middleware");
    b->middleware[b->n_middleware++] = fn;
    return 0;
}

int bus_call_next(bus_call *call)
{
    const bus *b = call->ctx->bus;
    if (call->next_middleware < b->n_middleware)
        return b->middleware[call->next_middleware++](call);
    if (call->next_middleware == b->n_middleware) {
        call->next_middleware++;
        /* A remote owner retries conflicts itself, as it would for a caller in its process. */
        return call->via ? call->via->call(call->via->self, call) : bus_mw_retry(call);
    }
    return call->def->fn(call->ctx, call->payload, call->out, call->err);
}

static int bus_dispatch(bus *b, bus_kind kind, const char *name, const cJSON *payload,
                        const bus_meta *meta, bool local_only, cJSON **out, app_error *err)
{
    *out = NULL;
    const bus_entry *e = bus_lookup(b, kind, name);
    if (!e || (local_only && e->via))
        return app_error_set(err, APP_EUNAVAIL, "no handler for %s %s in this process",
                             kind == BUS_COMMAND ? "command" : "query", name);
    /* How deep in handlers this thread is: a message a handler sends is not the request. */
    static _Thread_local int depth;
    depth++;
    /* A span for the message, a child of its sender's; what the handler causes (events,
     * messages, calls to another service) is the span's child in turn. */
    trace_span span;
    trace_start_tp(&span, "", TRACE_INTERNAL, meta->traceparent);
    trace_name(&span, "%s %s", kind == BUS_COMMAND ? "command" : "query", name);
    bus_meta traced;
    if (trace_enabled()) {
        traced = *meta;
        trace_ctx_format(&span.ctx, traced.traceparent);
        meta = &traced;
    }
    trace_ctx outer = trace_enter(&span);
    bus_ctx ctx = {
        .events = b->opts.events,
        .reads = b->opts.reads,
        .clock = b->opts.clock,
        .bus = b,
        .meta = meta,
        .depth = depth,
    };
    bus_call call = {kind, e->def, e->via, &ctx, payload, out, err, 0};
    int rc = bus_call_next(&call);
    depth--;
    if (span.recording) {
        trace_attr_str(&span, "app.message", name);
        if (e->via)
            trace_attr_str(&span, "app.remote", "true");
        if (rc != 0) {
            trace_attr_str(&span, "app.error", app_error_slug(rc));
            /* The caller's mistakes (404, 409, 422...) are answers; failures are the rest. */
            if (rc == APP_EUNAVAIL || rc == APP_EINTERNAL || rc == APP_ENOMEM)
                trace_fail(&span, err->message);
        }
    }
    trace_end(&span);
    trace_leave(&outer);
    if (rc != 0 && *out) {
        cJSON_Delete(*out);
        *out = NULL;
    }
    return rc;
}

int bus_send(bus *b, const char *command, const cJSON *payload, const bus_meta *meta, cJSON **out,
             app_error *err)
{
    return bus_dispatch(b, BUS_COMMAND, command, payload, meta, false, out, err);
}

int bus_ask(bus *b, const char *query, const cJSON *payload, const bus_meta *meta, cJSON **out,
            app_error *err)
{
    return bus_dispatch(b, BUS_QUERY, query, payload, meta, false, out, err);
}

int bus_call_local(bus *b, bus_kind kind, const char *name, const cJSON *payload,
                   const bus_meta *meta, cJSON **out, app_error *err)
{
    return bus_dispatch(b, kind, name, payload, meta, true, out, err);
}

void bus_meta_init(bus_meta *meta, const char *correlation_id, const char *causation_id)
{
    memset(meta, 0, sizeof *meta);
    uuid_v4(meta->message_id);
    snprintf(meta->correlation_id, sizeof meta->correlation_id, "%s",
             correlation_id && *correlation_id ? correlation_id : meta->message_id);
    snprintf(meta->causation_id, sizeof meta->causation_id, "%s",
             causation_id && *causation_id ? causation_id : meta->correlation_id);
}

/* Sleeps a random 0..cap ms, so that commands racing for one aggregate spread out instead
 * of colliding again in the next group commit. */
static void bus_jitter(int attempt)
{
    int cap = attempt < 6 ? 1 << attempt : 64;
    unsigned r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
        r = (unsigned)attempt * 7919u;
    struct timespec ts = {0, (long)(r % (unsigned)(cap * 1000)) * 1000L};
    nanosleep(&ts, NULL);
}

/* Innermost: a handler that re-reads its aggregate may run again after a version conflict,
 * after a jittered pause; when the retries run out the caller sees an ordinary conflict. */
static int bus_mw_retry(bus_call *call)
{
    const bus *b = call->ctx->bus;
    int rc = call->def->fn(call->ctx, call->payload, call->out, call->err);
    if (rc != APP_EVERSION || !(call->def->flags & BUS_RETRY_ON_CONFLICT))
        return rc;
    char name[160], labels[192];
    metrics_escape_label(call->def->name, name, sizeof name);
    snprintf(labels, sizeof labels, "command=\"%s\"", name);
    for (int i = 0; i < b->opts.max_conflict_retries && rc == APP_EVERSION; i++) {
        metrics_counter_add("command_conflict_retries_total", labels, 1);
        if (*call->out) {
            cJSON_Delete(*call->out);
            *call->out = NULL;
        }
        app_error_clear(call->err);
        bus_jitter(i);
        rc = call->def->fn(call->ctx, call->payload, call->out, call->err);
    }
    if (rc == APP_EVERSION) {
        app_error_set(call->err, APP_ECONFLICT, "concurrent modification");
        app_error_detail(call->err, "the resource kept changing while %s ran; try again",
                         call->def->name);
        rc = APP_ECONFLICT;
    }
    return rc;
}

static double bus_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *bus_outcome(int rc)
{
    return rc == 0 ? "ok" : app_error_slug(rc);
}

int bus_mw_logging(bus_call *call)
{
    double start = bus_now_s();
    int rc = bus_call_next(call);
    double ms = (bus_now_s() - start) * 1000.0;
    const char *kind = call->kind == BUS_COMMAND ? "command" : "query";
    if (rc == 0)
        log_debug("%s %s ok in %.2f ms (correlation %s)", kind, call->def->name, ms,
                  call->ctx->meta->correlation_id);
    else if (app_error_http_status(rc) >= 500)
        log_error("%s %s failed in %.2f ms: %s%s%s (correlation %s)", kind, call->def->name, ms,
                  call->err->message, call->err->detail[0] ? ": " : "", call->err->detail,
                  call->ctx->meta->correlation_id);
    else
        log_info("%s %s refused in %.2f ms: %s (correlation %s)", kind, call->def->name, ms,
                 call->err->message, call->ctx->meta->correlation_id);
    return rc;
}

bool bus_serves(const bus *b, bus_kind kind, const char *name)
{
    const bus_entry *e = bus_lookup(b, kind, name);
    return e && !e->via;
}

int bus_mw_metrics(bus_call *call)
{
    double start = bus_now_s();
    int rc = bus_call_next(call);
    bus_observe(call->kind, call->def->name, rc, bus_now_s() - start);
    return rc;
}

void bus_observe(bus_kind kind, const char *message, int rc, double elapsed)
{
    char name[160];
    metrics_escape_label(message, name, sizeof name);
    char labels[256];
    if (kind == BUS_COMMAND) {
        snprintf(labels, sizeof labels, "command=\"%s\",outcome=\"%s\"", name, bus_outcome(rc));
        metrics_counter_add("commands_total", labels, 1);
        snprintf(labels, sizeof labels, "command=\"%s\"", name);
        metrics_histogram_observe("command_duration_seconds", labels, elapsed);
    } else {
        snprintf(labels, sizeof labels, "query=\"%s\",outcome=\"%s\"", name, bus_outcome(rc));
        metrics_counter_add("queries_total", labels, 1);
    }
}
