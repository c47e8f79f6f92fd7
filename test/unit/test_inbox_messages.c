/* The pure parts of the Kafka inbox: which message values are events (and why the others are
 * not), and the consumer group's name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "adapters/kafka/kfk_inbox.h"

#define ID "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"

static int parse(const char *value, kfk_inbox_event *ev, char *reason, size_t size)
{
    return kfk_inbox_parse(value, value ? strlen(value) : 0, ev, reason, size);
}

static void test_relay_message_is_an_event(void **state)
{
    (void)state;
    /* The shape the outbound relay produces (kernel/event_json.c). */
    const char *v = "{\"eventId\":\"" ID "\",\"type\":\"user.user.registered\",\"schemaVersion\":2,"
                    "\"streamId\":\"user-1\",\"version\":3,\"position\":812,"
                    "\"data\":{\"email\":\"a@b.c\",\"name\":\"Zoë\"},"
                    "\"metadata\":{\"correlationId\":\"r-1\"},"
                    "\"recordedAt\":\"2026-11-28T15:00:00.123456Z\"}";
    kfk_inbox_event ev;
    char reason[128] = "";
    assert_int_equal(parse(v, &ev, reason, sizeof reason), 0);
    assert_string_equal(ev.event_id, ID);
    assert_string_equal(ev.stream_id, "user-1");
    assert_int_equal(ev.version, 3);
    assert_string_equal(ev.type, "user.user.registered");
    assert_int_equal(ev.schema_version, 2);
    assert_string_equal(ev.data, "{\"email\":\"a@b.c\",\"name\":\"Zoë\"}");
    assert_string_equal(ev.metadata, "{\"correlationId\":\"r-1\"}");
    assert_string_equal(ev.recorded_at, "2026-11-28T15:00:00.123456Z");
    kfk_inbox_event_free(&ev);

    /* Optional parts: metadata, schemaVersion, recordedAt (then the inbox records now). */
    v = "{\"eventId\":\"" ID "\",\"type\":\"t\",\"streamId\":\"s\",\"version\":1,\"data\":{},"
        "\"recordedAt\":\"yesterday\"}";
    assert_int_equal(parse(v, &ev, reason, sizeof reason), 0);
    assert_int_equal(ev.schema_version, 1);
    assert_string_equal(ev.metadata, "{}");
    assert_string_equal(ev.recorded_at, "");
    kfk_inbox_event_free(&ev);
    kfk_inbox_event_free(NULL);
}

static void expect_refused(const char *value, size_t len, const char *why, const char *event_id)
{
    kfk_inbox_event ev;
    char reason[128] = "";
    assert_int_equal(kfk_inbox_parse(value, len, &ev, reason, sizeof reason), APP_EINVAL);
    if (strcmp(reason, why) != 0)
        fail_msg("%.*s: reason \"%s\", expected \"%s\"", (int)len, value ? value : "", reason, why);
    assert_string_equal(ev.event_id, event_id);
    assert_null(ev.stream_id);
    assert_null(ev.data);
    kfk_inbox_event_free(&ev);
}

static void refused(const char *value, const char *why, const char *event_id)
{
    expect_refused(value, value ? strlen(value) : 0, why, event_id);
}

static void test_non_events_are_refused_with_a_reason(void **state)
{
    (void)state;
    refused(NULL, "empty message", "");
    refused("", "empty message", "");
    refused("not json at all", "not json", "");
    refused("{\"eventId\":", "not json", "");
    refused("[1,2]", "not a json object", "");
    refused("{\"type\":\"t\",\"streamId\":\"s\",\"version\":1,\"data\":{}}", "no event id", "");
    refused("{\"eventId\":\"0F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9\",\"type\":\"t\"}",
            "eventId is not a lower-case uuid", "");
    refused("{\"eventId\":\"" ID "\",\"streamId\":\"s\",\"version\":1,\"data\":{}}", "no type", ID);
    refused("{\"eventId\":\"" ID "\",\"type\":\"\",\"streamId\":\"s\",\"version\":1}", "no type",
            ID);
    refused("{\"eventId\":\"" ID "\",\"type\":\"t\",\"version\":1,\"data\":{}}", "no stream id",
            ID);
    refused("{\"eventId\":\"" ID "\",\"type\":\"t\",\"streamId\":\"s\",\"data\":{}}",
            "no version (a whole number from 1)", ID);
    refused("{\"eventId\":\"" ID "\",\"type\":\"t\",\"streamId\":\"s\",\"version\":1.5}",
            "no version (a whole number from 1)", ID);
    refused("{\"eventId\":\"" ID "\",\"type\":\"t\",\"streamId\":\"s\",\"version\":0}",
            "no version (a whole number from 1)", ID);
    refused("{\"eventId\":\"" ID "\",\"type\":\"t\",\"streamId\":\"s\",\"version\":1,"
            "\"schemaVersion\":\"2\",\"data\":{}}",
            "schemaVersion is not a whole number from 1", ID);
    refused("{\"eventId\":\"" ID "\",\"type\":\"t\",\"streamId\":\"s\",\"version\":1}",
            "data is not a json object", ID);
    refused("{\"eventId\":\"" ID "\",\"type\":\"t\",\"streamId\":\"s\",\"version\":1,"
            "\"data\":[]}",
            "data is not a json object", ID);
    refused("{\"eventId\":\"" ID "\",\"type\":\"t\",\"streamId\":\"s\",\"version\":1,"
            "\"data\":{},\"metadata\":\"x\"}",
            "metadata is not a json object", ID);
    /* What jsonb cannot hold would fail the inbox's transaction: refused here instead. */
    refused("{\"eventId\":\"" ID "\",\"type\":\"t\",\"streamId\":\"s\",\"version\":1,"
            "\"data\":{\"x\":\"a\\u0000b\"}}",
            "holds \\u0000, which the inbox cannot store", ID);
    refused("{\"eventId\":\"" ID "\",\"type\":\"t\",\"streamId\":\"s\",\"version\":1,"
            "\"data\":{\"x\":\"\xff\"}}",
            "data holds text that is not valid utf-8", ID);
    /* Not NUL-terminated: only len bytes count. */
    const char cut[] = "{\"eventId\":\"" ID "\"}garbage";
    expect_refused(cut, strlen(cut) - strlen("garbage"), "no type", ID);
}

static void test_group_name(void **state)
{
    (void)state;
    char group[256];
    app_error err = APP_ERROR_INIT;
    const char *const order[] = {"order"};
    assert_int_equal(kfk_inbox_group_name(group, sizeof group, "", order, 1, "user", &err), 0);
    assert_string_equal(group, "order.from.user");
    const char *const two[] = {"order", "inventory"};
    assert_int_equal(kfk_inbox_group_name(group, sizeof group, "prod.", two, 2, "user", &err), 0);
    assert_string_equal(group, "prod.order-inventory.from.user");

    assert_int_equal(
        kfk_inbox_group_name(group, sizeof group, "bad prefix ", order, 1, "user", &err),
        APP_ECONFIG);
    assert_non_null(strstr(err.message, "kafka.topic_prefix"));
    char small[8];
    assert_int_equal(kfk_inbox_group_name(small, sizeof small, "", order, 1, "user", &err),
                     APP_ECONFIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_relay_message_is_an_event),
        cmocka_unit_test(test_non_events_are_refused_with_a_reason),
        cmocka_unit_test(test_group_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
