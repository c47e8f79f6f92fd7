/* Liveness answers from the loop thread; readiness asks the bus, which pings PostgreSQL and
 * Redis from a worker; metrics renders the process-wide registry. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/deadline.h"
#include "core/log.h"
#include "core/metrics.h"
#include "kernel/ops.h"

static void ops_add_check(cJSON *checks, const char *name, int rc, const app_error *err,
                          bool *all_up)
{
    cJSON *c = cJSON_AddObjectToObject(checks, name);
    if (!c)
        return;
    cJSON_AddStringToObject(c, "status", rc == 0 ? "up" : "down");
    if (rc != 0) {
        *all_up = false;
        /* The driver's own words (host names, users) stay in the log. */
        log_warn("readiness: %s is down: %s%s%s", name, err->message, err->detail[0] ? ": " : "",
                 err->detail);
        char detail[96];
        snprintf(detail, sizeof detail, "cannot reach %s (the log says why)", name);
        cJSON_AddStringToObject(c, "detail", detail);
    }
}

#define OPS_MAX_SOFT_CHECKS 12

typedef struct ops_soft_check {
    const char *name;
    ops_soft_check_fn check;
    void *arg;
} ops_soft_check;

static ops_soft_check ops_soft[OPS_MAX_SOFT_CHECKS];
static pthread_mutex_t ops_soft_lock = PTHREAD_MUTEX_INITIALIZER;

void ops_set_soft_check(const char *name, ops_soft_check_fn check, void *arg)
{
    pthread_mutex_lock(&ops_soft_lock);
    ops_soft_check *slot = NULL;
    for (size_t i = 0; i < OPS_MAX_SOFT_CHECKS && !slot; i++)
        if (ops_soft[i].name && strcmp(ops_soft[i].name, name) == 0)
            slot = &ops_soft[i];
    for (size_t i = 0; i < OPS_MAX_SOFT_CHECKS && !slot && check; i++)
        if (!ops_soft[i].name)
            slot = &ops_soft[i];
    if (slot) {
        slot->name = check ? name : NULL;
        slot->check = check;
        slot->arg = arg;
    }
    pthread_mutex_unlock(&ops_soft_lock);
}

/* "up", or "degraded" with a detail; the overall status stays as the hard checks say. */
static void ops_add_soft_checks(cJSON *checks)
{
    pthread_mutex_lock(&ops_soft_lock);
    for (size_t i = 0; i < OPS_MAX_SOFT_CHECKS; i++) {
        if (!ops_soft[i].check)
            continue;
        char detail[512] = "";
        bool ok = ops_soft[i].check(ops_soft[i].arg, detail, sizeof detail);
        cJSON *c = cJSON_AddObjectToObject(checks, ops_soft[i].name);
        if (!c)
            continue;
        cJSON_AddStringToObject(c, "status", ok ? "up" : "degraded");
        if (!ok)
            cJSON_AddStringToObject(c, "detail", detail);
    }
    pthread_mutex_unlock(&ops_soft_lock);
}

static const char *ops_report_name;
static ops_report_fn ops_report;
static void *ops_report_arg;

void ops_set_report(const char *name, ops_report_fn report, void *arg)
{
    pthread_mutex_lock(&ops_soft_lock);
    ops_report_name = name;
    ops_report = report;
    ops_report_arg = arg;
    pthread_mutex_unlock(&ops_soft_lock);
}

static void ops_add_report(cJSON *body)
{
    pthread_mutex_lock(&ops_soft_lock);
    cJSON *section = ops_report ? ops_report(ops_report_arg) : NULL;
    if (section && !cJSON_AddItemToObject(body, ops_report_name, section))
        cJSON_Delete(section);
    pthread_mutex_unlock(&ops_soft_lock);
}

