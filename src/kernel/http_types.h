/* What a context's HTTP route sees and fills, free of libevent: the server parses the
 * request on its loop thread, runs the route on a worker, and sends the response back. */
#ifndef KERNEL_HTTP_TYPES_H
#define KERNEL_HTTP_TYPES_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"
#include "kernel/bus.h"

typedef enum http_method {
    HTTP_M_GET = 1 << 0,
    HTTP_M_POST = 1 << 1,
    HTTP_M_PUT = 1 << 2,
    HTTP_M_DELETE = 1 << 3,
    HTTP_M_PATCH = 1 << 4,
    HTTP_M_HEAD = 1 << 5,
    HTTP_M_OTHER = 1 << 6,
} http_method;

#define HTTP_MAX_PARAMS 4

typedef struct http_req {
    http_method method;
    const char *path; /* decoded path, no query string */
    const char *param_names[HTTP_MAX_PARAMS];
    char *param_values[HTTP_MAX_PARAMS]; /* owned by the request */
    size_t n_params;
    cJSON *body;          /* parsed JSON body, or NULL when empty */
    const char *if_match; /* raw If-Match header, or NULL */
    const char *query;    /* the raw query string (after '?'), or NULL */
    bus_meta meta;        /* correlation from X-Request-ID/traceparent */
} http_req;

typedef struct http_res {
    int status;               /* 0 means 200 */
    cJSON *body;              /* owned; sent as application/json */
    char *text;               /* owned; sent as-is when body is NULL (e.g. metrics) */
    const char *content_type; /* for text; default text/plain; charset=utf-8 */
    char location[256];       /* Location header when non-empty */
    char etag[48];            /* ETag header when non-empty, quoted by the route */
} http_res;

/* Value of path parameter name ("id" for "/v1/users/{id}"), or NULL. */
const char *http_req_param(const http_req *req, const char *name);

/* The percent-decoded value of query parameter name into out (size bytes): 1 when present,
 * 0 when absent, APP_EBADREQ when its encoding is broken or it does not fit. */
int http_req_query(const http_req *req, const char *name, char *out, size_t size, app_error *err);

/* Pages of a list: ?limit (1..HTTP_PAGE_MAX, default HTTP_PAGE_DEFAULT) and the cursor ?after
 * from the request go into payload as "limit" and "after" (absent when not given). A bad
 * value is APP_EBADREQ naming the parameter. */
#define HTTP_PAGE_DEFAULT 100
#define HTTP_PAGE_MAX     1000
int http_req_page(const http_req *req, cJSON *payload, app_error *err);

/* The page a query's payload asks for (as http_req_page put it): *limit (HTTP_PAGE_DEFAULT
 * when absent) and the numeric cursor *after (0 when absent). APP_EBADREQ, with a field
 * error on "after", for a cursor no list gives. */
int http_page_of(const cJSON *payload, size_t *limit, int64_t *after, app_error *err);

/* A page reply's "next" cursor (set by the query when more items follow) becomes the link to
 * the next page: "<path>?limit=<limit>&after=<cursor>". Answers 200 with body (taken over). */
int http_res_page(http_res *res, const http_req *req, cJSON *body, app_error *err);

/* Answers status with body (taken over, also on failure) and its "version" member as a
 * quoted ETag. APP_EINTERNAL when body has no numeric version. */
int http_res_versioned(http_res *res, int status, cJSON *body, app_error *err);

/* A route runs on a worker thread and may block on the bus. On failure it fills err and
 * returns its code; the server answers problem+json from err. */
typedef int (*http_route_fn)(bus *b, const http_req *req, http_res *res, app_error *err);

/* On every answer of an internal route, so that a caller never takes a reply from anything
 * else on the way (a proxy, a wrong address, the server's own refusal) for the route's. */
#define HTTP_INTERNAL_REPLY_HEADER "X-App-Bus-Reply"

enum http_route_flags {
    HTTP_ROUTE_JSON_BODY = 1u << 0, /* requires a JSON object body (415/400 otherwise) */
    HTTP_ROUTE_INLINE = 1u << 1,    /* never blocks: runs on the loop thread, not a worker */
    HTTP_ROUTE_OPEN = 1u << 2,      /* no API key and no rate limit (probes, scrapes) */
    /* For other services, not clients: only trusted peers with the internal token (403 for
     * anyone else, before anything runs), no API key, no rate limit; every answer the route
     * gives carries HTTP_INTERNAL_REPLY_HEADER. */
    HTTP_ROUTE_INTERNAL = 1u << 3,
    /* Needs the admin scope of an API key whatever its method (products and stock, audit
     * trails); other routes need read (GET, HEAD) or write (the rest). */
    HTTP_ROUTE_ADMIN = 1u << 4,
    /* For an end user (a gateway's X-Authenticated-Userid): the {id} of the path is a user
     * id, and must be the end user's own (else 403). */
    HTTP_ROUTE_SELF = 1u << 5,
    /* For an end user: the route itself checks that what it touches is the end user's
     * (http_req.meta.subject). Routes with neither flag serve end users only GETs that need
     * no admin scope. */
    HTTP_ROUTE_OWNED = 1u << 6,
};

/* A GET whose answer is a read model as it stands in the read store (http_route_def.model).
 * The server reads it on the loop thread that parsed the request, with the read store's
 * get_async, and answers from it without a worker. Whenever that cannot be done (the model
 * is missing, the store cannot answer at once, the query's handler runs in another
 * process), the route's fn runs on a worker as usual, so the answer is the same either way. */
typedef struct http_read_model {
    const char *query;      /* the query fn asks, counted as answered by it (queries_total) */
    const char *key_prefix; /* the model is at key_prefix + the path parameter */
    const char *param;      /* "id" */
    bool (*valid)(const char *value); /* the parameter can name a model (else fn answers) */
    /* Answers from model (taken over, also on failure) as fn answers from the query's reply;
     * on the loop thread, so it must not block. */
    int (*reply)(const http_req *req, cJSON *model, http_res *res, app_error *err);
    /* reply answers the model itself (res->body is model): the stored text, which the
     * projection printed from it, goes out as it is instead of being printed again. */
    bool as_stored;
} http_read_model;

/* A row of a context's route table; tables end with a {0} sentinel. */
typedef struct http_route_def {
    unsigned methods;    /* http_method bits */
    const char *pattern; /* "/v1/users/{id}/email" */
    http_route_fn fn;
    unsigned flags;
    const char *name;             /* metrics label, e.g. "/v1/users/{id}" (default: pattern) */
    const http_read_model *model; /* NULL, or how a GET is answered on the loop thread */
} http_route_def;

#endif
