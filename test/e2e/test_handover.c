/* A clean hand-over between two ./app processes on one database: the first runs every
 * subscriber (projections, local copies, the saga and, with Kafka, the relay of each
 * context), the second stands by; on SIGTERM the first gives its leases up and the second
 * runs them all, so commands sent to it are projected and, with Kafka, reach their topics
 * (the real broker of test/run.sh, APP_TEST_KAFKA_BROKERS; without it that test is skipped,
 * saying why). Every step waits for a state; time limits only catch a hang, and the time the
 * hand-over took is printed, not judged. (A lease is a lock of a PostgreSQL session, which
 * also ends when the process exits: from outside, giving the leases up at once shows as the
 * standby taking over at its next look, about a second after the stop.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/uuid.h"
#include "test/support/http_client.h"
#include "test/support/kafka_reader.h"
#include "test/support/services.h"

#define MAX_SUBS 16
#define MAX_IDS  16

static const char *const contexts[] = {"user", "order", "inventory"};
#define N_CONTEXTS (sizeof contexts / sizeof contexts[0])

static ts_app a, b;
static const char *const json_headers[] = {"Content-Type: application/json", NULL};

static cJSON *call(const ts_app *app, const char *method, const char *path, const char *body,
                   int want)
{
    tc_response r;
    memset(&r, 0, sizeof r);
    if (tc_http("127.0.0.1", app->port, method, path, body ? json_headers : NULL, body,
                body ? strlen(body) : 0, &r) != 0)
        fail_msg("%s %s on :%d: %s", method, path, app->port, r.error);
    if (want && r.status != want)
        fail_msg("%s %s on :%d: expected %d, got %d: %.*s", method, path, app->port, want, r.status,
                 (int)r.body_len, r.body ? r.body : "");
    cJSON *j = r.status >= 200 && r.status < 300 ? tc_json(&r) : NULL;
    tc_response_free(&r);
    return j;
}

static const char *str(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItem(o, name);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* ---- where each subscriber runs ---------------------------------------------------------- */

/* The subscribers an app's /health/ready lists, with the status of each. */
typedef struct roles {
    size_t n;
    char name[MAX_SUBS][64];
    char status[MAX_SUBS][16];
} roles;

static void roles_of(const ts_app *app, roles *out)
{
    memset(out, 0, sizeof *out);
    cJSON *j = call(app, "GET", "/health/ready", NULL, 200);
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItem(j, "subscriptions"))
    {
        if (out->n == MAX_SUBS)
            break;
        snprintf(out->name[out->n], sizeof out->name[0], "%s", s->string);
        snprintf(out->status[out->n], sizeof out->status[0], "%s", str(s, "status"));
        out->n++;
    }
    cJSON_Delete(j);
}

typedef struct all_in {
    const ts_app *app;
    const char *status;
    size_t n; /* subscribers expected */
    roles seen;
} all_in;

/* Every one of the n subscribers has the status in the app. */
static bool all_have_status(void *arg)
{
    all_in *w = arg;
    roles_of(w->app, &w->seen);
    if (w->seen.n != w->n)
        return false;
    for (size_t i = 0; i < w->seen.n; i++)
        if (strcmp(w->seen.status[i], w->status) != 0)
            return false;
    return true;
}

static void wait_all(const ts_app *app, const char *status, size_t n, const char *who)
{
    all_in w = {app, status, n, {0}};
    if (ts_wait_until(all_have_status, &w, TS_HANG_GUARD_MS) == 0)
        return;
    for (size_t i = 0; i < w.seen.n; i++)
        print_message("  %s: %s\n", w.seen.name[i], w.seen.status[i]);
    ts_app_dump_log(app, 4000);
    fail_msg("%s never showed all %zu subscribers %s (it lists %zu)", who, n, status, w.seen.n);
}

/* A sample of a metric in the app's /metrics, -1 when absent. */
static double metric(const ts_app *app, const char *sample)
{
    return tc_metric("127.0.0.1", app->port, sample, -1);
}

