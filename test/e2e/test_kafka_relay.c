/* End to end: ./app with kafka.enabled against the REAL broker that test/run.sh starts
 * (APP_TEST_KAFKA_BROKERS; without it every test is skipped, saying why). Events reach
 * <prefix>user.events keyed by stream with their headers, one aggregate's events in order;
 * a broker outage neither fails commands nor readiness, and its backlog drains; SIGKILL
 * mid-relay loses nothing. The broker is stopped and started with
 * `sh deploy/local/kafka.sh stop-broker|start-broker $APP_TEST_KAFKA_RUN_DIR`. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/uuid.h"
#include "test/support/http_client.h"
#include "test/support/kafka_reader.h"
#include "test/support/services.h"

#define MAX_MSGS 20000
#define MAX_IDS  2000

static const char *brokers;
static ts_app app;
static char prefix[64];
static char user_topic[128];
static char app_env[8][160];
static const char *app_env_list[9];

/* ---- the app ---------------------------------------------------------------------- */

static tc_response call(const char *method, const char *path, const char *const *headers,
                        const char *body)
{
    tc_response r;
    memset(&r, 0, sizeof r);
    int rc =
        tc_http("127.0.0.1", app.port, method, path, headers, body, body ? strlen(body) : 0, &r);
    if (rc != 0)
        fail_msg("%s %s: %s", method, path, r.error);
    return r;
}

static void start_app(void)
{
    assert_int_equal(ts_app_start(&app, app_env_list), 0);
}

static int group_setup(void **state)
{
    (void)state;
    brokers = getenv("APP_TEST_KAFKA_BROKERS");
    if (!brokers || !*brokers)
        return 0;
    snprintf(prefix, sizeof prefix, "e2e-%ld-%d.", (long)time(NULL), (int)getpid());
    snprintf(user_topic, sizeof user_topic, "%suser.events", prefix);
    /* Short timeouts so an outage shows (and ends) within seconds. */
    snprintf(app_env[0], sizeof app_env[0], "APP_KAFKA_ENABLED=true");
    snprintf(app_env[1], sizeof app_env[1], "APP_KAFKA_BROKERS=%s", brokers);
    snprintf(app_env[2], sizeof app_env[2], "APP_KAFKA_TOPIC_PREFIX=%s", prefix);
    snprintf(app_env[3], sizeof app_env[3], "APP_KAFKA_MESSAGE_TIMEOUT_MS=3000");
    snprintf(app_env[4], sizeof app_env[4], "APP_KAFKA_BREAKER_FAILURE_THRESHOLD=2");
    snprintf(app_env[5], sizeof app_env[5], "APP_KAFKA_BREAKER_OPEN_MS=1000");
    snprintf(app_env[6], sizeof app_env[6], "APP_KAFKA_RETRY_BACKOFF_MAX_MS=1000");
    for (size_t i = 0; i < 7; i++)
        app_env_list[i] = app_env[i];
    app_env_list[7] = NULL;
    return ts_app_start(&app, app_env_list);
}

/* The last test stops the app and checks the stop; this only cleans up after a failure. */
static int group_teardown(void **state)
{
    (void)state;
    ts_app_end(&app);
    return 0;
}

/* Registers a user; returns its id. */
static void register_user(char id[UUID_STR_LEN], const char *request_id, const char *traceparent)
{
    char email[96], body[256], xrid[160], tp[160];
    char u[UUID_STR_LEN];
    uuid_v4(u);
    snprintf(email, sizeof email, "kafka.%.12s@example.com", u);
    snprintf(body, sizeof body, "{\"email\":\"%s\",\"name\":\"Kafka Test\"}", email);
    snprintf(xrid, sizeof xrid, "X-Request-ID: %s", request_id ? request_id : u);
    snprintf(tp, sizeof tp, "traceparent: %s", traceparent ? traceparent : "");
    const char *headers[] = {"Content-Type: application/json", xrid, traceparent ? tp : NULL, NULL};
    tc_response r = call("POST", "/v1/users", headers, body);
    if (r.status != 201)
        fail_msg("register: %d %s", r.status, r.body);
    cJSON *j = tc_json(&r);
    snprintf(id, UUID_STR_LEN, "%s", cJSON_GetObjectItem(j, "id")->valuestring);
    cJSON_Delete(j);
    tc_response_free(&r);
}

