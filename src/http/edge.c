/* Guarded connections: a filtering bufferevent over the socket runs the framing guard on the
 * incoming bytes and passes on only what it accepted; a timer per connection enforces the
 * head and body deadlines; a refusal is written straight to the socket (the parser never saw
 * the offending bytes, so it has nothing of its own to answer), then the connection drains
 * and closes. */
#include "http/edge.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/uuid.h"
#include "http/guard.h"
#include "http/problem.h"

#define EDGE_MAX_LISTENERS   64
#define EDGE_LINGER_MS       2000 /* a refused connection's input is read and dropped this long */
#define EDGE_FD_RESERVE      256  /* descriptors kept for PostgreSQL, Redis, Kafka, logs */
#define EDGE_MAX_CONNECTIONS 100000
#define EDGE_WRITE_IOV       16
#define EDGE_REFUSED         "http_connections_refused_total"
#define EDGE_OPEN            "http_connections_open"
#define EDGE_CONN_BUCKETS    4096 /* the connections by bufferevent, for the server's lookups */

typedef struct edge_listener {
    http_edge *edge;
    struct evconnlistener *listener;
    struct event *resume;
    int pause_ms;
} edge_listener;

/* evhttp owns the listener's callback argument, so its error callback finds its pause state
 * here, by listener. */
static pthread_mutex_t edge_registry_lock = PTHREAD_MUTEX_INITIALIZER;
static edge_listener *edge_registry[EDGE_MAX_LISTENERS];

typedef struct edge_conn edge_conn;

struct http_edge {
    http_edge_options o;
    atomic_int open;
    pthread_mutex_t lock; /* listeners, the log throttle, publishing the count of open */
    edge_listener *listeners[EDGE_MAX_LISTENERS];
    size_t n_listeners;
    time_t last_accept_log;
    pthread_mutex_t conns_lock; /* the connections by bufferevent */
    edge_conn *conns[EDGE_CONN_BUCKETS];
};

struct edge_conn {
    http_edge *edge;
    edge_conn *next;            /* in its bucket of edge->conns */
    struct bufferevent *socket; /* the underlying one, read from; answers bypass it */
    struct bufferevent *filter; /* evhttp's, above it */
    struct event *timer;        /* deadlines, and the linger of a refused connection */
    struct event *writable;     /* an answer waits for room in the socket; made when needed */
    http_guard guard;
    http_guard_phase armed; /* the phase the timer was set for */
    bool refused;           /* answered and closing: input is dropped */
    bool lingering;         /* the refusal is written; the timer ends the linger */
    bool over_capacity;
};

/* ---- lifecycle ---------------------------------------------------------------------------- */

static int edge_default_max(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return 4096;
    long n = (long)rl.rlim_cur - EDGE_FD_RESERVE;
    if (n < 16)
        n = 16;
    return n > EDGE_MAX_CONNECTIONS ? EDGE_MAX_CONNECTIONS : (int)n;
}

int http_edge_new(http_edge **out, const http_edge_options *o, app_error *err)
{
    *out = NULL;
    http_edge *e = calloc(1, sizeof *e);
    if (!e)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    e->o = *o;
    if (e->o.max_connections <= 0)
        e->o.max_connections = edge_default_max();
    atomic_init(&e->open, 0);
    pthread_mutex_init(&e->lock, NULL);
    pthread_mutex_init(&e->conns_lock, NULL);
    metrics_declare(EDGE_REFUSED, METRIC_COUNTER,
                    "Connections refused at the edge, by reason (a framing limit, a deadline, "
                    "the connection limit).");
    metrics_declare(EDGE_OPEN, METRIC_GAUGE, "HTTP connections open now.");
    *out = e;
    return 0;
}

void http_edge_forget_listeners(http_edge *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&edge_registry_lock);
    for (size_t i = 0; i < e->n_listeners; i++) {
        for (size_t k = 0; k < EDGE_MAX_LISTENERS; k++)
            if (edge_registry[k] == e->listeners[i])
                edge_registry[k] = NULL;
        if (e->listeners[i]->resume)
            event_free(e->listeners[i]->resume);
        free(e->listeners[i]);
    }
    e->n_listeners = 0;
    pthread_mutex_unlock(&edge_registry_lock);
}

void http_edge_free(http_edge *e)
{
    if (!e)
        return;
    http_edge_forget_listeners(e);
    pthread_mutex_destroy(&e->lock);
    pthread_mutex_destroy(&e->conns_lock);
    free(e);
}

