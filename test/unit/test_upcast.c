/* The upcasting event store: chains of upcasters run on load_stream and read_log, events
 * that no upcaster applies to (current or newer) pass unchanged, a failing upcaster leaves
 * the event as stored, bad registries are refused, every other operation passes through. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/uuid.h"
#include "kernel/event_json.h"
#include "kernel/upcast.h"
#include "test/support/fake_stores.h"

#define TYPE "test.thing.happened"

/* v1 {"n"} -> v2 {"count"} -> v3 {"count","unit":"piece"}. */
static int thing_v1(cJSON *data, app_error *err)
{
    cJSON *n = cJSON_DetachItemFromObjectCaseSensitive(data, "n");
    if (!cJSON_IsNumber(n)) {
        cJSON_Delete(n);
        return app_error_set(err, APP_EINVAL, "v1 needs a number n");
    }
    cJSON_AddItemToObject(data, "count", n);
    return 0;
}

static int thing_v2(cJSON *data, app_error *err)
{
    (void)err;
    if (!cJSON_GetObjectItemCaseSensitive(data, "unit"))
        cJSON_AddStringToObject(data, "unit", "piece");
    return 0;
}

static const mod_upcaster thing_upcasters[] = {
    {TYPE, 2, thing_v2}, /* any order */
    {TYPE, 1, thing_v1},
    {NULL, 0, NULL},
};

static const app_module thing_module = {
    .abi = APP_MODULE_ABI,
    .name = "test",
    .upcasters = thing_upcasters,
};

static const app_module plain_module = {.abi = APP_MODULE_ABI, .name = "plain"};

static const app_module *const modules[] = {&plain_module, &thing_module, NULL};

typedef struct fixture {
    fake_es es;
    es_store stored;
    upcast_store *up;
    es_store port;
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    fake_es_init(&fx->es, "test");
    fx->stored = fake_es_port(&fx->es);
    app_error err = APP_ERROR_INIT;
    assert_int_equal(upcast_store_new(&fx->up, &fx->stored, modules, &err), 0);
    fx->port = upcast_store_port(fx->up);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    upcast_store_free(fx->up);
    fake_es_free(&fx->es);
    free(fx);
    return 0;
}

static void put(fixture *fx, const char *type, int version, const char *data)
{
    char id[UUID_STR_LEN];
    uuid_v4(id);
    es_new_event ev = {id, type, version, data, "{}"};
    es_append_req req = {.context = "test",
                         .stream_id = "thing-1",
                         .expected_version = ES_ANY_VERSION,
                         .events = &ev,
                         .n_events = 1};
    app_error err = APP_ERROR_INIT;
    /* Through the decorator: appends are passed on as they are. */
    assert_int_equal(fx->port.ops->append(fx->port.self, &req, NULL, &err), 0);
}

static void expect(const es_event *ev, int version, const char *data)
{
    assert_int_equal(ev->schema_version, version);
    cJSON *got = cJSON_Parse(ev->data), *want = cJSON_Parse(data);
    assert_non_null(got);
    assert_non_null(want);
    if (!cJSON_Compare(got, want, 1))
        fail_msg("data %s, want %s", ev->data, data);
    cJSON_Delete(got);
    cJSON_Delete(want);
}

static void test_chains_on_every_read(void **state)
{
    fixture *fx = *state;
    put(fx, TYPE, 1, "{\"n\":4}");
    put(fx, TYPE, 2, "{\"count\":5}");
    put(fx, TYPE, 3, "{\"count\":6,\"unit\":\"box\"}");
    put(fx, TYPE, 4, "{\"future\":true}");          /* newer than any upcaster: untouched */
    put(fx, "test.other.happened", 1, "{\"n\":1}"); /* no upcaster for this type */
    put(fx, TYPE, 1, "{\"n\":\"four\"}");           /* the upcaster refuses it */
    static const struct {
        int version;
        const char *data;
    } want[] = {
        {3, "{\"count\":4,\"unit\":\"piece\"}"},
        {3, "{\"count\":5,\"unit\":\"piece\"}"},
        {3, "{\"count\":6,\"unit\":\"box\"}"},
        {4, "{\"future\":true}"},
        {1, "{\"n\":1}"},
        {1, "{\"n\":\"four\"}"},
    };
    app_error err = APP_ERROR_INIT;
    es_event_list a = {0}, b = {0};
    assert_int_equal(fx->port.ops->load_stream(fx->port.self, "test", "thing-1", 0, &a, &err), 0);
    assert_int_equal(fx->port.ops->read_log(fx->port.self, "test", 0, 100, &b, &err), 0);
    assert_int_equal(a.len, 6);
    assert_int_equal(b.len, 6);
    for (size_t i = 0; i < 6; i++) {
        expect(&a.items[i], want[i].version, want[i].data);
        expect(&b.items[i], want[i].version, want[i].data);
    }
    /* The JSON form (the audit trail and the Kafka value) carries the upcast shape. */
    cJSON *j = event_to_json(&b.items[0]);
    assert_non_null(j);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(j, "schemaVersion")->valueint, 3);
    assert_int_equal(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "data"), "count")
            ->valueint,
        4);
    cJSON_Delete(j);
    es_event_list_free(&a);
    es_event_list_free(&b);

    /* From a later version, only the events after it, upcast too. */
    assert_int_equal(fx->port.ops->load_stream(fx->port.self, "test", "thing-1", 1, &a, &err), 0);
    assert_int_equal(a.len, 5);
    expect(&a.items[0], 3, want[1].data);
    es_event_list_free(&a);

    /* The store still holds what was written. */
    assert_int_equal(fake_es_stream(&fx->es, "thing-1")->events[0].schema_version, 1);

    /* One event at a time, with the reason for a refusal. */
    es_event ev = {.type = (char *)(uintptr_t)TYPE, .schema_version = 1};
    ev.data = strdup("[1]");
    assert_int_equal(upcast_event(fx->up, &ev, &err), APP_EINTERNAL);
    assert_string_equal(ev.data, "[1]");
    assert_int_equal(ev.schema_version, 1);
    free(ev.data);
    ev.data = strdup("{\"n\":true}");
    app_error_clear(&err);
    assert_int_equal(upcast_event(fx->up, &ev, &err), APP_EINVAL);
    assert_string_equal(err.message, "v1 needs a number n");
    assert_non_null(strstr(err.detail, "from schema version 1"));
    assert_string_equal(ev.data, "{\"n\":true}");
    free(ev.data);
}

