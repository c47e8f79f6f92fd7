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
    if (json_string_has_nul(item))
        return json_field_fail(err, APP_EINVAL, field, "must not contain U+0000");
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

/* True when the string token starting at text[i] (its opening quote) holds a \u0000 escape;
 * *end is the index after its closing quote. */
static bool json_token_nul(const char *text, size_t n, size_t i, size_t *end)
{
    bool nul = false;
    for (i++; i < n && text[i] != '"'; i++) {
        if (text[i] != '\\' || i + 1 >= n)
            continue;
        i++;
        if (text[i] == 'u' && i + 4 < n && memcmp(text + i + 1, "0000", 4) == 0)
            nul = true;
    }
    *end = i + 1;
    return nul;
}

int json_check_budget(const char *text, size_t n, size_t max_values, int max_depth,
                      size_t *nul_strings, app_error *err)
{
    size_t values = 1, nul = 0;
    int depth = 0;
    for (size_t i = 0; i < n; i++) {
        switch (text[i]) {
        case '"': {
            size_t end;
            nul += json_token_nul(text, n, i, &end);
            i = end - 1;
            break;
        }
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
    if (nul_strings)
        *nul_strings = nul;
    return 0;
}

/* Strings of a marked value carry this bit in their type: cJSON reads types through 0xFF,
 * and its own flags are 256 and 512. */
#define JSON_NUL_MARK (1 << 12)

bool json_string_has_nul(const cJSON *item)
{
    return cJSON_IsString(item) && (item->type & JSON_NUL_MARK);
}

/* What cJSON kept of a string cut at U+0000, followed by U+0001; NULL without memory. */
static char *json_nul_replacement(const char *kept)
{
    size_t len = strlen(kept);
    char *s = cJSON_malloc(len + 2);
    if (s) {
        memcpy(s, kept, len);
        s[len] = '\x01';
        s[len + 1] = '\0';
    }
    return s;
}

/* The next string token of text from *pos: whether it held \u0000. */
static bool json_next_token_nul(const char *text, size_t n, size_t *pos)
{
    size_t i = *pos;
    while (i < n && text[i] != '"')
        i++;
    if (i >= n) {
        *pos = n;
        return false;
    }
    return json_token_nul(text, n, i, pos);
}

/* Walks item and its siblings in document order, which is the order of the string tokens in
 * text (a member's name, then its value), and marks those that held \u0000. */
static int json_mark_nul(cJSON *item, const char *text, size_t n, size_t *pos)
{
    for (; item; item = item->next) {
        if (item->string && json_next_token_nul(text, n, pos)) {
            char *name = json_nul_replacement(item->string);
            if (!name)
                return APP_ENOMEM;
            if (!(item->type & cJSON_StringIsConst))
                cJSON_free(item->string);
            item->string = name;
            item->type &= ~cJSON_StringIsConst;
        }
        if (cJSON_IsString(item)) {
            if (json_next_token_nul(text, n, pos)) {
                char *value = json_nul_replacement(item->valuestring ? item->valuestring : "");
                if (!value)
                    return APP_ENOMEM;
                cJSON_free(item->valuestring);
                item->valuestring = value;
                item->type |= JSON_NUL_MARK;
            }
        } else if (item->child) {
            int rc = json_mark_nul(item->child, text, n, pos);
            if (rc)
                return rc;
        }
    }
    return 0;
}

int json_parse_body(const char *text, size_t n, size_t max_values, int max_depth, cJSON **out,
                    app_error *err)
{
    *out = NULL;
    size_t nul = 0;
    int rc = json_check_budget(text, n, max_values, max_depth, &nul, err);
    if (rc)
        return rc;
    cJSON *root = json_parse_n(text, n);
    if (!root)
        return app_error_set(err, APP_EBADREQ, "request body is not valid JSON");
    size_t pos = 0;
    if (nul > 0 && json_mark_nul(root, text, n, &pos) != 0) {
        cJSON_Delete(root);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    *out = root;
    return 0;
}
