/* JSON helpers: required-field errors, integer strictness, UTF-8 checking, bounded parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/json.h"

static cJSON *parse(const char *text)
{
    cJSON *j = json_parse_n(text, strlen(text));
    assert_non_null(j);
    return j;
}

static void test_req_string(void **state)
{
    (void)state;
    cJSON *j = parse("{\"name\":\"Ada\",\"n\":1,\"nul\":null,\"bad\":\"\\u00e9\"}");
    app_error err = APP_ERROR_INIT;
    const char *s = NULL;
    assert_int_equal(json_req_string(j, "name", &s, &err), 0);
    assert_string_equal(s, "Ada");
    assert_int_equal(json_req_string(j, "bad", &s, &err), 0);
    assert_string_equal(s, "\xc3\xa9");

    assert_int_equal(json_req_string(j, "missing", &s, &err), APP_EINVAL);
    assert_int_equal(err.code, APP_EINVAL);
    assert_int_equal(err.n_fields, 1);
    assert_string_equal(err.fields[0].field, "missing");
    assert_string_equal(err.fields[0].message, "is required");

    app_error_clear(&err);
    assert_int_equal(json_req_string(j, "nul", &s, &err), APP_EINVAL);
    assert_string_equal(err.fields[0].message, "is required");

    app_error_clear(&err);
    assert_int_equal(json_req_string(j, "n", &s, &err), APP_EBADREQ);
    assert_int_equal(err.code, APP_EBADREQ);
    assert_string_equal(err.fields[0].field, "n");
    assert_string_equal(err.fields[0].message, "must be a string");
    cJSON_Delete(j);

    /* Not an object at all: every field is missing. */
    j = parse("[1]");
    app_error_clear(&err);
    assert_int_equal(json_req_string(j, "name", &s, &err), APP_EINVAL);
    cJSON_Delete(j);

    /* Raw invalid UTF-8 inside a string is refused. */
    j = parse("{\"s\":\"\xff\"}");
    app_error_clear(&err);
    assert_int_equal(json_req_string(j, "s", &s, &err), APP_EBADREQ);
    assert_string_equal(err.fields[0].message, "must be valid UTF-8");
    cJSON_Delete(j);
}

static void test_field_errors_accumulate(void **state)
{
    (void)state;
    cJSON *j = parse("{\"a\":1,\"b\":\"x\"}");
    app_error err = APP_ERROR_INIT;
    const char *s;
    int64_t n;
    assert_int_equal(json_req_string(j, "x", &s, &err), APP_EINVAL);
    assert_int_equal(json_req_int(j, "y", &n, &err), APP_EINVAL);
    assert_int_equal(err.code, APP_EINVAL);
    assert_int_equal(err.n_fields, 2);
    /* A wrong type makes the whole request a 400 but keeps the earlier fields. */
    assert_int_equal(json_req_int(j, "b", &n, &err), APP_EBADREQ);
    assert_int_equal(err.code, APP_EBADREQ);
    assert_int_equal(err.n_fields, 3);
    assert_string_equal(err.fields[0].field, "x");
    assert_string_equal(err.fields[2].field, "b");
    assert_string_equal(err.fields[2].message, "must be an integer");
    /* A later missing field does not lower the code. */
    assert_int_equal(json_req_string(j, "z", &s, &err), APP_EINVAL);
    assert_int_equal(err.code, APP_EBADREQ);
    assert_int_equal(err.n_fields, 4);
    cJSON_Delete(j);
}

static void expect_int(const char *text, int64_t want)
{
    cJSON *j = parse(text);
    app_error err = APP_ERROR_INIT;
    int64_t n = 0;
    int rc = json_req_int(j, "v", &n, &err);
    cJSON_Delete(j);
    if (rc)
        fail_msg("%s: %s", text, err.message);
    assert_int_equal(n, want);
}

static void expect_not_int(const char *text)
{
    cJSON *j = parse(text);
    app_error err = APP_ERROR_INIT;
    int64_t n = 0;
    int rc = json_req_int(j, "v", &n, &err);
    cJSON_Delete(j);
    if (rc != APP_EBADREQ)
        fail_msg("%s: accepted as %lld", text, (long long)n);
    assert_string_equal(err.fields[0].field, "v");
    assert_string_equal(err.fields[0].message, "must be an integer");
}

static void test_req_int(void **state)
{
    (void)state;
    expect_int("{\"v\":0}", 0);
    expect_int("{\"v\":-0}", 0);
    expect_int("{\"v\":42}", 42);
    expect_int("{\"v\":-17}", -17);
    expect_int("{\"v\":1e3}", 1000);
    expect_int("{\"v\":2.0}", 2);
    expect_int("{\"v\":9007199254740992}", 9007199254740992LL);
    expect_int("{\"v\":-9007199254740992}", -9007199254740992LL);
    expect_not_int("{\"v\":1.5}");
    expect_not_int("{\"v\":-0.1}");
    expect_not_int("{\"v\":1e300}");
    expect_not_int("{\"v\":-1e300}");
    expect_not_int("{\"v\":9223372036854775808}");
    expect_not_int("{\"v\":18014398509481984}");
    expect_not_int("{\"v\":\"12\"}");
    expect_not_int("{\"v\":true}");
    expect_not_int("{\"v\":[1]}");

    cJSON *j = parse("{}");
    app_error err = APP_ERROR_INIT;
    int64_t n;
    assert_int_equal(json_req_int(j, "v", &n, &err), APP_EINVAL);
    assert_string_equal(err.fields[0].message, "is required");
    cJSON_Delete(j);
}

