/* The user context's HTTP routes (API.md, "Users"): each turns a request into one bus
 * message and the reply into a response with its status, Location and ETag. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "contexts/user/application/user_app.h"
#include "core/uuid.h"

/* The {id} path parameter; a value that is no canonical UUID names no user. */
static int route_id(const http_req *req, const char **out, app_error *err)
{
    const char *id = http_req_param(req, "id");
    if (!id || !uuid_valid(id))
        return app_error_set(err, APP_ENOTFOUND, "user not found");
    *out = id;
    return 0;
}

/* Answers status with user as the body (taken over) and its version as the ETag. */
static int route_user(cJSON *user, int status, http_res *res, app_error *err)
{
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(user, "version");
    if (!cJSON_IsNumber(version)) {
        cJSON_Delete(user);
        return app_error_set(err, APP_EINTERNAL, "user reply without a version");
    }
    res->status = status;
    res->body = user;
    snprintf(res->etag, sizeof res->etag, "\"%lld\"", (long long)version->valuedouble);
    return 0;
}

/* {"id": id} plus, when with is set, a copy of body's member with (wrong types included, so
 * that the handler reports them). NULL when out of memory. */
static cJSON *route_payload(const char *id, const cJSON *body, const char *with)
{
    cJSON *p = cJSON_CreateObject();
    if (!p || !cJSON_AddStringToObject(p, "id", id))
        goto fail;
    const cJSON *item = with ? cJSON_GetObjectItemCaseSensitive(body, with) : NULL;
    if (item) {
        cJSON *copy = cJSON_Duplicate(item, true);
        if (!copy)
            goto fail;
        if (!cJSON_AddItemToObject(p, with, copy)) {
            cJSON_Delete(copy);
            goto fail;
        }
    }
    return p;
fail:
    cJSON_Delete(p);
    return NULL;
}

static bool route_space(char c)
{
    return c == ' ' || c == '\t';
}

/* If-Match: "N" or W/"N" gives version N, * (or no header) means any version. One tag
 * only: a user has one current version, so a list could never mean more. A bare N, which
 * clients send for the quoted form often enough, means the same. */
static int route_if_match(const char *header, bool *has, int64_t *out, app_error *err)
{
    *has = false;
    if (!header)
        return 0;
    const char *p = header;
    while (route_space(*p))
        p++;
    size_t n = strlen(p);
    while (n > 0 && route_space(p[n - 1]))
        n--;
    if (n == 1 && *p == '*')
        return 0;
    const char *end = p + n;
    bool weak = end - p >= 2 && p[0] == 'W' && p[1] == '/';
    p += weak ? 2 : 0;
    int64_t v = 0;
    size_t digits = 0;
    bool quoted = p < end && *p == '"';
    for (p += quoted; p < end && *p >= '0' && *p <= '9' && digits < 15; p++, digits++)
        v = v * 10 + (*p - '0');
    /* W/ goes with a quoted tag only. */
    if (digits == 0 || (weak && !quoted) || (quoted ? p + 1 != end || *p != '"' : p != end)) {
        app_error_set(err, APP_EBADREQ, "invalid If-Match header");
        return app_error_detail(err, "If-Match must be one entity tag from the user's ETag, "
                                     "such as \"3\", or *");
    }
    *has = true;
    *out = v;
    return 0;
}

static int route_register(bus *b, const http_req *req, http_res *res, app_error *err)
{
    cJSON *user = NULL;
    int rc = bus_send(b, "user.register_user", req->body, &req->meta, &user, err);
    if (rc != 0)
        return rc;
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(user, "id"));
    if (!id) {
        cJSON_Delete(user);
        return app_error_set(err, APP_EINTERNAL, "user reply without an id");
    }
    snprintf(res->location, sizeof res->location, "/v1/users/%s", id);
    return route_user(user, 201, res, err);
}

