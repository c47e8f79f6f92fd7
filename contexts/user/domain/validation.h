/* How the user domain reports invalid values: field errors that accumulate in one
 * app_error, so a request with a bad email and a bad name hears about both. */
#ifndef USER_DOMAIN_VALIDATION_H
#define USER_DOMAIN_VALIDATION_H

#include "core/error.h"

/* Adds a field error; sets APP_EINVAL "validation failed" unless err already holds a
 * validation or wrong-type error (a wrong type, 400, outranks invalid values). Returns
 * APP_EINVAL. */
int user_invalid_field(app_error *err, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
