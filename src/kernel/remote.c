/* Calls to contexts in other processes: the bus transport (retries, breaker, deadline), the
 * internal endpoints that answer them, and the JSON both ends exchange. */
#include "kernel/remote.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/backoff.h"
#include "core/breaker.h"
#include "core/deadline.h"
#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/trace.h"
#include "http/client.h"
#include "kernel/ops.h"

#define REMOTE_MAX            8
#define REMOTE_TIMEOUT_MAX_MS 600000
#define REMOTE_PROBLEM_BASE   "https://problems.app.dev/"

typedef struct remote_peer {
    remote *owner;
    char context[32];
    char url[256];
    char label[64];      /* the context, escaped for metric labels */
    char check_name[48]; /* its readiness check, "remote.<context>" */
    http_client *client;
    pthread_mutex_t lock; /* the breaker is not thread-safe */
    breaker br;
    bus_transport via;
} remote_peer;

struct remote {
    remote_options o;
    char authorization[320]; /* "Authorization: Bearer <token>", or "" */
    remote_peer *peers[REMOTE_MAX];
    size_t n_peers;
};

static void remote_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* ---- the wire format -------------------------------------------------------------------- */

static bool remote_add_string(cJSON *o, const char *name, const char *value)
{
    return !value[0] || cJSON_AddStringToObject(o, name, value) != NULL;
}

char *remote_envelope_text(const bus_call *call, int64_t timeout_ms)
{
    const bus_meta *m = call->ctx->meta;
    cJSON *o = cJSON_CreateObject();
    cJSON *payload = call->payload ? cJSON_Duplicate(call->payload, true) : cJSON_CreateObject();
    char *text = NULL;
    if (!o || !payload) {
        cJSON_Delete(payload);
        goto done;
    }
    cJSON_AddItemToObject(o, "payload", payload);
    bool ok = cJSON_AddNumberToObject(o, "timeoutMs", (double)timeout_ms) != NULL;
    if (ok && m) {
        ok = remote_add_string(o, "correlationId", m->correlation_id) &&
             remote_add_string(o, "causationId", m->causation_id) &&
             remote_add_string(o, "actor", m->actor) &&
             remote_add_string(o, "traceparent", m->traceparent);
        /* A key belongs to a request from outside the bus, as it does in one process. */
        if (ok && call->ctx->depth <= 1)
            ok = remote_add_string(o, "idempotencyKey", m->idempotency_key);
    }
    if (ok)
        text = cJSON_PrintUnformatted(o);
done:
    cJSON_Delete(o);
    return text;
}

/* Copies member name of body, a string of at most size - 1 printable characters, into out. */
static int remote_envelope_string(const cJSON *body, const char *name, char *out, size_t size,
                                  app_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(body, name);
    if (!v)
        return 0;
    const char *s = cJSON_GetStringValue(v);
    size_t n = s ? strlen(s) : 0;
    bool printable = s != NULL && n < size;
    for (size_t i = 0; printable && i < n; i++)
        printable = (unsigned char)s[i] >= 0x20 && (unsigned char)s[i] < 0x7f;
    if (!printable) {
        app_error_set(err, APP_EBADREQ, "the envelope's %s is not valid", name);
        app_error_field(err, name, "must be a string of at most %zu printable characters",
                        size - 1);
        return APP_EBADREQ;
    }
    memcpy(out, s, n + 1);
    return 0;
}

