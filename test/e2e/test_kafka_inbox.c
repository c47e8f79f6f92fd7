/* End to end, split deployment, against the REAL broker (APP_TEST_KAFKA_BROKERS; skipped
 * without it, saying why): a "user service" (contexts [user], its own database, its relay
 * on) writes <prefix>user.events; an "order service" (contexts [order, inventory], another
 * database, kafka.inbox on) mirrors that log into user_inbox from the topic alone. Checked:
 * a topic that does not exist yet is waited for; events arrive in order per stream; the same
 * event twice is stored once; a message that is not an event goes to the dead letters (dlq
 * list shows it, dlq redrive refuses it); a restart resumes from the stored offsets; a broker
 * stop and start loses nothing; the lag metric and the readiness entry are there; replay of
 * order.customer_directory runs over the mirrored log. */
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/uuid.h"
#include "test/support/http_client.h"
#include "test/support/services.h"

static const char *brokers;
static char prefix[64];
static char topic[128];
static char users_db[64], orders_db[64];
static char users_dsn[256], orders_dsn[256];
static ts_app users_app, orders_app;
static char users_env[10][300], orders_env[10][300];
static const char *users_env_list[11], *orders_env_list[11];

/* ---- set-up ------------------------------------------------------------------------- */

/* The harness's DSN with another database. */
static void dsn_for(char *out, size_t size, const char *db)
{
    const char *dsn = ts_env("APP_POSTGRES_DSN");
    const char *at = strstr(dsn, "dbname=");
    if (!at)
        fail_msg("APP_POSTGRES_DSN has no dbname=: %s", dsn);
    const char *end = at + strcspn(at, " ");
    snprintf(out, size, "%.*sdbname=%s%s", (int)(at - dsn), dsn, db, end);
}

static int psql(const char *dsn, const char *sql, char *out, size_t size)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "psql \"%s\" -qtAX -v ON_ERROR_STOP=1 -c \"%s\"", dsn, sql);
    return ts_run(cmd, out, size);
}

/* The number the orders service's database answers to sql. */
static long long orders_int(const char *sql)
{
    char out[512];
    if (psql(orders_dsn, sql, out, sizeof out) != 0)
        fail_msg("%s: %s", sql, out);
    char *end = NULL;
    long long v = strtoll(out, &end, 10);
    if (end == out)
        fail_msg("%s answered no number: %s", sql, out);
    return v;
}

static void set_env(char env[][300], const char **list, const char *db_dsn, const char *contexts,
                    bool inbox)
{
    size_t n = 0;
    snprintf(env[n++], 300, "APP_POSTGRES_DSN=%s", db_dsn);
    snprintf(env[n++], 300, "APP_CONTEXTS=%s", contexts);
    snprintf(env[n++], 300, "APP_KAFKA_ENABLED=true");
    snprintf(env[n++], 300, "APP_KAFKA_INBOX=%s", inbox ? "true" : "false");
    snprintf(env[n++], 300, "APP_KAFKA_BROKERS=%s", brokers);
    snprintf(env[n++], 300, "APP_KAFKA_TOPIC_PREFIX=%s", prefix);
    snprintf(env[n++], 300, "APP_KAFKA_RETRY_BACKOFF_MAX_MS=1000");
    snprintf(env[n++], 300, "APP_KAFKA_MESSAGE_TIMEOUT_MS=3000");
    snprintf(env[n++], 300, "APP_REDIS_KEY_PREFIX=%s%s:", prefix, inbox ? "orders" : "users");
    /* The order context sends the user context queries; nothing here asks them (the events
     * are the test), so its remote is an address where nothing answers. */
    if (inbox)
        snprintf(env[n++], 300, "APP_REMOTE_USER=http://127.0.0.1:1");
    for (size_t i = 0; i < n; i++)
        list[i] = env[i];
    list[n] = NULL;
}