typedef struct gauges {
    const ts_app *app;
    const roles *r;
    bool kafka;
    int leader;
    char wrong[160]; /* the first sample that differs */
} gauges;

/* subscription_leader and kafka_relay_leader say what readiness says: every lease held
 * here (leader 1) or none (0). */
static bool leader_gauges_agree(void *arg)
{
    gauges *g = arg;
    char sample[160];
    for (size_t i = 0; i < g->r->n + (g->kafka ? N_CONTEXTS : 0); i++) {
        if (i >= g->r->n)
            snprintf(sample, sizeof sample, "kafka_relay_leader{context=\"%s\"}",
                     contexts[i - g->r->n]);
        else if (strstr(g->r->name[i], ".kafka_relay"))
            continue;
        else
            snprintf(sample, sizeof sample, "subscription_leader{subscriber=\"%s\"}",
                     g->r->name[i]);
        if (metric(g->app, sample) != g->leader) {
            snprintf(g->wrong, sizeof g->wrong, "%s", sample);
            return false;
        }
    }
    return true;
}

static void wait_leader_gauges(const ts_app *app, const roles *r, bool kafka, int leader)
{
    gauges g = {app, r, kafka, leader, ""};
    if (ts_wait_until(leader_gauges_agree, &g, TS_HANG_GUARD_MS) != 0)
        fail_msg("%s is %g on :%d, not %d", g.wrong, metric(app, g.wrong), app->port, leader);
}

/* ---- commands and their events ----------------------------------------------------------- */

typedef struct served {
    char user[UUID_STR_LEN];
    char sku[40];
    char order[UUID_STR_LEN];
    /* event ids per context, from the audit trails */
    char ids[N_CONTEXTS][MAX_IDS][UUID_STR_LEN];
    size_t n_ids[N_CONTEXTS];
} served;

/* Appends the event ids of an audit trail to s->ids[ctx]. */
static void trail_ids(const ts_app *app, const char *path, served *s, size_t ctx)
{
    cJSON *j = call(app, "GET", path, NULL, 200);
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(j, "items"))
    {
        if (s->n_ids[ctx] < MAX_IDS)
            snprintf(s->ids[ctx][s->n_ids[ctx]++], UUID_STR_LEN, "%s", str(it, "eventId"));
    }
    cJSON_Delete(j);
}

typedef struct want {
    const ts_app *app;
    const char *path, *member, *value;
} want;

static bool has(void *arg)
{
    want *w = arg;
    cJSON *j = call(w->app, "GET", w->path, NULL, 0);
    bool ok = j && strcmp(str(j, w->member), w->value) == 0;
    cJSON_Delete(j);
    return ok;
}

static void wait_member(const ts_app *app, const char *path, const char *member, const char *value)
{
    want w = {app, path, member, value};
    if (ts_wait_until(has, &w, TS_HANG_GUARD_MS) != 0) {
        ts_app_dump_log(app, 4000);
        fail_msg("%s never had %s = %s on :%d", path, member, value, app->port);
    }
}

/* A user, a product and an order of them, sent to app; each read model shows its effect (so
 * the projections, the local copies and the saga run somewhere), and s gets their events. */