/* The user's audit trail: event ids (and the stream id) in version order. */
static size_t user_events(const char *id, char ids[][UUID_STR_LEN], size_t max, char *stream,
                          size_t stream_size)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/users/%s/events", id);
    tc_response r = call("GET", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    cJSON *j = tc_json(&r);
    const cJSON *items = cJSON_GetObjectItem(j, "items");
    size_t n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, items)
    {
        if (n < max)
            snprintf(ids[n++], UUID_STR_LEN, "%s", cJSON_GetObjectItem(it, "eventId")->valuestring);
        if (stream)
            snprintf(stream, stream_size, "%s", cJSON_GetObjectItem(it, "streamId")->valuestring);
    }
    cJSON_Delete(j);
    tc_response_free(&r);
    return n;
}

/* ---- the topic -------------------------------------------------------------------- */

typedef struct msg {
    char key[80];
    char event_id[UUID_STR_LEN];
    char type[80];
    char schema_version[8];
    char correlation[160];
    char causation[160];
    char traceparent[80];
    char content_type[40];
    int32_t partition;
    int64_t offset;
    int64_t version;
    char value_event_id[UUID_STR_LEN];
} msg;

static msg msgs[MAX_MSGS];
static size_t n_msgs;

/* Reads the whole topic from the beginning (every partition) until nothing new comes for
 * idle_ms; false when the topic does not exist yet. */
static bool consume_topic(const char *topic, int idle_ms)
{
    n_msgs = 0;
    rd_kafka_t *c = tk_reader_new(brokers, topic);
    long long last = ts_now_ms();
    while (c && ts_now_ms() - last < idle_ms) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (!m)
            continue;
        if (m->err || n_msgs >= MAX_MSGS) {
            rd_kafka_message_destroy(m);
            continue;
        }
        last = ts_now_ms();
        msg *g = &msgs[n_msgs++];
        memset(g, 0, sizeof *g);
        g->partition = m->partition;
        g->offset = m->offset;
        snprintf(g->key, sizeof g->key, "%.*s", (int)m->key_len, (const char *)m->key);
        tk_header(m, "event-id", g->event_id, sizeof g->event_id);
        tk_header(m, "event-type", g->type, sizeof g->type);
        tk_header(m, "schema-version", g->schema_version, sizeof g->schema_version);
        tk_header(m, "correlation-id", g->correlation, sizeof g->correlation);
        tk_header(m, "causation-id", g->causation, sizeof g->causation);
        tk_header(m, "traceparent", g->traceparent, sizeof g->traceparent);
        tk_header(m, "content-type", g->content_type, sizeof g->content_type);
        cJSON *j = cJSON_ParseWithLength(m->payload, m->len);
        if (j) {
            const cJSON *e = cJSON_GetObjectItem(j, "eventId");
            if (cJSON_IsString(e))
                snprintf(g->value_event_id, sizeof g->value_event_id, "%s", e->valuestring);
            g->version = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "version"));
        }
        cJSON_Delete(j);
        rd_kafka_message_destroy(m);
    }
    bool exists = c != NULL;
    tk_reader_free(c);
    return exists;
}

static size_t occurrences(const char *event_id)
{
    size_t n = 0;
    for (size_t i = 0; i < n_msgs; i++)
        n += strcmp(msgs[i].event_id, event_id) == 0;
    return n;
}

typedef struct expected {
    char (*ids)[UUID_STR_LEN];
    size_t n;
    size_t missing;
} expected;

static bool all_arrived(void *arg)
{
    expected *w = arg;
    if (!consume_topic(user_topic, 1500))
        return false;
    w->missing = 0;
    for (size_t i = 0; i < w->n; i++)
        w->missing += occurrences(w->ids[i]) == 0;
    return w->missing == 0;
}

