/* A blocking HTTP/1.1 client for one origin, for calls between services (kernel/remote.h):
 * a pool of keep-alive connections on libevent's evhttp, each with an event loop of its own
 * that runs only in the thread that has checked the connection out. Thread-safe. */
#ifndef HTTP_CLIENT_H
#define HTTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef struct http_client http_client;

typedef struct http_client_options {
    const char *url; /* "http://host[:port]", no path; the host is resolved at each connect */
    int pool_size;   /* connections kept open at most (and calls at once); < 1 means 1 */
} http_client_options;

/* What came back. Strings owned; http_client_reply_free frees them. */
typedef struct http_client_reply {
    int status; /* the HTTP status */
    char *body; /* NUL terminated, body_len bytes before the NUL; never NULL on success */
    size_t body_len;
    char *header; /* the value of the header the call asked for, or NULL */
} http_client_reply;

void http_client_reply_free(http_client_reply *r); /* frees what r owns, not r; accepts NULL */

/* Why a call got no reply. */
typedef enum http_client_failure {
    HTTP_CLIENT_REPLIED = 0,
    HTTP_CLIENT_UNSENT,  /* no connection: the request never left (refused, unreachable) */
    HTTP_CLIENT_TIMEOUT, /* the deadline passed; the request may have been handled */
    HTTP_CLIENT_BROKEN,  /* the connection failed after the request went out */
} http_client_failure;

/* Parses the URL (APP_ECONFIG naming what is wrong with it); no connection is made yet.
 * *out owned by the caller; http_client_free. */
int http_client_new(http_client **out, const http_client_options *o, app_error *err);
/* Closes every connection; no call may be in progress. Accepts NULL. */
void http_client_free(http_client *c);

/* The URL's host and port, as parsed. */
const char *http_client_host(const http_client *c);
int http_client_port(const http_client *c);

/* A request with an optional body (content_type required with one), sent on a pooled
 * connection and answered within timeout_ms in all (waiting for a free connection included).
 * headers: NULL-terminated "Name: value" strings, or NULL. want_header: a response header to
 * return in reply->header, or NULL. On a reply of any status, 0 and *failure
 * HTTP_CLIENT_REPLIED; otherwise APP_EUNAVAIL, *failure saying why, err naming the origin. */
int http_client_call(http_client *c, const char *method, const char *path,
                     const char *const *headers, const char *content_type, const char *body,
                     size_t body_len, const char *want_header, int timeout_ms,
                     http_client_reply *reply, http_client_failure *failure, app_error *err);

#endif