static void test_req_array(void **state)
{
    (void)state;
    cJSON *j = parse("{\"items\":[1,2],\"obj\":{}}");
    app_error err = APP_ERROR_INIT;
    const cJSON *a = NULL;
    assert_int_equal(json_req_array(j, "items", &a, &err), 0);
    assert_int_equal(cJSON_GetArraySize(a), 2);
    assert_int_equal(json_req_array(j, "obj", &a, &err), APP_EBADREQ);
    assert_string_equal(err.fields[0].message, "must be an array");
    app_error_clear(&err);
    assert_int_equal(json_req_array(j, "none", &a, &err), APP_EINVAL);
    assert_string_equal(err.fields[0].message, "is required");
    cJSON_Delete(j);
}

static void test_opt_string(void **state)
{
    (void)state;
    cJSON *j = parse("{\"a\":\"x\",\"b\":null,\"c\":3}");
    assert_string_equal(json_opt_string(j, "a"), "x");
    assert_null(json_opt_string(j, "b"));
    assert_null(json_opt_string(j, "c"));
    assert_null(json_opt_string(j, "d"));
    assert_null(json_opt_string(NULL, "a"));
    cJSON_Delete(j);
}

#define UTF8(s) json_utf8_valid(s, sizeof s - 1)

static void test_utf8(void **state)
{
    (void)state;
    assert_true(UTF8(""));
    assert_true(UTF8("plain ascii"));
    assert_true(UTF8("\xc3\xa9"));         /* U+00E9 */
    assert_true(UTF8("\xe2\x82\xac"));     /* U+20AC */
    assert_true(UTF8("\xed\x9f\xbf"));     /* U+D7FF, just below surrogates */
    assert_true(UTF8("\xee\x80\x80"));     /* U+E000, just above */
    assert_true(UTF8("\xf0\x9f\x98\x80")); /* U+1F600 */
    assert_true(UTF8("\xf4\x8f\xbf\xbf")); /* U+10FFFF */
    assert_true(UTF8("\xef\xbf\xbf"));     /* U+FFFF */

    assert_false(UTF8("a\0b"));             /* NUL */
    assert_false(UTF8("\x80"));             /* lone continuation */
    assert_false(UTF8("\xc3"));             /* truncated */
    assert_false(UTF8("\xe2\x82"));         /* truncated */
    assert_false(UTF8("\xc3\x28"));         /* bad continuation */
    assert_false(UTF8("\xc0\xaf"));         /* overlong '/' */
    assert_false(UTF8("\xc1\xbf"));         /* overlong */
    assert_false(UTF8("\xe0\x80\xaf"));     /* overlong */
    assert_false(UTF8("\xe0\x9f\xbf"));     /* overlong U+07FF */
    assert_false(UTF8("\xf0\x8f\xbf\xbf")); /* overlong U+FFFF */
    assert_false(UTF8("\xed\xa0\x80"));     /* U+D800 */
    assert_false(UTF8("\xed\xbf\xbf"));     /* U+DFFF */
    assert_false(UTF8("\xf4\x90\x80\x80")); /* U+110000 */
    assert_false(UTF8("\xf5\x80\x80\x80"));
    assert_false(UTF8("\xff"));
    assert_false(UTF8("\xfe"));
    /* Only the first n bytes count. */
    assert_true(json_utf8_valid("ab\xff", 2));
}

static void test_parse_n(void **state)
{
    (void)state;
    cJSON *j = json_parse_n("{\"a\":1}  \r\n\t", 12);
    assert_non_null(j);
    cJSON_Delete(j);

    /* Not NUL-terminated: only n bytes are read. */
    const char buf[] = {'[', '1', ']', 'x'};
    j = json_parse_n(buf, 3);
    assert_non_null(j);
    assert_int_equal(cJSON_GetArraySize(j), 1);
    cJSON_Delete(j);

    assert_null(json_parse_n(buf, 4));             /* trailing garbage */
    assert_null(json_parse_n("{\"a\":1} {}", 10)); /* two values */
    assert_null(json_parse_n("{\"a\":1}\0", 8));   /* trailing NUL */
    assert_null(json_parse_n("{\"a\":", 5));       /* truncated */
    assert_null(json_parse_n("", 0));
    assert_null(json_parse_n("   ", 3));
    assert_null(json_parse_n(NULL, 0));
    j = json_parse_n("  42 ", 5);
    assert_non_null(j);
    assert_true(cJSON_IsNumber(j));
    cJSON_Delete(j);
}

