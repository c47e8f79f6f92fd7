/* The blocking evhttp client: a caller checks a connection out of the pool, runs that
 * connection's own event loop until its one request is answered or its deadline passes, and
 * checks it back in. A connection that failed in any way is dropped, so the next call makes a
 * fresh one (and resolves the host again). */
#include "http/client.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "core/deadline.h"

/* A reply larger than this is refused, whatever the peer says. */
#define HC_MAX_REPLY_BYTES (16 * 1024 * 1024)

typedef struct hc_slot {
    struct event_base *base;
    struct evhttp_connection *conn;
    bool busy;
} hc_slot;

struct http_client {
    char url[300];
    char host[256];
    char host_header[300];
    int port;
    pthread_mutex_t lock;
    pthread_cond_t freed; /* a slot was checked in */
    hc_slot *slots;
    int n_slots;
};

/* One request in flight on a checked-out slot; lives on the caller's stack. */
typedef struct hc_call {
    struct event_base *base;
    struct evhttp_request *req; /* until libevent frees it (after done) */
    const char *want_header;
    bool done;
    bool timed_out;
    bool failed; /* the error callback ran: the connection broke after it was made */
    bool oom;
    int status;
    char *body;
    size_t body_len;
    char *header;
} hc_call;

void http_client_reply_free(http_client_reply *r)
{
    if (!r)
        return;
    free(r->body);
    free(r->header);
    r->body = r->header = NULL;
    r->body_len = 0;
}

int http_client_new(http_client **out, const http_client_options *o, app_error *err)
{
    *out = NULL;
    struct evhttp_uri *uri = evhttp_uri_parse(o->url);
    const char *scheme = uri ? evhttp_uri_get_scheme(uri) : NULL;
    const char *host = uri ? evhttp_uri_get_host(uri) : NULL;
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    int rc = 0;
    if (!uri || !scheme || strcmp(scheme, "http") != 0 || !host || !host[0])
        rc = app_error_set(err, APP_ECONFIG, "%s is not an http://host[:port] URL", o->url);
    else if ((path && path[0] && strcmp(path, "/") != 0) || evhttp_uri_get_query(uri) ||
             evhttp_uri_get_fragment(uri) || evhttp_uri_get_userinfo(uri))
        rc = app_error_set(err, APP_ECONFIG, "%s: only scheme, host and port are allowed", o->url);
    else if (strlen(host) >= 256 || strlen(o->url) >= 300)
        rc = app_error_set(err, APP_ECONFIG, "%s: the URL is too long", o->url);
    if (rc) {
        if (uri)
            evhttp_uri_free(uri);
        return rc;
    }
    http_client *c = calloc(1, sizeof *c);
    int n = o->pool_size < 1 ? 1 : o->pool_size;
    if (c)
        c->slots = calloc((size_t)n, sizeof *c->slots);
    if (!c || !c->slots) {
        free(c);
        evhttp_uri_free(uri);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    c->n_slots = n;
    c->port = evhttp_uri_get_port(uri) > 0 ? evhttp_uri_get_port(uri) : 80;
    snprintf(c->url, sizeof c->url, "%s", o->url);
    snprintf(c->host, sizeof c->host, "%s", host);
    bool v6 = strchr(host, ':') != NULL;
    snprintf(c->host_header, sizeof c->host_header, "%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "",
             c->port);
    evhttp_uri_free(uri);
    pthread_mutex_init(&c->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->freed, &ca);
    pthread_condattr_destroy(&ca);
    *out = c;
    return 0;
}

static void hc_slot_drop(hc_slot *s)
{
    if (s->conn)
        evhttp_connection_free(s->conn);
    s->conn = NULL;
}

void http_client_free(http_client *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n_slots; i++) {
        hc_slot_drop(&c->slots[i]);
        if (c->slots[i].base)
            event_base_free(c->slots[i].base);
    }
    free(c->slots);
    pthread_cond_destroy(&c->freed);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

const char *http_client_host(const http_client *c)
{
    return c->host;
}

int http_client_port(const http_client *c)
{
    return c->port;
}

static int64_t hc_ms_left(const struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)(deadline->tv_sec - now.tv_sec) * 1000 +
           (deadline->tv_nsec - now.tv_nsec) / 1000000;
}

