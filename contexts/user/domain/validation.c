/* Accumulating field errors for the user domain's value objects. */
#include "contexts/user/domain/validation.h"

#include <stdarg.h>
#include <stdio.h>

#include "core/text.h"

int user_invalid_field(app_error *err, const char *field, const char *fmt, ...)
{
    char msg[sizeof err->fields[0].message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return text_field_invalid(err, field, "%s", msg);
}
