/* The wire format between a caller's bus and a remote owner's: the envelope carries all of a
 * call's metadata, an answer carries a result or the whole error, and nothing that is not an
 * answer (a proxy's page, a mismatched status) is ever read as the owner's verdict. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/json.h"
#include "kernel/remote.h"

static cJSON *parse(const char *text)
{
    cJSON *j = json_parse_n(text, strlen(text));
    assert_non_null(j);
    return j;
}

static void test_envelope_round_trip(void **state)
{
    (void)state;
    bus_meta meta;
    bus_meta_init(&meta, "corr-1", "cause-1");
    strcpy(meta.actor, "alice");
    strcpy(meta.traceparent, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    strcpy(meta.idempotency_key, "key-1");
    bus_ctx ctx = {.meta = &meta, .depth = 1};
    cJSON *payload = parse("{\"sku\":\"SKU-1\",\"quantity\":2}");
    static const bus_handler_def def = {"inventory.reserve_stock", NULL, BUS_IDEMPOTENT};
    bus_call call = {.kind = BUS_COMMAND, .def = &def, .ctx = &ctx, .payload = payload};
    char *text = remote_envelope_text(&call, 1500);
    assert_non_null(text);

    cJSON *body = parse(text);
    bus_meta got;
    const cJSON *p = NULL;
    app_error err = APP_ERROR_INIT;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t now_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    assert_int_equal(remote_envelope_parse(body, &got, &p, &err), 0);
    assert_string_equal(got.correlation_id, "corr-1");
    assert_string_equal(got.causation_id, "cause-1");
    assert_string_equal(got.actor, "alice");
    assert_string_equal(got.traceparent, meta.traceparent);
    assert_string_equal(got.idempotency_key, "key-1");
    assert_string_not_equal(got.message_id, meta.message_id); /* a message of its own */
    assert_true(got.deadline_ms >= now_ms + 1400 && got.deadline_ms <= now_ms + 1600);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(p, "sku")), "SKU-1");

    /* A command a handler sends is part of its caller's request: no key of its own. */
    ctx.depth = 2;
    char *nested = remote_envelope_text(&call, 10);
    assert_null(strstr(nested, "key-1"));
    free(nested);
    cJSON_Delete(body);
    cJSON_Delete(payload);
    free(text);
}

static void expect_bad_envelope(const char *text, const char *field)
{
    cJSON *body = parse(text);
    bus_meta meta;
    const cJSON *p = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(remote_envelope_parse(body, &meta, &p, &err), APP_EBADREQ);
    assert_int_equal(err.n_fields, 1);
    assert_string_equal(err.fields[0].field, field);
    cJSON_Delete(body);
}

static void test_bad_envelopes(void **state)
{
    (void)state;
    expect_bad_envelope("{\"timeoutMs\":100}", "payload");
    expect_bad_envelope("{\"payload\":[],\"timeoutMs\":100}", "payload");
    expect_bad_envelope("{\"payload\":{}}", "timeoutMs");
    expect_bad_envelope("{\"payload\":{},\"timeoutMs\":0}", "timeoutMs");
    expect_bad_envelope("{\"payload\":{},\"timeoutMs\":100,\"actor\":7}", "actor");
    expect_bad_envelope("{\"payload\":{},\"timeoutMs\":100,\"actor\":\"a\\nb\"}", "actor");
}

static void test_results_come_back(void **state)
{
    (void)state;
    cJSON *result = parse("{\"outcome\":\"reserved\",\"quantity\":2}");
    int status = 0;
    char *text = remote_reply_text(0, result, NULL, &status);
    assert_int_equal(status, 200);
    cJSON *out = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(remote_reply_parse(status, text, &out, &err), 0);
    assert_true(cJSON_Compare(out, result, true));
    cJSON_Delete(out);
    free(text);
    cJSON_Delete(result);

    text = remote_reply_text(0, NULL, NULL, &status); /* a handler with no reply */
    assert_int_equal(remote_reply_parse(status, text, &out, &err), 0);
    assert_null(out);
    free(text);
}

static void test_errors_come_back_whole(void **state)
{
    (void)state;
    app_error sent = APP_ERROR_INIT;
    app_error_set(&sent, APP_EINVAL, "invalid product");
    app_error_detail(&sent, "the price must be positive");
    app_error_field(&sent, "price", "must be greater than 0");
    app_error_field(&sent, "sku", "is required");
    int status = 0;
    char *text = remote_reply_text(APP_EINVAL, NULL, &sent, &status);
    assert_int_equal(status, 422);
    cJSON *out = NULL;
    app_error got = APP_ERROR_INIT;
    assert_int_equal(remote_reply_parse(status, text, &out, &got), APP_EINVAL);
    assert_null(out);
    assert_string_equal(got.message, "invalid product");
    assert_string_equal(got.detail, "the price must be positive");
    assert_int_equal(got.n_fields, 2);
    assert_string_equal(got.fields[1].field, "sku");
    assert_string_equal(got.fields[1].message, "is required");
    free(text);

    /* Every code a handler may give survives the trip. */
    static const int codes[] = {APP_EBADREQ, APP_ENOTFOUND, APP_ECONFLICT, APP_EPRECOND,
                                APP_EINVAL,  APP_EUNAVAIL,  APP_EINTERNAL};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        app_error e = APP_ERROR_INIT;
        app_error_set(&e, codes[i], "some message");
        text = remote_reply_text(codes[i], NULL, &e, &status);
        app_error_clear(&got);
        assert_int_equal(remote_reply_parse(status, text, &out, &got), codes[i]);
        assert_string_equal(got.message, "some message");
        free(text);
    }
}

/* What is not the owner's answer is "unavailable", never "not found" or "conflict". */
static void test_non_answers_are_unavailable(void **state)
{
    (void)state;
    static const struct {
        int status;
        const char *body;
    } cases[] = {
        {404, "<html>Not Found</html>"},
        {404, "{\"type\":\"https://problems.app.dev/not-found\",\"status\":404}"}, /* no message */
        {409, "{\"type\":\"https://problems.app.dev/not-found\",\"message\":\"x\"}"},
        {404, "{\"type\":\"about:blank\",\"message\":\"x\"}"},
        {404, "{\"type\":\"https://problems.app.dev/no-such-slug\",\"message\":\"x\"}"},
        {200, "{\"outcome\":\"reserved\"}"}, /* no result member */
        {200, "[1,2]"},
        {502, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *out = NULL;
        app_error err = APP_ERROR_INIT;
        if (remote_reply_parse(cases[i].status, cases[i].body, &out, &err) != APP_EUNAVAIL)
            fail_msg("case %zu (%d %s) was taken for an answer", i, cases[i].status, cases[i].body);
        assert_null(out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_envelope_round_trip),
        cmocka_unit_test(test_bad_envelopes),
        cmocka_unit_test(test_results_come_back),
        cmocka_unit_test(test_errors_come_back_whole),
        cmocka_unit_test(test_non_answers_are_unavailable),
    };
    return cmocka_run_group_tests_name("remote wire format", tests, NULL, NULL);
}