static void wait_arrived(char (*ids)[UUID_STR_LEN], size_t n, int timeout_ms)
{
    expected w = {ids, n, n};
    if (ts_wait_until(all_arrived, &w, timeout_ms) != 0) {
        ts_app_dump_log(&app, 6000);
        fail_msg("%zu of %zu events never reached %s", w.missing, n, user_topic);
    }
}

/* ---- readiness -------------------------------------------------------------------- */

/* GET /health/ready: must be 200; returns the kafka check's status ("" when absent). */
static void ready_kafka(char *out, size_t size)
{
    tc_response r = call("GET", "/health/ready", NULL, NULL);
    if (r.status != 200)
        fail_msg("/health/ready answered %d: %s", r.status, r.body);
    cJSON *j = tc_json(&r);
    const cJSON *k = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "checks"), "kafka");
    const cJSON *st = cJSON_GetObjectItem(k, "status");
    snprintf(out, size, "%s", cJSON_IsString(st) ? st->valuestring : "");
    cJSON_Delete(j);
    tc_response_free(&r);
}

static bool kafka_is(void *arg)
{
    char st[32];
    ready_kafka(st, sizeof st);
    return strcmp(st, arg) == 0;
}

/* Readiness shows the user relay failing, with its backlog's events and age (the broker is
 * down: what it holds is not acknowledged and grows older). */
static bool user_relay_behind(void *unused)
{
    (void)unused;
    tc_response r = call("GET", "/health/ready", NULL, NULL);
    cJSON *j = tc_json(&r);
    const cJSON *relay =
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "subscriptions"), "user.kafka_relay");
    const cJSON *status = cJSON_GetObjectItem(relay, "status");
    const cJSON *events = cJSON_GetObjectItem(relay, "lagEvents");
    const cJSON *seconds = cJSON_GetObjectItem(relay, "lagSeconds");
    bool behind = cJSON_IsString(status) && strcmp(status->valuestring, "failing") == 0 &&
                  cJSON_IsNumber(events) && events->valuedouble >= 40 && cJSON_IsNumber(seconds) &&
                  seconds->valuedouble > 0;
    cJSON_Delete(j);
    tc_response_free(&r);
    return behind;
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_event_reaches_topic_with_headers(void **state)
{
    (void)state;
    ts_need_kafka();
    char id[UUID_STR_LEN], ev[1][UUID_STR_LEN], stream[96];
    const char *tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    register_user(id, "req-kafka-e2e-1", tp);
    assert_int_equal(user_events(id, ev, 1, stream, sizeof stream), 1);
    wait_arrived(ev, 1, 30000);
    assert_int_equal(occurrences(ev[0]), 1);
    const msg *m = NULL;
    for (size_t i = 0; i < n_msgs; i++)
        if (strcmp(msgs[i].event_id, ev[0]) == 0)
            m = &msgs[i];
    assert_non_null(m);
    assert_string_equal(m->key, stream);
    assert_string_equal(m->value_event_id, ev[0]);
    assert_string_equal(m->type, "user.user.registered");
    assert_true(atoi(m->schema_version) >= 1);
    assert_string_equal(m->correlation, "req-kafka-e2e-1");
    assert_true(strlen(m->causation) > 0);
    assert_string_equal(m->traceparent, tp);
    assert_string_equal(m->content_type, "application/json");
    assert_int_equal(m->version, 1);

    char st[32];
    ready_kafka(st, sizeof st);
    assert_string_equal(st, "up");
    tc_response r = call("GET", "/metrics", NULL, NULL);
    assert_non_null(strstr(r.body, "kafka_relay_delivered_total{context=\"user\"}"));
    assert_non_null(strstr(r.body, "kafka_relay_lag_events{context=\"user\"}"));
    tc_response_free(&r);
}

