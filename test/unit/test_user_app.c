/* The user context's application layer against the in-memory fakes of the event store and
 * the read store (test/support/fake_stores): command handlers, queries, the projection, the routes
 * through a real bus, and the shared event JSON helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "contexts/user/application/user_app.h"
#include "contexts/user/user_module.h"
#include "core/config.h"
#include "core/json.h"
#include "core/metrics.h"
#include "core/uuid.h"
#include "kernel/bus.h"
#include "kernel/event_json.h"
#include "test/support/fake_stores.h"

/* ---- fixture ----------------------------------------------------------------------- */

typedef struct fixture {
    fake_es es;
    fake_rs rs;
    es_store events;
    rs_store reads;
    bus_meta meta;
    bus_ctx ctx;
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    assert_non_null(fx);
    fake_es_init(&fx->es, "user");
    fake_rs_init(&fx->rs);
    fx->events = fake_es_port(&fx->es);
    fx->reads = fake_rs_port(&fx->rs);
    snprintf(fx->meta.message_id, sizeof fx->meta.message_id, "%s",
             "11111111-2222-4333-8444-555555555555");
    snprintf(fx->meta.correlation_id, sizeof fx->meta.correlation_id, "corr-1");
    snprintf(fx->meta.causation_id, sizeof fx->meta.causation_id, "cause-1");
    fx->ctx = (bus_ctx){.events = &fx->events, .reads = &fx->reads, .meta = &fx->meta};
    *state = fx;
    return 0;
}

/* snapshots.user through the module's configure phase, as main.c does. */
static void set_snapshot_every(int every)
{
    app_config cfg;
    config_defaults(&cfg);
    cfg.snapshots.user = every;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(user_module.configure(&cfg, &err), 0);
}

static int teardown(void **state)
{
    fixture *fx = *state;
    set_snapshot_every(0);
    fake_es_free(&fx->es);
    fake_rs_free(&fx->rs);
    free(fx);
    metrics_reset();
    return 0;
}

/* Runs handler on the payload text; *out is the reply (caller frees) or NULL. */
static int run(fixture *fx, bus_handler_fn handler, const char *payload, cJSON **out,
               app_error *err)
{
    cJSON *p = cJSON_Parse(payload);
    assert_non_null(p);
    app_error_clear(err);
    *out = NULL;
    int rc = handler(&fx->ctx, p, out, err);
    cJSON_Delete(p);
    if (rc != 0)
        assert_null(*out);
    else
        assert_non_null(*out);
    return rc;
}

static const char *sget(const cJSON *o, const char *name)
{
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, name));
    assert_non_null(s);
    return s;
}

static int64_t iget(const cJSON *o, const char *name)
{
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, name);
    assert_true(cJSON_IsNumber(n));
    return (int64_t)n->valuedouble;
}

/* Registers a user; its id into id. */
static void do_register(fixture *fx, const char *email, const char *name, char id[UUID_STR_LEN])
{
    char payload[512];
    snprintf(payload, sizeof payload, "{\"email\":\"%s\",\"name\":\"%s\"}", email, name);
    cJSON *out;
    app_error err;
    if (run(fx, user_register_user, payload, &out, &err) != 0)
        fail_msg("register %s: %s", email, err.message);
    snprintf(id, UUID_STR_LEN, "%s", sget(out, "id"));
    cJSON_Delete(out);
}

static int change_email(fixture *fx, const char *id, const char *email, const char *extra,
                        cJSON **out, app_error *err)
{
    char payload[512];
    snprintf(payload, sizeof payload, "{\"id\":\"%s\",\"email\":\"%s\"%s}", id, email,
             extra ? extra : "");
    return run(fx, user_change_user_email, payload, out, err);
}

static int by_id(fixture *fx, bus_handler_fn handler, const char *id, cJSON **out, app_error *err)
{
    char payload[128];
    snprintf(payload, sizeof payload, "{\"id\":\"%s\"}", id);
    return run(fx, handler, payload, out, err);
}

static fake_stream *stream_of(fixture *fx, const char *id)
{
    char sid[64];
    snprintf(sid, sizeof sid, "user-%s", id);
    return fake_es_stream(&fx->es, sid);
}

/* ---- commands ---------------------------------------------------------------------- */

