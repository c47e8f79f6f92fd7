/* Accumulating field errors for the user domain's value objects. */
#include "contexts/user/domain/validation.h"

#include <stdarg.h>
#include <stdio.h>

int user_invalid_field(app_error *err, const char *field, const char *fmt, ...)
{
    if (err->code != APP_EINVAL && err->code != APP_EBADREQ)
        app_error_set(err, APP_EINVAL, "validation failed");
    char msg[sizeof err->fields[0].message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    app_error_field(err, field, "%s", msg);
    return APP_EINVAL;
}