static void test_aggregate_events_in_order(void **state)
{
    (void)state;
    ts_need_kafka();
    char id[UUID_STR_LEN], ev[8][UUID_STR_LEN], stream[96];
    register_user(id, NULL, NULL);
    for (int i = 0; i < 4; i++) {
        char path[128], body[128], u[UUID_STR_LEN];
        uuid_v4(u);
        snprintf(path, sizeof path, "/v1/users/%s/email", id);
        snprintf(body, sizeof body, "{\"email\":\"moved.%.12s@example.com\"}", u);
        const char *const h[] = {"Content-Type: application/json", NULL};
        tc_response r = call("PUT", path, h, body);
        assert_int_equal(r.status, 200);
        tc_response_free(&r);
    }
    char path[128];
    snprintf(path, sizeof path, "/v1/users/%s/deactivate", id);
    tc_response r = call("POST", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    tc_response_free(&r);
    size_t n = user_events(id, ev, 8, stream, sizeof stream);
    assert_int_equal(n, 6);
    wait_arrived(ev, n, 30000);
    int32_t partition = -1;
    int64_t last_offset = -1, last_version = 0;
    for (size_t i = 0; i < n_msgs; i++) {
        if (strcmp(msgs[i].key, stream) != 0)
            continue;
        if (partition < 0)
            partition = msgs[i].partition;
        assert_int_equal(msgs[i].partition, partition);
        assert_true(msgs[i].offset > last_offset);
        assert_int_equal(msgs[i].version, last_version + 1);
        last_offset = msgs[i].offset;
        last_version = msgs[i].version;
    }
    assert_int_equal(last_version, 6);
}

static void test_broker_outage(void **state)
{
    (void)state;
    ts_need_kafka();
    static char ids[40][UUID_STR_LEN];
    char users[40][UUID_STR_LEN];
    assert_int_equal(ts_kafka_ctl("stop-broker"), 0);
    long long t0 = ts_now_ms();
    for (int i = 0; i < 40; i++)
        register_user(users[i], NULL, NULL); /* commands do not wait for Kafka */
    long long took = ts_now_ms() - t0;
    print_message("40 registrations with the broker down took %lld ms\n", took);
    /* Ready stays 200 throughout; Kafka shows as degraded. */
    if (ts_wait_until(kafka_is, "degraded", 30000) != 0) {
        ts_app_dump_log(&app, 4000);
        fail_msg("readiness never reported kafka as degraded");
    }
    tc_response r = call("GET", "/metrics", NULL, NULL);
    assert_non_null(strstr(r.body, "kafka_relay_lag_seconds{context=\"user\"}"));
    tc_response_free(&r);
    if (ts_wait_until(user_relay_behind, NULL, TS_HANG_GUARD_MS) != 0)
        fail_msg("readiness never showed user.kafka_relay failing with a backlog and its age");

    assert_int_equal(ts_kafka_ctl("start-broker"), 0);
    t0 = ts_now_ms();
    for (int i = 0; i < 40; i++)
        assert_int_equal(user_events(users[i], &ids[i], 1, NULL, 0), 1);
    wait_arrived(ids, 40, 90000);
    print_message("backlog drained %lld ms after the broker was started\n", ts_now_ms() - t0);
    size_t dups = 0;
    for (int i = 0; i < 40; i++)
        dups += occurrences(ids[i]) - 1;
    print_message("%zu duplicates (dropped by event id)\n", dups);
    assert_int_equal(ts_wait_until(kafka_is, "up", 30000), 0);
}

/* The events of an order's whole path go to <prefix>order.events, in order per order. */
static bool order_settled(void *arg)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/orders/%s", (const char *)arg);
    tc_response r = call("GET", path, NULL, NULL);
    cJSON *j = r.status == 200 ? tc_json(&r) : NULL;
    const cJSON *st = cJSON_GetObjectItem(j, "status");
    bool done = cJSON_IsString(st) && strcmp(st->valuestring, "pending") != 0;
    cJSON_Delete(j);
    tc_response_free(&r);
    return done;
}

