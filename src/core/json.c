/* JSON helpers over cJSON: required-field accessors that fill field errors, strict UTF-8
 * checking, and parsing of length-delimited text without trailing garbage. */
#include "core/json.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Several accessors may report into one err; a wrong type (400) outranks a missing value
 * (422), and field errors accumulate under the stronger code. */
static int json_field_fail(app_error *err, int code, const char *field, const char *what)
{
    if (err->code != APP_EBADREQ && err->code != APP_EINVAL) {
        app_error_set(err, code,
                      code == APP_EBADREQ ? "request has fields of the wrong type"
                                          : "validation failed");
    } else if (code == APP_EBADREQ && err->code == APP_EINVAL) {
        err->code = APP_EBADREQ;
        snprintf(err->message, sizeof err->message, "request has fields of the wrong type");
    }
    app_error_field(err, field, "%s", what);
    return code;
}

static const cJSON *json_field(const cJSON *obj, const char *field)
{
    if (!cJSON_IsObject(obj))
        return NULL;
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, field);
    return cJSON_IsNull(item) ? NULL : item;
}

int json_req_string(const cJSON *obj, const char *field, const char **out, app_error *err)
{
    const cJSON *item = json_field(obj, field);
    if (!item)
        return json_field_fail(err, APP_EINVAL, field, "is required");
    if (!cJSON_IsString(item) || !item->valuestring)
        return json_field_fail(err, APP_EBADREQ, field, "must be a string");
    /* cJSON does not check raw bytes inside strings. */
    if (!json_utf8_valid(item->valuestring, strlen(item->valuestring)))
        return json_field_fail(err, APP_EBADREQ, field, "must be valid UTF-8");
    *out = item->valuestring;
    return 0;
}

/* Doubles hold every integer up to 2^53 exactly; past that the text the client sent may not
 * be the number we read, so such values are refused rather than silently changed. */
#define JSON_MAX_EXACT_INT 9007199254740992.0

bool json_exact_int(const cJSON *item, int64_t *out)
{
    double d = cJSON_IsNumber(item) ? item->valuedouble : NAN;
    if (!isfinite(d) || d != trunc(d) || d > JSON_MAX_EXACT_INT || d < -JSON_MAX_EXACT_INT)
        return false;
    *out = (int64_t)d;
    return true;
}

int json_req_int(const cJSON *obj, const char *field, int64_t *out, app_error *err)
{
    const cJSON *item = json_field(obj, field);
    if (!item)
        return json_field_fail(err, APP_EINVAL, field, "is required");
    if (!json_exact_int(item, out))
        return json_field_fail(err, APP_EBADREQ, field, "must be an integer");
    return 0;
}

int json_req_array(const cJSON *obj, const char *field, const cJSON **out, app_error *err)
{
    const cJSON *item = json_field(obj, field);
    if (!item)
        return json_field_fail(err, APP_EINVAL, field, "is required");
    if (!cJSON_IsArray(item))
        return json_field_fail(err, APP_EBADREQ, field, "must be an array");
    *out = item;
    return 0;
}

const char *json_opt_string(const cJSON *obj, const char *field)
{
    const cJSON *item = json_field(obj, field);
    return cJSON_IsString(item) ? item->valuestring : NULL;
}

bool json_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        unsigned c = *p;
        if (c == 0)
            return false;
        if (c < 0x80) {
            p++;
            continue;
        }
        size_t len;
        unsigned cp, min;
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2, cp = c & 0x1F, min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3, cp = c & 0x0F, min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return false; /* continuation byte, C0/C1 overlong lead, or F5..FF */
        }
        if ((size_t)(end - p) < len)
            return false;
        for (size_t i = 1; i < len; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        p += len;
    }
    return true;
}

cJSON *json_parse_n(const char *text, size_t n)
{
    if (!text || n == 0)
        return NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, n, &end, false);
    if (!root)
        return NULL;
    for (const char *p = end; p < text + n; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(root);
            return NULL;
        }
    }
    return root;
}

int json_check_budget(const char *text, size_t n, size_t max_values, int max_depth, app_error *err)
{
    size_t values = 1;
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < n; i++) {
        char c = text[i];
        if (in_string) {
            if (c == '"') {
                in_string = false;
            } else if (c == '\\' && i + 1 < n) {
                i++;
                if (text[i] == 'u' && i + 4 < n && text[i + 1] == '0' && text[i + 2] == '0' &&
                    text[i + 3] == '0' && text[i + 4] == '0')
                    return app_error_set(err, APP_EBADREQ,
                                         "request body has a string with \\u0000, which is "
                                         "not accepted");
            }
            continue;
        }
        switch (c) {
        case '"':
            in_string = true;
            break;
        case '[':
        case '{':
            if (++depth > max_depth)
                return app_error_set(err, APP_EBADREQ,
                                     "request body nests JSON deeper than %d levels", max_depth);
            break;
        case ']':
        case '}':
            depth--;
            break;
        case ',':
            if (++values > max_values)
                return app_error_set(err, APP_EBADREQ, "request body has more than %zu JSON values",
                                     max_values);
            break;
        default:
            break;
        }
    }
    return 0;
}
