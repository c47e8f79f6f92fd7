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

/* The most JSON values and the deepest nesting a request body may have: a 1 MB body of
 * "[[],[],...]" would otherwise become some 28 MB of parsed nodes. */
#define JSON_MAX_VALUES 20000
#define JSON_MAX_DEPTH  64

/* Checks, without parsing, that text (n bytes) holds at most max_values JSON values nested at
 * most max_depth deep, and no string with a \u0000 escape (C strings would silently end
 * there). 0, or APP_EBADREQ saying which. Malformed JSON passes: the parser refuses it. */
int json_check_budget(const char *text, size_t n, size_t max_values, int max_depth, app_error *err);

/* Parse JSON text owned elsewhere; NULL on malformed input or allocation failure. */
cJSON *json_parse_n(const char *text, size_t n);

#endif