/* ---- connections by bufferevent ------------------------------------------------------------ */

static size_t edge_bucket(const struct bufferevent *bev)
{
    uint64_t h = (uint64_t)(uintptr_t)bev * UINT64_C(0x9E3779B97F4A7C15);
    return (size_t)(h >> 52) % EDGE_CONN_BUCKETS;
}

static void edge_conn_link(edge_conn *c)
{
    http_edge *e = c->edge;
    size_t b = edge_bucket(c->filter);
    pthread_mutex_lock(&e->conns_lock);
    c->next = e->conns[b];
    e->conns[b] = c;
    pthread_mutex_unlock(&e->conns_lock);
}

static void edge_conn_unlink(edge_conn *c)
{
    http_edge *e = c->edge;
    pthread_mutex_lock(&e->conns_lock);
    for (edge_conn **p = &e->conns[edge_bucket(c->filter)]; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    pthread_mutex_unlock(&e->conns_lock);
}

int64_t http_edge_requests_of(http_edge *e, const struct bufferevent *bev)
{
    int64_t n = -1;
    pthread_mutex_lock(&e->conns_lock);
    for (const edge_conn *c = e->conns[edge_bucket(bev)]; c; c = c->next)
        if (c->filter == bev) {
            n = (int64_t)c->guard.requests;
            break;
        }
    pthread_mutex_unlock(&e->conns_lock);
    return n;
}

int http_edge_connections(http_edge *e)
{
    return atomic_load(&e->open);
}

int http_edge_max_connections(const http_edge *e)
{
    return e->o.max_connections;
}

/* ---- refusing ----------------------------------------------------------------------------- */

static const char *edge_slug(int status, const char **title)
{
    switch (status) {
    case 404:
        *title = "Not Found";
        return "not-found";
    case 405:
        *title = "Method Not Allowed";
        return "method-not-allowed";
    case 408:
        *title = "Request Timeout";
        return "request-timeout";
    case 413:
        *title = "Payload Too Large";
        return "payload-too-large";
    case 414:
        *title = "URI Too Long";
        return "uri-too-long";
    case 431:
        *title = "Request Header Fields Too Large";
        return "request-header-fields-too-large";
    case 501:
        *title = "Not Implemented";
        return "not-implemented";
    case 503:
        *title = "Service Unavailable";
        return "service-unavailable";
    default:
        *title = "Bad Request";
        return "bad-request";
    }
}

static void edge_arm(edge_conn *c, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

/* Answers status with a problem naming reason (and the header line extra, or ""), straight
 * on the socket, then ends the connection's writing side; its input is read and dropped for a
 * while, so that the client reads the answer instead of a reset, and then it is closed. */
static void edge_refuse_with(edge_conn *c, int status, const char *reason, const char *label,
                             const char *extra)
{
    if (c->refused)
        return;
    c->refused = true;
    evutil_socket_t fd = bufferevent_getfd(c->socket);
    const char *title;
    const char *slug = edge_slug(status, &title);
    app_error err = APP_ERROR_INIT;
    app_error_set(&err, APP_EBADREQ, "%s", reason);
    char *body = http_problem_text(&err, status, slug, title);
    char rid[UUID_STR_LEN];
    uuid_v4(rid);
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/problem+json\r\n"
                     "X-Request-ID: %s\r\nConnection: close\r\n%s%sContent-Length: %zu\r\n\r\n",
                     status, title, rid, status == 503 ? "Retry-After: 1\r\n" : "", extra,
                     body ? strlen(body) : 0);
    /* Only when nothing of an earlier answer waits to be written: never interleaved. */
    if (fd >= 0 && evbuffer_get_length(bufferevent_get_output(c->filter)) == 0) {
        if (send(fd, head, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) == n && body)
            (void)!send(fd, body, strlen(body), MSG_NOSIGNAL | MSG_DONTWAIT);
        shutdown(fd, SHUT_WR);
    }
    free(body);
    char labels[64];
    snprintf(labels, sizeof labels, "reason=\"%s\"", label);
    metrics_counter_add(EDGE_REFUSED, labels, 1);
    log_info("http - - %d refused at the edge (%s) request_id=%s", status, reason, rid);
    c->lingering = true;
    evtimer_del(c->timer);
    edge_arm(c, EDGE_LINGER_MS);
}

static void edge_refuse(edge_conn *c, int status, const char *reason, const char *label)
{
    edge_refuse_with(c, status, reason, label, "");
}

/* True when the Allow value allow names method. */
static bool edge_allows(const char *allow, const char *method)
{
    size_t n = strlen(method);
    for (const char *p = allow; (p = strstr(p, method)) != NULL; p += n)
        if ((p == allow || p[-1] == ' ') && (p[n] == ',' || p[n] == '\0'))
            return true;
    return false;
}

/* The guard refused a request for its method: 405 naming what the target does accept, as the
 * router would; else 501 for a method HTTP does not define, or 404. A GET or HEAD with a body
 * gets the router's 404 or 405 first, and its 400 only where the method is accepted. */
static void edge_refuse_method(edge_conn *c)
{
    const http_guard *g = &c->guard;
    const http_edge_options *o = &c->edge->o;
    char allow[64], extra[96];
    bool known = o->allow && g->target_len < sizeof g->target &&
                 o->allow(g->target, allow, sizeof allow, o->allow_arg);
    if (g->body_refused && (!known || edge_allows(allow, g->method))) {
        if (known)
            edge_refuse(c, 400, g->reason, "malformed");
        else
            edge_refuse(c, 404, "no resource at this path", "method_not_allowed");
    } else if (known) {
        snprintf(extra, sizeof extra, "Allow: %s\r\n", allow);
        edge_refuse_with(c, 405, g->body_refused ? "method not allowed here" : g->reason,
                         "method_not_allowed", extra);
    } else if (g->method_unknown) {
        edge_refuse(c, 501, "this method is not implemented", "not_implemented");
    } else {
        edge_refuse(c, 404, "no resource at this path", "method_not_allowed");
    }
}

/* ---- deadlines ---------------------------------------------------------------------------- */

/* Sets the timer for the phase the guard is in: the head must be complete within
 * header_timeout_ms of its first byte (of the accept, for a connection's first request),
 * the body within body_timeout_ms of the head. Between requests, evhttp's idle timeout
 * applies. */
static void edge_follow_phase(edge_conn *c)
{
    http_guard_phase now = c->guard.phase;
    if (c->refused || now == c->armed)
        return;
    c->armed = now;
    evtimer_del(c->timer);
    if (now == HTTP_GUARD_HEAD)
        edge_arm(c, c->edge->o.header_timeout_ms);
    else if (now == HTTP_GUARD_BODY)
        edge_arm(c, c->edge->o.body_timeout_ms);
}

static void edge_on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    edge_conn *c = arg;
    if (c->over_capacity && !c->refused) {
        edge_refuse(c, 503, "too many connections; try again", "max_connections");
        return;
    }
    if (c->lingering) {
        /* The reading side ends too: the parser sees the end of the stream and lets go. */
        evutil_socket_t s = bufferevent_getfd(c->socket);
        if (s >= 0)
            shutdown(s, SHUT_RD);
        c->lingering = false;
        return;
    }
    if (c->guard.phase == HTTP_GUARD_BODY)
        edge_refuse(c, 408, "the request body did not arrive in time (http.body_timeout_ms)",
                    "body_timeout");
    else
        edge_refuse(c, 408, "the request head did not arrive in time (http.header_timeout_ms)",
                    "header_timeout");
}

