/* The HTTP edge on libevent 2.1 evhttp: one event loop per thread, all listening on one port
 * with SO_REUSEPORT. Loop threads parse and validate; routes run on the worker pool; the
 * reply is handed back to the loop thread that owns the connection. */
#include "http/server.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/thread.h>

#include "core/deadline.h"
#include "core/json.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/trace.h"
#include "core/uuid.h"
#include "http/edge.h"
#include "http/guard.h"
#include "http/problem.h"
#include "http/router.h"

/* evhttp buffers bodies up to max_body_bytes plus this slack, so a moderately oversized body
 * still reaches our callback and gets a 413 with the request's own X-Request-ID; beyond it
 * evhttp refuses by itself (see http_rewrite_cb). */
#define HTTP_BODY_SLACK        (64 * 1024)
#define HTTP_MAX_HEADERS_BYTES (64 * 1024)
#define HTTP_ID_MAX            128

#define HTTP_REQUESTS_TOTAL   "http_requests_total"
#define HTTP_REQUEST_DURATION "http_request_duration_seconds"
#define HTTP_MODEL_READS      "http_read_model_answers_total"

typedef struct http_loop {
    http_server *srv;
    struct event_base *base;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    pthread_t thread;
    bool thread_started;
} http_loop;

typedef struct http_job http_job;

struct http_server {
    http_server_options opts;
    char *host;
    int port;
    http_router *router;
    http_edge *edge; /* the framing guard, deadlines and connection limit */
    http_loop *loops;
    int n_loops;

    pthread_mutex_t lock;
    pthread_cond_t changed; /* inflight or on_pool went down */
    int inflight;           /* from callback entry to reply sent */
    int on_pool;            /* handed to the pool and not yet back */
    bool started, stopping, stopped;
    bool loops_live; /* replies may still be posted to the loops */
    http_job *jobs;  /* every job not yet freed */
};

/* One request from callback entry until its reply is written. Owned by the loop thread,
 * except while a worker runs the route; listed in s->jobs all along, and freed once the reply
 * is written or the connection is gone (http_job_release), or by http_server_free when the
 * loops stopped first. Workers never touch ereq. */
struct http_job {
    http_server *srv;
    http_loop *loop;
    struct evhttp_request *ereq; /* NULL once the connection is gone */
    const http_route_def *route;
    http_req req;
    http_res res;
    app_error err;
    int rc;
    char allow[64];
    char request_id[HTTP_ID_MAX + 1];
    const char *method;
    char *path;
    char *if_match;
    char *query; /* owned copy of req.query */
    const char *route_label;
    struct timespec started;
    struct timespec model_started; /* when its read model was asked for */
    trace_span span;               /* the request's, from http_prepare to http_respond */
    http_quota quota;              /* where the caller stands with the rate limit */
    bool replayed;                 /* answered from an Idempotency-Key record */
    bool close_after;
    bool sending; /* the reply is queued on the connection */
    bool listed;
    http_job *prev, *next;
};

static pthread_once_t http_evthread_once = PTHREAD_ONCE_INIT;
static int http_evthread_rc;

static void http_evthread_init(void)
{
    http_evthread_rc = evthread_use_pthreads();
}

/* While true on a loop thread, the bytes added to a connection's output are ours: an answer
 * (http_respond) or the problem+json that replaces one of evhttp's own pages. The rewrite
 * hook (http_rewrite_cb) has nothing to look for in them. */
static _Thread_local bool http_adding_ours;

/* The Date header (RFC 9110's IMF-fixdate) of this second, formatted once a second per loop
 * thread instead of by evhttp for every answer. */
static const char *http_date_now(void)
{
    static _Thread_local time_t shown;
    static _Thread_local char text[40];
    time_t now = time(NULL);
    if (now != shown) { /* shown starts at 0, a second no clock shows today */
        static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
        static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
        struct tm tm;
        gmtime_r(&now, &tm);
        snprintf(text, sizeof text, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7],
                 tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                 tm.tm_sec);
        shown = now;
    }
    return text;
}

/* ---- small helpers ------------------------------------------------------------------ */

static double http_elapsed(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - since->tv_sec) + (double)(now.tv_nsec - since->tv_nsec) / 1e9;
}

static bool http_printable(const char *s, size_t min, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++)
        if ((unsigned char)s[n] < 0x20 || (unsigned char)s[n] > 0x7e || n >= max)
            return false;
    return n >= min;
}

/* application/json or application/<anything>+json, parameters allowed, any case. */
static bool http_json_media_type(const char *ct)
{
    if (!ct)
        return false;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    if (n == 16 && strncasecmp(ct, "application/json", 16) == 0)
        return true;
    return n > 17 && strncasecmp(ct, "application/", 12) == 0 &&
           strncasecmp(ct + n - 5, "+json", 5) == 0 && memchr(ct + 12, '/', n - 12) == NULL;
}

static http_method http_method_of(enum evhttp_cmd_type cmd, const char **name)
{
    switch (cmd) {
    case EVHTTP_REQ_GET:
        *name = "GET";
        return HTTP_M_GET;
    case EVHTTP_REQ_POST:
        *name = "POST";
        return HTTP_M_POST;
    case EVHTTP_REQ_PUT:
        *name = "PUT";
        return HTTP_M_PUT;
    case EVHTTP_REQ_DELETE:
        *name = "DELETE";
        return HTTP_M_DELETE;
    case EVHTTP_REQ_PATCH:
        *name = "PATCH";
        return HTTP_M_PATCH;
    case EVHTTP_REQ_HEAD:
        *name = "HEAD";
        return HTTP_M_HEAD;
    case EVHTTP_REQ_OPTIONS:
        *name = "OPTIONS";
        return HTTP_M_OTHER;
    case EVHTTP_REQ_TRACE:
        *name = "TRACE";
        return HTTP_M_OTHER;
    case EVHTTP_REQ_CONNECT:
        *name = "CONNECT";
        return HTTP_M_OTHER;
    default:
        *name = "OTHER";
        return HTTP_M_OTHER;
    }
}

