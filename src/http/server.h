/* The HTTP edge: evhttp on several loop threads sharing one port (SO_REUSEPORT). Loop
 * threads parse and validate; routes run on the worker pool; replies go back to the loop
 * thread that owns the connection. Errors leave as application/problem+json. */
#ifndef HTTP_SERVER_H
#define HTTP_SERVER_H

#include <stddef.h>

#include "core/error.h"
#include "http/access.h"
#include "kernel/bus.h"
#include "kernel/http_types.h"
#include "kernel/workers.h"

struct event_base;

typedef struct http_server http_server;

typedef struct http_server_options {
    const char *host;                /* "127.0.0.1" */
    int port;                        /* 0 picks a free port (see http_server_port) */
    int threads;                     /* loop threads */
    size_t max_body_bytes;           /* larger bodies get 413 */
    int request_timeout_ms;          /* idle/read timeout per connection */
    int header_timeout_ms;           /* a request's head, from its first byte (<= 0: 10 s) */
    int body_timeout_ms;             /* a request's body, from the end of its head (<= 0: 30 s) */
    int max_connections;             /* open at once (<= 0: from RLIMIT_NOFILE) */
    int max_requests_per_connection; /* the last one's answer closes it (<= 0: no cap) */
    bus *bus;                        /* handed to every route */
    workers *pool;                   /* where routes run */
    http_access *access;             /* API keys and rate limits for routes not HTTP_ROUTE_OPEN, or
                                        NULL for none; borrowed, outlives the server */
    /* Optional: run on each loop thread, before its loop starts and after it stopped (e.g.
     * to give the thread a read-store connection of its own, for routes' read models). */
    void (*loop_started)(void *arg, struct event_base *base);
    void (*loop_stopping)(void *arg, struct event_base *base);
    void *loop_arg;
} http_server_options;

/* *out owned by the caller; free with http_server_free. Binds the port (so a taken port
 * fails here with a message naming host:port) but serves nothing until start. */
int http_server_new(http_server **out, const http_server_options *opts, app_error *err);
/* Adds a {0}-terminated route table (kept by reference). Before start only. */
int http_server_add_routes(http_server *s, const http_route_def *table, app_error *err);
/* Starts the loop threads. */
int http_server_start(http_server *s, app_error *err);
/* The bound port (useful when options asked for 0). */
int http_server_port(const http_server *s);
/* Graceful stop: stop accepting, let in-flight requests finish (up to grace_ms), then stop
 * the loops and join their threads. Safe to call from any thread except a loop thread. */
void http_server_stop(http_server *s, int grace_ms);
void http_server_free(http_server *s); /* accepts NULL; stops first if needed */

#endif
