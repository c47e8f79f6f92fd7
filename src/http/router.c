/* Route lookup: patterns are split into segments once at registration; a lookup decodes the
 * request path segment by segment (so %2F stays inside one segment) and scans every route,
 * keeping the most specific match. There are a few dozen routes: a scan is cheap. */
#include "http/router.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/text.h"

#define ROUTER_MAX_SEGS 32

typedef struct router_seg {
    char *text; /* literal text, or the parameter name */
    bool param;
} router_seg;

typedef struct router_route {
    const http_route_def *def;
    router_seg *segs;
    size_t n_segs;
} router_route;

struct http_router {
    router_route *routes;
    size_t n_routes, cap_routes;
};

const char *http_req_param(const http_req *req, const char *name)
{
    for (size_t i = 0; i < req->n_params; i++)
        if (req->param_names[i] && strcmp(req->param_names[i], name) == 0)
            return req->param_values[i];
    return NULL;
}

int http_router_new(http_router **out, app_error *err)
{
    *out = calloc(1, sizeof **out);
    if (!*out)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    return 0;
}

static void router_route_clear(router_route *rt)
{
    for (size_t i = 0; i < rt->n_segs; i++)
        free(rt->segs[i].text);
    free(rt->segs);
}

void http_router_free(http_router *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_routes; i++)
        router_route_clear(&r->routes[i]);
    free(r->routes);
    free(r);
}

static bool router_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* Splits a pattern into rt->segs; "/" has no segments. */
static int router_compile(const http_route_def *def, router_route *rt, app_error *err)
{
    const char *p = def->pattern;
    memset(rt, 0, sizeof *rt);
    rt->def = def;
    if (!p || p[0] != '/')
        return app_error_set(err, APP_EINTERNAL, "route pattern \"%s\" must start with /",
                             p ? p : "(null)");
    if (!def->fn || (def->methods & ~(unsigned)HTTP_M_OTHER) == 0)
        return app_error_set(err, APP_EINTERNAL, "route \"%s\" needs a function and a method", p);
    if (strcmp(p, "/") == 0)
        return 0;
    rt->segs = calloc(ROUTER_MAX_SEGS, sizeof *rt->segs);
    if (!rt->segs)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    size_t n_params = 0;
    p++;
    for (;;) {
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0 || rt->n_segs == ROUTER_MAX_SEGS)
            goto bad;
        router_seg *s = &rt->segs[rt->n_segs];
        if (p[0] == '{') {
            if (len < 3 || p[len - 1] != '}' || ++n_params > HTTP_MAX_PARAMS)
                goto bad;
            for (size_t i = 1; i + 1 < len; i++)
                if (!router_name_char(p[i]))
                    goto bad;
            s->param = true;
            s->text = strndup(p + 1, len - 2);
        } else {
            if (memchr(p, '{', len) || memchr(p, '}', len) || memchr(p, '%', len))
                goto bad;
            s->text = strndup(p, len);
        }
        if (!s->text) {
            router_route_clear(rt);
            return app_error_set(err, APP_ENOMEM, "out of memory");
        }
        rt->n_segs++;
        if (!end)
            break;
        p = end + 1;
    }
    return 0;
bad:
    router_route_clear(rt);
    return app_error_set(err, APP_EINTERNAL,
                         "route pattern \"%s\" is malformed (empty segment, bad {name}, or "
                         "more than %d parameters)",
                         def->pattern, HTTP_MAX_PARAMS);
}

int http_router_add(http_router *r, const http_route_def *table, app_error *err)
{
    size_t n = 0;
    while (table[n].pattern || table[n].fn || table[n].methods)
        n++;
    if (r->n_routes + n > r->cap_routes) {
        size_t cap = r->cap_routes ? r->cap_routes : 16;
        while (cap < r->n_routes + n)
            cap *= 2;
        router_route *grown = realloc(r->routes, cap * sizeof *grown);
        if (!grown)
            return app_error_set(err, APP_ENOMEM, "out of memory");
        r->routes = grown;
        r->cap_routes = cap;
    }
    size_t first = r->n_routes;
    for (size_t i = 0; i < n; i++) {
        int rc = router_compile(&table[i], &r->routes[r->n_routes], err);
        if (rc) {
            /* All or nothing: a half-added table would leave start-up in a strange state. */
            while (r->n_routes > first)
                router_route_clear(&r->routes[--r->n_routes]);
            return rc;
        }
        r->n_routes++;
    }
    return 0;
}