static void http_record(const char *route, const char *method, int status, double seconds)
{
    char r[160], labels[320];
    metrics_escape_label(route, r, sizeof r);
    snprintf(labels, sizeof labels, "route=\"%s\",method=\"%s\",status=\"%d\"", r, method, status);
    metrics_counter_add(HTTP_REQUESTS_TOTAL, labels, 1);
    snprintf(labels, sizeof labels, "route=\"%s\",method=\"%s\"", r, method);
    metrics_histogram_observe(HTTP_REQUEST_DURATION, labels, seconds);
}

/* ---- job list (under s->lock) -------------------------------------------------------- */

static void http_job_link(http_server *s, http_job *job)
{
    job->prev = NULL;
    job->next = s->jobs;
    if (s->jobs)
        s->jobs->prev = job;
    s->jobs = job;
    job->listed = true;
}

static void http_job_unlink(http_server *s, http_job *job)
{
    if (!job->listed)
        return;
    if (job->prev)
        job->prev->next = job->next;
    else
        s->jobs = job->next;
    if (job->next)
        job->next->prev = job->prev;
    job->listed = false;
}

static void http_job_free(http_job *job)
{
    for (size_t i = 0; i < HTTP_MAX_PARAMS; i++)
        free(job->req.param_values[i]);
    cJSON_Delete(job->req.body);
    cJSON_Delete(job->res.body);
    free(job->res.text);
    free(job->path);
    free(job->if_match);
    free(job->query);
    free(job);
}

/* ---- request parsing and validation (loop thread) ------------------------------------- */

static int http_check_body(http_job *job, struct evbuffer *in)
{
    const struct evkeyvalq *h = evhttp_request_get_input_headers(job->ereq);
    if (!http_json_media_type(evhttp_find_header(h, "Content-Type")))
        return app_error_set(&job->err, APP_EMEDIA, "request body must be application/json");
    size_t n = evbuffer_get_length(in);
    if (n == 0)
        return app_error_set(&job->err, APP_EBADREQ, "request body is required");
    const char *text = (const char *)evbuffer_pullup(in, -1);
    if (!text)
        return app_error_set(&job->err, APP_ENOMEM, "out of memory");
    if (!json_utf8_valid(text, n))
        return app_error_set(&job->err, APP_EBADREQ, "request body is not valid UTF-8");
    cJSON *body = NULL;
    int rc = json_parse_body(text, n, JSON_MAX_VALUES, JSON_MAX_DEPTH, &body, &job->err);
    if (rc)
        return rc;
    if (!cJSON_IsObject(body)) {
        cJSON_Delete(body);
        return app_error_set(&job->err, APP_EBADREQ, "request body must be a JSON object");
    }
    job->req.body = body;
    return 0;
}

/* What an end user (a gateway's X-Authenticated-Userid) may do: its own user (HTTP_ROUTE_SELF:
 * the path's {id} is its id), what the route checks is its own (HTTP_ROUTE_OWNED), and GETs
 * that need no admin scope (products). Anything else is 403. */
static int http_end_user_may(http_job *job)
{
    unsigned flags = job->route->flags;
    const char *subject = job->req.meta.subject;
    if (flags & HTTP_ROUTE_SELF) {
        const char *id = NULL;
        for (size_t i = 0; i < job->req.n_params; i++)
            if (strcmp(job->req.param_names[i], "id") == 0)
                id = job->req.param_values[i];
        if (id && strcmp(id, subject) == 0)
            return 0;
        app_error_set(&job->err, APP_EFORBIDDEN, "an end user may touch only its own user");
        return app_error_detail(&job->err, "this request is about another user than %s", subject);
    }
    if (flags & HTTP_ROUTE_OWNED)
        return 0;
    if ((job->req.method & (HTTP_M_GET | HTTP_M_HEAD)) && !(flags & HTTP_ROUTE_ADMIN))
        return 0;
    return app_error_set(&job->err, APP_EFORBIDDEN, "an end user may not do this");
}

/* Names the caller (the actor of what the request does) and takes its share of the rate
 * limit: a caller is its consumer, or its address when it has none. */
static int http_admit(http_job *job, const struct evkeyvalq *h)
{
    http_server *s = job->srv;
    struct evhttp_connection *conn = evhttp_request_get_connection(job->ereq);
    char *peer = NULL;
    ev_uint16_t peer_port = 0;
    if (conn)
        evhttp_connection_get_peer(conn, &peer, &peer_port);
    http_caller caller = {
        .peer = peer,
        .apikey = evhttp_find_header(h, "apikey"),
        .consumer_username = evhttp_find_header(h, "X-Consumer-Username"),
        .consumer_id = evhttp_find_header(h, "X-Consumer-ID"),
        .anonymous = evhttp_find_header(h, "X-Anonymous-Consumer"),
        .end_user = evhttp_find_header(h, "X-Authenticated-Userid"),
    };
    bus_meta *meta = &job->req.meta;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double now_s = (double)now.tv_sec + now.tv_nsec / 1e9;
    int rc = http_access_blocked(s->opts.access, peer, now_s, &job->err);
    if (rc) {
        job->quota.retry_after_s = 2;
        return rc;
    }
    unsigned scopes = 0;
    rc = http_access_identify(s->opts.access, &caller, meta->actor, sizeof meta->actor, &scopes,
                              &job->err);
    if (rc == APP_EUNAUTH && caller.apikey)
        http_access_failed(s->opts.access, peer, now_s);
    if (rc)
        return rc;
    if (scopes & HTTP_ACCESS_END_USER) {
        snprintf(meta->subject, sizeof meta->subject, "%s", meta->actor);
        return http_end_user_may(job);
    }
    unsigned need = (job->route->flags & HTTP_ROUTE_ADMIN)           ? CONFIG_SCOPE_ADMIN
                    : (job->req.method & (HTTP_M_GET | HTTP_M_HEAD)) ? CONFIG_SCOPE_READ
                                                                     : CONFIG_SCOPE_WRITE;
    if (!(scopes & need)) {
        const char *name = need == CONFIG_SCOPE_ADMIN  ? "admin"
                           : need == CONFIG_SCOPE_READ ? "read"
                                                       : "write";
        app_error_set(&job->err, APP_EFORBIDDEN, "this API key lacks the %s scope", name);
        return app_error_detail(&job->err,
                                "the key of consumer %s lacks the %s scope this request needs "
                                "(scopes are set in auth.api_keys)",
                                meta->actor, name);
    }
    char who[sizeof meta->actor + 8];
    http_access_caller(meta->actor, peer, who, sizeof who);
    return http_access_admit(s->opts.access, who, now_s, &job->quota, &job->err);
}