static int group_setup(void **state)
{
    (void)state;
    brokers = getenv("APP_TEST_KAFKA_BROKERS");
    if (!brokers || !*brokers)
        return 0;
    snprintf(prefix, sizeof prefix, "inbox-%ld-%d.", (long)time(NULL), (int)getpid());
    snprintf(topic, sizeof topic, "%suser.events", prefix);
    /* Two services, two databases: the user log can reach the orders service only by Kafka. */
    snprintf(users_db, sizeof users_db, "users_%d", (int)getpid());
    snprintf(orders_db, sizeof orders_db, "orders_%d", (int)getpid());
    dsn_for(users_dsn, sizeof users_dsn, users_db);
    dsn_for(orders_dsn, sizeof orders_dsn, orders_db);
    const char *admin = getenv("APP_POSTGRES_DSN");
    char out[512], sql[128];
    for (int i = 0; i < 2; i++) {
        snprintf(sql, sizeof sql, "CREATE DATABASE %s", i ? orders_db : users_db);
        if (!admin || psql(admin, sql, out, sizeof out) != 0) {
            fprintf(stderr, "test_kafka_inbox: %s: %s\n", sql, out);
            return -1;
        }
    }
    set_env(users_env, users_env_list, users_dsn, "user", false);
    set_env(orders_env, orders_env_list, orders_dsn, "order,inventory", true);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    ts_app_end(&orders_app);
    ts_app_end(&users_app);
    return 0;
}

/* ---- the user service ------------------------------------------------------------------ */

static tc_response call(ts_app *app, const char *method, const char *path, const char *body)
{
    tc_response r;
    memset(&r, 0, sizeof r);
    const char *const h[] = {"Content-Type: application/json", NULL};
    if (tc_http("127.0.0.1", app->port, method, path, body ? h : NULL, body,
                body ? strlen(body) : 0, &r) != 0)
        fail_msg("%s %s: %s", method, path, r.error);
    return r;
}

static void register_user(char id[UUID_STR_LEN])
{
    char body[256], u[UUID_STR_LEN];
    uuid_v4(u);
    snprintf(body, sizeof body, "{\"email\":\"inbox.%.12s@example.com\",\"name\":\"Inbox\"}", u);
    tc_response r = call(&users_app, "POST", "/v1/users", body);
    if (r.status != 201)
        fail_msg("register: %d %s", r.status, r.body);
    cJSON *j = tc_json(&r);
    snprintf(id, UUID_STR_LEN, "%s", cJSON_GetObjectItem(j, "id")->valuestring);
    cJSON_Delete(j);
    tc_response_free(&r);
}

static void change_email(const char *id)
{
    char path[128], body[128], u[UUID_STR_LEN];
    uuid_v4(u);
    snprintf(path, sizeof path, "/v1/users/%s/email", id);
    snprintf(body, sizeof body, "{\"email\":\"moved.%.12s@example.com\"}", u);
    tc_response r = call(&users_app, "PUT", path, body);
    assert_int_equal(r.status, 200);
    tc_response_free(&r);
}

/* The user's event ids from its audit trail, in version order. */
static size_t user_event_ids(const char *id, char ids[][UUID_STR_LEN], size_t max)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/users/%s/events", id);
    tc_response r = call(&users_app, "GET", path, NULL);
    assert_int_equal(r.status, 200);
    cJSON *j = tc_json(&r);
    size_t n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(j, "items"))
    {
        if (n < max)
            snprintf(ids[n++], UUID_STR_LEN, "%s", cJSON_GetObjectItem(it, "eventId")->valuestring);
    }
    cJSON_Delete(j);
    tc_response_free(&r);
    return n;
}

/* ---- the inbox ----------------------------------------------------------------------- */

typedef struct wanted {
    char (*ids)[UUID_STR_LEN];
    size_t n;
    long long missing;
} wanted;