static void test_order_events(void **state)
{
    (void)state;
    ts_need_kafka();
    char user[UUID_STR_LEN], sku[40], body[512], u[UUID_STR_LEN];
    register_user(user, NULL, NULL);
    uuid_v4(u);
    snprintf(sku, sizeof sku, "KAFKA-%.8s", u);
    for (char *p = sku; *p; p++)
        *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    snprintf(body, sizeof body,
             "{\"sku\":\"%s\",\"name\":\"Relay\",\"price\":{\"amount\":1250,\"currency\":"
             "\"EUR\"},\"stock\":5}",
             sku);
    const char *const h[] = {"Content-Type: application/json", NULL};
    tc_response r = call("POST", "/v1/products", h, body);
    if (r.status != 201)
        fail_msg("POST /v1/products: %d %s (the inventory context must be served)", r.status,
                 r.body ? r.body : "");
    tc_response_free(&r);
    snprintf(body, sizeof body,
             "{\"customerId\":\"%s\",\"lines\":[{\"sku\":\"%s\",\"quantity\":2}]}", user, sku);
    r = call("POST", "/v1/orders", h, body);
    assert_int_equal(r.status, 202);
    cJSON *j = tc_json(&r);
    char order[UUID_STR_LEN];
    snprintf(order, sizeof order, "%s", cJSON_GetObjectItem(j, "id")->valuestring);
    cJSON_Delete(j);
    tc_response_free(&r);
    assert_int_equal(ts_wait_until(order_settled, order, 15000), 0);

    char path[128];
    snprintf(path, sizeof path, "/v1/orders/%s/events", order);
    r = call("GET", path, NULL, NULL);
    assert_int_equal(r.status, 200);
    j = tc_json(&r);
    static char ids[16][UUID_STR_LEN];
    char stream[96] = "";
    size_t n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(j, "items"))
    {
        if (n < 16)
            snprintf(ids[n++], UUID_STR_LEN, "%s", cJSON_GetObjectItem(it, "eventId")->valuestring);
        snprintf(stream, sizeof stream, "%s", cJSON_GetObjectItem(it, "streamId")->valuestring);
    }
    cJSON_Delete(j);
    tc_response_free(&r);
    assert_true(n >= 2); /* placed, then confirmed or cancelled */

    char saved[128];
    snprintf(saved, sizeof saved, "%s", user_topic);
    snprintf(user_topic, sizeof user_topic, "%sorder.events", prefix);
    wait_arrived(ids, n, 30000);
    snprintf(user_topic, sizeof user_topic, "%s", saved);
    int64_t last = 0;
    for (size_t i = 0; i < n_msgs; i++) {
        if (strcmp(msgs[i].key, stream) != 0)
            continue;
        assert_int_equal(msgs[i].version, last + 1);
        assert_true(strncmp(msgs[i].type, "order.", 6) == 0);
        last = msgs[i].version;
    }
    assert_int_equal(last, (int64_t)n);
}

typedef struct writer {
    atomic_bool stop;
    char users[MAX_IDS][UUID_STR_LEN];
    atomic_size_t n;
} writer;

/* Registers users until told to stop or the app goes away; keeps the ids it got 201 for. */
static void *writer_main(void *p)
{
    writer *w = p;
    while (!atomic_load(&w->stop) && atomic_load(&w->n) < MAX_IDS) {
        char body[256], u[UUID_STR_LEN];
        uuid_v4(u);
        snprintf(body, sizeof body, "{\"email\":\"kill.%.12s@example.com\",\"name\":\"K\"}", u);
        const char *const h[] = {"Content-Type: application/json", NULL};
        tc_response r;
        memset(&r, 0, sizeof r);
        int rc = tc_http("127.0.0.1", app.port, "POST", "/v1/users", h, body, strlen(body), &r);
        if (rc == 0 && r.status == 201) {
            cJSON *j = tc_json(&r);
            size_t i = atomic_load(&w->n);
            snprintf(w->users[i], UUID_STR_LEN, "%s", cJSON_GetObjectItem(j, "id")->valuestring);
            atomic_store(&w->n, i + 1);
            cJSON_Delete(j);
        }
        tc_response_free(&r);
        if (rc != 0)
            break;
    }
    return NULL;
}