/* Another service's bus, from a trusted peer with the internal token; nobody when the server
 * has no access rules at all. */
static int http_admit_internal(http_job *job, const struct evkeyvalq *h)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(job->ereq);
    char *peer = NULL;
    ev_uint16_t peer_port = 0;
    if (conn)
        evhttp_connection_get_peer(conn, &peer, &peer_port);
    if (!job->srv->opts.access)
        return app_error_set(&job->err, APP_EFORBIDDEN, "internal endpoints are closed");
    return http_access_internal(job->srv->opts.access, peer, evhttp_find_header(h, "Authorization"),
                                &job->err);
}

/* Fills job from the request; on failure returns the code with job->err set. */
static int http_prepare(http_job *job)
{
    http_server *s = job->srv;
    struct evhttp_request *ereq = job->ereq;
    const struct evkeyvalq *h = evhttp_request_get_input_headers(ereq);
    http_method method = http_method_of(evhttp_request_get_command(ereq), &job->method);
    job->req.method = method;

    /* Correlation first, so that every error below still echoes the request id. */
    const char *rid = evhttp_find_header(h, "X-Request-ID");
    const char *tp = evhttp_find_header(h, "traceparent");
    trace_ctx client;
    bool tp_ok = trace_ctx_parse(tp, &client);
    char correlation[HTTP_ID_MAX + 1];
    if (rid && http_printable(rid, 1, HTTP_ID_MAX)) {
        snprintf(job->request_id, sizeof job->request_id, "%s", rid);
        snprintf(correlation, sizeof correlation, "%s", rid);
    } else {
        uuid_v4(job->request_id);
        if (tp_ok)
            snprintf(correlation, sizeof correlation, "%.32s", tp + 3);
        else
            snprintf(correlation, sizeof correlation, "%s", job->request_id);
    }
    bus_meta_init(&job->req.meta, correlation, NULL);
    {
        struct evhttp_connection *conn = evhttp_request_get_connection(ereq);
        char *peer = NULL;
        ev_uint16_t peer_port = 0;
        if (conn)
            evhttp_connection_get_peer(conn, &peer, &peer_port);
        http_access_caller(NULL, peer, job->req.meta.client, sizeof job->req.meta.client);
    }
    /* The client gives up after the request timeout: so does every call made for it. */
    job->req.meta.deadline_ms = (int64_t)job->started.tv_sec * 1000 +
                                job->started.tv_nsec / 1000000 + s->opts.request_timeout_ms;
    job->req.meta.replayed = &job->replayed;
    /* The request's span joins the client's trace or starts one; what the request causes
     * (commands, events, calls to other services) is its child. */
    trace_start(&job->span, job->method, TRACE_SERVER, tp_ok ? &client : NULL);
    trace_ctx_format(&job->span.ctx, job->req.meta.traceparent);

    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(ereq);
    const char *raw_path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (!raw_path || !raw_path[0])
        raw_path = "/";
    /* libevent reads "//host/path" as an authority and a path: such a target names no route
     * here, rather than the path after the "host". */
    if (uri && evhttp_uri_get_host(uri)) {
        job->path = strdup(evhttp_request_get_uri(ereq));
        return app_error_set(&job->err, APP_ENOTFOUND, "no route for this path");
    }
    if (http_path_decode(raw_path, &job->path, &job->err) != 0) {
        job->path = strdup(raw_path); /* for the access log only */
        return job->err.code;
    }
    job->req.path = job->path;
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    if (query && !(job->query = strdup(query)))
        return app_error_set(&job->err, APP_ENOMEM, "out of memory");
    job->req.query = job->query;

    const char *key = evhttp_find_header(h, "Idempotency-Key");
    if (key) {
        if (!http_printable(key, 1, sizeof job->req.meta.idempotency_key - 1))
            return app_error_set(&job->err, APP_EBADREQ,
                                 "Idempotency-Key must be 1 to 128 printable characters");
        snprintf(job->req.meta.idempotency_key, sizeof job->req.meta.idempotency_key, "%s", key);
    }

    /* Whatever the route, a body over the limit is refused before anything reads it. */
    struct evbuffer *in = evhttp_request_get_input_buffer(ereq);
    if (evbuffer_get_length(in) > s->opts.max_body_bytes) {
        job->close_after = true;
        return app_error_set(&job->err, APP_ETOOLARGE, "request body exceeds %zu bytes",
                             s->opts.max_body_bytes);
    }

    http_route_match m;
    int rc = http_router_match(s->router, method, raw_path, &m, &job->err);
    if (rc) {
        snprintf(job->allow, sizeof job->allow, "%s", m.allow);
        return rc;
    }
    job->route = m.route;
    job->route_label = m.route->name ? m.route->name : m.route->pattern;
    job->req.n_params = m.n_params;
    for (size_t i = 0; i < m.n_params; i++) {
        job->req.param_names[i] = m.param_names[i];
        job->req.param_values[i] = m.param_values[i];
    }

    if (m.route->flags & HTTP_ROUTE_INTERNAL) {
        rc = http_admit_internal(job, h);
        if (rc)
            return rc;
    } else if (s->opts.access && !(m.route->flags & HTTP_ROUTE_OPEN)) {
        rc = http_admit(job, h);
        if (rc)
            return rc;
    }

    const char *if_match = evhttp_find_header(h, "If-Match");
    if (if_match) {
        job->if_match = strdup(if_match);
        if (!job->if_match)
            return app_error_set(&job->err, APP_ENOMEM, "out of memory");
        job->req.if_match = job->if_match;
    }
    if (m.route->flags & HTTP_ROUTE_JSON_BODY)
        return http_check_body(job, in);
    return 0;
}