static bool all_in_inbox(void *arg)
{
    wanted *w = arg;
    char sql[8192];
    size_t used = (size_t)snprintf(sql, sizeof sql,
                                   "SELECT %zu - count(DISTINCT event_id) FROM user_inbox.events"
                                   " WHERE event_id IN (",
                                   w->n);
    for (size_t i = 0; i < w->n && used < sizeof sql - 64; i++)
        used += (size_t)snprintf(sql + used, sizeof sql - used, "%s'%s'", i ? "," : "", w->ids[i]);
    snprintf(sql + used, sizeof sql - used, ")");
    char out[512];
    if (psql(orders_dsn, sql, out, sizeof out) != 0)
        return false; /* the inbox schema may not exist yet */
    w->missing = strtoll(out, NULL, 10);
    return w->missing == 0;
}

static void wait_in_inbox(char (*ids)[UUID_STR_LEN], size_t n)
{
    wanted w = {ids, n, (long long)n};
    if (ts_wait_until(all_in_inbox, &w, TS_HANG_GUARD_MS) != 0) {
        ts_app_dump_log(&orders_app, 6000);
        fail_msg("%lld of %zu events never reached the orders service's inbox", w.missing, n);
    }
}

static long long count_of(const char *event_id)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM user_inbox.events WHERE event_id = '%s'",
             event_id);
    return orders_int(sql);
}

/* Readiness of the orders service: the subscriptions entry name as JSON (caller frees). */
static cJSON *ready_entry(const char *name, cJSON **doc)
{
    tc_response r = call(&orders_app, "GET", "/health/ready", NULL);
    *doc = tc_json(&r);
    tc_response_free(&r);
    return cJSON_GetObjectItem(cJSON_GetObjectItem(*doc, "subscriptions"), name);
}

static bool entry_status_is(const char *name, const char *status)
{
    cJSON *doc = NULL;
    const cJSON *st = cJSON_GetObjectItem(ready_entry(name, &doc), "status");
    bool is = cJSON_IsString(st) && strcmp(st->valuestring, status) == 0;
    cJSON_Delete(doc);
    return is;
}

static bool inbox_running_caught_up(void *unused)
{
    (void)unused;
    cJSON *doc = NULL;
    const cJSON *e = ready_entry("user.kafka_inbox", &doc);
    const cJSON *st = cJSON_GetObjectItem(e, "status");
    const cJSON *lag = cJSON_GetObjectItem(e, "lagEvents");
    const cJSON *cp = cJSON_GetObjectItem(e, "checkpoint");
    bool ok = cJSON_IsString(st) && strcmp(st->valuestring, "running") == 0 &&
              cJSON_IsNumber(lag) && lag->valuedouble == 0 && cJSON_IsNumber(cp) &&
              cp->valuedouble > 0;
    cJSON_Delete(doc);
    return ok;
}

static bool inbox_failing(void *unused)
{
    (void)unused;
    return entry_status_is("user.kafka_inbox", "failing");
}

/* The local copy fed by the mirrored log has handled all of it. */
static bool directory_caught_up(void *unused)
{
    (void)unused;
    long long head = orders_int("SELECT coalesce(max(global_position), 0) FROM user_inbox.events");
    cJSON *doc = NULL;
    const cJSON *cp =
        cJSON_GetObjectItem(ready_entry("order.customer_directory", &doc), "checkpoint");
    bool ok = head > 0 && cJSON_IsNumber(cp) && (long long)cp->valuedouble == head;
    cJSON_Delete(doc);
    return ok;
}

/* ---- a raw producer, for what the relay never writes ------------------------------------ */

static void produce_raw(const char *key, const char *const *values, size_t n)
{
    char why[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, why, sizeof why);
    /* The relay's partitioner: the same key lands on the same partition. */
    rd_kafka_conf_set(conf, "partitioner", "murmur2_random", why, sizeof why);
    rd_kafka_conf_set(conf, "log_level", "3", why, sizeof why);
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    if (!p)
        fail_msg("cannot make a producer: %s", why);
    for (size_t i = 0; i < n; i++) {
        rd_kafka_resp_err_t e =
            rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)),
                              RD_KAFKA_V_VALUE((void *)(uintptr_t)values[i], strlen(values[i])),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        assert_int_equal(e, RD_KAFKA_RESP_ERR_NO_ERROR);
    }
    assert_int_equal(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_destroy(p);
}