/* A body is checked against a budget before it is parsed: values and depth. */
static void test_budget(void **state)
{
    (void)state;
    app_error err = APP_ERROR_INIT;
    const char *ok = "{\"a\":[1,2,3],\"b\":{\"c\":\"x\\\"y\\\\u0000\"}}";
    size_t nul = 9;
    assert_int_equal(json_check_budget(ok, strlen(ok), 10, 3, &nul, &err), 0);
    assert_int_equal(nul, 0); /* an escaped backslash, then "u0000" */
    assert_int_equal(json_check_budget(ok, strlen(ok), 3, 3, NULL, &err), APP_EBADREQ);
    assert_non_null(strstr(err.message, "more than 3 JSON values"));
    assert_int_equal(json_check_budget(ok, strlen(ok), 10, 1, NULL, &err), APP_EBADREQ);
    assert_non_null(strstr(err.message, "deeper than 1"));
    const char *two = "{\"name\":\"a\\u0000b\",\"x\\u0000\":[\"\\u0000\\u0000\"]}";
    assert_int_equal(json_check_budget(two, strlen(two), 10, 3, &nul, &err), 0);
    assert_int_equal(nul, 3);
    /* Structure inside strings does not count. */
    const char *quoted = "[\"[[[[,,,,\"]";
    assert_int_equal(json_check_budget(quoted, strlen(quoted), 1, 1, NULL, &err), 0);

    /* 1 MB of empty arrays is refused before any of it is parsed. */
    size_t n = 1024 * 1024;
    char *big = malloc(n);
    assert_non_null(big);
    big[0] = '[';
    size_t o = 1;
    while (o + 4 < n) {
        memcpy(big + o, "[],", 3);
        o += 3;
    }
    memcpy(big + o, "[]]", 3);
    o += 3;
    assert_int_equal(json_check_budget(big, o, JSON_MAX_VALUES, JSON_MAX_DEPTH, NULL, &err),
                     APP_EBADREQ);
    free(big);
}

/* A string that held \u0000 is never read cut short: a field reading it is refused, a member
 * name holding one matches no field, and members nobody reads may hold it. */
static void test_body_with_nul(void **state)
{
    (void)state;
    app_error err = APP_ERROR_INIT;
    const char *text = "{\"email\\u0000x\":\"a@b.example\",\"name\":\"Ann\\u0000ie\","
                       "\"extra\":{\"k\":[\"\\u0000\",\"fine\"]},\"sku\":\"AB-1\","
                       "\"note\":\"ok\"}";
    cJSON *j = NULL;
    assert_int_equal(json_parse_body(text, strlen(text), 100, 8, &j, &err), 0);
    assert_non_null(j);
    const char *v = NULL;
    /* The name held \u0000: no "email" member is found. */
    assert_int_equal(json_req_string(j, "email", &v, &err), APP_EINVAL);
    assert_string_equal(err.fields[0].field, "email");
    assert_string_equal(err.fields[0].message, "is required");
    app_error_clear(&err);
    assert_int_equal(json_req_string(j, "name", &v, &err), APP_EINVAL);
    assert_string_equal(err.fields[0].message, "must not contain U+0000");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
    assert_true(json_string_has_nul(name));
    assert_string_equal(name->valuestring, "Ann\x01"); /* never "Ann" */
    app_error_clear(&err);
    /* Its neighbours are read as sent; a marked string elsewhere does not matter. */
    assert_int_equal(json_req_string(j, "sku", &v, &err), 0);
    assert_string_equal(v, "AB-1");
    assert_int_equal(json_req_string(j, "note", &v, &err), 0);
    assert_string_equal(v, "ok");
    const cJSON *k =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "extra"), "k");
    assert_true(json_string_has_nul(cJSON_GetArrayItem(k, 0)));
    assert_false(json_string_has_nul(cJSON_GetArrayItem(k, 1)));
    /* Printed again (to another service), the cut stays visible and refused. */
    char *printed = cJSON_PrintUnformatted(j);
    assert_non_null(printed);
    assert_non_null(strstr(printed, "\"Ann\\u0001\""));
    assert_null(strstr(printed, "\"email\""));
    cJSON_free(printed);
    cJSON_Delete(j);

    assert_int_equal(json_parse_body("{\"a\":", 5, 100, 8, &j, &err), APP_EBADREQ);
    assert_null(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_req_string),    cmocka_unit_test(test_field_errors_accumulate),
        cmocka_unit_test(test_req_int),       cmocka_unit_test(test_req_array),
        cmocka_unit_test(test_opt_string),    cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_parse_n),       cmocka_unit_test(test_budget),
        cmocka_unit_test(test_body_with_nul), cmocka_unit_test(test_body_with_nul),
    };
    return cmocka_run_group_tests_name("json", tests, NULL, NULL);
}