/* ---- running the route and replying -------------------------------------------------- */

static bool http_known_code(int rc)
{
    return rc <= APP_EBADREQ && rc >= APP_EFORBIDDEN;
}

/* What a client learns of a failure on the server's side: that it happened, and whether to
 * try again; the request id finds the rest in the log. */
static void http_generic_error(app_error *err, int code)
{
    if (code == APP_EUNAVAIL && strcmp(err->message, APP_OUTCOME_UNKNOWN) == 0) {
        app_error_set(err, code, APP_OUTCOME_UNKNOWN);
        app_error_detail(err, "outcome unknown: the database went away before it confirmed "
                              "this request, which may or may not have taken effect; send it "
                              "again with the same Idempotency-Key to get its outcome (without "
                              "one it may run twice)");
    } else if (code == APP_EUNAVAIL) {
        app_error_set(err, code, "service unavailable");
        app_error_detail(err, "something this request needs is not available right now; try "
                              "again shortly (the request id identifies it in the logs)");
    } else {
        app_error_set(err, code, "internal error");
        app_error_detail(err, "the server could not answer this request (the request id "
                              "identifies it in the logs)");
    }
}

static void http_run(http_job *job)
{
    job->rc = job->route->fn(job->srv->opts.bus, &job->req, &job->res, &job->err);
}

/* The end of a job: its reply is written, or it never will be. */
static void http_job_release(http_job *job)
{
    http_server *s = job->srv;
    pthread_mutex_lock(&s->lock);
    http_job_unlink(s, job);
    s->inflight--;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
    http_job_free(job);
}

/* Called by evhttp once the whole reply is written. */
static void http_on_sent(struct evhttp_request *ereq, void *arg)
{
    struct evhttp_connection *conn = evhttp_request_get_connection(ereq);
    if (conn)
        evhttp_connection_set_closecb(conn, NULL, NULL);
    http_job_release(arg);
}

/* The connection died: while the route runs, forget the request (libevent frees it); while
 * the reply is being written, the job is over. */
static void http_on_close(struct evhttp_connection *conn, void *arg)
{
    http_job *job = arg;
    evhttp_connection_set_closecb(conn, NULL, NULL);
    job->ereq = NULL;
    if (job->sending)
        http_job_release(job);
}

/* Ends the request's span, named as OpenTelemetry names HTTP server spans. */
static void http_trace_end(http_job *job, int status)
{
    trace_span *s = &job->span;
    if (!s->recording)
        return;
    const char *route = job->route ? job->route->pattern : NULL;
    trace_name(s, "%s%s%s", job->method, route ? " " : "", route ? route : "");
    trace_attr_str(s, "http.request.method", job->method);
    trace_attr_str(s, "url.path", job->path ? job->path : "/");
    if (route)
        trace_attr_str(s, "http.route", route);
    trace_attr_int(s, "http.response.status_code", status);
    trace_attr_str(s, "app.request_id", job->request_id);
    if (status >= 500)
        trace_fail(s, job->rc ? job->err.message : "server error");
    trace_end(s);
}

/* Queues the reply (when the client is still there) and records it; the job ends when the
 * reply is written. On the loop thread. */