static void test_register(void **state)
{
    fixture *fx = *state;
    cJSON *out;
    app_error err;
    assert_int_equal(run(fx, user_register_user,
                         "{\"email\":\"  Ada@Example.com \",\"name\":\" Ada \",\"extra\":1}", &out,
                         &err),
                     0);
    const char *id = sget(out, "id");
    assert_true(uuid_valid(id));
    assert_string_equal(sget(out, "email"), "Ada@Example.com");
    assert_string_equal(sget(out, "name"), "Ada");
    assert_string_equal(sget(out, "status"), "active");
    assert_int_equal(iget(out, "version"), 1);
    assert_int_equal(cJSON_GetArraySize(out), 5);

    fake_stream *s = stream_of(fx, id);
    assert_non_null(s);
    assert_int_equal(s->len, 1);
    assert_string_equal(s->events[0].type, "user.user.registered");
    assert_int_equal(s->events[0].schema_version, 1);
    cJSON *data = cJSON_Parse(s->events[0].data);
    assert_string_equal(sget(data, "userId"), id);
    assert_string_equal(sget(data, "email"), "Ada@Example.com");
    assert_string_equal(sget(data, "name"), "Ada");
    cJSON_Delete(data);
    cJSON *md = cJSON_Parse(s->events[0].metadata);
    assert_string_equal(sget(md, "correlationId"), "corr-1");
    assert_string_equal(sget(md, "causationId"), "cause-1");
    assert_string_equal(sget(md, "messageId"), "11111111-2222-4333-8444-555555555555");
    assert_null(cJSON_GetObjectItem(md, "actor"));
    assert_null(cJSON_GetObjectItem(md, "traceparent"));
    cJSON_Delete(md);
    char sid[64];
    snprintf(sid, sizeof sid, "user-%s", id);
    assert_string_equal(fake_es_claim_owner(&fx->es, "email", "ada@example.com"), sid);
    cJSON_Delete(out);

    /* The same address in other letters is taken. */
    assert_int_equal(
        run(fx, user_register_user, "{\"email\":\"ADA@example.COM\",\"name\":\"B\"}", &out, &err),
        APP_ECONFLICT);
    assert_string_equal(err.message, "email is already registered");
    assert_int_equal(err.n_fields, 1);
    assert_string_equal(err.fields[0].field, "email");
    assert_int_equal(fx->es.n_streams, 1);

    /* The store being down passes through. */
    fx->es.fail_next = APP_EUNAVAIL;
    assert_int_equal(
        run(fx, user_register_user, "{\"email\":\"x@example.com\",\"name\":\"X\"}", &out, &err),
        APP_EUNAVAIL);
}

static void test_register_invalid(void **state)
{
    fixture *fx = *state;
    cJSON *out;
    app_error err;
    assert_int_equal(run(fx, user_register_user, "{\"email\":\"nope\",\"name\":\"\"}", &out, &err),
                     APP_EINVAL);
    assert_int_equal(err.n_fields, 2);
    assert_string_equal(err.fields[0].field, "email");
    assert_string_equal(err.fields[1].field, "name");

    assert_int_equal(run(fx, user_register_user, "{\"name\":\"No Email\"}", &out, &err),
                     APP_EINVAL);
    assert_string_equal(err.fields[0].field, "email");
    assert_string_equal(err.fields[0].message, "is required");

    assert_int_equal(run(fx, user_register_user, "{\"email\":5,\"name\":\"x\"}", &out, &err),
                     APP_EBADREQ);
    assert_int_equal(run(fx, user_register_user, "{\"email\":\"a@b.co\",\"name\":[]}", &out, &err),
                     APP_EBADREQ);
    /* A wrong type outranks an invalid value. */
    assert_int_equal(run(fx, user_register_user, "{\"email\":\"bad\",\"name\":7}", &out, &err),
                     APP_EBADREQ);
    assert_int_equal(err.n_fields, 2);
    assert_int_equal(run(fx, user_register_user, "[1,2]", &out, &err), APP_EBADREQ);

    char payload[1200], name[1000] = "";
    for (int i = 0; i < 201; i++)
        strcat(name, "\xc3\xa9");
    snprintf(payload, sizeof payload, "{\"email\":\"long@example.com\",\"name\":\"%s\"}", name);
    assert_int_equal(run(fx, user_register_user, payload, &out, &err), APP_EINVAL);
    assert_string_equal(err.fields[0].field, "name");
    name[strlen(name) - 2] = '\0';
    snprintf(payload, sizeof payload, "{\"email\":\"long@example.com\",\"name\":\"%s\"}", name);
    assert_int_equal(run(fx, user_register_user, payload, &out, &err), 0);
    cJSON_Delete(out);
    assert_int_equal(fx->es.appends, 1);
}

