/* Idempotency keys through a real bus with the idempotency middleware, the user context's
 * commands and the in-memory event store: a retry answers the first reply without running
 * the command, another body is 422, keys belong to their caller and expire, a request that
 * loses the race to the same key answers like the winner, failures are not recorded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "contexts/user/user_module.h"
#include "core/metrics.h"
#include "kernel/bus.h"
#include "kernel/idempotency.h"
#include "test/support/fake_stores.h"

#define TTL_S 60

typedef struct fixture {
    fake_es es;
    fake_rs rs;
    es_store events;
    rs_store reads;
    bus *bus;
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    fake_es_init(&fx->es, "user");
    fake_rs_init(&fx->rs);
    fx->events = fake_es_port(&fx->es);
    fx->reads = fake_rs_port(&fx->rs);
    bus_options bo = {.events = &fx->events, .reads = &fx->reads, .idempotency_ttl_s = TTL_S};
    app_error err = APP_ERROR_INIT;
    assert_int_equal(bus_new(&fx->bus, &bo, &err), 0);
    assert_int_equal(bus_use(fx->bus, bus_mw_idempotency, &err), 0);
    assert_int_equal(bus_register(fx->bus, BUS_COMMAND, user_module.commands, &err), 0);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    bus_free(fx->bus);
    fake_es_free(&fx->es);
    fake_rs_free(&fx->rs);
    free(fx);
    metrics_reset();
    return 0;
}

/* Sends command with payload text under key (NULL: none) as actor (NULL: none; "a:..." is an
 * anonymous caller's address, the edge's meta.client). */
static int send(fixture *fx, const char *command, const char *payload, const char *key,
                const char *actor, cJSON **out, app_error *err)
{
    bus_meta meta;
    bus_meta_init(&meta, NULL, NULL);
    if (key)
        snprintf(meta.idempotency_key, sizeof meta.idempotency_key, "%s", key);
    if (actor && strncmp(actor, "a:", 2) == 0)
        snprintf(meta.client, sizeof meta.client, "%s", actor);
    else if (actor)
        snprintf(meta.actor, sizeof meta.actor, "%s", actor);
    cJSON *p = cJSON_Parse(payload);
    assert_non_null(p);
    app_error_clear(err);
    int rc = bus_send(fx->bus, command, p, &meta, out, err);
    cJSON_Delete(p);
    return rc;
}

static char *text_of(const cJSON *o)
{
    char *t = cJSON_PrintUnformatted(o);
    assert_non_null(t);
    return t;
}

static const char *REGISTER = "{\"email\":\"ada@example.com\",\"name\":\"Ada\"}";

static void test_retry_answers_the_first_reply_without_running_again(void **state)
{
    fixture *fx = *state;
    cJSON *first = NULL, *again = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(send(fx, "user.register_user", REGISTER, "k-1", NULL, &first, &err), 0);
    assert_int_equal(fx->es.appends, 1);
    assert_int_equal(fx->es.n_keys, 1); /* recorded by the append itself */
    assert_string_equal(fx->es.keys[0].actor, "anonymous");
    assert_string_equal(fx->es.keys[0].command, "user.register_user");

    assert_int_equal(send(fx, "user.register_user", REGISTER, "k-1", NULL, &again, &err), 0);
    assert_int_equal(fx->es.appends, 1); /* not run again: no second user, no 409 */
    char *a = text_of(first), *b = text_of(again);
    assert_string_equal(a, b);
    free(a);
    free(b);
    cJSON_Delete(first);
    cJSON_Delete(again);

    char *m = metrics_render();
    assert_non_null(strstr(m, "idempotent_replays_total{command=\"user.register_user\"} 1"));
    free(m);
}

static void test_same_key_other_body_is_refused(void **state)
{
    fixture *fx = *state;
    cJSON *out = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(send(fx, "user.register_user", REGISTER, "k-1", NULL, &out, &err), 0);
    cJSON_Delete(out);
    out = NULL;
    assert_int_equal(send(fx, "user.register_user",
                          "{\"email\":\"bob@example.com\",\"name\":\"Bob\"}", "k-1", NULL, &out,
                          &err),
                     APP_EINVAL);
    assert_null(out);
    assert_int_equal(app_error_http_status(err.code), 422);
    assert_string_equal(err.fields[0].field, "Idempotency-Key");
    /* Another command with the same key and body is another request too. */
    assert_int_equal(send(fx, "user.deactivate_user", REGISTER, "k-1", NULL, &out, &err),
                     APP_EINVAL);
    assert_int_equal(fx->es.appends, 1);
}

static void test_keys_belong_to_their_caller(void **state)
{
    fixture *fx = *state;
    cJSON *out = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(send(fx, "user.register_user", REGISTER, "k-1", "alice", &out, &err), 0);
    cJSON_Delete(out);
    out = NULL;
    /* bob's k-1 is his own: his request runs (and meets the taken email). */
    assert_int_equal(send(fx, "user.register_user", REGISTER, "k-1", "bob", &out, &err),
                     APP_ECONFLICT);
    assert_int_equal(send(fx, "user.register_user", REGISTER, "k-1", "alice", &out, &err), 0);
    cJSON_Delete(out);
}

/* Without auth, keys belong to the caller's address: one anonymous client cannot take
 * another's key first. */
static void test_anonymous_keys_belong_to_their_address(void **state)
{
    fixture *fx = *state;
    cJSON *out = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(send(fx, "user.register_user", REGISTER, "k-1", "a:192.0.2.7", &out, &err), 0);
    cJSON_Delete(out);
    out = NULL;
    assert_string_equal(fx->es.keys[0].actor, "a:192.0.2.7");
    /* Another address's k-1 runs its own request (and meets the taken email). */
    assert_int_equal(send(fx, "user.register_user", REGISTER, "k-1", "a:2001:db8::/64", &out, &err),
                     APP_ECONFLICT);
    assert_int_equal(send(fx, "user.register_user", REGISTER, "k-1", "a:192.0.2.7", &out, &err), 0);
    cJSON_Delete(out);
}