static void http_respond(http_job *job)
{
    int status = 200;
    char *owned = NULL;
    const char *text = NULL, *ctype = NULL;

    if (job->rc == 0) {
        status = job->res.status ? job->res.status : 200;
        if (status < 200 || status > 599) {
            log_error("bug: route %s answered status %d", job->route_label, status);
            job->rc = app_error_set(&job->err, APP_EINTERNAL, "internal error");
        }
    } else if (!http_known_code(job->rc)) {
        log_error("bug: route %s returned unknown code %d (%s)", job->route_label, job->rc,
                  job->err.message);
        job->rc = app_error_set(&job->err, APP_EINTERNAL, "internal error");
    }
    if (job->rc != 0) {
        status = app_error_http_status(job->rc);
        if (status >= 500) {
            /* The text of a server-side failure (libpq's, hiredis's: host names, users) goes
             * to the log, tied to the request id; the client gets a generic answer. */
            if (job->rc == APP_EUNAVAIL)
                log_warn("%s %s unavailable: %s%s%s (request_id=%s)", job->method,
                         job->path ? job->path : "-", job->err.message,
                         job->err.detail[0] ? ": " : "", job->err.detail, job->request_id);
            else
                log_error("%s %s failed: %s%s%s (request_id=%s)", job->method,
                          job->path ? job->path : "-", job->err.message,
                          job->err.detail[0] ? ": " : "", job->err.detail, job->request_id);
            http_generic_error(&job->err, job->rc);
        }
        if (job->err.code != job->rc) /* keep the route's message, fix the type and title */
            job->err.code = job->rc;
        owned = http_problem_text(&job->err, status, NULL, NULL);
        text = owned;
        ctype = "application/problem+json";
    } else if (job->res.body) {
        owned = cJSON_PrintUnformatted(job->res.body);
        text = owned;
        ctype = "application/json";
    } else if (job->res.text) {
        text = job->res.text;
        ctype = job->res.content_type ? job->res.content_type : "text/plain; charset=utf-8";
    }
    if (ctype && !text) {
        status = 500; /* out of memory while rendering: still answer, without a body */
        ctype = NULL;
    }

    struct evhttp_request *ereq = job->ereq;
    struct evhttp_connection *conn = ereq ? evhttp_request_get_connection(ereq) : NULL;
    struct evbuffer *buf = ereq ? evbuffer_new() : NULL;
    if (ereq) {
        struct evkeyvalq *out = evhttp_request_get_output_headers(ereq);
        evhttp_add_header(out, "X-Request-ID", job->request_id);
        evhttp_add_header(out, "Date", http_date_now());
        if (ctype)
            evhttp_add_header(out, "Content-Type", ctype);
        if (job->rc == 0 && job->res.location[0])
            evhttp_add_header(out, "Location", job->res.location);
        if (job->rc == 0 && job->res.etag[0])
            evhttp_add_header(out, "ETag", job->res.etag);
        if (job->rc == 0 && job->replayed)
            evhttp_add_header(out, "Idempotent-Replayed", "true");
        if (job->rc == 0 && job->route && (job->route->flags & HTTP_ROUTE_INTERNAL))
            evhttp_add_header(out, HTTP_INTERNAL_REPLY_HEADER, "1");
        if (status == 503)
            evhttp_add_header(out, "Retry-After", "1");
        if (job->quota.limited) {
            char n[16];
            snprintf(n, sizeof n, "%d", job->quota.limit);
            evhttp_add_header(out, "RateLimit-Limit", n);
            snprintf(n, sizeof n, "%d", job->quota.remaining);
            evhttp_add_header(out, "RateLimit-Remaining", n);
        }
        if (status == 429) {
            char n[16];
            snprintf(n, sizeof n, "%d",
                     job->quota.retry_after_s > 0 ? job->quota.retry_after_s : 1);
            evhttp_add_header(out, "Retry-After", n);
        }
        if (status == 401)
            evhttp_add_header(out, "WWW-Authenticate", "Key realm=\"app\", header=\"apikey\"");
        if (status == 405) {
            if (!job->allow[0] && job->route) {
                unsigned m = job->route->methods;
                http_methods_format(m & HTTP_M_GET ? m | HTTP_M_HEAD : m, job->allow,
                                    sizeof job->allow);
            }
            evhttp_add_header(out, "Allow", job->allow);
        }
        if (job->close_after)
            evhttp_add_header(out, "Connection", "close");
        if (job->req.method == HTTP_M_HEAD) {
            /* evhttp 2.1 would send a body to HEAD; announce its length only. */
            char len[24];
            snprintf(len, sizeof len, "%zu", text ? strlen(text) : 0);
            evhttp_add_header(out, "Content-Length", len);
        } else if (buf && text) {
            evbuffer_add(buf, text, strlen(text));
        }
    } else {
        log_info("client went away before the reply (%s %s, request_id=%s)", job->method,
                 job->path ? job->path : "-", job->request_id);
    }
    free(owned);

    double seconds = http_elapsed(&job->started);
    http_record(job->route_label, job->method, status, seconds);
    trace_ctx outer = trace_enter(&job->span);
    log_info("http %s %s %d %.1fms request_id=%s", job->method, job->path ? job->path : "-", status,
             seconds * 1000.0, job->request_id);
    trace_leave(&outer);
    http_trace_end(job, status);

    job->ereq = NULL;
    if (ereq && conn) {
        job->sending = true;
        evhttp_connection_set_closecb(conn, http_on_close, job);
        evhttp_request_set_on_complete_cb(ereq, http_on_sent, job);
        http_adding_ours = true;
        evhttp_send_reply(ereq, status, job->rc ? app_error_title(job->rc) : NULL, buf);
        http_adding_ours = false;
    } else {
        if (ereq) /* detached from its connection: this only frees it */
            evhttp_send_reply(ereq, status, NULL, buf);
        http_job_release(job);
    }
    if (buf)
        evbuffer_free(buf);
}

/* Back on the loop thread with the route's result. */
static void http_job_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    http_respond(arg);
}

/* On a worker. */
static void http_job_main(void *arg)
{
    http_job *job = arg;
    http_server *s = job->srv;
    pthread_mutex_lock(&s->lock);
    bool live = s->loops_live;
    pthread_mutex_unlock(&s->lock);

    if (live)
        http_run(job);
    else
        job->rc = app_error_set(&job->err, APP_EUNAVAIL, "server is stopping");

    /* on_pool stays raised while posting, so the base cannot be freed under us. If the loops
     * stopped meanwhile, the job stays listed and http_server_free frees it. */
    static const struct timeval zero = {0, 0};
    pthread_mutex_lock(&s->lock);
    live = s->loops_live;
    pthread_mutex_unlock(&s->lock);
    if (live && event_base_once(job->loop->base, -1, EV_TIMEOUT, http_job_done, job, &zero) != 0)
        log_error("could not hand a reply back to its loop (request_id=%s)", job->request_id);
    pthread_mutex_lock(&s->lock);
    s->on_pool--;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
}

/* Hands the route to a worker; the reply comes back to this loop (http_job_done). */
static void http_submit(http_job *job)
{
    http_server *s = job->srv;
    if (!job->ereq) { /* the client left while its read model was read */
        http_respond(job);
        return;
    }
    struct evhttp_connection *conn = evhttp_request_get_connection(job->ereq);
    if (conn)
        evhttp_connection_set_closecb(conn, http_on_close, job);
    pthread_mutex_lock(&s->lock);
    s->on_pool++;
    pthread_mutex_unlock(&s->lock);
    int rc = workers_submit(s->opts.pool, http_job_main, job, &job->err);
    if (rc) {
        pthread_mutex_lock(&s->lock);
        s->on_pool--;
        pthread_mutex_unlock(&s->lock);
        job->rc = rc;
        http_respond(job);
    }
}

/* ---- a GET answered from its read model on the loop thread ---------------------------- */

static void http_model_count(const http_job *job, const char *where)
{
    char r[160], labels[224];
    metrics_escape_label(job->route_label, r, sizeof r);
    snprintf(labels, sizeof labels, "route=\"%s\",answered=\"%s\"", r, where);
    metrics_counter_add(HTTP_MODEL_READS, labels, 1);
}

/* The read store's answer, on the loop thread: a model answers the request here; anything
 * else (missing, unreadable, the store in trouble) is for the route on a worker. */