static void test_change_email(void **state)
{
    fixture *fx = *state;
    char a[UUID_STR_LEN], other[UUID_STR_LEN], sid[64];
    do_register(fx, "a@example.com", "A", a);
    snprintf(sid, sizeof sid, "user-%s", a);
    cJSON *out;
    app_error err;

    assert_int_equal(change_email(fx, a, "B@Example.com", NULL, &out, &err), 0);
    assert_string_equal(sget(out, "email"), "B@Example.com");
    assert_int_equal(iget(out, "version"), 2);
    assert_string_equal(sget(out, "status"), "active");
    cJSON_Delete(out);
    assert_null(fake_es_claim_owner(&fx->es, "email", "a@example.com"));
    assert_string_equal(fake_es_claim_owner(&fx->es, "email", "b@example.com"), sid);
    cJSON *data = cJSON_Parse(stream_of(fx, a)->events[1].data);
    assert_string_equal(sget(data, "email"), "B@Example.com");
    assert_string_equal(sget(data, "previousEmail"), "a@example.com");
    cJSON_Delete(data);
    assert_string_equal(stream_of(fx, a)->events[1].type, "user.user.email_changed");

    /* The old address is free again. */
    do_register(fx, "A@example.com", "Other", other);

    /* The very same address: nothing appended. */
    size_t appends = fx->es.appends;
    assert_int_equal(change_email(fx, a, "B@Example.com", NULL, &out, &err), 0);
    assert_int_equal(iget(out, "version"), 2);
    cJSON_Delete(out);
    assert_int_equal(fx->es.appends, appends);

    /* A case-only change is an event, and keeps the claim. */
    assert_int_equal(change_email(fx, a, "b@example.com", NULL, &out, &err), 0);
    assert_int_equal(iget(out, "version"), 3);
    assert_string_equal(sget(out, "email"), "b@example.com");
    cJSON_Delete(out);
    assert_string_equal(fake_es_claim_owner(&fx->es, "email", "b@example.com"), sid);

    /* Preconditions. */
    assert_int_equal(change_email(fx, a, "c@example.com", ",\"expectedVersion\":1", &out, &err),
                     APP_EPRECOND);
    assert_string_equal(err.message, "version mismatch");
    assert_true(strlen(err.detail) > 0);
    assert_int_equal(change_email(fx, a, "c@example.com", ",\"expectedVersion\":3", &out, &err), 0);
    assert_int_equal(iget(out, "version"), 4);
    cJSON_Delete(out);
    assert_int_equal(change_email(fx, a, "d@example.com", ",\"expectedVersion\":null", &out, &err),
                     0);
    assert_int_equal(iget(out, "version"), 5);
    cJSON_Delete(out);
    assert_int_equal(change_email(fx, a, "e@example.com", ",\"expectedVersion\":\"5\"", &out, &err),
                     APP_EBADREQ);

    /* A concurrent writer: 412 under a precondition, else a conflict the bus retries. */
    fx->es.fail_next = APP_EVERSION;
    assert_int_equal(change_email(fx, a, "e@example.com", ",\"expectedVersion\":5", &out, &err),
                     APP_EPRECOND);
    fx->es.fail_next = APP_EVERSION;
    assert_int_equal(change_email(fx, a, "e@example.com", NULL, &out, &err), APP_EVERSION);

    /* Someone else's address. */
    assert_int_equal(change_email(fx, a, "a@EXAMPLE.com", NULL, &out, &err), APP_ECONFLICT);
    assert_string_equal(err.message, "email is already registered");
    assert_string_equal(err.fields[0].field, "email");

    /* Bad input and unknown users. */
    assert_int_equal(change_email(fx, a, "not an email", NULL, &out, &err), APP_EINVAL);
    assert_string_equal(err.fields[0].field, "email");
    assert_int_equal(
        change_email(fx, "00000000-0000-4000-8000-000000000000", "z@example.com", NULL, &out, &err),
        APP_ENOTFOUND);
    assert_int_equal(change_email(fx, "nope", "z@example.com", NULL, &out, &err), APP_ENOTFOUND);
    assert_int_equal(
        run(fx, user_change_user_email, "{\"id\":1,\"email\":\"z@example.com\"}", &out, &err),
        APP_EBADREQ);
    assert_int_equal(stream_of(fx, a)->len, 5);
}