int remote_envelope_parse(const cJSON *body, bus_meta *meta, const cJSON **payload, app_error *err)
{
    bus_meta_init(meta, NULL, NULL);
    *payload = cJSON_GetObjectItemCaseSensitive(body, "payload");
    if (!cJSON_IsObject(*payload)) {
        app_error_set(err, APP_EBADREQ, "the envelope has no payload object");
        app_error_field(err, "payload", "is required and must be an object");
        return APP_EBADREQ;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(body, "timeoutMs");
    if (!cJSON_IsNumber(t) || t->valuedouble < 1 || t->valuedouble > REMOTE_TIMEOUT_MAX_MS) {
        app_error_set(err, APP_EBADREQ, "the envelope has no valid timeoutMs");
        app_error_field(err, "timeoutMs", "must be a number of milliseconds, 1 to %d",
                        REMOTE_TIMEOUT_MAX_MS);
        return APP_EBADREQ;
    }
    int rc = remote_envelope_string(body, "correlationId", meta->correlation_id,
                                    sizeof meta->correlation_id, err);
    if (rc == 0)
        rc = remote_envelope_string(body, "causationId", meta->causation_id,
                                    sizeof meta->causation_id, err);
    if (rc == 0)
        rc = remote_envelope_string(body, "actor", meta->actor, sizeof meta->actor, err);
    if (rc == 0)
        rc = remote_envelope_string(body, "traceparent", meta->traceparent,
                                    sizeof meta->traceparent, err);
    if (rc == 0)
        rc = remote_envelope_string(body, "idempotencyKey", meta->idempotency_key,
                                    sizeof meta->idempotency_key, err);
    if (rc)
        return rc;
    if (!meta->correlation_id[0])
        snprintf(meta->correlation_id, sizeof meta->correlation_id, "%s", meta->message_id);
    if (!meta->causation_id[0])
        snprintf(meta->causation_id, sizeof meta->causation_id, "%s", meta->correlation_id);
    meta->deadline_ms = deadline_now_ms() + (int64_t)t->valuedouble;
    return 0;
}

char *remote_reply_text(int rc, const cJSON *out, const app_error *err, int *status)
{
    cJSON *o = cJSON_CreateObject();
    char *text = NULL;
    if (!o)
        return NULL;
    if (rc == 0) {
        *status = 200;
        cJSON *result = out ? cJSON_Duplicate(out, true) : cJSON_CreateNull();
        if (!result)
            goto done;
        cJSON_AddItemToObject(o, "result", result);
        text = cJSON_PrintUnformatted(o);
        goto done;
    }
    *status = app_error_http_status(rc);
    char type[128];
    snprintf(type, sizeof type, "%s%s", REMOTE_PROBLEM_BASE, app_error_slug(rc));
    if (!cJSON_AddStringToObject(o, "type", type) ||
        !cJSON_AddStringToObject(o, "title", app_error_title(rc)) ||
        !cJSON_AddNumberToObject(o, "status", *status) ||
        !cJSON_AddStringToObject(o, "message", err->message) ||
        (err->detail[0] && !cJSON_AddStringToObject(o, "detail", err->detail)))
        goto done;
    if (err->n_fields > 0) {
        cJSON *errors = cJSON_AddArrayToObject(o, "errors");
        for (size_t i = 0; errors && i < err->n_fields && i < APP_ERROR_MAX_FIELDS; i++) {
            cJSON *f = cJSON_CreateObject();
            if (!f)
                goto done;
            cJSON_AddItemToArray(errors, f);
            if (!cJSON_AddStringToObject(f, "field", err->fields[i].field) ||
                !cJSON_AddStringToObject(f, "message", err->fields[i].message))
                goto done;
        }
        if (!errors)
            goto done;
    }
    text = cJSON_PrintUnformatted(o);
done:
    cJSON_Delete(o);
    return text;
}

static int remote_not_an_answer(app_error *err, int status)
{
    app_error_set(err, APP_EUNAVAIL, "the remote's reply is not an answer");
    app_error_detail(err, "an answer of status %d that is not a bus reply", status);
    return APP_EUNAVAIL;
}

int remote_reply_parse(int status, const char *body, cJSON **out, app_error *err)
{
    *out = NULL;
    cJSON *o = body ? json_parse_n(body, strlen(body)) : NULL;
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return remote_not_an_answer(err, status);
    }
    if (status == 200) {
        cJSON *result = cJSON_DetachItemFromObjectCaseSensitive(o, "result");
        cJSON_Delete(o);
        if (!result)
            return remote_not_an_answer(err, status);
        if (cJSON_IsNull(result)) {
            cJSON_Delete(result);
            return 0;
        }
        *out = result;
        return 0;
    }
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "type"));
    const char *message = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "message"));
    const char *detail = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, "detail"));
    size_t base = strlen(REMOTE_PROBLEM_BASE);
    int code = type && strncmp(type, REMOTE_PROBLEM_BASE, base) == 0
                   ? app_error_code_of_slug(type + base)
                   : 0;
    /* Only codes whose status matches: anything else is not the owner speaking. */
    if (code == 0 || app_error_http_status(code) != status || !message) {
        cJSON_Delete(o);
        return remote_not_an_answer(err, status);
    }
    app_error_set(err, code, "%s", message);
    if (detail)
        app_error_detail(err, "%s", detail);
    const cJSON *f;
    cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(o, "errors"))
    {
        const char *field = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(f, "field"));
        const char *msg = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(f, "message"));
        if (field && msg)
            app_error_field(err, field, "%s", msg);
    }
    cJSON_Delete(o);
    return code;
}