static void event_json(char *out, size_t size, const char *event_id, const char *stream,
                       int version)
{
    snprintf(out, size,
             "{\"eventId\":\"%s\",\"type\":\"user.inbox_test.sent\",\"schemaVersion\":1,"
             "\"streamId\":\"%s\",\"version\":%d,\"position\":1,\"data\":{\"n\":%d},"
             "\"metadata\":{},\"recordedAt\":\"2026-01-01T00:00:00.000000Z\"}",
             event_id, stream, version, version);
}

/* Runs `app --config config/app.yaml ARGS` as the orders service; output into out. */
static int orders_cli(const char *args, char *out, size_t size)
{
    char cmd[4096];
    size_t used = 0;
    for (size_t i = 0; orders_env_list[i]; i++)
        used += (size_t)snprintf(cmd + used, sizeof cmd - used, "'%s' ", orders_env_list[i]);
    snprintf(cmd + used, sizeof cmd - used, "%s --config config/app.yaml %s", ts_app_binary(),
             args);
    char full[4200];
    snprintf(full, sizeof full, "env %s", cmd);
    int status = ts_run(full, out, size);
    assert_true(status >= 0);
    return status;
}

/* ---- tests ---------------------------------------------------------------------------- */

static char first_user[UUID_STR_LEN];

/* The orders service starts before the topic exists; it waits, then takes what comes. */
static void test_topic_missing_then_events_in_order(void **state)
{
    (void)state;
    ts_need_kafka();
    assert_int_equal(ts_app_start(&orders_app, orders_env_list), 0);
    assert_true(orders_int("SELECT count(*) FROM user_inbox.events") == 0);
    cJSON *doc = NULL;
    const cJSON *e = ready_entry("user.kafka_inbox", &doc);
    if (!cJSON_IsObject(e))
        fail_msg("readiness has no user.kafka_inbox entry");
    cJSON_Delete(doc);

    assert_int_equal(ts_app_start(&users_app, users_env_list), 0);
    register_user(first_user);
    for (int i = 0; i < 4; i++)
        change_email(first_user);
    char second[UUID_STR_LEN];
    register_user(second);
    change_email(second);
    static char ids[8][UUID_STR_LEN];
    size_t n = user_event_ids(first_user, ids, 5);
    assert_int_equal(n, 5);
    n += user_event_ids(second, ids + n, 2);
    assert_int_equal(n, 7);
    wait_in_inbox(ids, n);
    /* Per stream, positions follow versions with none missing. */
    assert_int_equal(orders_int("SELECT count(*) FROM (SELECT stream_version, lag(stream_version)"
                                " OVER (PARTITION BY stream_id ORDER BY global_position) AS prev"
                                " FROM user_inbox.events) t"
                                " WHERE prev IS NOT NULL AND stream_version <> prev + 1"),
                     0);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM user_inbox.events WHERE stream_id = 'user-%s'"
             " AND stream_version BETWEEN 1 AND 5",
             first_user);
    assert_int_equal(orders_int(sql), 5);
    /* The order context's local copy reads the mirrored log through the same subscription. */
    if (ts_wait_until(directory_caught_up, NULL, TS_HANG_GUARD_MS) != 0)
        fail_msg("order.customer_directory never caught up with the mirrored user log");
}

static char dup_id[UUID_STR_LEN], bad_stream[64];

/* The same event twice is stored once; a message that is not an event goes to the dead
 * letters and the partition goes on. */