/* ---- the filter --------------------------------------------------------------------------- */

static const char *edge_label(int status)
{
    switch (status) {
    case 413:
        return "body_too_large";
    case 414:
    case 431:
        return "head_too_large";
    case 501:
        return "not_implemented";
    default:
        return "malformed";
    }
}

static enum bufferevent_filter_result edge_filter(struct evbuffer *src, struct evbuffer *dst,
                                                  ev_ssize_t dst_limit,
                                                  enum bufferevent_flush_mode mode, void *arg)
{
    (void)mode;
    edge_conn *c = arg;
    size_t len = evbuffer_get_length(src);
    if (c->refused) {
        evbuffer_drain(src, len);
        return BEV_OK;
    }
    size_t budget = dst_limit >= 0 && (size_t)dst_limit < len ? (size_t)dst_limit : len;
    while (budget > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(src, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
            break;
        size_t n = v.iov_len < budget ? v.iov_len : budget;
        size_t ok = http_guard_feed(&c->guard, v.iov_base, n);
        if (ok > 0)
            evbuffer_remove_buffer(src, dst, ok);
        budget -= ok;
        if (ok < n) {
            if (c->guard.status == 405 || c->guard.body_refused)
                edge_refuse_method(c);
            else
                edge_refuse(c, c->guard.status, c->guard.reason, edge_label(c->guard.status));
            evbuffer_drain(src, evbuffer_get_length(src));
            return BEV_OK;
        }
    }
    edge_follow_phase(c);
    return BEV_OK;
}

/* The output filter writes straight to the socket, from the loop when the socket has room,
 * and keeps in the filter's buffer what the socket does not take yet. evhttp takes an empty
 * buffer for "the answer is out" and then may close the connection: had the bytes only moved
 * on to the socket's bufferevent, a "Connection: close" answer would be lost with it. */
static void edge_on_writable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    edge_conn *c = arg;
    /* BEV_FLUSH: the filter runs whatever evhttp's read or write state. */
    bufferevent_flush(c->filter, EV_WRITE, BEV_FLUSH);
}