static void http_model_done(void *arg, int rc, const char *value, size_t len, const app_error *err)
{
    (void)err; /* the worker's blocking read meets the same trouble, and reports it */
    http_job *job = arg;
    const http_read_model *m = job->route->model;
    cJSON *model = rc == 0 && value ? json_parse_n(value, len) : NULL;
    if (!cJSON_IsObject(model)) {
        cJSON_Delete(model);
        http_model_count(job, "worker");
        http_submit(job);
        return;
    }
    bus_observe(BUS_QUERY, m->query, 0, http_elapsed(&job->model_started));
    http_model_count(job, "loop");
    job->rc = m->reply(&job->req, model, &job->res, &job->err);
    char *stored =
        job->rc == 0 && m->as_stored && job->res.body == model ? strndup(value, len) : NULL;
    if (stored) {
        cJSON_Delete(job->res.body);
        job->res.body = NULL;
        job->res.text = stored;
        job->res.content_type = "application/json";
    }
    http_respond(job);
}

/* Starts reading the route's read model when it may answer this request: true when the
 * answer will come to http_model_done, false when the route runs on a worker instead. */
static bool http_model_start(http_job *job)
{
    const http_read_model *m = job->route->model;
    bus *b = job->srv->opts.bus;
    const rs_store *reads = b ? bus_get_options(b)->reads : NULL;
    if (!(job->req.method & (HTTP_M_GET | HTTP_M_HEAD)) || !reads || !reads->ops->get_async ||
        !bus_serves(b, BUS_QUERY, m->query))
        return false;
    const char *value = http_req_param(&job->req, m->param);
    char key[256];
    if (!value || (m->valid && !m->valid(value)) ||
        snprintf(key, sizeof key, "%s%s", m->key_prefix, value) >= (int)sizeof key)
        return false;
    clock_gettime(CLOCK_MONOTONIC, &job->model_started);
    app_error err = APP_ERROR_INIT;
    if (reads->ops->get_async(reads->self, key, http_model_done, job, &err) != 0) {
        http_model_count(job, "worker");
        return false;
    }
    struct evhttp_connection *conn = evhttp_request_get_connection(job->ereq);
    if (conn)
        evhttp_connection_set_closecb(conn, http_on_close, job);
    return true;
}

static void http_on_request(struct evhttp_request *ereq, void *arg)
{
    http_loop *loop = arg;
    http_server *s = loop->srv;
    pthread_mutex_lock(&s->lock);
    s->inflight++;
    bool stopping = s->stopping;
    pthread_mutex_unlock(&s->lock);

    http_job *job = calloc(1, sizeof *job);
    if (!job) {
        evhttp_send_reply(ereq, 500, "Internal Server Error", NULL);
        pthread_mutex_lock(&s->lock);
        s->inflight--;
        pthread_cond_broadcast(&s->changed);
        pthread_mutex_unlock(&s->lock);
        return;
    }
    clock_gettime(CLOCK_MONOTONIC, &job->started);
    job->srv = s;
    job->loop = loop;
    job->ereq = ereq;
    job->route_label = "unmatched";
    job->close_after = stopping; /* clients should reconnect to a process that stays */
    /* A connection serves so many requests, then the answer to the last says so and closes
     * it: a client cannot hold one forever, and load spreads again over the instances. */
    struct evhttp_connection *evcon = evhttp_request_get_connection(ereq);
    if (s->opts.max_requests_per_connection > 0 && evcon &&
        http_edge_requests_of(s->edge, evhttp_connection_get_bufferevent(evcon)) >=
            s->opts.max_requests_per_connection)
        job->close_after = true;

    pthread_mutex_lock(&s->lock);
    http_job_link(s, job);
    pthread_mutex_unlock(&s->lock);

    job->rc = http_prepare(job);
    if (job->rc != 0 || (job->route->flags & HTTP_ROUTE_INLINE) || !s->opts.pool) {
        if (job->rc == 0)
            http_run(job);
        http_respond(job);
        return;
    }

    if (job->route->model && http_model_start(job))
        return;
    http_submit(job);
}

/* ---- methods refused at the edge ------------------------------------------------------ */

/* For the edge: the methods the route at target (its query cut off) accepts. */
static bool http_allow_of(const char *target, char *allow, size_t size, void *arg)
{
    http_server *s = arg;
    char path[HTTP_GUARD_TARGET_KEEP];
    snprintf(path, sizeof path, "%.*s", (int)strcspn(target, "?"), target);
    http_route_match m;
    app_error err = APP_ERROR_INIT;
    /* No route accepts "no method": a known path answers APP_EMETHOD, naming its methods. */
    int rc = http_router_match(s->router, (http_method)0, path, &m, &err);
    bool known = rc == APP_EMETHOD && m.allow[0];
    if (known)
        snprintf(allow, size, "%s", m.allow);
    http_route_match_clear(&m);
    return known;
}

/* ---- libevent's own error pages -------------------------------------------------------- */

/* evhttp 2.1 answers some requests itself, before our callback (bodies past its limit,
 * unparsable requests, unknown methods), with an HTML page. This hook on every connection's
 * output buffer swaps such a page for problem+json before it is written. Ours are told
 * apart by their X-Request-ID header. */