static void test_deactivate(void **state)
{
    fixture *fx = *state;
    char a[UUID_STR_LEN];
    do_register(fx, "deact@example.com", "D", a);
    cJSON *out;
    app_error err;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(by_id(fx, user_deactivate_user, a, &out, &err), 0);
        assert_string_equal(sget(out, "status"), "deactivated");
        assert_int_equal(iget(out, "version"), 2);
        assert_string_equal(sget(out, "email"), "deact@example.com");
        cJSON_Delete(out);
    }
    assert_int_equal(stream_of(fx, a)->len, 2);
    assert_string_equal(stream_of(fx, a)->events[1].type, "user.user.deactivated");

    /* Deactivated users keep their address and cannot change it. */
    assert_int_equal(change_email(fx, a, "new@example.com", NULL, &out, &err), APP_ECONFLICT);
    assert_string_equal(err.message, "user is deactivated");
    assert_non_null(fake_es_claim_owner(&fx->es, "email", "deact@example.com"));

    assert_int_equal(
        by_id(fx, user_deactivate_user, "00000000-0000-4000-8000-000000000000", &out, &err),
        APP_ENOTFOUND);
    char b[UUID_STR_LEN];
    do_register(fx, "deact2@example.com", "D2", b);
    fx->es.fail_next = APP_EVERSION;
    assert_int_equal(by_id(fx, user_deactivate_user, b, &out, &err), APP_EVERSION);
}

/* ---- projection and queries -------------------------------------------------------- */

/* Feeds every stored event of user id to the projection, in order. */
static void project_all(fixture *fx, const char *id)
{
    fake_stream *s = stream_of(fx, id);
    assert_non_null(s);
    for (size_t i = 0; i < s->len; i++) {
        app_error err = APP_ERROR_INIT;
        if (user_projection_handle(&fx->ctx, &s->events[i], &err) != 0)
            fail_msg("projection failed: %s", err.message);
    }
}

static cJSON *read_model(fixture *fx, const char *id)
{
    char key[64];
    snprintf(key, sizeof key, "user:%s", id);
    const char *value = fake_rs_value(&fx->rs, key);
    return value ? cJSON_Parse(value) : NULL;
}

static void test_projection(void **state)
{
    fixture *fx = *state;
    char a[UUID_STR_LEN];
    cJSON *out;
    app_error err;
    do_register(fx, "proj@example.com", "P", a);
    assert_int_equal(change_email(fx, a, "proj2@example.com", NULL, &out, &err), 0);
    cJSON_Delete(out);
    assert_int_equal(by_id(fx, user_deactivate_user, a, &out, &err), 0);
    cJSON_Delete(out);

    project_all(fx, a);
    cJSON *rm = read_model(fx, a);
    assert_non_null(rm);
    assert_string_equal(sget(rm, "id"), a);
    assert_string_equal(sget(rm, "email"), "proj2@example.com");
    assert_string_equal(sget(rm, "name"), "P");
    assert_string_equal(sget(rm, "status"), "deactivated");
    assert_int_equal(iget(rm, "version"), 3);
    cJSON_Delete(rm);
    assert_int_equal(fx->rs.sets, 3);

    /* At least once: a redelivery changes nothing. */
    project_all(fx, a);
    assert_int_equal(fx->rs.sets, 3);

    /* A lost read model is refolded from the stream on the next event. */
    char key[64];
    snprintf(key, sizeof key, "user:%s", a);
    assert_int_equal(fx->reads.ops->del(fx->reads.self, key, &err), 0);
    fake_stream *s = stream_of(fx, a);
    assert_int_equal(user_projection_handle(&fx->ctx, &s->events[2], &err), 0);
    rm = read_model(fx, a);
    assert_string_equal(sget(rm, "email"), "proj2@example.com");
    assert_string_equal(sget(rm, "status"), "deactivated");
    assert_int_equal(iget(rm, "version"), 3);
    cJSON_Delete(rm);

    /* Unknown event types and other streams are ignored. */
    es_event unknown = s->events[2];
    unknown.type = (char *)(uintptr_t) "user.user.renamed";
    unknown.version = 4;
    size_t sets = fx->rs.sets;
    assert_int_equal(user_projection_handle(&fx->ctx, &unknown, &err), 0);
    es_event foreign = s->events[0];
    foreign.stream_id = (char *)(uintptr_t) "order-0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";
    assert_int_equal(user_projection_handle(&fx->ctx, &foreign, &err), 0);
    assert_int_equal(fx->rs.sets, sets);

    /* A broken known event stops the subscriber; a read store outage is reported. */
    es_event broken = s->events[0];
    broken.data = (char *)(uintptr_t) "{}";
    assert_int_equal(user_projection_handle(&fx->ctx, &broken, &err), APP_EINTERNAL);
    assert_int_equal(fx->reads.ops->del(fx->reads.self, key, &err), 0);
    fx->rs.down = true;
    assert_int_equal(user_projection_handle(&fx->ctx, &s->events[0], &err), APP_EUNAVAIL);
    fx->rs.down = false;
}

