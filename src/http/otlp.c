/* A ring of finished spans under one mutex; the exporter thread takes a batch, renders it as
 * OTLP JSON (ids as lower-case hex, times as decimal strings, as the OTLP/JSON encoding says)
 * and posts it with the blocking HTTP client. */
#include "http/otlp.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/trace.h"
#include "http/client.h"

#define OTLP_SPANS "tracing_spans_total"
#define OTLP_PATH  "/v1/traces"

struct otlp_exporter {
    otlp_options o;
    char *service_name, *attributes;
    char *path; /* where batches are posted: the endpoint's path, then /v1/traces */
    http_client *client;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake; /* a batch queued, or stopping */
    trace_span *ring;
    size_t head, count;
    bool stopping;
    trace_span *batch; /* the thread's */
};

static void otlp_count(const char *outcome, size_t n)
{
    if (n == 0)
        return;
    char labels[48];
    snprintf(labels, sizeof labels, "outcome=\"%s\"", outcome);
    metrics_counter_add(OTLP_SPANS, labels, (double)n);
}

static void otlp_sink(const trace_span *s, void *arg)
{
    otlp_exporter *e = arg;
    bool dropped = false;
    pthread_mutex_lock(&e->lock);
    if (e->count == e->o.queue_size || e->stopping) {
        dropped = true;
    } else {
        e->ring[(e->head + e->count) % e->o.queue_size] = *s;
        if (++e->count >= e->o.batch_size)
            pthread_cond_signal(&e->wake);
    }
    pthread_mutex_unlock(&e->lock);
    if (dropped)
        otlp_count("dropped", 1);
}

/* ---- rendering ------------------------------------------------------------------------------ */

static cJSON *otlp_kv(const char *key, const char *value)
{
    cJSON *kv = cJSON_CreateObject();
    cJSON *v = kv ? cJSON_AddObjectToObject(kv, "value") : NULL;
    if (!cJSON_AddStringToObject(kv, "key", key) || !v ||
        !cJSON_AddStringToObject(v, "stringValue", value)) {
        cJSON_Delete(kv);
        return NULL;
    }
    return kv;
}

static cJSON *otlp_kv_int(const char *key, int64_t value)
{
    char text[24];
    snprintf(text, sizeof text, "%" PRId64, value);
    cJSON *kv = cJSON_CreateObject();
    cJSON *v = kv ? cJSON_AddObjectToObject(kv, "value") : NULL;
    if (!cJSON_AddStringToObject(kv, "key", key) || !v ||
        !cJSON_AddStringToObject(v, "intValue", text)) {
        cJSON_Delete(kv);
        return NULL;
    }
    return kv;
}

/* The resource: service.name, then "k=v" pairs of attributes. */
static bool otlp_resource(const otlp_exporter *e, cJSON *attrs)
{
    if (!cJSON_AddItemToArray(attrs, otlp_kv("service.name", e->service_name)))
        return false;
    if (!e->attributes)
        return true;
    char *copy = strdup(e->attributes), *save = NULL;
    bool ok = copy != NULL;
    for (char *pair = copy ? strtok_r(copy, ",", &save) : NULL; ok && pair;
         pair = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(pair, '=');
        if (!eq || eq == pair)
            continue;
        *eq = '\0';
        if (strcmp(pair, "service.name") != 0)
            ok = cJSON_AddItemToArray(attrs, otlp_kv(pair, eq + 1));
    }
    free(copy);
    return ok;
}