/* ---- the caller's end ------------------------------------------------------------------- */

void remote_declare_metrics(void)
{
    metrics_declare("remote_calls_total", METRIC_COUNTER,
                    "Commands and queries sent to contexts in other processes, by remote, "
                    "message and outcome.");
    metrics_declare("remote_call_duration_seconds", METRIC_HISTOGRAM,
                    "Time from sending a message to another process to its answer, retries "
                    "included.");
    metrics_declare("remote_call_retries_total", METRIC_COUNTER,
                    "Messages sent again to another process after a failure without an answer.");
    metrics_declare("remote_breaker_open", METRIC_GAUGE,
                    "1 while the circuit breaker of a remote context is open, else 0.");
}

int remote_new(remote **out, const remote_options *o, app_error *err)
{
    *out = NULL;
    remote *r = calloc(1, sizeof *r);
    if (!r)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    r->o = *o;
    r->o.token = NULL;
    if (r->o.timeout_ms < 1)
        r->o.timeout_ms = 5000;
    if (o->token && o->token[0])
        snprintf(r->authorization, sizeof r->authorization, "Authorization: Bearer %s", o->token);
    remote_declare_metrics();
    *out = r;
    return 0;
}

void remote_free(remote *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_peers; i++) {
        http_client_free(r->peers[i]->client);
        pthread_mutex_destroy(&r->peers[i]->lock);
        free(r->peers[i]);
    }
    free(r);
}

/* A remote whose breaker is not closed degrades readiness without failing it: this process
 * still serves what does not need the remote. */
static bool remote_check(void *arg, char *detail, size_t size)
{
    remote_peer *p = arg;
    pthread_mutex_lock(&p->lock);
    breaker_state st = breaker_current(&p->br);
    int64_t wait = breaker_wait_ms(&p->br);
    pthread_mutex_unlock(&p->lock);
    if (st == BREAKER_CLOSED)
        return true;
    if (st == BREAKER_OPEN)
        snprintf(detail, size, "circuit breaker open after repeated failures; next try in %lld ms",
                 (long long)wait);
    else
        snprintf(detail, size, "circuit breaker half-open; the next call probes it");
    return false;
}

void remote_set_checks(remote *r, bool on)
{
    for (size_t i = 0; r && i < r->n_peers; i++)
        ops_set_soft_check(r->peers[i]->check_name, on ? remote_check : NULL, r->peers[i]);
}

static void remote_breaker_gauge(remote_peer *p, breaker_state st)
{
    char labels[96];
    snprintf(labels, sizeof labels, "remote=\"%s\"", p->label);
    metrics_gauge_set("remote_breaker_open", labels, st == BREAKER_OPEN ? 1 : 0);
}

/* Records how a try went with the peer's breaker: answered says the owner spoke. */
static void remote_breaker_record(remote_peer *p, bool answered)
{
    pthread_mutex_lock(&p->lock);
    breaker_state before = p->br.state;
    if (answered)
        breaker_success(&p->br);
    else
        breaker_failure(&p->br);
    breaker_state after = p->br.state;
    pthread_mutex_unlock(&p->lock);
    if (after != before) {
        remote_breaker_gauge(p, after);
        if (after == BREAKER_OPEN)
            log_warn("remote %s at %s: circuit breaker open after repeated failures", p->context,
                     p->url);
        else if (after == BREAKER_CLOSED)
            log_info("remote %s at %s answers again; circuit breaker closed", p->context, p->url);
    }
}

static bool remote_breaker_allow(remote_peer *p)
{
    pthread_mutex_lock(&p->lock);
    bool ok = breaker_allow(&p->br);
    pthread_mutex_unlock(&p->lock);
    return ok;
}

static void remote_count_call(remote_peer *p, const bus_call *call, int rc, double seconds)
{
    char name[160], labels[320];
    metrics_escape_label(call->def->name, name, sizeof name);
    snprintf(labels, sizeof labels, "remote=\"%s\",message=\"%s\",outcome=\"%s\"", p->label, name,
             rc == 0 ? "ok" : app_error_slug(rc));
    metrics_counter_add("remote_calls_total", labels, 1);
    snprintf(labels, sizeof labels, "remote=\"%s\"", p->label);
    metrics_histogram_observe("remote_call_duration_seconds", labels, seconds);
}

/* One try: 0 or the owner's error when it answered (*answered), else APP_EUNAVAIL with
 * *failure saying whether the request left. */