static void serve(const ts_app *app, served *s)
{
    memset(s, 0, sizeof *s);
    char tag[UUID_STR_LEN], body[256], path[160];
    uuid_v4(tag);
    snprintf(body, sizeof body, "{\"email\":\"handover.%.12s@example.com\",\"name\":\"Hand\"}",
             tag);
    cJSON *u = call(app, "POST", "/v1/users", body, 201);
    snprintf(s->user, sizeof s->user, "%s", str(u, "id"));
    cJSON_Delete(u);
    snprintf(s->sku, sizeof s->sku, "HAND-%.8s", tag);
    for (char *p = s->sku; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    snprintf(body, sizeof body,
             "{\"sku\":\"%s\",\"name\":\"Handed\",\"price\":{\"amount\":300,\"currency\":\"EUR\"},"
             "\"stock\":5}",
             s->sku);
    cJSON_Delete(call(app, "POST", "/v1/products", body, 201));
    snprintf(body, sizeof body,
             "{\"customerId\":\"%s\",\"lines\":[{\"sku\":\"%s\",\"quantity\":2}]}", s->user,
             s->sku);
    cJSON *o = call(app, "POST", "/v1/orders", body, 202);
    snprintf(s->order, sizeof s->order, "%s", str(o, "id"));
    cJSON_Delete(o);

    snprintf(path, sizeof path, "/v1/users/%s", s->user);
    wait_member(app, path, "status", "active");
    snprintf(path, sizeof path, "/v1/orders/%s", s->order);
    wait_member(app, path, "status", "confirmed");
    snprintf(path, sizeof path, "/v1/products/%s", s->sku);
    wait_member(app, path, "sku", s->sku);
    cJSON *p = call(app, "GET", path, NULL, 200);
    assert_int_equal(cJSON_GetObjectItem(p, "reserved")->valueint, 2);
    cJSON_Delete(p);

    snprintf(path, sizeof path, "/v1/users/%s/events", s->user);
    trail_ids(app, path, s, 0);
    snprintf(path, sizeof path, "/v1/orders/%s/events", s->order);
    trail_ids(app, path, s, 1);
    snprintf(path, sizeof path, "/v1/products/%s/events", s->sku);
    trail_ids(app, path, s, 2);
    assert_int_equal(s->n_ids[0], 1); /* registered */
    assert_int_equal(s->n_ids[1], 2); /* placed, confirmed */
    assert_int_equal(s->n_ids[2], 2); /* created, reserved */
}

/* s's order and product still have the events they had: nothing was handled twice. */
static void check_once(const ts_app *app, const served *s)
{
    served again;
    memset(&again, 0, sizeof again);
    char path[160];
    snprintf(path, sizeof path, "/v1/orders/%s/events", s->order);
    trail_ids(app, path, &again, 1);
    snprintf(path, sizeof path, "/v1/products/%s/events", s->sku);
    trail_ids(app, path, &again, 2);
    assert_int_equal(again.n_ids[1], s->n_ids[1]);
    assert_int_equal(again.n_ids[2], s->n_ids[2]);
}

/* ---- the topics --------------------------------------------------------------------------- */

static const char *brokers;
static char prefix[64];

typedef struct arrival {
    const served *s;
    size_t ctx;
    size_t missing;
} arrival;

/* Reads <prefix><context>.events from the beginning until every event id of s in that
 * context has come, or nothing more comes for a while; true when all came. */
static bool arrived(void *arg)
{
    arrival *w = arg;
    char topic[160];
    snprintf(topic, sizeof topic, "%s%s.events", prefix, contexts[w->ctx]);
    bool seen[MAX_IDS] = {false};
    size_t n = w->s->n_ids[w->ctx];
    w->missing = n;
    rd_kafka_t *c = tk_reader_new(brokers, topic);
    long long last = ts_now_ms();
    while (c && w->missing > 0 && ts_now_ms() - last < 1500) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (!m)
            continue;
        if (!m->err) {
            last = ts_now_ms();
            char id[64];
            tk_header(m, "event-id", id, sizeof id);
            for (size_t i = 0; i < n; i++)
                if (!seen[i] && strcmp(id, w->s->ids[w->ctx][i]) == 0) {
                    seen[i] = true;
                    w->missing--;
                }
        }
        rd_kafka_message_destroy(m);
    }
    tk_reader_free(c);
    return w->missing == 0;
}

/* Every event of s reached the topic of its context. */
static void wait_arrived(const served *s)
{
    for (size_t ctx = 0; ctx < N_CONTEXTS; ctx++) {
        arrival w = {s, ctx, 0};
        if (ts_wait_until(arrived, &w, TS_HANG_GUARD_MS) != 0)
            fail_msg("%zu of %zu %s events never reached %s%s.events", w.missing, s->n_ids[ctx],
                     contexts[ctx], prefix, contexts[ctx]);
    }
}