static cJSON *otlp_span(const trace_span *s)
{
    char hex[33], ns[24];
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    bool ok = true;
    trace_hex(s->ctx.trace_id, 16, hex);
    ok = ok && cJSON_AddStringToObject(o, "traceId", hex);
    trace_hex(s->ctx.span_id, 8, hex);
    ok = ok && cJSON_AddStringToObject(o, "spanId", hex);
    if (s->has_parent) {
        trace_hex(s->parent_id, 8, hex);
        ok = ok && cJSON_AddStringToObject(o, "parentSpanId", hex);
    }
    ok = ok && cJSON_AddStringToObject(o, "name", s->name) &&
         cJSON_AddNumberToObject(o, "kind", (double)s->kind);
    snprintf(ns, sizeof ns, "%" PRId64, s->start_ns);
    ok = ok && cJSON_AddStringToObject(o, "startTimeUnixNano", ns);
    snprintf(ns, sizeof ns, "%" PRId64, s->end_ns);
    ok = ok && cJSON_AddStringToObject(o, "endTimeUnixNano", ns);
    cJSON *attrs = ok ? cJSON_AddArrayToObject(o, "attributes") : NULL;
    for (size_t i = 0; attrs && ok && i < s->n_attrs; i++)
        ok = cJSON_AddItemToArray(attrs, s->attrs[i].is_int
                                             ? otlp_kv_int(s->attrs[i].key, s->attrs[i].i)
                                             : otlp_kv(s->attrs[i].key, s->attrs[i].s));
    if (ok && s->error) {
        cJSON *st = cJSON_AddObjectToObject(o, "status");
        ok = st && cJSON_AddNumberToObject(st, "code", 2) &&
             cJSON_AddStringToObject(st, "message", s->status);
    }
    if (!ok || !attrs) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static char *otlp_render(const otlp_exporter *e, const trace_span *spans, size_t n)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *rs = root ? cJSON_AddArrayToObject(root, "resourceSpans") : NULL;
    cJSON *r = cJSON_CreateObject();
    bool ok = rs && r && cJSON_AddItemToArray(rs, r);
    if (!ok)
        cJSON_Delete(r);
    cJSON *res = ok ? cJSON_AddObjectToObject(r, "resource") : NULL;
    cJSON *attrs = res ? cJSON_AddArrayToObject(res, "attributes") : NULL;
    ok = attrs && otlp_resource(e, attrs);
    cJSON *scopes = ok ? cJSON_AddArrayToObject(r, "scopeSpans") : NULL;
    cJSON *scope = cJSON_CreateObject();
    ok = scopes && scope && cJSON_AddItemToArray(scopes, scope);
    if (!ok)
        cJSON_Delete(scope);
    cJSON *name = ok ? cJSON_AddObjectToObject(scope, "scope") : NULL;
    ok = name && cJSON_AddStringToObject(name, "name", "app");
    cJSON *list = ok ? cJSON_AddArrayToObject(scope, "spans") : NULL;
    for (size_t i = 0; list && i < n; i++)
        if (!cJSON_AddItemToArray(list, otlp_span(&spans[i])))
            list = NULL;
    char *text = list ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return text;
}

/* ---- the thread ----------------------------------------------------------------------------- */

static void otlp_send(otlp_exporter *e, size_t n)
{
    char *body = otlp_render(e, e->batch, n);
    if (!body) {
        log_error("tracing: out of memory rendering %zu spans; dropped", n);
        otlp_count("failed", n);
        return;
    }
    http_client_reply reply = {0};
    http_client_failure failure;
    app_error err = APP_ERROR_INIT;
    int rc = http_client_call(e->client, "POST", e->path, NULL, "application/json", body,
                              strlen(body), NULL, e->o.timeout_ms, &reply, &failure, &err);
    free(body);
    if (rc == 0 && reply.status >= 200 && reply.status < 300) {
        otlp_count("exported", n);
    } else {
        /* At most a line a batch: the receiver being away must not flood the log. */
        log_warn("tracing: %zu spans not exported: %s", n,
                 rc ? err.message : (reply.status ? "the receiver refused them" : "?"));
        otlp_count("failed", n);
    }
    http_client_reply_free(&reply);
}

static void *otlp_main(void *arg)
{
    otlp_exporter *e = arg;
    pthread_mutex_lock(&e->lock);
    for (;;) {
        if (e->count < e->o.batch_size && !e->stopping) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += e->o.interval_ms / 1000;
            until.tv_nsec += (long)(e->o.interval_ms % 1000) * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&e->wake, &e->lock, &until);
        }
        size_t n = e->count < e->o.batch_size ? e->count : e->o.batch_size;
        for (size_t i = 0; i < n; i++)
            e->batch[i] = e->ring[(e->head + i) % e->o.queue_size];
        e->head = (e->head + n) % e->o.queue_size;
        e->count -= n;
        if (n > 0) {
            pthread_mutex_unlock(&e->lock);
            otlp_send(e, n);
            pthread_mutex_lock(&e->lock);
        }
        if (e->count == 0 && e->stopping)
            break;
    }
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