static void http_rewrite_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)arg;
    if (http_adding_ours || info->n_added == 0)
        return;
    size_t len = evbuffer_get_length(buf);
    char head[2048];
    if (len < 16)
        return;
    struct evbuffer_ptr end = evbuffer_search(buf, "\r\n\r\n", 4, NULL);
    if (end.pos < 0 || (size_t)end.pos + 4 >= sizeof head)
        return;
    size_t head_len = (size_t)end.pos + 4;
    if (evbuffer_copyout(buf, head, head_len) != (ev_ssize_t)head_len)
        return;
    head[head_len] = '\0';
    if (strncmp(head, "HTTP/1.", 7) != 0 || !strcasestr(head, "\r\nContent-Type: text/html") ||
        strcasestr(head, "\r\nX-Request-ID:"))
        return;
    const char *cl = strcasestr(head, "\r\nContent-Length:");
    size_t body_len = cl ? strtoul(cl + 17, NULL, 10) : 0;
    if (len < head_len + body_len)
        return; /* the page is not complete yet */

    int status = atoi(head + 9);
    app_error err = APP_ERROR_INIT;
    const char *slug = NULL, *title = NULL;
    if (status == 413) {
        app_error_set(&err, APP_ETOOLARGE, "request body is too large");
    } else if (status == 501) {
        app_error_set(&err, APP_EMETHOD, "method not implemented");
        slug = "not-implemented";
        title = "Not Implemented";
    } else {
        app_error_set(&err, APP_EBADREQ, "malformed HTTP request");
        status = 400;
    }
    char *text = http_problem_text(&err, status, slug, title);
    char rid[UUID_STR_LEN];
    uuid_v4(rid);
    http_adding_ours = true;
    evbuffer_drain(buf, head_len + body_len);
    evbuffer_add_printf(buf,
                        "%.8s %d %s\r\nContent-Type: application/problem+json\r\n"
                        "X-Request-ID: %s\r\nConnection: close\r\nContent-Length: %zu\r\n\r\n%s",
                        head, status, title ? title : app_error_title(err.code), rid,
                        text ? strlen(text) : 0, text ? text : "");
    http_adding_ours = false;
    free(text);
    http_record("unparsed", "OTHER", status, 0);
    log_info("http - - %d refused by the parser request_id=%s", status, rid);
}

/* ---- lifecycle ------------------------------------------------------------------------- */

static void *http_loop_main(void *arg)
{
    http_loop *loop = arg;
    const http_server_options *o = &loop->srv->opts;
    if (o->loop_started)
        o->loop_started(o->loop_arg, loop->base);
    /* Keeps running with no events left, e.g. when only posted replies are pending. */
    event_base_loop(loop->base, EVLOOP_NO_EXIT_ON_EMPTY);
    if (o->loop_stopping)
        o->loop_stopping(o->loop_arg, loop->base);
    return NULL;
}

static void http_loop_unbind(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    http_loop *loop = arg;
    if (loop->bound) {
        evhttp_del_accept_socket(loop->http, loop->bound);
        loop->bound = NULL;
    }
}

static int http_loop_bind(http_server *s, http_loop *loop, struct sockaddr *sa, socklen_t len,
                          app_error *err)
{
    loop->srv = s;
    /* Changes to a descriptor's events within one turn of the loop reach epoll as one
     * epoll_ctl (the loops never dup() a descriptor, which this would not survive). */
    struct event_config *cfg = event_config_new();
    if (cfg)
        event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    loop->base = cfg ? event_base_new_with_config(cfg) : NULL;
    if (cfg)
        event_config_free(cfg);
    loop->http = loop->base ? evhttp_new(loop->base) : NULL;
    if (!loop->http)
        return app_error_set(err, APP_ENOMEM, "could not create an event loop");
    struct evhttp *h = loop->http;
    evhttp_set_gencb(h, http_on_request, loop);
    evhttp_set_allowed_methods(h, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                      EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                      EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_max_body_size(h, (ev_ssize_t)(s->opts.max_body_bytes + HTTP_BODY_SLACK));
    evhttp_set_max_headers_size(h, HTTP_MAX_HEADERS_BYTES);
    evhttp_set_default_content_type(h, NULL);
    evhttp_set_bevcb(h, http_edge_make_bev, s->edge);
    /* Reads and drops an oversized body before answering, so the client sees the 413. */
    evhttp_set_flags(h, EVHTTP_SERVER_LINGERING_CLOSE);
    if (s->opts.request_timeout_ms > 0) {
        struct timeval tv = {s->opts.request_timeout_ms / 1000,
                             (s->opts.request_timeout_ms % 1000) * 1000};
        evhttp_set_timeout_tv(h, &tv);
    }
    struct evconnlistener *l = evconnlistener_new_bind(
        loop->base, NULL, NULL,
        LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
        -1, sa, (int)len);
    if (!l)
        return app_error_set(err, APP_EUNAVAIL, "could not listen on %s:%d: %s", s->host,
                             s->opts.port, strerror(errno));
    loop->bound = evhttp_bind_listener(h, l);
    if (!loop->bound) {
        evconnlistener_free(l);
        return app_error_set(err, APP_ENOMEM, "could not attach the listener");
    }
    http_edge_watch_listener(s->edge, l, loop->base);
    return 0;
}

static void http_set_port(struct sockaddr *sa, int port)
{
    if (sa->sa_family == AF_INET)
        ((struct sockaddr_in *)(void *)sa)->sin_port = htons((uint16_t)port);
    else if (sa->sa_family == AF_INET6)
        ((struct sockaddr_in6 *)(void *)sa)->sin6_port = htons((uint16_t)port);
}

static int http_get_port(evutil_socket_t fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)(void *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)(void *)&ss)->sin6_port);
    return -1;
}