static void test_queries(void **state)
{
    fixture *fx = *state;
    char a[UUID_STR_LEN];
    cJSON *out;
    app_error err;
    do_register(fx, "q@example.com", "Q", a);

    /* Before the projection runs, the read model does not know the user: the log answers,
     * so that the client reads what it wrote. */
    assert_int_equal(by_id(fx, user_get_user, a, &out, &err), 0);
    assert_string_equal(sget(out, "email"), "q@example.com");
    assert_int_equal(iget(out, "version"), 1);
    cJSON_Delete(out);
    char never[UUID_STR_LEN];
    uuid_v4(never);
    assert_int_equal(by_id(fx, user_get_user, never, &out, &err), APP_ENOTFOUND);
    project_all(fx, a);
    assert_int_equal(by_id(fx, user_get_user, a, &out, &err), 0);
    assert_string_equal(sget(out, "email"), "q@example.com");
    assert_int_equal(iget(out, "version"), 1);
    cJSON_Delete(out);
    assert_int_equal(by_id(fx, user_get_user, "NOT-A-UUID", &out, &err), APP_ENOTFOUND);
    fx->rs.down = true;
    assert_int_equal(by_id(fx, user_get_user, a, &out, &err), APP_EUNAVAIL);
    fx->rs.down = false;

    assert_int_equal(change_email(fx, a, "q2@example.com", NULL, &out, &err), 0);
    cJSON_Delete(out);
    assert_int_equal(by_id(fx, user_get_user_events, a, &out, &err), 0);
    const cJSON *items = cJSON_GetObjectItemCaseSensitive(out, "items");
    assert_int_equal(cJSON_GetArraySize(items), 2);
    const cJSON *e1 = cJSON_GetArrayItem(items, 1);
    assert_string_equal(sget(e1, "type"), "user.user.email_changed");
    assert_int_equal(iget(e1, "version"), 2);
    assert_int_equal(iget(e1, "position"), 2);
    assert_true(uuid_valid(sget(e1, "eventId")));
    assert_string_equal(sget(e1, "recordedAt"), "2026-11-28T15:00:00.123456Z");
    char sid[64];
    snprintf(sid, sizeof sid, "user-%s", a);
    assert_string_equal(sget(e1, "streamId"), sid);
    assert_string_equal(sget(cJSON_GetObjectItem(e1, "data"), "previousEmail"), "q@example.com");
    assert_string_equal(sget(cJSON_GetObjectItem(e1, "metadata"), "correlationId"), "corr-1");
    cJSON_Delete(out);
    assert_int_equal(
        by_id(fx, user_get_user_events, "00000000-0000-4000-8000-000000000000", &out, &err),
        APP_ENOTFOUND);
}

/* ---- the event JSON helpers -------------------------------------------------------- */

