/* The connection-level defences in front of evhttp, on its loop threads: every connection's
 * bytes pass the framing guard (http/guard.h) before libevent's parser sees them; a request
 * must send its head within http.header_timeout_ms and its body within http.body_timeout_ms
 * of its first byte; at most http.max_connections are open at once; an accept error (EMFILE)
 * pauses accepting instead of spinning. A refused connection gets one problem+json answer
 * (400, 404, 405, 408, 413, 414, 431, 501 or 503) and is closed. */
#ifndef HTTP_EDGE_H
#define HTTP_EDGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "core/error.h"

typedef struct http_edge http_edge;

typedef struct http_edge_options {
    size_t max_body_bytes;
    int header_timeout_ms; /* the request line and headers, from the request's first byte */
    int body_timeout_ms;   /* the body, from the end of the headers */
    int max_connections;   /* open at once; <= 0 picks one from RLIMIT_NOFILE */
    /* Called on every change of a connection's output buffer (the server's rewriting of
     * libevent's own error pages), or NULL. */
    evbuffer_cb_func on_output;
    void *on_output_arg;
    /* Names in allow (an Allow header value) the methods that target (a request target, its
     * query included) accepts, and returns true; false when no resource is there. Called on
     * a loop thread for a request refused for its method; NULL answers 501 to all of them. */
    bool (*allow)(const char *target, char *allow, size_t size, void *arg);
    void *allow_arg;
} http_edge_options;

/* *out owned by the caller. Teardown: http_edge_forget_listeners while the loops' bases
 * still exist (it frees events on them), then http_edge_free once they are freed (a
 * connection's last clean-up may run in event_base_free). */
int http_edge_new(http_edge **out, const http_edge_options *o, app_error *err);
void http_edge_forget_listeners(http_edge *e); /* accepts NULL */
void http_edge_free(http_edge *e);             /* accepts NULL */

/* For evhttp_set_bevcb(h, http_edge_make_bev, edge): each connection gets a guarded
 * bufferevent. */
struct bufferevent *http_edge_make_bev(struct event_base *base, void *arg);

/* Makes accept errors on l (its loop's base) pause accepting, with a log line a second at
 * most, instead of spinning on a listening socket that stays readable. */
void http_edge_watch_listener(http_edge *e, struct evconnlistener *l, struct event_base *base);

/* The requests whose head has come on the connection of bev (a bufferevent made by
 * http_edge_make_bev, as evhttp_connection_get_bufferevent gives it), this one included;
 * -1 for one the edge did not make. Any thread. */
int64_t http_edge_requests_of(http_edge *e, const struct bufferevent *bev);

/* Connections open now, and the limit in force. */
int http_edge_connections(http_edge *e);
int http_edge_max_connections(const http_edge *e);

#endif
