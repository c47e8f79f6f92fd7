/* Small JSON helpers over cJSON for reading validated fields and building replies. */
#ifndef CORE_JSON_H
#define CORE_JSON_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* Field accessors: a missing field is APP_EINVAL ("is required"), a wrong JSON type is
 * APP_EBADREQ; both add a field error naming field, and so does a string that held \u0000
 * (APP_EINVAL). *out is borrowed from obj. */
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
 * most max_depth deep. 0, or APP_EBADREQ saying which. Malformed JSON passes: the parser
 * refuses it. *nul_strings (may be NULL) counts strings holding a \u0000 escape. */
int json_check_budget(const char *text, size_t n, size_t max_values, int max_depth,
                      size_t *nul_strings, app_error *err);

/* A request body: checked against the budget above, then parsed (NULL and APP_EBADREQ when it
 * is not JSON). A C string ends at U+0000, so a string holding \u0000 would be read cut short:
 * its value keeps what comes before the U+0000 followed by U+0001, which no field accepts,
 * and is marked (json_string_has_nul); a member name holding one gets the same, so that no
 * field of that name is found. Members nobody reads may hold anything. */
int json_parse_body(const char *text, size_t n, size_t max_values, int max_depth, cJSON **out,
                    app_error *err);

/* True when item is a string whose text held \u0000 (json_parse_body). */
bool json_string_has_nul(const cJSON *item);

/* Parse JSON text owned elsewhere; NULL on malformed input or allocation failure. */
cJSON *json_parse_n(const char *text, size_t n);

#endif