static int remote_try(remote_peer *p, bus_call *call, const char *path, int64_t left,
                      bool *answered, http_client_failure *failure)
{
    remote *r = p->owner;
    *answered = false;
    *failure = HTTP_CLIENT_UNSENT;
    /* Each try is a client span, a child of the message's; the envelope names it, so that
     * the owner's spans are its children. */
    const bus_ctx *ctx = call->ctx;
    trace_span span;
    trace_start_tp(&span, "", TRACE_CLIENT, ctx->meta ? ctx->meta->traceparent : NULL);
    trace_name(&span, "POST %s", path);
    bus_meta traced;
    bus_ctx traced_ctx;
    if (span.recording && ctx->meta) {
        traced = *ctx->meta;
        trace_ctx_format(&span.ctx, traced.traceparent);
        traced_ctx = *ctx;
        traced_ctx.meta = &traced;
        call->ctx = &traced_ctx;
    }
    char *body = remote_envelope_text(call, left);
    call->ctx = ctx;
    if (!body) {
        trace_end(&span);
        return app_error_set(call->err, APP_ENOMEM, "out of memory");
    }
    const char *headers[] = {r->authorization[0] ? r->authorization : NULL, NULL};
    http_client_reply reply;
    app_error terr = APP_ERROR_INIT;
    int rc =
        http_client_call(p->client, "POST", path, headers, "application/json", body, strlen(body),
                         HTTP_INTERNAL_REPLY_HEADER, (int)left, &reply, failure, &terr);
    free(body);
    if (rc == 0 && reply.header && strcmp(reply.header, "1") == 0) {
        *answered = true;
        rc = remote_reply_parse(reply.status, reply.body, call->out, call->err);
    } else if (rc == 0) {
        /* Something answered that is not the owner's bus: a proxy, a wrong address. */
        *failure = HTTP_CLIENT_BROKEN;
        app_error_set(call->err, APP_EUNAVAIL, "context %s is unavailable", p->context);
        app_error_detail(call->err, "%s answered %s with status %d, not as its owner: %.160s",
                         p->url, call->def->name, reply.status, reply.body ? reply.body : "");
        rc = APP_EUNAVAIL;
    } else {
        app_error_set(call->err, APP_EUNAVAIL, "context %s is unavailable", p->context);
        app_error_detail(call->err, "%s: %s", call->def->name, terr.message);
    }
    if (span.recording) {
        trace_attr_str(&span, "http.request.method", "POST");
        trace_attr_str(&span, "server.address", p->url);
        trace_attr_str(&span, "url.path", path);
        trace_attr_str(&span, "app.message", call->def->name);
        if (*failure == HTTP_CLIENT_REPLIED || *answered)
            trace_attr_int(&span, "http.response.status_code", reply.status);
        if (!*answered)
            trace_fail(&span, call->err->message);
    }
    trace_end(&span);
    http_client_reply_free(&reply);
    return rc;
}

static int remote_call(void *self, bus_call *call)
{
    remote_peer *p = self;
    remote *r = p->owner;
    const bus_meta *meta = call->ctx->meta;
    int64_t start = deadline_now_ms();
    int64_t deadline =
        meta && meta->deadline_ms > 0 ? meta->deadline_ms : start + (int64_t)r->o.timeout_ms;
    bool repeatable = call->kind == BUS_QUERY || (call->def->flags & BUS_IDEMPOTENT);
    char path[192];
    snprintf(path, sizeof path, "/internal/v1/%s/%s",
             call->kind == BUS_COMMAND ? "commands" : "queries", call->def->name);
    backoff bo;
    backoff_init(&bo, r->o.retry_backoff_ms, r->o.retry_backoff_max_ms, 0);
    int rc;
    for (;;) {
        int64_t left = deadline - deadline_now_ms();
        if (left <= 0) {
            if (call->err->code == 0)
                app_error_set(call->err, APP_EUNAVAIL, "context %s is unavailable", p->context);
            app_error_detail(call->err, "%s got no answer from %s before the caller's deadline",
                             call->def->name, p->url);
            rc = APP_EUNAVAIL;
            break;
        }
        if (!remote_breaker_allow(p)) {
            app_error_set(call->err, APP_EUNAVAIL, "context %s is unavailable", p->context);
            app_error_detail(call->err,
                             "%s was not sent: the circuit breaker of %s is open after "
                             "repeated failures",
                             call->def->name, p->url);
            rc = APP_EUNAVAIL;
            break;
        }
        bool answered;
        http_client_failure failure;
        rc = remote_try(p, call, path, left, &answered, &failure);
        if (rc == APP_ENOMEM) {
            pthread_mutex_lock(&p->lock);
            breaker_release(&p->br);
            pthread_mutex_unlock(&p->lock);
            break;
        }
        remote_breaker_record(p, answered);
        /* An answer is final, except the owner's own "unavailable" to a repeatable message;
         * no answer may be tried again when repeating is safe or the request never left. */
        bool again = answered ? rc == APP_EUNAVAIL && repeatable
                              : repeatable || failure == HTTP_CLIENT_UNSENT;
        if (!again)
            break;
        int delay = backoff_next(&bo);
        if (delay >= deadline - deadline_now_ms())
            break;
        if (*call->out) {
            cJSON_Delete(*call->out);
            *call->out = NULL;
        }
        char labels[96];
        snprintf(labels, sizeof labels, "remote=\"%s\"", p->label);
        metrics_counter_add("remote_call_retries_total", labels, 1);
        remote_sleep_ms(delay);
        app_error_clear(call->err);
    }
    remote_count_call(p, call, rc, (double)(deadline_now_ms() - start) / 1000.0);
    return rc;
}