static void test_sigkill_loses_nothing(void **state)
{
    (void)state;
    ts_need_kafka();
    static writer w;
    atomic_init(&w.stop, false);
    atomic_init(&w.n, 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, writer_main, &w), 0);
    while (atomic_load(&w.n) < 150)
        usleep(10000);
    ts_app_stop(&app, SIGKILL); /* mid-relay: events committed, some not yet acknowledged */
    atomic_store(&w.stop, true);
    pthread_join(th, NULL);
    size_t n = atomic_load(&w.n);
    print_message("%zu users registered before SIGKILL\n", n);

    start_app();
    static char ids[MAX_IDS][UUID_STR_LEN];
    for (size_t i = 0; i < n; i++)
        assert_int_equal(user_events(w.users[i], &ids[i], 1, NULL, 0), 1);
    wait_arrived(ids, n, 60000);
    size_t dups = 0;
    for (size_t i = 0; i < n; i++)
        dups += occurrences(ids[i]) - 1;
    print_message("all %zu events present; %zu produced twice (at least once)\n", n, dups);
}

/* Runs `app --config config/app.yaml ARGS` with the test's environment; its output goes into
 * out. Returns the exit status. */
static int run_cli(const char *args, char *out, size_t size)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s --config config/app.yaml %s", ts_app_binary(), args);
    int status = ts_run(cmd, out, size);
    assert_true(status >= 0);
    return status;
}

typedef struct dlq_wait {
    const char *event_id;
    char out[8192];
} dlq_wait;

static bool dlq_lists(void *arg)
{
    dlq_wait *d = arg;
    return run_cli("dlq list", d->out, sizeof d->out) == 0 && strstr(d->out, d->event_id);
}

/* An event over kafka.max_message_bytes goes to the dead letters (the relay goes on); `dlq
 * list` shows it, `dlq redrive ID` sends it once the limit allows. */
static void test_dead_letter_commands(void **state)
{
    (void)state;
    ts_need_kafka();
    ts_app_stop_clean(&app);
    const char *small[9];
    memcpy(small, app_env_list, sizeof small);
    small[7] = "APP_KAFKA_MAX_MESSAGE_BYTES=1000";
    small[8] = NULL;
    assert_int_equal(ts_app_start(&app, small), 0);

    /* A long name, email and request id make the event about 1.1 kB. */
    char body[1024], name[201], local[61], domain[61], rid[129], u[UUID_STR_LEN];
    memset(name, 'N', 200);
    name[200] = '\0';
    uuid_v4(u);
    memset(local, 'a', 60);
    memcpy(local, u, 36); /* unique */
    local[60] = '\0';
    memset(domain, 'b', 60);
    domain[60] = '\0';
    memset(rid, 'r', 128);
    rid[128] = '\0';
    snprintf(body, sizeof body, "{\"email\":\"%s@%s.example.com\",\"name\":\"%s\"}", local, domain,
             name);
    char xrid[160];
    snprintf(xrid, sizeof xrid, "X-Request-ID: %s", rid);
    const char *const h[] = {"Content-Type: application/json", xrid, NULL};
    tc_response r = call("POST", "/v1/users", h, body);
    assert_int_equal(r.status, 201);
    cJSON *j = tc_json(&r);
    char big_user[UUID_STR_LEN], small_user[UUID_STR_LEN];
    snprintf(big_user, sizeof big_user, "%s", cJSON_GetObjectItem(j, "id")->valuestring);
    cJSON_Delete(j);
    tc_response_free(&r);
    register_user(small_user, NULL, NULL);
    char ids[2][UUID_STR_LEN];
    assert_int_equal(user_events(big_user, &ids[0], 1, NULL, 0), 1);
    assert_int_equal(user_events(small_user, &ids[1], 1, NULL, 0), 1);
    wait_arrived(&ids[1], 1, 30000); /* the relay went on */

    setenv("APP_KAFKA_BROKERS", brokers, 1);
    setenv("APP_KAFKA_TOPIC_PREFIX", prefix, 1);
    static dlq_wait d;
    d.event_id = ids[0];
    if (ts_wait_until(dlq_lists, &d, 20000) != 0)
        fail_msg("dlq list never showed %s:\n%s", ids[0], d.out);
    print_message("%s", d.out);
    assert_non_null(strstr(d.out, "MSG_SIZE_TOO_LARGE"));
    assert_int_equal(occurrences(ids[0]), 0);
    char dlq_topic[160];
    snprintf(dlq_topic, sizeof dlq_topic, "%suser.events.dlq", prefix);
    assert_true(consume_topic(dlq_topic, 1500));
    assert_true(occurrences(ids[0]) >= 1);

    /* "user:<n>" from the line that names the event. */
    char id[64] = "";
    const char *line = strstr(d.out, ids[0]);
    while (line > d.out && line[-1] != '\n')
        line--;
    assert_int_equal(sscanf(line, "%63s", id), 1);
    char out[4096], args[128];
    snprintf(args, sizeof args, "dlq redrive %s", id);
    setenv("APP_KAFKA_MAX_MESSAGE_BYTES", "1000", 1);
    assert_int_equal(run_cli(args, out, sizeof out), 1); /* still too large: stays */
    assert_non_null(strstr(out, "failed"));
    unsetenv("APP_KAFKA_MAX_MESSAGE_BYTES");
    assert_int_equal(run_cli(args, out, sizeof out), 0);
    print_message("%s", out);
    assert_non_null(strstr(out, "1 sent, 0 failed"));
    wait_arrived(&ids[0], 1, 30000);
    assert_int_equal(run_cli("dlq list", out, sizeof out), 0);
    assert_null(strstr(out, ids[0]));
    unsetenv("APP_KAFKA_BROKERS");
    unsetenv("APP_KAFKA_TOPIC_PREFIX");

    ts_app_stop_clean(&app);
    start_app();
}