/* A free slot, waiting for one until the deadline; NULL when none came free in time. */
static hc_slot *hc_checkout(http_client *c, const struct timespec *deadline)
{
    hc_slot *got = NULL;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        for (int i = 0; i < c->n_slots && !got; i++)
            if (!c->slots[i].busy)
                got = &c->slots[i];
        if (got) {
            got->busy = true;
            break;
        }
        if (pthread_cond_timedwait(&c->freed, &c->lock, deadline) != 0)
            break;
    }
    pthread_mutex_unlock(&c->lock);
    return got;
}

static void hc_checkin(http_client *c, hc_slot *s)
{
    pthread_mutex_lock(&c->lock);
    s->busy = false;
    pthread_cond_signal(&c->freed);
    pthread_mutex_unlock(&c->lock);
}

/* A fresh connection to the host's first address, resolved now (a blocking lookup: the
 * caller is a worker thread). */
static int hc_connect(http_client *c, hc_slot *s, app_error *err)
{
    if (!s->base && !(s->base = event_base_new()))
        return app_error_set(err, APP_ENOMEM, "out of memory");
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int gai = getaddrinfo(c->host, NULL, &hints, &ai);
    char addr[INET6_ADDRSTRLEN] = "";
    if (gai == 0 && ai) {
        const void *a = ai->ai_family == AF_INET6
                            ? (const void *)&((struct sockaddr_in6 *)(void *)ai->ai_addr)->sin6_addr
                            : (const void *)&((struct sockaddr_in *)(void *)ai->ai_addr)->sin_addr;
        inet_ntop(ai->ai_family, a, addr, sizeof addr);
    }
    if (ai)
        freeaddrinfo(ai);
    if (!addr[0])
        return app_error_set(err, APP_EUNAVAIL, "cannot resolve %s: %s", c->host,
                             gai ? gai_strerror(gai) : "no address");
    s->conn = evhttp_connection_base_new(s->base, NULL, addr, (unsigned short)c->port);
    if (!s->conn)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    evhttp_connection_set_retries(s->conn, 0); /* the caller decides what may be sent again */
    evhttp_connection_set_max_body_size(s->conn, HC_MAX_REPLY_BYTES);
    return 0;
}

static void hc_on_error(enum evhttp_request_error error, void *arg)
{
    hc_call *call = arg;
    (void)error;
    call->failed = true;
}

static void hc_on_done(struct evhttp_request *req, void *arg)
{
    hc_call *call = arg;
    call->done = true;
    call->req = NULL; /* libevent frees it when this returns */
    event_base_loopbreak(call->base);
    if (!req || evhttp_request_get_response_code(req) == 0)
        return; /* no reply: call->failed says whether the connection was ever made */
    call->status = evhttp_request_get_response_code(req);
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    call->body = malloc(n + 1);
    if (!call->body) {
        call->oom = true;
        return;
    }
    evbuffer_remove(in, call->body, n);
    call->body[n] = '\0';
    call->body_len = n;
    if (call->want_header) {
        const char *v =
            evhttp_find_header(evhttp_request_get_input_headers(req), call->want_header);
        if (v && !(call->header = strdup(v)))
            call->oom = true;
    }
}

static void hc_on_deadline(evutil_socket_t fd, short what, void *arg)
{
    hc_call *call = arg;
    (void)fd;
    (void)what;
    call->timed_out = true;
    call->done = true;
    if (call->req)
        evhttp_cancel_request(call->req); /* frees it, and resets the connection */
    call->req = NULL;
    event_base_loopbreak(call->base);
}

static enum evhttp_cmd_type hc_command(const char *method)
{
    if (strcmp(method, "GET") == 0)
        return EVHTTP_REQ_GET;
    if (strcmp(method, "PUT") == 0)
        return EVHTTP_REQ_PUT;
    if (strcmp(method, "DELETE") == 0)
        return EVHTTP_REQ_DELETE;
    return EVHTTP_REQ_POST;
}

