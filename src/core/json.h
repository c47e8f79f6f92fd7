/* Small JSON helpers over cJSON for reading validated fields and building replies. */
#ifndef CORE_JSON_H
#define CORE_JSON_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* Field accessors: a missing field is APP_EINVAL ("is required"), a wrong JSON type is
 * APP_EBADREQ; both add a field error naming field. *out is borrowed from obj. */
int json_req_string(const cJSON *obj, const char *field, const char **out, app_error *err);
int json_req_int(const cJSON *obj, const char *field, int64_t *out, app_error *err);
int json_req_array(const cJSON *obj, const char *field, const cJSON **out, app_error *err);

/* True when item is a JSON number holding a whole value that a double carries exactly
 * (|v| <= 2^53); then *out is that value. Converting anything else would change it. */
bool json_exact_int(const cJSON *item, int64_t *out);

/* Optional string: NULL when absent or null. */
const char *json_opt_string(const cJSON *obj, const char *field);

/* True when s (length n) is valid UTF-8 without NUL bytes. */
bool json_utf8_valid(const char *s, size_t n);

/* Parse JSON text owned elsewhere; NULL on malformed input or allocation failure. */
cJSON *json_parse_n(const char *text, size_t n);

#endif