int remote_add(remote *r, bus *b, const char *context, const char *url,
               const bus_handler_def *commands, const bus_handler_def *queries, app_error *err)
{
    if (r->n_peers == REMOTE_MAX)
        return app_error_set(err, APP_ECONFIG, "too many remote contexts");
    remote_peer *p = calloc(1, sizeof *p);
    if (!p)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    p->owner = r;
    snprintf(p->context, sizeof p->context, "%s", context);
    snprintf(p->url, sizeof p->url, "%s", url);
    metrics_escape_label(context, p->label, sizeof p->label);
    snprintf(p->check_name, sizeof p->check_name, "remote.%s", context);
    http_client_options co = {.url = url, .pool_size = r->o.pool_size};
    int rc = http_client_new(&p->client, &co, err);
    if (rc) {
        app_error_set(err, APP_ECONFIG, "remote.%s: %s", context, err->message);
        free(p);
        return APP_ECONFIG;
    }
    pthread_mutex_init(&p->lock, NULL);
    breaker_init(&p->br, r->o.clock, r->o.breaker_failure_threshold, r->o.breaker_open_ms);
    p->via = (bus_transport){remote_call, p};
    r->peers[r->n_peers++] = p;
    remote_breaker_gauge(p, BREAKER_CLOSED);
    rc = commands ? bus_register_remote(b, BUS_COMMAND, commands, &p->via, err) : 0;
    if (rc == 0 && queries)
        rc = bus_register_remote(b, BUS_QUERY, queries, &p->via, err);
    return rc;
}

/* ---- the owner's end -------------------------------------------------------------------- */

static int remote_serve(bus_kind kind, bus *b, const http_req *req, http_res *res,
                        app_error *route_err)
{
    app_error err = APP_ERROR_INIT;
    const char *name = http_req_param(req, "name");
    bus_meta meta;
    const cJSON *payload = NULL;
    cJSON *out = NULL;
    bool replayed = false;
    int rc = remote_envelope_parse(req->body, &meta, &payload, &err);
    if (rc == 0) {
        meta.replayed = &replayed;
        rc = bus_call_local(b, kind, name ? name : "", payload, &meta, &out, &err);
    }
    int status = 200;
    res->text = remote_reply_text(rc, out, &err, &status);
    cJSON_Delete(out);
    if (!res->text)
        return app_error_set(route_err, APP_ENOMEM, "out of memory");
    res->status = status;
    res->content_type = rc == 0 ? "application/json" : "application/problem+json";
    return 0;
}

static int remote_command_route(bus *b, const http_req *req, http_res *res, app_error *err)
{
    return remote_serve(BUS_COMMAND, b, req, res, err);
}

static int remote_query_route(bus *b, const http_req *req, http_res *res, app_error *err)
{
    return remote_serve(BUS_QUERY, b, req, res, err);
}

const http_route_def remote_routes[] = {
    {HTTP_M_POST, "/internal/v1/commands/{name}", remote_command_route,
     HTTP_ROUTE_JSON_BODY | HTTP_ROUTE_INTERNAL, NULL, NULL},
    {HTTP_M_POST, "/internal/v1/queries/{name}", remote_query_route,
     HTTP_ROUTE_JSON_BODY | HTTP_ROUTE_INTERNAL, NULL, NULL},
    {0},
};