/* Sends the request on s and runs its loop until the reply, a failure or the deadline. */
static int hc_exchange(http_client *c, hc_slot *s, hc_call *call, const char *method,
                       const char *path, const char *const *headers, const char *content_type,
                       const char *body, size_t body_len, const struct timespec *deadline,
                       http_client_failure *failure, app_error *err)
{
    /* An idle keep-alive connection the peer has closed is noticed here, before it is used. */
    if (s->conn)
        event_base_loop(s->base, EVLOOP_NONBLOCK);
    if (!s->conn) {
        int rc = hc_connect(c, s, err);
        if (rc) {
            *failure = HTTP_CLIENT_UNSENT;
            return rc;
        }
    }
    int64_t left = hc_ms_left(deadline);
    if (left <= 0) {
        *failure = HTTP_CLIENT_TIMEOUT;
        return app_error_set(err, APP_EUNAVAIL, "no time left to call %s", c->url);
    }
    struct timeval tv = {(time_t)(left / 1000), (suseconds_t)(left % 1000) * 1000};
    evhttp_connection_set_timeout_tv(s->conn, &tv);

    call->base = s->base;
    struct evhttp_request *req = evhttp_request_new(hc_on_done, call);
    struct event *timer = req ? evtimer_new(s->base, hc_on_deadline, call) : NULL;
    if (!req || !timer) {
        if (req)
            evhttp_request_free(req);
        *failure = HTTP_CLIENT_UNSENT;
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    evhttp_request_set_error_cb(req, hc_on_error);
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    evhttp_add_header(out, "Host", c->host_header);
    for (size_t i = 0; headers && headers[i]; i++) {
        const char *colon = strchr(headers[i], ':');
        char name[128];
        if (!colon || (size_t)(colon - headers[i]) >= sizeof name)
            continue;
        snprintf(name, sizeof name, "%.*s", (int)(colon - headers[i]), headers[i]);
        const char *value = colon + 1;
        while (*value == ' ')
            value++;
        evhttp_add_header(out, name, value);
    }
    if (body) {
        evhttp_add_header(out, "Content-Type", content_type);
        evbuffer_add(evhttp_request_get_output_buffer(req), body, body_len);
    }
    call->req = req;
    evtimer_add(timer, &tv);
    if (evhttp_make_request(s->conn, req, hc_command(method), path) != 0) {
        /* Only a failure to even start connecting lands here. */
        call->req = NULL;
        event_free(timer);
        hc_slot_drop(s);
        *failure = HTTP_CLIENT_UNSENT;
        return app_error_set(err, APP_EUNAVAIL, "cannot connect to %s", c->url);
    }
    while (!call->done)
        if (event_base_loop(s->base, EVLOOP_ONCE) < 0)
            break;
    event_free(timer);
    if (!call->done && call->req) {
        evhttp_cancel_request(call->req);
        call->req = NULL;
    }

    if (call->status > 0 && !call->oom) {
        *failure = HTTP_CLIENT_REPLIED;
        return 0;
    }
    hc_slot_drop(s); /* whatever went wrong, the next call starts on a new connection */
    if (call->oom)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    if (call->timed_out) {
        *failure = HTTP_CLIENT_TIMEOUT;
        return app_error_set(err, APP_EUNAVAIL, "%s did not answer in time", c->url);
    }
    *failure = call->failed ? HTTP_CLIENT_BROKEN : HTTP_CLIENT_UNSENT;
    return app_error_set(err, APP_EUNAVAIL, "%s %s", c->url,
                         call->failed ? "closed the connection before answering"
                                      : "refused the connection or cannot be reached");
}

int http_client_call(http_client *c, const char *method, const char *path,
                     const char *const *headers, const char *content_type, const char *body,
                     size_t body_len, const char *want_header, int timeout_ms,
                     http_client_reply *reply, http_client_failure *failure, app_error *err)
{
    memset(reply, 0, sizeof *reply);
    *failure = HTTP_CLIENT_UNSENT;
    struct timespec deadline;
    deadline_in_ms(CLOCK_MONOTONIC, timeout_ms > 0 ? timeout_ms : 0, &deadline);
    hc_slot *s = hc_checkout(c, &deadline);
    if (!s) {
        *failure = HTTP_CLIENT_TIMEOUT;
        return app_error_set(err, APP_EUNAVAIL, "every connection to %s stayed busy", c->url);
    }
    hc_call call = {.want_header = want_header};
    int rc = hc_exchange(c, s, &call, method, path, headers, content_type, body, body_len,
                         &deadline, failure, err);
    hc_checkin(c, s);
    if (rc) {
        free(call.body);
        free(call.header);
        return rc;
    }
    reply->status = call.status;
    reply->body = call.body;
    reply->body_len = call.body_len;
    reply->header = call.header;
    return 0;
}