/* Decodes len bytes of s into a new string. */
static int router_decode(const char *s, size_t len, char **out, app_error *err)
{
    char *d = malloc(len + 1);
    if (!d)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '%') {
            d[o++] = s[i];
            continue;
        }
        int hi = i + 1 < len ? text_hex_digit(s[i + 1]) : -1;
        int lo = i + 2 < len ? text_hex_digit(s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            free(d);
            return app_error_set(err, APP_EBADREQ, "path has a bad percent escape or %%00");
        }
        d[o++] = (char)(hi * 16 + lo);
        i += 2;
    }
    d[o] = '\0';
    if (!json_utf8_valid(d, o)) {
        free(d);
        return app_error_set(err, APP_EBADREQ, "path is not valid UTF-8");
    }
    *out = d;
    return 0;
}

int http_path_decode(const char *raw, char **out, app_error *err)
{
    *out = NULL;
    return router_decode(raw, strlen(raw), out, err);
}

static const struct {
    unsigned bit;
    const char *name;
} router_methods[] = {
    {HTTP_M_GET, "GET"}, {HTTP_M_HEAD, "HEAD"},   {HTTP_M_POST, "POST"},
    {HTTP_M_PUT, "PUT"}, {HTTP_M_PATCH, "PATCH"}, {HTTP_M_DELETE, "DELETE"},
};

void http_methods_format(unsigned methods, char *out, size_t size)
{
    size_t o = 0;
    if (size == 0)
        return;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof router_methods / sizeof router_methods[0]; i++) {
        if (!(methods & router_methods[i].bit))
            continue;
        int n = snprintf(out + o, size - o, "%s%s", o ? ", " : "", router_methods[i].name);
        if (n < 0 || (size_t)n >= size - o) {
            out[o] = '\0'; /* whole names only */
            break;
        }
        o += (size_t)n;
    }
}

static unsigned router_effective(unsigned methods)
{
    return methods & HTTP_M_GET ? methods | HTTP_M_HEAD : methods;
}

static bool router_matches(const router_route *rt, char **segs, size_t n)
{
    if (rt->n_segs != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (rt->segs[i].param ? segs[i][0] == '\0' : strcmp(rt->segs[i].text, segs[i]) != 0)
            return false;
    }
    return true;
}

/* True when a is more specific than b: at the first segment where one is a literal and the
 * other a parameter, the literal wins. */
static bool router_more_specific(const router_route *a, const router_route *b)
{
    for (size_t i = 0; i < a->n_segs && i < b->n_segs; i++)
        if (a->segs[i].param != b->segs[i].param)
            return !a->segs[i].param;
    return false;
}

void http_route_match_clear(http_route_match *m)
{
    for (size_t i = 0; i < HTTP_MAX_PARAMS; i++) {
        free(m->param_values[i]);
        m->param_values[i] = NULL;
    }
    m->n_params = 0;
}

int http_router_match(const http_router *r, http_method method, const char *raw_path,
                      http_route_match *out, app_error *err)
{
    memset(out, 0, sizeof *out);
    if (!raw_path || raw_path[0] != '/')
        return app_error_set(err, APP_ENOTFOUND, "no route for this path");
    char *segs[ROUTER_MAX_SEGS];
    size_t n = 0;
    int rc = 0;
    if (strcmp(raw_path, "/") != 0) {
        const char *p = raw_path + 1;
        for (;;) {
            const char *end = strchr(p, '/');
            size_t len = end ? (size_t)(end - p) : strlen(p);
            if (n == ROUTER_MAX_SEGS) {
                rc = app_error_set(err, APP_ENOTFOUND, "no route for this path");
                goto done;
            }
            rc = router_decode(p, len, &segs[n], err);
            if (rc)
                goto done;
            n++;
            if (!end)
                break;
            p = end + 1;
        }
    }

    const router_route *best = NULL;
    unsigned allowed = 0;
    for (size_t i = 0; i < r->n_routes; i++) {
        const router_route *rt = &r->routes[i];
        if (!router_matches(rt, segs, n))
            continue;
        unsigned eff = router_effective(rt->def->methods);
        allowed |= eff;
        if ((eff & (unsigned)method) && (!best || router_more_specific(rt, best)))
            best = rt;
    }
    if (!best) {
        if (allowed) {
            http_methods_format(allowed, out->allow, sizeof out->allow);
            rc = app_error_set(err, APP_EMETHOD, "method not allowed here");
        } else {
            rc = app_error_set(err, APP_ENOTFOUND, "no route for this path");
        }
        goto done;
    }
    out->route = best->def;
    for (size_t i = 0; i < n; i++) {
        if (!best->segs[i].param)
            continue;
        out->param_names[out->n_params] = best->segs[i].text;
        out->param_values[out->n_params++] = segs[i];
        segs[i] = NULL;
    }
done:
    for (size_t i = 0; i < n; i++)
        free(segs[i]);
    return rc;
}