/* Sends a command or asks a query whose payload is just the path's {"id"}. */
static int route_by_id(bus *b, bus_kind kind, const char *name, const http_req *req, cJSON **out,
                       app_error *err)
{
    const char *id = NULL;
    int rc = route_id(req, &id, err);
    if (rc != 0)
        return rc;
    cJSON *payload = route_payload(id, NULL, NULL);
    if (!payload)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    rc = kind == BUS_COMMAND ? bus_send(b, name, payload, &req->meta, out, err)
                             : bus_ask(b, name, payload, &req->meta, out, err);
    cJSON_Delete(payload);
    return rc;
}

static int route_get(bus *b, const http_req *req, http_res *res, app_error *err)
{
    cJSON *user = NULL;
    int rc = route_by_id(b, BUS_QUERY, "user.get_user", req, &user, err);
    return rc != 0 ? rc : route_user(user, 200, res, err);
}

static int route_change_email(bus *b, const http_req *req, http_res *res, app_error *err)
{
    const char *id = NULL;
    int rc = route_id(req, &id, err);
    if (rc != 0)
        return rc;
    bool has_version;
    int64_t version = 0;
    rc = route_if_match(req->if_match, &has_version, &version, err);
    if (rc != 0)
        return rc;
    cJSON *payload = route_payload(id, req->body, "email"), *user = NULL;
    if (payload && has_version &&
        !cJSON_AddNumberToObject(payload, "expectedVersion", (double)version)) {
        cJSON_Delete(payload);
        payload = NULL;
    }
    if (!payload)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    rc = bus_send(b, "user.change_user_email", payload, &req->meta, &user, err);
    cJSON_Delete(payload);
    return rc != 0 ? rc : route_user(user, 200, res, err);
}

static int route_deactivate(bus *b, const http_req *req, http_res *res, app_error *err)
{
    cJSON *user = NULL;
    int rc = route_by_id(b, BUS_COMMAND, "user.deactivate_user", req, &user, err);
    return rc != 0 ? rc : route_user(user, 200, res, err);
}

static int route_events(bus *b, const http_req *req, http_res *res, app_error *err)
{
    const char *id = NULL;
    int rc = route_id(req, &id, err);
    if (rc != 0)
        return rc;
    cJSON *payload = route_payload(id, NULL, NULL), *events = NULL;
    if (!payload)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    rc = http_req_page(req, payload, err);
    if (rc == 0)
        rc = bus_ask(b, "user.get_user_events", payload, &req->meta, &events, err);
    cJSON_Delete(payload);
    return rc != 0 ? rc : http_res_page(res, req, events, err);
}

static bool route_id_valid(const char *id)
{
    return uuid_valid(id);
}

static int route_model(const http_req *req, cJSON *user, http_res *res, app_error *err)
{
    (void)req;
    return route_user(user, 200, res, err);
}

/* GET /v1/users/{id} answered from the read model user.get_user reads, on the loop thread. */
static const http_read_model route_user_model = {.query = "user.get_user",
                                                 .key_prefix = USER_READ_KEY_PREFIX,
                                                 .param = "id",
                                                 .valid = route_id_valid,
                                                 .reply = route_model,
                                                 .as_stored = true};

const http_route_def user_routes[] = {
    {HTTP_M_POST, "/v1/users", route_register, HTTP_ROUTE_JSON_BODY, "/v1/users", NULL},
    {HTTP_M_GET, "/v1/users/{id}", route_get, HTTP_ROUTE_SELF, "/v1/users/{id}", &route_user_model},
    {HTTP_M_PUT, "/v1/users/{id}/email", route_change_email, HTTP_ROUTE_JSON_BODY | HTTP_ROUTE_SELF,
     "/v1/users/{id}/email", NULL},
    {HTTP_M_POST, "/v1/users/{id}/deactivate", route_deactivate, HTTP_ROUTE_SELF,
     "/v1/users/{id}/deactivate", NULL},
    {HTTP_M_GET, "/v1/users/{id}/events", route_events, HTTP_ROUTE_ADMIN | HTTP_ROUTE_SELF,
     "/v1/users/{id}/events", NULL},
    {0},
};