int http_server_new(http_server **out, const http_server_options *opts, app_error *err)
{
    *out = NULL;
    if (!opts->host || opts->threads < 1 || opts->port < 0 || opts->port > 65535 ||
        opts->max_body_bytes == 0)
        return app_error_set(err, APP_ECONFIG,
                             "http server needs a host, a port in 0..65535, at least one "
                             "thread and a body limit");
    pthread_once(&http_evthread_once, http_evthread_init);
    if (http_evthread_rc != 0)
        return app_error_set(err, APP_EINTERNAL, "could not enable libevent threading");
    metrics_declare(HTTP_MODEL_READS, METRIC_COUNTER,
                    "GETs of a route with a read model, by where they were answered: on the loop "
                    "thread from the model, or by the route on a worker.");
    metrics_declare(HTTP_REQUESTS_TOTAL, METRIC_COUNTER,
                    "HTTP requests answered, by route, method and status");
    metrics_declare(HTTP_REQUEST_DURATION, METRIC_HISTOGRAM,
                    "HTTP request duration in seconds, from parsed request to reply");

    http_server *s = calloc(1, sizeof *s);
    if (!s)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    s->opts = *opts;
    s->host = strdup(opts->host);
    s->loops = calloc((size_t)opts->threads, sizeof *s->loops);
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->changed, &ca);
    pthread_condattr_destroy(&ca);
    s->opts.host = s->host;
    int rc = 0;
    if (!s->host || !s->loops) {
        rc = app_error_set(err, APP_ENOMEM, "out of memory");
        goto fail;
    }
    rc = http_router_new(&s->router, err);
    if (rc)
        goto fail;
    http_edge_options eo = {
        /* The slack lets a moderately oversized body reach the route's own 413. */
        .max_body_bytes = opts->max_body_bytes + HTTP_BODY_SLACK,
        .header_timeout_ms = opts->header_timeout_ms > 0 ? opts->header_timeout_ms : 10000,
        .body_timeout_ms = opts->body_timeout_ms > 0 ? opts->body_timeout_ms : 30000,
        .max_connections = opts->max_connections,
        .on_output = http_rewrite_cb,
        .on_output_arg = s,
        .allow = http_allow_of,
        .allow_arg = s,
    };
    rc = http_edge_new(&s->edge, &eo, err);
    if (rc)
        goto fail;

    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char port_text[8];
    snprintf(port_text, sizeof port_text, "%d", opts->port);
    int gai = getaddrinfo(opts->host, port_text, &hints, &ai);
    if (gai != 0) {
        rc = app_error_set(err, APP_ECONFIG, "could not resolve http host %s: %s", opts->host,
                           gai_strerror(gai));
        goto fail;
    }
    struct sockaddr_storage addr;
    socklen_t addr_len = (socklen_t)ai->ai_addrlen;
    memcpy(&addr, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);

    s->port = opts->port;
    for (int i = 0; i < opts->threads; i++) {
        s->n_loops = i + 1;
        rc = http_loop_bind(s, &s->loops[i], (struct sockaddr *)&addr, addr_len, err);
        if (rc)
            goto fail;
        if (i == 0 && s->port == 0) {
            /* The others must share the port the kernel picked for the first. */
            struct evconnlistener *l = evhttp_bound_socket_get_listener(s->loops[0].bound);
            s->port = http_get_port(evconnlistener_get_fd(l));
            if (s->port <= 0) {
                rc = app_error_set(err, APP_EINTERNAL, "could not read the bound port: %s",
                                   strerror(errno));
                goto fail;
            }
            http_set_port((struct sockaddr *)&addr, s->port);
        }
    }
    *out = s;
    return 0;
fail:
    http_server_free(s);
    return rc;
}

int http_server_add_routes(http_server *s, const http_route_def *table, app_error *err)
{
    if (s->started)
        return app_error_set(err, APP_EINTERNAL, "routes must be added before the server starts");
    return http_router_add(s->router, table, err);
}

int http_server_start(http_server *s, app_error *err)
{
    if (s->started)
        return app_error_set(err, APP_EINTERNAL, "http server already started");
    s->loops_live = true;
    s->started = true;
    for (int i = 0; i < s->n_loops; i++) {
        int rc = pthread_create(&s->loops[i].thread, NULL, http_loop_main, &s->loops[i]);
        if (rc != 0) {
            http_server_stop(s, 0);
            return app_error_set(err, APP_EINTERNAL, "could not start http loop thread: %s",
                                 strerror(rc));
        }
        s->loops[i].thread_started = true;
    }
    return 0;
}

int http_server_port(const http_server *s)
{
    return s->port;
}

void http_server_stop(http_server *s, int grace_ms)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->lock);
    if (!s->started || s->stopping) {
        pthread_mutex_unlock(&s->lock);
        return;
    }
    s->stopping = true;
    pthread_mutex_unlock(&s->lock);

    static const struct timeval zero = {0, 0};
    for (int i = 0; i < s->n_loops; i++)
        if (s->loops[i].thread_started)
            event_base_once(s->loops[i].base, -1, EV_TIMEOUT, http_loop_unbind, &s->loops[i],
                            &zero);

    struct timespec deadline;
    deadline_in_ms(CLOCK_MONOTONIC, grace_ms, &deadline);
    pthread_mutex_lock(&s->lock);
    while (s->inflight > 0 && grace_ms > 0)
        if (pthread_cond_timedwait(&s->changed, &s->lock, &deadline) == ETIMEDOUT)
            break;
    int left = s->inflight;
    s->loops_live = false;
    pthread_mutex_unlock(&s->lock);
    if (left > 0)
        log_warn("stopping with %d requests still in flight after %d ms", left, grace_ms);

    for (int i = 0; i < s->n_loops; i++)
        if (s->loops[i].thread_started)
            event_base_loopexit(s->loops[i].base, NULL);
    for (int i = 0; i < s->n_loops; i++) {
        if (s->loops[i].thread_started) {
            pthread_join(s->loops[i].thread, NULL);
            s->loops[i].thread_started = false;
        }
    }
    pthread_mutex_lock(&s->lock);
    s->stopped = true;
    pthread_mutex_unlock(&s->lock);
}

void http_server_free(http_server *s)
{
    if (!s)
        return;
    http_server_stop(s, 0);
    /* Routes still running on workers hold the job and post to a base: wait for them. */
    pthread_mutex_lock(&s->lock);
    while (s->on_pool > 0)
        pthread_cond_wait(&s->changed, &s->lock);
    pthread_mutex_unlock(&s->lock);

    for (int i = 0; s->loops && i < s->n_loops; i++)
        if (s->loops[i].http)
            evhttp_free(s->loops[i].http); /* closes connections, so no close callback
                                              can reach a job freed below */
    while (s->jobs) {
        http_job *job = s->jobs;
        http_job_unlink(s, job);
        http_job_free(job);
    }
    http_edge_forget_listeners(s->edge);
    for (int i = 0; s->loops && i < s->n_loops; i++)
        if (s->loops[i].base)
            event_base_free(s->loops[i].base);
    http_edge_free(s->edge); /* after the bases: a connection's clean-up may run there */
    http_router_free(s->router);
    pthread_cond_destroy(&s->changed);
    pthread_mutex_destroy(&s->lock);
    free(s->loops);
    free(s->host);
    free(s);
}