/* ---- the hand-over ------------------------------------------------------------------------ */

/* A runs everything, B stands by; SIGTERM to A; B runs everything, and what is sent to it is
 * projected (and relayed, with Kafka). */
static void hand_over(const char *const *env, bool kafka)
{
    assert_int_equal(ts_app_start(&a, env), 0);
    roles r;
    roles_of(&a, &r);
    size_t n = r.n;
    assert_true(n >= 6); /* projections, local copies, the saga */
    if (kafka) {
        /* The relay of each context is one of the leased subscribers readiness shows. */
        for (size_t i = 0; i < N_CONTEXTS; i++) {
            char name[64];
            snprintf(name, sizeof name, "%s.kafka_relay", contexts[i]);
            bool listed = false;
            for (size_t k = 0; k < r.n; k++)
                listed = listed || strcmp(r.name[k], name) == 0;
            if (!listed)
                fail_msg("/health/ready does not list %s among the subscribers", name);
        }
    }
    wait_all(&a, "running", n, "the first process");
    assert_int_equal(ts_app_start(&b, env), 0);
    wait_all(&b, "standby", n, "the second process");
    roles_of(&a, &r);
    wait_leader_gauges(&a, &r, kafka, 1);
    wait_leader_gauges(&b, &r, kafka, 0);

    /* Sent to B, handled by A's subscribers. */
    served before;
    serve(&b, &before);
    if (kafka)
        wait_arrived(&before);

    long long t0 = ts_now_ms();
    ts_app_stop_clean(&a);
    long long stopped = ts_now_ms();
    wait_all(&b, "running", n, "the surviving process");
    long long t1 = ts_now_ms();
    print_message("hand-over: every subscriber ran in the survivor %lld ms after SIGTERM (the "
                  "first process took %lld ms to stop)\n",
                  t1 - t0, stopped - t0);
    roles_of(&b, &r);
    wait_leader_gauges(&b, &r, kafka, 1);

    /* Sent to B, handled by B's subscribers now. */
    served after;
    serve(&b, &after);
    check_once(&b, &before);
    if (kafka)
        wait_arrived(&after);
    ts_app_stop_clean(&b);
}

static void test_sigterm_hands_subscribers_over(void **state)
{
    (void)state;
    const char *const env[] = {"APP_KAFKA_ENABLED=false", NULL};
    hand_over(env, false);
}

static void test_sigterm_hands_the_kafka_relay_over(void **state)
{
    (void)state;
    brokers = getenv("APP_TEST_KAFKA_BROKERS");
    if (!brokers || !*brokers) {
        print_message("skipped: APP_TEST_KAFKA_BROKERS is not set (test/run.sh sets it when it "
                      "can start a Kafka broker)\n");
        skip();
    }
    snprintf(prefix, sizeof prefix, "handover-%ld-%d.", (long)time(NULL), (int)getpid());
    char enabled[] = "APP_KAFKA_ENABLED=true", broker_list[160], topic_prefix[96];
    snprintf(broker_list, sizeof broker_list, "APP_KAFKA_BROKERS=%s", brokers);
    snprintf(topic_prefix, sizeof topic_prefix, "APP_KAFKA_TOPIC_PREFIX=%s", prefix);
    const char *const env[] = {enabled, broker_list, topic_prefix, NULL};
    hand_over(env, true);
}

/* Each test stops its apps and checks the stops; this only cleans up after a failed one. */
static int kill_leftovers(void **state)
{
    (void)state;
    ts_app_end(&a);
    ts_app_end(&b);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_sigterm_hands_subscribers_over, kill_leftovers),
        cmocka_unit_test_teardown(test_sigterm_hands_the_kafka_relay_over, kill_leftovers),
    };
    return cmocka_run_group_tests_name("e2e hand-over", tests, NULL, NULL);
}
