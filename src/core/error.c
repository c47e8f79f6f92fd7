/* The error model: filling errors and mapping codes to HTTP statuses and titles. */
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int app_error_set(app_error *err, int code, const char *fmt, ...)
{
    if (!err)
        return code;
    err->code = code;
    err->detail[0] = '\0';
    err->n_fields = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return code;
}

int app_error_detail(app_error *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->detail, sizeof err->detail, fmt, ap);
    va_end(ap);
    return err->code;
}

void app_error_field(app_error *err, const char *field, const char *fmt, ...)
{
    if (err->n_fields >= APP_ERROR_MAX_FIELDS)
        return;
    app_field_error *f = &err->fields[err->n_fields++];
    snprintf(f->field, sizeof f->field, "%s", field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->message, sizeof f->message, fmt, ap);
    va_end(ap);
}

void app_error_clear(app_error *err)
{
    memset(err, 0, sizeof *err);
}

static const struct {
    int code;
    int status;
    const char *slug;
    const char *title;
} error_table[] = {
    {APP_EBADREQ, 400, "bad-request", "Bad Request"},
    {APP_EUNAUTH, 401, "unauthorized", "Unauthorized"},
    {APP_EFORBIDDEN, 403, "forbidden", "Forbidden"},
    {APP_ENOTFOUND, 404, "not-found", "Not Found"},
    {APP_EMETHOD, 405, "method-not-allowed", "Method Not Allowed"},
    {APP_ECONFLICT, 409, "conflict", "Conflict"},
    {APP_EVERSION, 409, "conflict", "Conflict"},
    {APP_EPRECOND, 412, "precondition-failed", "Precondition Failed"},
    {APP_ETOOLARGE, 413, "payload-too-large", "Payload Too Large"},
    {APP_EMEDIA, 415, "unsupported-media-type", "Unsupported Media Type"},
    {APP_EINVAL, 422, "validation-failed", "Unprocessable Content"},
    {APP_ERATELIMIT, 429, "rate-limited", "Too Many Requests"},
    {APP_EUNAVAIL, 503, "service-unavailable", "Service Unavailable"},
    {APP_ECONFIG, 500, "internal-error", "Internal Server Error"},
    {APP_EIDEMPOTENT, 500, "internal-error", "Internal Server Error"},
    {APP_ENOMEM, 500, "internal-error", "Internal Server Error"},
    {APP_EINTERNAL, 500, "internal-error", "Internal Server Error"},
};

static size_t error_index(int code)
{
    for (size_t i = 0; i < sizeof error_table / sizeof error_table[0]; i++)
        if (error_table[i].code == code)
            return i;
    return sizeof error_table / sizeof error_table[0] - 1; /* internal */
}

int app_error_http_status(int code)
{
    return error_table[error_index(code)].status;
}

const char *app_error_title(int code)
{
    return error_table[error_index(code)].title;
}

const char *app_error_slug(int code)
{
    return error_table[error_index(code)].slug;
}

int app_error_code_of_slug(const char *slug)
{
    /* Several codes that never leave a process share it; what arrives is a plain 500. */
    if (slug && strcmp(slug, "internal-error") == 0)
        return APP_EINTERNAL;
    for (size_t i = 0; slug && i < sizeof error_table / sizeof error_table[0]; i++)
        if (strcmp(error_table[i].slug, slug) == 0)
            return error_table[i].code;
    return 0;
}