static int ops_readiness_now(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    (void)payload;
    cJSON *body = cJSON_CreateObject();
    cJSON *checks = body ? cJSON_AddObjectToObject(body, "checks") : NULL;
    if (!checks) {
        cJSON_Delete(body);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    bool all_up = true;
    app_error perr = APP_ERROR_INIT, rerr = APP_ERROR_INIT;
    int prc = ctx->events->ops->ping(ctx->events->self, &perr);
    ops_add_check(checks, "postgres", prc, &perr, &all_up);
    int rrc = ctx->reads->ops->ping(ctx->reads->self, &rerr);
    ops_add_check(checks, "redis", rrc, &rerr, &all_up);
    ops_add_soft_checks(checks);
    ops_add_report(body);
    cJSON_AddStringToObject(body, "status", all_up ? "ok" : "unavailable");
    *out = body;
    return 0;
}

/* Probes come often (every load balancer, every few seconds, and anyone who finds the port):
 * each answer within a second of the last is that one again, so a flood of probes costs no
 * round trips to PostgreSQL or Redis. Concurrent probes wait for the one that refreshes. */
#define OPS_READINESS_TTL_MS 1000

static pthread_mutex_t ops_ready_lock = PTHREAD_MUTEX_INITIALIZER;
static cJSON *ops_ready_cache; /* kept until the next refresh */
static int64_t ops_ready_at;

static int ops_readiness(const bus_ctx *ctx, const cJSON *payload, cJSON **out, app_error *err)
{
    pthread_mutex_lock(&ops_ready_lock);
    int64_t now = deadline_now_ms();
    int rc = 0;
    if (!ops_ready_cache || now - ops_ready_at >= OPS_READINESS_TTL_MS) {
        cJSON *fresh = NULL;
        rc = ops_readiness_now(ctx, payload, &fresh, err);
        if (rc == 0) {
            cJSON_Delete(ops_ready_cache);
            ops_ready_cache = fresh;
            ops_ready_at = deadline_now_ms();
        }
    }
    if (rc == 0) {
        *out = cJSON_Duplicate(ops_ready_cache, true);
        if (!*out)
            rc = app_error_set(err, APP_ENOMEM, "out of memory");
    }
    pthread_mutex_unlock(&ops_ready_lock);
    return rc;
}

const bus_handler_def ops_queries[] = {
    {"kernel.readiness", ops_readiness, 0},
    {NULL, NULL, 0},
};

static int ops_live(bus *b, const http_req *req, http_res *res, app_error *err)
{
    (void)b;
    (void)req;
    res->body = cJSON_CreateObject();
    if (!res->body || !cJSON_AddStringToObject(res->body, "status", "ok"))
        return app_error_set(err, APP_ENOMEM, "out of memory");
    return 0;
}

static int ops_ready(bus *b, const http_req *req, http_res *res, app_error *err)
{
    cJSON *out = NULL;
    int rc = bus_ask(b, "kernel.readiness", NULL, &req->meta, &out, err);
    if (rc)
        return rc;
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(out, "status");
    res->status = cJSON_IsString(status) && strcmp(status->valuestring, "ok") == 0 ? 200 : 503;
    res->body = out;
    return 0;
}

static int ops_metrics(bus *b, const http_req *req, http_res *res, app_error *err)
{
    (void)b;
    (void)req;
    res->text = metrics_render();
    if (!res->text)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    res->content_type = "text/plain; version=0.0.4; charset=utf-8";
    return 0;
}

const http_route_def ops_routes[] = {
    {HTTP_M_GET | HTTP_M_HEAD, "/health/live", ops_live, HTTP_ROUTE_INLINE | HTTP_ROUTE_OPEN, NULL,
     NULL},
    {HTTP_M_GET | HTTP_M_HEAD, "/health/ready", ops_ready, HTTP_ROUTE_OPEN, NULL, NULL},
    {HTTP_M_GET, "/metrics", ops_metrics, HTTP_ROUTE_OPEN, NULL, NULL},
    {0, NULL, NULL, 0, NULL, NULL},
};
