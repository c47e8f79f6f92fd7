/* Reply helpers shared by every context's routes, and the query parameters they read. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/text.h"
#include "kernel/http_types.h"

int http_res_versioned(http_res *res, int status, cJSON *body, app_error *err)
{
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(body, "version");
    if (!cJSON_IsNumber(version)) {
        cJSON_Delete(body);
        return app_error_set(err, APP_EINTERNAL, "reply without a version");
    }
    res->status = status;
    res->body = body;
    snprintf(res->etag, sizeof res->etag, "\"%lld\"", (long long)version->valuedouble);
    return 0;
}

int http_req_query(const http_req *req, const char *name, char *out, size_t size, app_error *err)
{
    size_t name_len = strlen(name);
    for (const char *p = req->query; p && *p;) {
        const char *end = p + strcspn(p, "&");
        const char *eq = memchr(p, '=', (size_t)(end - p));
        const char *key_end = eq ? eq : end;
        if ((size_t)(key_end - p) == name_len && memcmp(p, name, name_len) == 0) {
            size_t o = 0;
            for (const char *v = eq ? eq + 1 : end; v < end; v++) {
                int c = (unsigned char)*v;
                if (c == '+') {
                    c = ' ';
                } else if (c == '%') {
                    int hi = v + 2 < end ? text_hex_digit(v[1]) : -1;
                    int lo = hi >= 0 ? text_hex_digit(v[2]) : -1;
                    if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                        return app_error_set(err, APP_EBADREQ,
                                             "query parameter %s is not validly encoded", name);
                    c = hi << 4 | lo;
                    v += 2;
                }
                if (o + 1 >= size)
                    return app_error_set(err, APP_EBADREQ, "query parameter %s is too long", name);
                out[o++] = (char)c;
            }
            out[o] = '\0';
            return 1;
        }
        p = *end ? end + 1 : end;
    }
    return 0;
}

int http_req_page(const http_req *req, cJSON *payload, app_error *err)
{
    char limit[16], after[128];
    int rc = http_req_query(req, "limit", limit, sizeof limit, err);
    if (rc < 0)
        return rc;
    long n = HTTP_PAGE_DEFAULT;
    if (rc == 1) {
        char *end = NULL;
        n = strtol(limit, &end, 10);
        if (!limit[0] || *end || n < 1 || n > HTTP_PAGE_MAX) {
            app_error_set(err, APP_EBADREQ, "limit must be a whole number from 1 to %d",
                          HTTP_PAGE_MAX);
            app_error_field(err, "limit", "must be 1 to %d", HTTP_PAGE_MAX);
            return APP_EBADREQ;
        }
    }
    if (!cJSON_AddNumberToObject(payload, "limit", (double)n))
        return app_error_set(err, APP_ENOMEM, "out of memory");
    rc = http_req_query(req, "after", after, sizeof after, err);
    if (rc < 0)
        return rc;
    if (rc == 1) {
        bool ok = after[0] != '\0';
        for (const char *c = after; ok && *c; c++)
            ok = (*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                 *c == '-' || *c == '_';
        if (!ok) {
            app_error_set(err, APP_EBADREQ, "after must be a cursor from a next link");
            app_error_field(err, "after", "is not a cursor this list gave");
            return APP_EBADREQ;
        }
        if (!cJSON_AddStringToObject(payload, "after", after))
            return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    return 0;
}

int http_page_of(const cJSON *payload, size_t *limit, int64_t *after, app_error *err)
{
    *limit = HTTP_PAGE_DEFAULT;
    *after = 0;
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(payload, "limit");
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(payload, "after");
    if (cJSON_IsNumber(l) && l->valuedouble >= 1 && l->valuedouble <= HTTP_PAGE_MAX)
        *limit = (size_t)l->valuedouble;
    if (!a)
        return 0;
    const char *t = cJSON_GetStringValue(a);
    char *end = NULL;
    long long v = t ? strtoll(t, &end, 10) : -1;
    if (!t || !t[0] || *end || v < 0) {
        app_error_set(err, APP_EBADREQ, "after is not a cursor of this list");
        app_error_field(err, "after", "is not a cursor this list gave");
        return APP_EBADREQ;
    }
    *after = v;
    return 0;
}

int http_res_page(http_res *res, const http_req *req, cJSON *body, app_error *err)
{
    cJSON *next = cJSON_GetObjectItemCaseSensitive(body, "next");
    if (cJSON_IsString(next)) {
        char limit[16] = "";
        if (http_req_query(req, "limit", limit, sizeof limit, err) != 1)
            snprintf(limit, sizeof limit, "%d", HTTP_PAGE_DEFAULT);
        char link[512];
        snprintf(link, sizeof link, "%s?limit=%s&after=%s", req->path, limit, next->valuestring);
        cJSON *with = cJSON_CreateString(link);
        if (!with) {
            cJSON_Delete(body);
            return app_error_set(err, APP_ENOMEM, "out of memory");
        }
        cJSON_ReplaceItemInObjectCaseSensitive(body, "next", with);
    }
    res->status = 200;
    res->body = body;
    return 0;
}