static void test_an_expired_key_runs_the_command_again(void **state)
{
    fixture *fx = *state;
    cJSON *out = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(send(fx, "user.register_user", REGISTER, "k-1", NULL, &out, &err), 0);
    cJSON_Delete(out);
    out = NULL;
    fx->es.now_s += TTL_S - 1;
    assert_int_equal(send(fx, "user.register_user", REGISTER, "k-1", NULL, &out, &err), 0);
    cJSON_Delete(out);
    out = NULL;
    fx->es.now_s += 2;
    assert_int_equal(send(fx, "user.register_user", REGISTER, "k-1", NULL, &out, &err),
                     APP_ECONFLICT); /* it ran: the email is taken by its first run */

    /* The purge task deletes what expired; a live key stays. */
    assert_int_equal(send(fx, "user.register_user", "{\"email\":\"c@example.com\",\"name\":\"C\"}",
                          "k-2", NULL, &out, &err),
                     0);
    cJSON_Delete(out);
    fx->es.now_s += TTL_S - 1;
    bus_meta meta;
    bus_meta_init(&meta, NULL, NULL);
    bus_ctx ctx = {.events = &fx->events, .bus = fx->bus, .meta = &meta, .context = "user"};
    assert_int_equal(idempotency_purge_task.run(&ctx, &err), 0);
    assert_int_equal(fx->es.n_keys, 1);
    assert_string_equal(fx->es.keys[0].key, "k-2");
}

static void test_a_command_that_appends_nothing_is_recorded_too(void **state)
{
    fixture *fx = *state;
    cJSON *out = NULL, *again = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(send(fx, "user.register_user", REGISTER, NULL, NULL, &out, &err), 0);
    char payload[128];
    snprintf(payload, sizeof payload, "{\"id\":\"%s\"}",
             cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(out, "id")));
    cJSON_Delete(out);
    out = NULL;
    assert_int_equal(fx->es.n_keys, 0);
    assert_int_equal(send(fx, "user.deactivate_user", payload, "d-1", NULL, &out, &err), 0);
    assert_int_equal(send(fx, "user.deactivate_user", payload, "d-2", NULL, &again, &err), 0);
    assert_int_equal(fx->es.appends, 2); /* the second deactivation changed nothing */
    assert_int_equal(fx->es.n_keys, 2);  /* yet its key is recorded, with its reply */
    cJSON_Delete(out);
    cJSON_Delete(again);
    out = again = NULL;
    assert_int_equal(send(fx, "user.deactivate_user", payload, "d-2", NULL, &again, &err), 0);
    assert_int_equal(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(again, "version")), 2);
    cJSON_Delete(again);
}

/* Plays a request with the same key that commits first, between our lookup and our append. */
static void same_key_wins(fake_es *f, const es_append_req *req, void *arg)
{
    (void)arg;
    assert_non_null(req->idempotency);
    es_idempotency rec = *req->idempotency;
    rec.response = "{\"id\":\"the-winner\"}";
    es_new_event ev = {"aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee", "user.user.registered", 1, "{}",
                       "{}"};
    es_append_req other = {.context = "user",
                           .stream_id = "user-winner",
                           .expected_version = ES_NO_STREAM,
                           .events = &ev,
                           .n_events = 1,
                           .idempotency = &rec};
    es_store port = fake_es_port(f);
    app_error err = APP_ERROR_INIT;
    assert_int_equal(port.ops->append(port.self, &other, NULL, &err), 0);
}

static void test_the_loser_of_a_race_answers_like_the_winner(void **state)
{
    fixture *fx = *state;
    fx->es.before_append = same_key_wins;
    cJSON *out = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(send(fx, "user.register_user", REGISTER, "k-1", NULL, &out, &err), 0);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(out, "id")),
                        "the-winner");
    assert_int_equal(fx->es.appends, 1); /* only the winner's events */
    assert_int_equal(fx->es.n_streams, 1);
    cJSON_Delete(out);
}

static void test_a_failed_request_is_not_recorded(void **state)
{
    fixture *fx = *state;
    cJSON *out = NULL;
    app_error err = APP_ERROR_INIT;
    fx->es.fail_next = APP_EUNAVAIL;
    assert_int_equal(send(fx, "user.register_user", REGISTER, "k-1", NULL, &out, &err),
                     APP_EUNAVAIL);
    assert_int_equal(fx->es.n_keys, 0);
    assert_int_equal(send(fx, "user.register_user", "{\"email\":\"bad\",\"name\":\"Ada\"}", "k-2",
                          NULL, &out, &err),
                     APP_EINVAL);
    assert_int_equal(fx->es.n_keys, 0);
    /* The retry runs, and from then on answers as it did. */
    assert_int_equal(send(fx, "user.register_user", REGISTER, "k-1", NULL, &out, &err), 0);
    assert_int_equal(fx->es.n_keys, 1);
    cJSON_Delete(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_retry_answers_the_first_reply_without_running_again,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_key_other_body_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keys_belong_to_their_caller, setup, teardown),
        cmocka_unit_test_setup_teardown(test_anonymous_keys_belong_to_their_address, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_an_expired_key_runs_the_command_again, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_command_that_appends_nothing_is_recorded_too, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_the_loser_of_a_race_answers_like_the_winner, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_failed_request_is_not_recorded, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