static void test_event_json(void **state)
{
    (void)state;
    bus_meta meta;
    memset(&meta, 0, sizeof meta);
    char *md = event_metadata_from_meta(&meta);
    assert_string_equal(md, "{\"correlationId\":\"\",\"causationId\":\"\"}");
    free(md);
    bus_meta_init(&meta, "req-1", NULL);
    snprintf(meta.actor, sizeof meta.actor, "alice");
    snprintf(meta.traceparent, sizeof meta.traceparent,
             "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    md = event_metadata_from_meta(&meta);
    cJSON *o = cJSON_Parse(md);
    assert_string_equal(sget(o, "correlationId"), "req-1");
    assert_string_equal(sget(o, "causationId"), "req-1");
    assert_string_equal(sget(o, "messageId"), meta.message_id);
    assert_string_equal(sget(o, "actor"), "alice");
    assert_string_equal(sget(o, "traceparent"), meta.traceparent);
    cJSON_Delete(o);
    free(md);

    es_event ev = {
        .position = 42,
        .stream_id = (char *)(uintptr_t) "user-x",
        .version = 3,
        .event_id = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
        .type = (char *)(uintptr_t) "user.user.deactivated",
        .schema_version = 1,
        .data = (char *)(uintptr_t) "{\"userId\":\"x\"}",
        .metadata = (char *)(uintptr_t) "not json",
        .recorded_at = "2026-11-28T15:00:00Z",
    };
    o = event_to_json(&ev);
    assert_non_null(o);
    assert_string_equal(sget(o, "eventId"), ev.event_id);
    assert_string_equal(sget(o, "type"), ev.type);
    assert_string_equal(sget(o, "streamId"), "user-x");
    assert_int_equal(iget(o, "version"), 3);
    assert_int_equal(iget(o, "position"), 42);
    assert_int_equal(iget(o, "schemaVersion"), 1);
    assert_string_equal(sget(cJSON_GetObjectItem(o, "data"), "userId"), "x");
    assert_true(cJSON_IsObject(cJSON_GetObjectItem(o, "metadata")));
    assert_string_equal(sget(o, "recordedAt"), "2026-11-28T15:00:00Z");
    cJSON_Delete(o);
}

/* ---- routes, through a real bus ----------------------------------------------------- */

typedef struct route_call {
    http_req req;
    http_res res;
    app_error err;
    char id[64];
} route_call;

static const http_route_def *find_route(unsigned method, const char *pattern)
{
    for (const http_route_def *r = user_routes; r->pattern; r++)
        if ((r->methods & method) && strcmp(r->pattern, pattern) == 0)
            return r;
    fail_msg("no route %s", pattern);
    return NULL;
}

/* Calls the route of pattern with {id} = id (may be NULL), body text (may be NULL) and
 * If-Match (may be NULL). The caller frees rc->req.body and rc->res.body. */
static int call_route(bus *b, route_call *rc, unsigned method, const char *pattern, const char *id,
                      const char *body, const char *if_match)
{
    memset(rc, 0, sizeof *rc);
    rc->req.method = (http_method)method;
    rc->req.path = pattern;
    if (id) {
        snprintf(rc->id, sizeof rc->id, "%s", id);
        rc->req.param_names[0] = "id";
        rc->req.param_values[0] = rc->id;
        rc->req.n_params = 1;
    }
    rc->req.body = body ? cJSON_Parse(body) : NULL;
    rc->req.if_match = if_match;
    bus_meta_init(&rc->req.meta, "route-test", NULL);
    const http_route_def *r = find_route(method, pattern);
    if (r->flags & HTTP_ROUTE_JSON_BODY)
        assert_true(cJSON_IsObject(rc->req.body));
    int code = r->fn(b, &rc->req, &rc->res, &rc->err);
    if (code != 0) {
        assert_null(rc->res.body);
        assert_int_equal(rc->err.code, code);
    }
    return code;
}

static void route_done(route_call *rc)
{
    cJSON_Delete(rc->req.body);
    cJSON_Delete(rc->res.body);
}

static void test_routes(void **state)
{
    fixture *fx = *state;
    bus *b = NULL;
    app_error err = APP_ERROR_INIT;
    bus_options opts = {
        .events = &fx->events, .reads = &fx->reads, .clock = NULL, .max_conflict_retries = 3};
    assert_int_equal(bus_new(&b, &opts, &err), 0);
    assert_int_equal(bus_register(b, BUS_COMMAND, user_module.commands, &err), 0);
    assert_int_equal(bus_register(b, BUS_QUERY, user_module.queries, &err), 0);
    route_call rc;

    assert_int_equal(call_route(b, &rc, HTTP_M_POST, "/v1/users", NULL,
                                "{\"email\":\"r@example.com\",\"name\":\"R\"}", NULL),
                     0);
    assert_int_equal(rc.res.status, 201);
    char id[UUID_STR_LEN], loc[128];
    snprintf(id, sizeof id, "%s", sget(rc.res.body, "id"));
    snprintf(loc, sizeof loc, "/v1/users/%s", id);
    assert_string_equal(rc.res.location, loc);
    assert_string_equal(rc.res.etag, "\"1\"");
    route_done(&rc);
    /* The correlation id of the request reaches the event. */
    cJSON *md = cJSON_Parse(stream_of(fx, id)->events[0].metadata);
    assert_string_equal(sget(md, "correlationId"), "route-test");
    cJSON_Delete(md);

    assert_int_equal(call_route(b, &rc, HTTP_M_POST, "/v1/users", NULL,
                                "{\"email\":\"R@example.com\",\"name\":\"R\"}", NULL),
                     APP_ECONFLICT);
    route_done(&rc);

    /* Not projected yet: read from the log. */
    assert_int_equal(call_route(b, &rc, HTTP_M_GET, "/v1/users/{id}", id, NULL, NULL), 0);
    route_done(&rc);
    project_all(fx, id);
    assert_int_equal(call_route(b, &rc, HTTP_M_GET, "/v1/users/{id}", id, NULL, NULL), 0);
    assert_int_equal(rc.res.status, 200);
    assert_string_equal(rc.res.etag, "\"1\"");
    assert_string_equal(sget(rc.res.body, "email"), "r@example.com");
    route_done(&rc);

    /* If-Match: strong, weak, any; malformed is 400, stale is 412. */
    static const struct {
        const char *if_match;
        int code;
        int version;
    } cases[] = {
        {"\"1\"", 0, 2},
        {"W/\"2\"", 0, 3},
        {" * ", 0, 4},
        {NULL, 0, 5},
        {"\"9\"", APP_EPRECOND, 0},
        {"banana", APP_EBADREQ, 0},
        {"9", APP_EPRECOND, 0}, /* a bare version is read as the quoted one */
        {"\"5\", \"6\"", APP_EBADREQ, 0},
        {"\"\"", APP_EBADREQ, 0},
        {"W/5", APP_EBADREQ, 0},
        {"W/", APP_EBADREQ, 0},
        {"5x", APP_EBADREQ, 0},
        {"\"5", APP_EBADREQ, 0},
        {"\"99999999999999999999\"", APP_EBADREQ, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[128];
        snprintf(body, sizeof body, "{\"email\":\"r%zu@example.com\",\"other\":true}", i);
        int code =
            call_route(b, &rc, HTTP_M_PUT, "/v1/users/{id}/email", id, body, cases[i].if_match);
        if (code != cases[i].code)
            fail_msg("If-Match %s: expected %d, got %d (%s)", cases[i].if_match, cases[i].code,
                     code, rc.err.message);
        if (code == 0) {
            assert_int_equal(rc.res.status, 200);
            assert_int_equal(iget(rc.res.body, "version"), cases[i].version);
            char etag[16];
            snprintf(etag, sizeof etag, "\"%d\"", cases[i].version);
            assert_string_equal(rc.res.etag, etag);
        }
        route_done(&rc);
    }
    assert_int_equal(
        call_route(b, &rc, HTTP_M_PUT, "/v1/users/{id}/email", id, "{\"email\":42}", NULL),
        APP_EBADREQ);
    route_done(&rc);
    assert_int_equal(call_route(b, &rc, HTTP_M_PUT, "/v1/users/{id}/email", id, "{}", NULL),
                     APP_EINVAL);
    route_done(&rc);

    /* A conflict without a precondition is run again by the bus. */
    fx->es.fail_next = APP_EVERSION;
    assert_int_equal(call_route(b, &rc, HTTP_M_PUT, "/v1/users/{id}/email", id,
                                "{\"email\":\"retry@example.com\"}", NULL),
                     0);
    assert_int_equal(iget(rc.res.body, "version"), 6);
    route_done(&rc);

    for (int i = 0; i < 2; i++) {
        assert_int_equal(
            call_route(b, &rc, HTTP_M_POST, "/v1/users/{id}/deactivate", id, NULL, NULL), 0);
        assert_int_equal(rc.res.status, 200);
        assert_string_equal(sget(rc.res.body, "status"), "deactivated");
        assert_string_equal(rc.res.etag, "\"7\"");
        route_done(&rc);
    }

    assert_int_equal(call_route(b, &rc, HTTP_M_GET, "/v1/users/{id}/events", id, NULL, NULL), 0);
    assert_int_equal(rc.res.status, 200);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(rc.res.body, "items")), 7);
    route_done(&rc);

    /* Ids that are no canonical UUID name nothing. */
    static const char *const bad_ids[] = {"not-a-uuid", "0F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9", ""};
    static const struct {
        unsigned method;
        const char *pattern;
    } by_id_routes[] = {
        {HTTP_M_GET, "/v1/users/{id}"},
        {HTTP_M_POST, "/v1/users/{id}/deactivate"},
        {HTTP_M_GET, "/v1/users/{id}/events"},
    };
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
        for (size_t j = 0; j < sizeof by_id_routes / sizeof by_id_routes[0]; j++) {
            assert_int_equal(call_route(b, &rc, by_id_routes[j].method, by_id_routes[j].pattern,
                                        bad_ids[i], NULL, NULL),
                             APP_ENOTFOUND);
            route_done(&rc);
        }
    }
    assert_int_equal(call_route(b, &rc, HTTP_M_POST, "/v1/users/{id}/deactivate",
                                "00000000-0000-4000-8000-000000000000", NULL, NULL),
                     APP_ENOTFOUND);
    route_done(&rc);
    bus_free(b);
}

