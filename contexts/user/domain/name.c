/* The user name value object: a shared-kernel display name of at most 200 characters. */
#include "contexts/user/domain/name.h"

#include <string.h>

#include "core/text.h"

int user_name_parse(user_name *out, const char *input, app_error *err)
{
    int rc =
        text_display_name(out->value, sizeof out->value, input, USER_NAME_MAX_CHARS, "name", err);
    if (rc == 0)
        out->chars = (size_t)text_utf8_count(out->value, strlen(out->value));
    return rc;
}
