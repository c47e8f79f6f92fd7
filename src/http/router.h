/* Route lookup for the HTTP edge: patterns made of literal and {name} segments, gathered from
 * the contexts' {0}-terminated tables, matched against a request path and method. */
#ifndef HTTP_ROUTER_H
#define HTTP_ROUTER_H

#include <stddef.h>

#include "core/error.h"
#include "kernel/http_types.h"

typedef struct http_router http_router;

/* What a lookup found. param_names are borrowed from the router; param_values are owned by
 * the match until moved out (set the slot to NULL) or freed by http_route_match_clear. */
typedef struct http_route_match {
    const http_route_def *route;
    const char *param_names[HTTP_MAX_PARAMS];
    char *param_values[HTTP_MAX_PARAMS];
    size_t n_params;
    char allow[64]; /* for 405: the methods the path accepts, e.g. "GET, HEAD, POST" */
} http_route_match;

/* *out owned by the caller; free with http_router_free. */
int http_router_new(http_router **out, app_error *err);
void http_router_free(http_router *r); /* accepts NULL */

/* Adds every row of a {0}-terminated table (kept by reference). A malformed pattern, more
 * than HTTP_MAX_PARAMS parameters, no method or no function is APP_EINTERNAL naming it. */
int http_router_add(http_router *r, const http_route_def *table, app_error *err);

/* Looks up raw_path (percent-encoded, no query string). Returns 0 and fills out;
 * APP_ENOTFOUND when no pattern matches; APP_EMETHOD when one matches but not for method
 * (out->allow is filled); APP_EBADREQ for a bad percent escape or %00. Literal segments win
 * over parameters. A route allowing GET also answers HEAD. */
int http_router_match(const http_router *r, http_method method, const char *raw_path,
                      http_route_match *out, app_error *err);
void http_route_match_clear(http_route_match *m);

/* Percent-decodes a whole path into *out (caller frees). APP_EBADREQ for a bad escape, %00
 * or invalid UTF-8. */
int http_path_decode(const char *raw, char **out, app_error *err);

/* The methods in bits as an Allow header value, e.g. "GET, POST". */
void http_methods_format(unsigned methods, char *out, size_t size);

#endif