/* kafka_relay_delivered_total of the user context, from /metrics (0 when absent). */
static double delivered_total(void)
{
    return tc_metric("127.0.0.1", app.port, "kafka_relay_delivered_total{context=\"user\"}", 0);
}

static bool delivered_at_least(void *arg)
{
    return delivered_total() >= *(double *)arg;
}

/* Relay throughput against the real broker: a backlog built with the relay off drains at
 * this rate once it is on (printed, not asserted). */
static void test_relay_throughput(void **state)
{
    (void)state;
    ts_need_kafka();
    enum { BACKLOG = 2000 };
    ts_app_stop_clean(&app);
    const char *env[] = {"APP_KAFKA_ENABLED=false", NULL};
    assert_int_equal(ts_app_start(&app, env), 0);
    static char users[BACKLOG][UUID_STR_LEN];
    for (int i = 0; i < BACKLOG; i++)
        register_user(users[i], NULL, NULL);
    ts_app_stop_clean(&app);
    long long t0 = ts_now_ms();
    start_app();
    double want = BACKLOG;
    assert_int_equal(ts_wait_until(delivered_at_least, &want, 120000), 0);
    long long ms = ts_now_ms() - t0;
    print_message("relayed a backlog of %d events in %lld ms including start-up: %.0f events/s\n",
                  BACKLOG, ms, BACKLOG * 1000.0 / (double)(ms > 0 ? ms : 1));
    static char ids[BACKLOG][UUID_STR_LEN];
    for (int i = 0; i < BACKLOG; i += 97)
        assert_int_equal(user_events(users[i], &ids[i / 97], 1, NULL, 0), 1);
    wait_arrived(ids, (BACKLOG + 96) / 97, 30000);
}

/* Runs last: SIGTERM, exit status 0 within the grace, and no sanitizer report in the log,
 * for the instance the tests ended with. */
static void test_stops_cleanly(void **state)
{
    (void)state;
    ts_need_kafka();
    ts_app_stop_clean(&app);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_reaches_topic_with_headers),
        cmocka_unit_test(test_aggregate_events_in_order),
        cmocka_unit_test(test_order_events),
        cmocka_unit_test(test_broker_outage),
        cmocka_unit_test(test_sigkill_loses_nothing),
        cmocka_unit_test(test_dead_letter_commands),
        cmocka_unit_test(test_relay_throughput),
        cmocka_unit_test(test_stops_cleanly),
    };
    if (!getenv("APP_TEST_KAFKA_BROKERS") || !*getenv("APP_TEST_KAFKA_BROKERS"))
        fprintf(stderr, "test_kafka_relay: skipping every test: APP_TEST_KAFKA_BROKERS is not "
                        "set (test/run.sh sets it when it can start a Kafka broker)\n");
    return cmocka_run_group_tests_name("e2e kafka relay", tests, group_setup, group_teardown);
}