/* Writes happen from the loop, never from here: scheduling (not writing) keeps evhttp's own
 * bookkeeping of the answer it is adding intact. A new answer is written later in this turn
 * of the loop (the socket usually has room, so waiting for the poll to say so would cost a
 * turn and two epoll changes); what the socket did not take waits for room. */
static bool edge_want_write(edge_conn *c, bool now)
{
    evutil_socket_t fd = bufferevent_getfd(c->socket);
    if (fd < 0)
        return false;
    if (!c->writable &&
        !(c->writable = event_new(event_get_base(c->timer), fd, EV_WRITE, edge_on_writable, c)))
        return false;
    if (now)
        event_active(c->writable, EV_WRITE, 0);
    else
        event_add(c->writable, NULL);
    return true;
}

static void edge_output_added(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    if (info->n_added > 0 && !edge_want_write(arg, true))
        log_error("cannot watch a connection for writing: its answer is dropped");
}

static enum bufferevent_filter_result edge_output(struct evbuffer *src, struct evbuffer *dst,
                                                  ev_ssize_t dst_limit,
                                                  enum bufferevent_flush_mode mode, void *arg)
{
    (void)dst;
    (void)dst_limit;
    edge_conn *c = arg;
    /* Only from edge_on_writable: evhttp adds an answer before it installs the callback that
     * hears it is out, so writing at once (as the filter would when the bytes are added)
     * would leave evhttp waiting for news that already came. */
    if (mode != BEV_FLUSH)
        return BEV_NEED_MORE;
    evutil_socket_t fd = bufferevent_getfd(c->socket);
    while (evbuffer_get_length(src) > 0) {
        struct evbuffer_iovec v[EDGE_WRITE_IOV];
        struct iovec iov[EDGE_WRITE_IOV];
        int nv = evbuffer_peek(src, -1, NULL, v, EDGE_WRITE_IOV);
        if (nv > EDGE_WRITE_IOV)
            nv = EDGE_WRITE_IOV;
        for (int k = 0; k < nv; k++)
            iov[k] = (struct iovec){v[k].iov_base, v[k].iov_len};
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)(nv > 0 ? nv : 0)};
        /* MSG_NOSIGNAL: a peer that left is an error here, never a SIGPIPE. */
        ssize_t n = fd < 0 || nv <= 0 ? -1 : sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            evbuffer_drain(src, (size_t)n);
            continue;
        }
        int e = errno;
        if (n < 0 && (e == EAGAIN || e == EWOULDBLOCK || e == EINTR) && edge_want_write(c, false))
            return BEV_NEED_MORE; /* the rest stays until the socket can take it */
        /* The peer is gone: nothing of this answer can arrive. */
        evbuffer_drain(src, evbuffer_get_length(src));
    }
    return BEV_OK;
}

/* Counts a connection in (+1) or out (-1) and publishes the count. Under the edge's lock:
 * two loops that count at once would otherwise publish in either order, and the gauge could
 * stay at the older count. */
static int edge_count(http_edge *e, int delta)
{
    pthread_mutex_lock(&e->lock);
    int open = atomic_fetch_add(&e->open, delta) + delta;
    metrics_gauge_set(EDGE_OPEN, "", open);
    pthread_mutex_unlock(&e->lock);
    return open;
}

static void edge_conn_free(void *arg)
{
    edge_conn *c = arg;
    edge_conn_unlink(c);
    edge_count(c->edge, -1);
    event_free(c->timer);
    if (c->writable)
        event_free(c->writable);
    free(c);
}