static void test_duplicates_and_non_events(void **state)
{
    (void)state;
    ts_need_kafka();
    char stream[64], marker[UUID_STR_LEN], a[512], b[512];
    uuid_v4(dup_id);
    uuid_v4(marker);
    snprintf(stream, sizeof stream, "user-%.8s", dup_id);
    snprintf(bad_stream, sizeof bad_stream, "%s", stream);
    event_json(a, sizeof a, dup_id, stream, 1);
    event_json(b, sizeof b, marker, stream, 2);
    const char *values[] = {a, a, "this is not an event", "{\"type\":\"no.id\"}", b};
    produce_raw(stream, values, 5);
    /* One key, one partition, read in order: the marker behind them means all were read. */
    char ids[1][UUID_STR_LEN];
    snprintf(ids[0], sizeof ids[0], "%s", marker);
    wait_in_inbox(ids, 1);
    assert_int_equal(count_of(dup_id), 1);
    assert_int_equal(orders_int("SELECT count(*) FROM user_inbox.dead_letters"
                                " WHERE subscriber LIKE 'kafka.inbox:%'"),
                     2);
    assert_int_equal(orders_int("SELECT count(*) FROM user_inbox.dead_letters"
                                " WHERE error = 'not json' AND attempts = 1"),
                     1);

    char out[8192];
    assert_int_equal(orders_cli("dlq list", out, sizeof out), 0);
    print_message("%s", out);
    assert_non_null(strstr(out, "not json"));
    assert_non_null(strstr(out, "no event id"));
    assert_non_null(strstr(out, "subscriber=kafka.inbox:"));
    assert_non_null(strstr(out, "2 dead letters"));
    int status = orders_cli("dlq redrive", out, sizeof out);
    print_message("%s", out);
    assert_int_equal(status, 1); /* nothing can be sent: each one fails, and says why */
    assert_non_null(strstr(out, "cannot be sent again"));
    assert_non_null(strstr(out, "0 sent, 2 failed"));
    /* Refused, not removed. */
    assert_int_equal(orders_int("SELECT count(*) FROM user_inbox.dead_letters"), 2);
}

static void test_lag_metric_and_readiness(void **state)
{
    (void)state;
    ts_need_kafka();
    if (ts_wait_until(inbox_running_caught_up, NULL, TS_HANG_GUARD_MS) != 0) {
        cJSON *doc = NULL;
        ready_entry("user.kafka_inbox", &doc);
        char *text = cJSON_PrintUnformatted(doc);
        print_message("%s\n", text ? text : "");
        free(text);
        cJSON_Delete(doc);
        fail_msg("user.kafka_inbox never showed running with lagEvents 0");
    }
    tc_response r = call(&orders_app, "GET", "/metrics", NULL);
    assert_non_null(strstr(r.body, "kafka_inbox_lag_events{source=\"user\"} 0"));
    assert_non_null(strstr(r.body, "kafka_inbox_events_total{source=\"user\"}"));
    assert_non_null(strstr(r.body, "kafka_inbox_dead_lettered_total{source=\"user\"} 2"));
    tc_response_free(&r);
}

/* A clean restart goes on from the stored offsets: nothing is read twice (a dead letter
 * read again would count a second attempt), nothing new is missed. */
static void test_restart_resumes_from_stored_offsets(void **state)
{
    (void)state;
    ts_need_kafka();
    long long before = orders_int("SELECT count(*) FROM user_inbox.events");
    ts_app_stop_clean(&orders_app);
    char users[3][UUID_STR_LEN];
    static char ids[3][UUID_STR_LEN];
    for (int i = 0; i < 3; i++) {
        register_user(users[i]);
        assert_int_equal(user_event_ids(users[i], &ids[i], 1), 1);
    }
    assert_int_equal(ts_app_start(&orders_app, orders_env_list), 0);
    wait_in_inbox(ids, 3);
    assert_int_equal(orders_int("SELECT count(*) FROM user_inbox.events"), before + 3);
    assert_int_equal(orders_int("SELECT count(*) FROM user_inbox.dead_letters WHERE attempts > 1"),
                     0);
    assert_int_equal(count_of(dup_id), 1);
}