static void test_passes_everything_else(void **state)
{
    fixture *fx = *state;
    app_error err = APP_ERROR_INIT;
    put(fx, TYPE, 3, "{\"count\":1,\"unit\":\"piece\"}");
    int64_t head = 0, cp = 0;
    assert_int_equal(fx->port.ops->head_position(fx->port.self, "test", &head, &err), 0);
    assert_int_equal(head, 1);
    assert_int_equal(fx->port.ops->save_checkpoint(fx->port.self, "test", "s", 7, &err), 0);
    assert_int_equal(fx->port.ops->load_checkpoint(fx->port.self, "test", "s", &cp, &err), 0);
    assert_int_equal(cp, 7);
    assert_int_equal(fx->port.ops->ping(fx->port.self, &err), 0);
    es_snapshot snap = {1, 1, (char *)(uintptr_t) "{\"count\":1}"};
    assert_int_equal(fx->port.ops->save_snapshot(fx->port.self, "test", "thing-1", &snap, &err), 0);
    es_snapshot got;
    assert_int_equal(fx->port.ops->load_snapshot(fx->port.self, "test", "thing-1", &got, &err), 0);
    assert_int_equal(got.version, 1);
    assert_string_equal(got.state, "{\"count\":1}");
    es_snapshot_free(&got);
    es_due_list due = {0};
    assert_int_equal(fx->port.ops->due_processes(fx->port.self, "test", "p", 0, 10, &due, &err), 0);
    es_due_list_free(&due);
    /* Errors pass through too; what the inner store lacks, the decorator lacks. */
    assert_int_equal(fx->port.ops->head_position(fx->port.self, "other", &head, &err),
                     APP_EINTERNAL);
    assert_null(fx->port.ops->lead);
    assert_null(fx->port.ops->wait_for_append);
    assert_int_equal(fx->port.ops->add_dead_letter(fx->port.self, "test", "s", 1, NULL, "no", &err),
                     0);
    assert_int_equal(fx->port.ops->request_redrive(fx->port.self, "test", 1, &err), 0);
    es_dead_letter_list dl = {0};
    assert_int_equal(fx->port.ops->list_dead_letters(fx->port.self, "test", "s", 0, 10, &dl, &err),
                     0);
    assert_int_equal(dl.len, 1);
    assert_true(dl.items[0].redrive_requested);
    es_dead_letter_list_free(&dl);
    assert_int_equal(fx->port.ops->remove_dead_letter(fx->port.self, "test", 1, &err), 0);
}

static void test_bad_registries(void **state)
{
    (void)state;
    fake_es es;
    fake_es_init(&es, NULL);
    es_store inner = fake_es_port(&es);
    upcast_store *u = NULL;
    app_error err = APP_ERROR_INIT;

    static const app_module *const twice[] = {&thing_module, &thing_module, NULL};
    assert_int_equal(upcast_store_new(&u, &inner, twice, &err), APP_EINTERNAL);
    assert_null(u);
    assert_string_equal(err.message, "two upcasters of " TYPE " from schema version 2");

    static const mod_upcaster no_fn[] = {{TYPE, 1, NULL}, {NULL, 0, NULL}};
    static const app_module m1 = {.abi = APP_MODULE_ABI, .name = "m1", .upcasters = no_fn};
    static const app_module *const one[] = {&m1, NULL};
    assert_int_equal(upcast_store_new(&u, &inner, one, &err), APP_EINTERNAL);
    static const mod_upcaster zero[] = {{TYPE, 0, thing_v1}, {NULL, 0, NULL}};
    static const app_module m2 = {.abi = APP_MODULE_ABI, .name = "m2", .upcasters = zero};
    static const app_module *const two[] = {&m2, NULL};
    assert_int_equal(upcast_store_new(&u, &inner, two, &err), APP_EINTERNAL);

    /* The compiled-in contexts' registry is consistent. */
    assert_int_equal(upcast_store_new(&u, &inner, app_modules, &err), 0);
    upcast_store_free(u);
    upcast_store_free(NULL);
    fake_es_free(&es);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_chains_on_every_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_passes_everything_else, setup, teardown),
        cmocka_unit_test(test_bad_registries),
    };
    return cmocka_run_group_tests_name("upcasting event store", tests, NULL, NULL);
}