struct bufferevent *http_edge_make_bev(struct event_base *base, void *arg)
{
    http_edge *e = arg;
    edge_conn *c = calloc(1, sizeof *c);
    struct bufferevent *sock = c ? bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE) : NULL;
    struct event *timer = sock ? evtimer_new(base, edge_on_timer, c) : NULL;
    struct bufferevent *bev = timer
                                  ? bufferevent_filter_new(sock, edge_filter, edge_output,
                                                           BEV_OPT_CLOSE_ON_FREE, edge_conn_free, c)
                                  : NULL;
    if (!bev) {
        /* evhttp then makes a plain, unguarded one: better refuse the connection. */
        log_error("out of memory for a new connection");
        if (timer)
            event_free(timer);
        if (sock)
            bufferevent_free(sock);
        free(c);
        return NULL;
    }
    c->edge = e;
    c->socket = sock;
    c->filter = bev;
    c->timer = timer;
    http_guard_init(&c->guard, e->o.max_body_bytes);
    edge_conn_link(c);
    int open = edge_count(e, +1);
    if (!evbuffer_add_cb(bufferevent_get_output(bev), edge_output_added, c) ||
        (e->o.on_output &&
         !evbuffer_add_cb(bufferevent_get_output(bev), e->o.on_output, e->o.on_output_arg)))
        log_warn("could not watch a connection's output");
    if (open > e->o.max_connections) {
        /* The socket is attached after this returns: answer from the loop, at once. */
        c->over_capacity = true;
        event_active(timer, EV_TIMEOUT, 0);
        return bev;
    }
    /* The first request's head is due within the header timeout of the accept. */
    c->armed = HTTP_GUARD_HEAD;
    edge_arm(c, e->o.header_timeout_ms);
    return bev;
}

/* ---- accepting ---------------------------------------------------------------------------- */

static void edge_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    edge_listener *el = arg;
    evconnlistener_enable(el->listener);
}

static void edge_accept_error(struct evconnlistener *l, void *arg)
{
    (void)arg; /* evhttp's */
    int e = EVUTIL_SOCKET_ERROR();
    edge_listener *el = NULL;
    pthread_mutex_lock(&edge_registry_lock);
    for (size_t k = 0; k < EDGE_MAX_LISTENERS && !el; k++)
        if (edge_registry[k] && edge_registry[k]->listener == l)
            el = edge_registry[k];
    pthread_mutex_unlock(&edge_registry_lock);
    if (!el)
        return;
    /* Out of descriptors or memory: the listening socket stays readable, so accepting again
     * at once would spin. Pause, longer each time in a row, up to a second. */
    el->pause_ms = el->pause_ms ? (el->pause_ms * 2 > 1000 ? 1000 : el->pause_ms * 2) : 10;
    evconnlistener_disable(l);
    struct timeval tv = {el->pause_ms / 1000, (el->pause_ms % 1000) * 1000};
    evtimer_add(el->resume, &tv);
    http_edge *edge = el->edge;
    time_t now = time(NULL);
    pthread_mutex_lock(&edge->lock);
    bool say = now != edge->last_accept_log;
    edge->last_accept_log = now;
    pthread_mutex_unlock(&edge->lock);
    if (say)
        log_warn("accept failed: %s; accepting pauses for %d ms", evutil_socket_error_to_string(e),
                 el->pause_ms);
    metrics_counter_add(EDGE_REFUSED, "reason=\"accept_error\"", 1);
}

void http_edge_watch_listener(http_edge *e, struct evconnlistener *l, struct event_base *base)
{
    edge_listener *el = calloc(1, sizeof *el);
    if (!el)
        return;
    el->edge = e;
    el->listener = l;
    el->resume = evtimer_new(base, edge_resume, el);
    pthread_mutex_lock(&edge_registry_lock);
    size_t slot = EDGE_MAX_LISTENERS;
    for (size_t k = 0; k < EDGE_MAX_LISTENERS && slot == EDGE_MAX_LISTENERS; k++)
        if (!edge_registry[k])
            slot = k;
    pthread_mutex_lock(&e->lock);
    bool kept = el->resume && slot < EDGE_MAX_LISTENERS && e->n_listeners < EDGE_MAX_LISTENERS;
    if (kept) {
        e->listeners[e->n_listeners++] = el;
        edge_registry[slot] = el;
    }
    pthread_mutex_unlock(&e->lock);
    pthread_mutex_unlock(&edge_registry_lock);
    if (!kept) {
        log_warn("accept errors on a listener will not pause it: out of room or memory");
        if (el->resume)
            event_free(el->resume);
        free(el);
        return;
    }
    evconnlistener_set_error_cb(l, edge_accept_error);
}
