/* The email value object: a trimmed, syntactically plausible address, kept as entered for
 * display and compared case-insensitively through its lower-cased key. */
#ifndef USER_DOMAIN_EMAIL_H
#define USER_DOMAIN_EMAIL_H

#include <stdbool.h>

#include "core/error.h"

#define USER_EMAIL_MIN       3
#define USER_EMAIL_MAX       254
#define USER_EMAIL_LOCAL_MAX 64

typedef struct user_email {
    char value[USER_EMAIL_MAX + 1]; /* trimmed, as entered */
    char key[USER_EMAIL_MAX + 1];   /* lower-cased: the uniqueness key */
} user_email;

/* Parses input (NUL-terminated). On failure adds a field error "email" to err (see
 * user_invalid_field) and returns APP_EINVAL; *out is then unspecified. */
int user_email_parse(user_email *out, const char *input, app_error *err);

/* The uniqueness key of an already valid address: ASCII lower-case, into out. */
void user_email_key(char out[USER_EMAIL_MAX + 1], const char *email);

/* Case-insensitive equality of two addresses. */
bool user_email_same(const char *a, const char *b);

#endif