/* Frees e and what it holds; its thread is not running. */
static void otlp_free(otlp_exporter *e)
{
    http_client_free(e->client);
    pthread_mutex_destroy(&e->lock);
    pthread_cond_destroy(&e->wake);
    free(e->service_name);
    free(e->attributes);
    free(e->path);
    free(e->ring);
    free(e->batch);
    free(e);
}

int otlp_start(otlp_exporter **out, const otlp_options *o, app_error *err)
{
    *out = NULL;
    if (!o->endpoint || strncmp(o->endpoint, "http://", 7) != 0)
        return app_error_set(err, APP_ECONFIG,
                             "tracing.endpoint must be an http://host:port URL (OTLP/HTTP)");
    otlp_exporter *e = calloc(1, sizeof *e);
    if (!e)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    pthread_mutex_init(&e->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&e->wake, &ca);
    pthread_condattr_destroy(&ca);
    e->o = *o;
    if (e->o.queue_size < 1)
        e->o.queue_size = 2048;
    if (e->o.batch_size < 1 || e->o.batch_size > e->o.queue_size)
        e->o.batch_size = e->o.queue_size < 512 ? e->o.queue_size : 512;
    if (e->o.interval_ms < 1)
        e->o.interval_ms = 1000;
    if (e->o.timeout_ms < 1)
        e->o.timeout_ms = 5000;
    /* The client takes the origin; the endpoint's path, if any, is the base that OTLP's
     * /v1/traces goes after (OTEL_EXPORTER_OTLP_ENDPOINT's meaning). */
    char url[512], path[512];
    snprintf(url, sizeof url, "%s", o->endpoint);
    char *slash = strchr(url + 7, '/');
    size_t base = slash ? strlen(slash) : 0;
    while (base > 0 && slash[base - 1] == '/')
        base--;
    snprintf(path, sizeof path, "%.*s%s", (int)base, slash ? slash : "", OTLP_PATH);
    if (slash)
        *slash = '\0';
    http_client_options co = {.url = url, .pool_size = 1};
    int rc = 0;
    e->service_name = strdup(o->service_name && *o->service_name ? o->service_name : "app");
    e->attributes = o->attributes && *o->attributes ? strdup(o->attributes) : NULL;
    e->path = strdup(path);
    e->ring = calloc(e->o.queue_size, sizeof *e->ring);
    e->batch = calloc(e->o.batch_size, sizeof *e->batch);
    if (!e->service_name || (o->attributes && *o->attributes && !e->attributes) || !e->path ||
        !e->ring || !e->batch)
        rc = app_error_set(err, APP_ENOMEM, "out of memory");
    if (rc == 0)
        rc = http_client_new(&e->client, &co, err);
    metrics_declare(OTLP_SPANS, METRIC_COUNTER,
                    "Finished spans, by outcome: exported, dropped (the queue was full) or "
                    "failed (the receiver refused or did not answer).");
    if (rc == 0 && pthread_create(&e->thread, NULL, otlp_main, e) != 0)
        rc = app_error_set(err, APP_EINTERNAL, "cannot start the tracing thread");
    if (rc != 0) {
        otlp_free(e);
        return rc;
    }
    trace_configure(otlp_sink, e, o->ratio, o->parent_based);
    log_info("tracing: spans of %.0f%% of new traces go to %s%s as %s", o->ratio * 100, url,
             e->path, e->service_name);
    *out = e;
    return 0;
}

void otlp_stop(otlp_exporter *e)
{
    if (!e)
        return;
    trace_configure(NULL, NULL, 0, true);
    pthread_mutex_lock(&e->lock);
    e->stopping = true;
    pthread_cond_signal(&e->wake);
    pthread_mutex_unlock(&e->lock);
    pthread_join(e->thread, NULL);
    otlp_free(e);
}
