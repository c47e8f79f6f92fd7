/* The user name value object: trimmed, 1..200 Unicode code points, no control characters. */
#ifndef USER_DOMAIN_NAME_H
#define USER_DOMAIN_NAME_H

#include <stddef.h>

#include "core/error.h"

#define USER_NAME_MAX_CHARS 200
#define USER_NAME_MAX_BYTES (USER_NAME_MAX_CHARS * 4)

typedef struct user_name {
    char value[USER_NAME_MAX_BYTES + 1];
    size_t chars; /* code points */
} user_name;

/* Parses input (NUL-terminated UTF-8). On failure adds a field error "name" to err and
 * returns APP_EINVAL; *out is then unspecified. */
int user_name_parse(user_name *out, const char *input, app_error *err);

#endif