static void test_descriptor(void **state)
{
    (void)state;
    assert_int_equal(user_module.abi, APP_MODULE_ABI);
    assert_string_equal(user_module.name, "user");
    assert_string_equal(user_module.schema, "user_ctx");
    assert_non_null(user_module.migrations[0].name);
    assert_non_null(strstr(user_module.migrations[0].sql, "user_ctx"));
    assert_null(user_module.migrations[1].name);
    size_t n = 0;
    for (const bus_handler_def *d = user_module.commands; d->name; d++, n++)
        assert_int_equal(strncmp(d->name, "user.", 5), 0);
    assert_int_equal(n, 3);
    assert_string_equal(user_module.subscriptions[0].name, "user.projection");
    assert_string_equal(user_module.subscriptions[0].source_context, "user");
    assert_true(user_module.subscriptions[0].flags & MOD_SUB_PROJECTION);
    assert_null(user_module.subscriptions[1].name);
    n = 0;
    for (const http_route_def *r = user_module.routes; r->pattern; r++, n++)
        assert_non_null(r->fn);
    assert_int_equal(n, 5);
}

/* ---- snapshots ---------------------------------------------------------------------- */

static void test_snapshots(void **state)
{
    fixture *fx = *state;
    cJSON *out = NULL;
    app_error err;
    char id[UUID_STR_LEN];
    set_snapshot_every(2);
    do_register(fx, "a@example.com", "Ann", id);
    fake_stream *s = stream_of(fx, id);
    assert_null(s->snapshot.state);
    assert_int_equal(change_email(fx, id, "b@example.com", NULL, &out, &err), 0); /* v2 */
    cJSON_Delete(out);
    assert_int_equal(s->snapshot.version, 2);
    assert_int_equal(s->snapshot.schema_version, 1);
    assert_int_equal(change_email(fx, id, "c@example.com", NULL, &out, &err), 0); /* v3 */
    cJSON_Delete(out);
    assert_int_equal(s->snapshot.version, 2);
    assert_int_equal(by_id(fx, user_deactivate_user, id, &out, &err), 0); /* v4 */
    cJSON_Delete(out);
    assert_int_equal(s->snapshot.version, 4);

    /* Loading starts after the snapshot and decides on its state. */
    size_t loaded = fx->es.loaded;
    assert_int_equal(by_id(fx, user_describe_customer, id, &out, &err), 0);
    assert_string_equal(sget(out, "status"), "deactivated");
    cJSON_Delete(out);
    assert_int_equal(fx->es.last_after_version, 4);
    assert_int_equal(fx->es.loaded, loaded);
    assert_int_equal(change_email(fx, id, "d@example.com", NULL, &out, &err), APP_ECONFLICT);

    /* Another schema version, a corrupt one or another user's is ignored: the whole stream. */
    char other[UUID_STR_LEN];
    uuid_v4(other);
    char foreign[256];
    snprintf(foreign, sizeof foreign,
             "{\"id\":\"%s\",\"email\":\"x@example.com\",\"name\":\"X\",\"status\":\"active\"}",
             other);
    const char *const ignored[] = {NULL, "{\"id\":1}", "{\"id\":\"", foreign};
    char *good = strdup(s->snapshot.state);
    assert_non_null(good);
    for (size_t i = 0; i < 4; i++) {
        char *text = strdup(i == 0 ? good : ignored[i]);
        assert_non_null(text);
        assert_true(fake_es_put_snapshot(&fx->es, s->id, 4, i == 0 ? 2 : 1, text));
        free(text);
        loaded = fx->es.loaded;
        assert_int_equal(by_id(fx, user_describe_customer, id, &out, &err), 0);
        assert_string_equal(sget(out, "status"), "deactivated");
        cJSON_Delete(out);
        assert_int_equal(fx->es.last_after_version, 0);
        assert_int_equal(fx->es.loaded - loaded, 4);
    }
    free(good);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_register, setup, teardown),
        cmocka_unit_test_setup_teardown(test_register_invalid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_change_email, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deactivate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_projection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queries, setup, teardown),
        cmocka_unit_test(test_event_json),
        cmocka_unit_test_setup_teardown(test_routes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshots, setup, teardown),
        cmocka_unit_test(test_descriptor),
    };
    return cmocka_run_group_tests_name("user application", tests, NULL, NULL);
}