/* A SIGKILL between a batch and its offsets cannot double or lose: they commit together. */
static void test_sigkill_loses_and_doubles_nothing(void **state)
{
    (void)state;
    ts_need_kafka();
    static char ids[30][UUID_STR_LEN];
    for (int i = 0; i < 30; i++) {
        char u[UUID_STR_LEN];
        register_user(u);
        assert_int_equal(user_event_ids(u, &ids[i], 1), 1);
        if (i == 10)
            ts_app_stop(&orders_app, SIGKILL);
    }
    assert_int_equal(ts_app_start(&orders_app, orders_env_list), 0);
    wait_in_inbox(ids, 30);
    assert_int_equal(
        orders_int("SELECT count(*) - count(DISTINCT event_id) FROM user_inbox.events"), 0);
    assert_int_equal(orders_int("SELECT count(*) FROM user_inbox.dead_letters WHERE attempts > 1"),
                     0);
}

/* Stopping the broker shows in readiness; what the user service writes meanwhile arrives
 * after it is back. */
static void test_broker_outage_loses_nothing(void **state)
{
    (void)state;
    ts_need_kafka();
    assert_int_equal(ts_kafka_ctl("stop-broker"), 0);
    static char ids[10][UUID_STR_LEN];
    for (int i = 0; i < 10; i++) {
        char u[UUID_STR_LEN];
        register_user(u); /* commands do not wait for Kafka */
        assert_int_equal(user_event_ids(u, &ids[i], 1), 1);
    }
    bool failing = ts_wait_until(inbox_failing, NULL, TS_HANG_GUARD_MS) == 0;
    tc_response r = call(&orders_app, "GET", "/health/ready", NULL);
    int ready = r.status;
    tc_response_free(&r);
    /* Back before any verdict, so that the tests after this one have their broker. */
    assert_int_equal(ts_kafka_ctl("start-broker"), 0);
    if (!failing)
        fail_msg("readiness never showed user.kafka_inbox failing while the broker was down");
    assert_int_equal(ready, 200); /* Kafka never takes the service out of rotation */
    wait_in_inbox(ids, 10);
    if (ts_wait_until(inbox_running_caught_up, NULL, TS_HANG_GUARD_MS) != 0)
        fail_msg("user.kafka_inbox never recovered after the broker came back");
}

/* replay rebuilds the local copy from the mirrored log while the service runs. */
static void test_replay_over_mirrored_log(void **state)
{
    (void)state;
    ts_need_kafka();
    char out[8192];
    int status = orders_cli("replay --projection order.customer_directory", out, sizeof out);
    print_message("%s", out);
    if (status != 0)
        fail_msg("replay exited %d:\n%s", status, out);
    assert_non_null(strstr(out, "order.customer_directory"));
    if (ts_wait_until(directory_caught_up, NULL, TS_HANG_GUARD_MS) != 0)
        fail_msg("order.customer_directory is behind the mirrored log after the replay");
}

static void test_orders_service_stops_cleanly(void **state)
{
    (void)state;
    ts_need_kafka();
    ts_app_stop_clean(&orders_app);
}

static void test_users_service_stops_cleanly(void **state)
{
    (void)state;
    ts_need_kafka();
    ts_app_stop_clean(&users_app);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topic_missing_then_events_in_order),
        cmocka_unit_test(test_duplicates_and_non_events),
        cmocka_unit_test(test_lag_metric_and_readiness),
        cmocka_unit_test(test_restart_resumes_from_stored_offsets),
        cmocka_unit_test(test_sigkill_loses_and_doubles_nothing),
        cmocka_unit_test(test_broker_outage_loses_nothing),
        cmocka_unit_test(test_replay_over_mirrored_log),
        cmocka_unit_test(test_orders_service_stops_cleanly),
        cmocka_unit_test(test_users_service_stops_cleanly),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
