/* The Kafka relay against librdkafka's mock cluster and the harness's real PostgreSQL
 * (APP_POSTGRES_DSN): order, headers, retried transient errors, dead letters (topic, table,
 * redrive), a broker outage survived with its backlog drained, one relay per context. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <cjson/cJSON.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adapters/kafka/kfk_dlq.h"
#include "adapters/kafka/kfk_relay.h"
#include "adapters/postgres/pg_event_store.h"
#include "adapters/postgres/pg_migrate.h"
#include "core/uuid.h"
#include "kernel/upcast.h"
#include "test/support/services.h"

#define CTX         "kfkmock" /* schema kfkmock_ctx */
#define PARTITIONS  3
#define MAX_MSGS    2000
#define API_PRODUCE 0 /* the Kafka protocol ApiKey of Produce requests */

static const char *dsn;
static pg_event_store *store;
static es_store port;
static rd_kafka_t *mock_owner;
static rd_kafka_mock_cluster_t *mock;
static char prefix[64];
static char topic[128], dlq_topic[128];
static int test_no;
static kfk_relay *relays[2];   /* freed by teardown when a failed test left them running */
static upcast_store *upcaster; /* in front of the store when a test wants it; teardown frees */

/* ---- fixtures ------------------------------------------------------------------------- */

static void exec_sql(const char *sql)
{
    PGconn *conn = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(pg_connect(dsn, 5, &conn, &err), 0);
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQerrorMessage(conn));
    PQclear(res);
    PQfinish(conn);
}

/* Every test gets a fresh schema, a fresh mock cluster and its own topic names. */
static int setup(void **state)
{
    (void)state;
    exec_sql("DROP SCHEMA IF EXISTS " CTX "_ctx CASCADE");
    pg_event_store_options opts = PG_EVENT_STORE_OPTIONS_INIT;
    opts.dsn = dsn;
    app_error err = APP_ERROR_INIT;
    if (pg_event_store_new(&store, &opts, &err) != 0 ||
        pg_migrate_context(pg_event_store_pool(store), CTX "_ctx", pg_store_migrations, NULL, NULL,
                           &err) != 0) {
        fprintf(stderr, "store: %s: %s\n", err.message, err.detail);
        return -1;
    }
    port = pg_event_store_port(store);

    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof errstr);
    mock_owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    if (!mock_owner)
        return -1;
    mock = rd_kafka_mock_cluster_new(mock_owner, 1);
    if (!mock)
        return -1;
    snprintf(prefix, sizeof prefix, "t%d-%ld.", ++test_no, (long)time(NULL));
    snprintf(topic, sizeof topic, "%s" CTX ".events", prefix);
    snprintf(dlq_topic, sizeof dlq_topic, "%s" CTX ".events.dlq", prefix);
    rd_kafka_mock_topic_create(mock, topic, PARTITIONS, 1);
    rd_kafka_mock_topic_create(mock, dlq_topic, 1, 1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < 2; i++) {
        kfk_relay_free(relays[i]);
        relays[i] = NULL;
    }
    rd_kafka_mock_cluster_destroy(mock);
    rd_kafka_destroy(mock_owner);
    upcast_store_free(upcaster);
    upcaster = NULL;
    pg_event_store_free(store);
    mock = NULL;
    mock_owner = NULL;
    store = NULL;
    return 0;
}

static kfk_relay_options relay_options(void)
{
    static const char *const contexts[] = {CTX};
    kfk_relay_options o = {KFK_OPTIONS_INIT, &port, contexts, 1, NULL};
    o.kafka.brokers = rd_kafka_mock_cluster_bootstraps(mock);
    o.kafka.topic_prefix = prefix;
    o.kafka.client_id = "test_kafka_mock";
    o.kafka.message_timeout_ms = 2000;
    o.kafka.retry_backoff_ms = 50;
    o.kafka.retry_backoff_max_ms = 500;
    o.kafka.breaker_failure_threshold = 2;
    o.kafka.breaker_open_ms = 500;
    o.kafka.batch_size = 100;
    o.kafka.poll_interval_ms = 100;
    o.kafka.lead_interval_ms = 200;
    return o;
}

static kfk_relay *relay_start(const kfk_relay_options *o)
{
    kfk_relay *r = NULL;
    app_error err = APP_ERROR_INIT;
    if (kfk_relay_new(&r, o, &err) != 0 || kfk_relay_start(r, &err) != 0)
        fail_msg("relay: %s: %s", err.message, err.detail);
    relays[relays[0] ? 1 : 0] = r;
    return r;
}

static void relay_free(kfk_relay *r)
{
    for (size_t i = 0; i < 2; i++)
        if (relays[i] == r)
            relays[i] = NULL;
    kfk_relay_free(r);
}

/* ---- the log -------------------------------------------------------------------------- */

typedef struct appended {
    char id[UUID_STR_LEN];
    char stream[64];
    int64_t version;
} appended;

static appended log_[MAX_MSGS];
static size_t n_log;

/* Appends one event to stream (created on first use); data_bytes pads the data. */
static void append(const char *stream, size_t data_bytes)
{
    assert_true(n_log < MAX_MSGS);
    appended *a = &log_[n_log];
    uuid_v4(a->id);
    snprintf(a->stream, sizeof a->stream, "%s", stream);
    char *data = malloc(data_bytes + 32);
    assert_non_null(data);
    int n = snprintf(data, data_bytes + 32, "{\"n\":%zu,\"pad\":\"", n_log);
    memset(data + n, 'x', data_bytes);
    strcpy(data + n + data_bytes, "\"}");
    char meta[256];
    snprintf(meta, sizeof meta,
             "{\"correlationId\":\"corr-%zu\",\"causationId\":\"cause-%zu\","
             "\"traceparent\":\"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\"}",
             n_log, n_log);
    es_new_event ev = {a->id, "kfkmock.thing.happened", 2, data, meta};
    es_append_req req = {CTX, stream, ES_ANY_VERSION, &ev, 1, NULL, 0, NULL, 0, NULL, NULL};
    es_append_result res;
    app_error err = APP_ERROR_INIT;
    if (port.ops->append(port.self, &req, &res, &err) != 0)
        fail_msg("append: %s: %s", err.message, err.detail);
    a->version = res.version;
    free(data);
    n_log++;
}

static void append_many(size_t n, size_t streams)
{
    for (size_t i = 0; i < n; i++) {
        char stream[64];
        snprintf(stream, sizeof stream, "thing-%zu", i % streams);
        append(stream, 16);
    }
}

static int64_t checkpoint(void)
{
    int64_t cp = -1;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(port.ops->load_checkpoint(port.self, CTX, KFK_RELAY_SUBSCRIBER, &cp, &err), 0);
    return cp;
}

static int64_t head(void)
{
    int64_t h = -1;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(port.ops->head_position(port.self, CTX, &h, &err), 0);
    return h;
}

static bool caught_up(void *arg)
{
    (void)arg;
    return checkpoint() == head();
}

/* The relay's pace is not the test's business: the bound only guards against a hang. */
static void wait_caught_up(void)
{
    if (ts_wait_until(caught_up, NULL, TS_HANG_GUARD_MS) != 0)
        fail_msg("relay did not catch up: checkpoint %lld, head %lld", (long long)checkpoint(),
                 (long long)head());
}

/* ---- consuming ------------------------------------------------------------------------ */

typedef struct consumed {
    char key[64];
    char event_id[UUID_STR_LEN];
    int32_t partition;
    int64_t version; /* from the value */
    bool headers_ok;
    bool truncated;
    char dlq_reason[128];
    bool old_shape; /* the data has "m", the v1 name of "n" */
} consumed;

static consumed got[MAX_MSGS * 2];
static size_t n_got;

static bool header(rd_kafka_headers_t *h, const char *name, char *out, size_t size)
{
    const void *v = NULL;
    size_t len = 0;
    if (!h || rd_kafka_header_get_last(h, name, &v, &len) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return false;
    snprintf(out, size, "%.*s", (int)len, (const char *)v);
    return true;
}

/* Reads every message of topic t: from the start of each partition to the end it had when
 * the reading began. Tests stop their relays first, so that end is all there is, and no
 * message is missed for arriving late. */
static void consume_all(const char *t)
{
    char errstr[256], group[64];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    snprintf(group, sizeof group, "g-%ld-%d", (long)time(NULL), rand());
    rd_kafka_conf_set(conf, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(mock), errstr,
                      sizeof errstr);
    rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr, sizeof errstr);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof errstr);
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
    assert_non_null(c);
    rd_kafka_poll_set_consumer(c);
    int n_parts = strcmp(t, dlq_topic) == 0 ? 1 : PARTITIONS;
    int64_t next[PARTITIONS], end[PARTITIONS]; /* the offset to read next, and where to stop */
    for (int p = 0; p < n_parts; p++) {
        rd_kafka_resp_err_t e =
            rd_kafka_query_watermark_offsets(c, t, p, &next[p], &end[p], TS_HANG_GUARD_MS);
        if (e)
            fail_msg("watermarks of %s [%d]: %s", t, p, rd_kafka_err2str(e));
    }
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(PARTITIONS);
    for (int p = 0; p < n_parts; p++)
        rd_kafka_topic_partition_list_add(parts, t, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(rd_kafka_assign(c, parts), 0);
    rd_kafka_topic_partition_list_destroy(parts);

    n_got = 0;
    long long deadline = ts_now_ms() + TS_HANG_GUARD_MS;
    for (;;) {
        int p = 0;
        while (p < n_parts && next[p] >= end[p])
            p++;
        if (p == n_parts)
            break;
        if (ts_now_ms() > deadline)
            fail_msg("%s [%d]: read up to offset %lld of %lld in %d ms", t, p, (long long)next[p],
                     (long long)end[p], TS_HANG_GUARD_MS);
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (!m)
            continue;
        if (m->err) {
            rd_kafka_message_destroy(m);
            continue;
        }
        assert_true(m->partition >= 0 && m->partition < n_parts);
        next[m->partition] = m->offset + 1;
        assert_true(n_got < sizeof got / sizeof got[0]);
        consumed *g = &got[n_got++];
        memset(g, 0, sizeof *g);
        g->partition = m->partition;
        snprintf(g->key, sizeof g->key, "%.*s", (int)m->key_len, (const char *)m->key);
        rd_kafka_headers_t *h = NULL;
        rd_kafka_message_headers(m, &h);
        char v[128];
        g->headers_ok =
            header(h, "event-id", g->event_id, sizeof g->event_id) &&
            header(h, "event-type", v, sizeof v) && strcmp(v, "kfkmock.thing.happened") == 0 &&
            header(h, "schema-version", v, sizeof v) && strcmp(v, "2") == 0 &&
            header(h, "correlation-id", v, sizeof v) && strncmp(v, "corr-", 5) == 0 &&
            header(h, "causation-id", v, sizeof v) && strncmp(v, "cause-", 6) == 0 &&
            header(h, "traceparent", v, sizeof v) && strncmp(v, "00-", 3) == 0 &&
            header(h, "content-type", v, sizeof v) && strcmp(v, "application/json") == 0;
        header(h, "dlq-reason", g->dlq_reason, sizeof g->dlq_reason);
        cJSON *j = cJSON_ParseWithLength(m->payload, m->len);
        assert_non_null(j);
        const cJSON *eid = cJSON_GetObjectItem(j, "eventId");
        assert_true(cJSON_IsString(eid));
        assert_string_equal(eid->valuestring, g->event_id);
        assert_string_equal(cJSON_GetObjectItem(j, "streamId")->valuestring, g->key);
        g->version = (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItem(j, "version"));
        g->truncated = cJSON_IsTrue(cJSON_GetObjectItem(j, "truncated"));
        const cJSON *data = cJSON_GetObjectItem(j, "data");
        g->old_shape =
            cJSON_GetObjectItem(data, "m") || !cJSON_IsNumber(cJSON_GetObjectItem(data, "n"));
        cJSON_Delete(j);
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
}

/* Every appended event (but those in skip) arrives at least once; each key's versions are in
 * order by first occurrence. Returns how many messages were duplicates. */
static size_t check_every_event(const char *const *skip, size_t n_skip)
{
    size_t dups = 0;
    for (size_t i = 0; i < n_log; i++) {
        bool skipped = false;
        for (size_t k = 0; k < n_skip; k++)
            skipped = skipped || strcmp(skip[k], log_[i].id) == 0;
        size_t seen = 0;
        for (size_t j = 0; j < n_got; j++)
            seen += strcmp(got[j].event_id, log_[i].id) == 0;
        if (skipped) {
            assert_int_equal(seen, 0);
            continue;
        }
        if (seen == 0)
            fail_msg("event %zu (%s) never arrived", i, log_[i].id);
        dups += seen - 1;
    }
    for (size_t j = 0; j < n_got; j++) {
        assert_true(got[j].headers_ok);
        bool first = true;
        for (size_t k = 0; k < j && first; k++)
            first = strcmp(got[k].event_id, got[j].event_id) != 0;
        if (!first)
            continue;
        /* No earlier first occurrence of the same key has a higher version. */
        for (size_t k = 0; k < j; k++)
            if (strcmp(got[k].key, got[j].key) == 0 && got[k].version > got[j].version)
                fail_msg("key %s: version %lld arrived after %lld", got[j].key,
                         (long long)got[j].version, (long long)got[k].version);
    }
    return dups;
}

static kfk_relay_status status(kfk_relay *r)
{
    kfk_relay_status st;
    kfk_relay_status_of(r, 0, &st);
    return st;
}

/* ---- tests ---------------------------------------------------------------------------- */

/* Every event once, keyed by stream, in order per key, with the headers; the checkpoint
 * follows the acknowledgements; a restart goes on from it. */
static void test_relays_in_order(void **state)
{
    (void)state;
    n_log = 0;
    append_many(60, 7);
    kfk_relay_options o = relay_options();
    kfk_relay *r = relay_start(&o);
    wait_caught_up();
    append_many(40, 7); /* live, after catching up */
    wait_caught_up();
    kfk_relay_status st = status(r);
    assert_true(st.leader);
    assert_false(st.degraded);
    assert_int_equal(st.delivered, 100);
    assert_int_equal(st.dead_lettered, 0);
    relay_free(r);

    /* A new relay starts at the checkpoint: nothing is produced twice. */
    append_many(10, 3);
    r = relay_start(&o);
    wait_caught_up();
    assert_int_equal(status(r).delivered, 10);
    relay_free(r);

    consume_all(topic);
    assert_int_equal(n_got, 110);
    assert_int_equal(check_every_event(NULL, 0), 0);
    /* Same key, same partition. */
    for (size_t j = 0; j < n_got; j++)
        for (size_t k = 0; k < j; k++)
            if (strcmp(got[k].key, got[j].key) == 0)
                assert_int_equal(got[k].partition, got[j].partition);
}

/* Schema evolution: kfkmock.thing.happened v1 said "m" for what v2 calls "n". */
static int thing_v1(cJSON *data, app_error *err)
{
    cJSON *m = cJSON_DetachItemFromObjectCaseSensitive(data, "m");
    if (!cJSON_IsNumber(m)) {
        cJSON_Delete(m);
        return app_error_set(err, APP_EINVAL, "v1 needs a number m");
    }
    cJSON_AddItemToObject(data, "n", m);
    return 0;
}

/* Events stored in an old schema version reach Kafka upcast, with the current version in the
 * schema-version header (checked by consume_all for every message), as main.c wires it. */
static void test_relays_upcast_events(void **state)
{
    (void)state;
    static const mod_upcaster rows[] = {{"kfkmock.thing.happened", 1, thing_v1}, {NULL, 0, NULL}};
    static const app_module thing = {.abi = APP_MODULE_ABI, .name = CTX, .upcasters = rows};
    static const app_module *const modules[] = {&thing, NULL};
    static es_store stored;
    stored = port;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(upcast_store_new(&upcaster, &stored, modules, &err), 0);
    port = upcast_store_port(upcaster);

    n_log = 0;
    append_many(5, 2); /* current version */
    for (int i = 0; i < 10; i++) {
        appended *a = &log_[n_log++];
        uuid_v4(a->id);
        snprintf(a->stream, sizeof a->stream, "thing-%d", i % 3);
        char meta[256], data[64];
        snprintf(meta, sizeof meta,
                 "{\"correlationId\":\"corr-old\",\"causationId\":\"cause-old\","
                 "\"traceparent\":\"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\"}");
        snprintf(data, sizeof data, "{\"m\":%d}", i);
        es_new_event ev = {a->id, "kfkmock.thing.happened", 1, data, meta};
        es_append_req req = {CTX, a->stream, ES_ANY_VERSION, &ev, 1, NULL, 0, NULL, 0, NULL, NULL};
        es_append_result res;
        assert_int_equal(stored.ops->append(stored.self, &req, &res, &err), 0);
        a->version = res.version;
    }
    append_many(5, 2);
    kfk_relay_options o = relay_options();
    kfk_relay *r = relay_start(&o);
    wait_caught_up();
    assert_int_equal(status(r).delivered, 20);
    relay_free(r);

    consume_all(topic);
    assert_int_equal(n_got, 20);
    assert_int_equal(check_every_event(NULL, 0), 0);
    for (size_t j = 0; j < n_got; j++)
        assert_false(got[j].old_shape);
}

/* Produce requests that fail with retriable errors are retried; each event arrives once. */
static void test_transient_errors_retried(void **state)
{
    (void)state;
    n_log = 0;
    append_many(30, 5);
    rd_kafka_mock_push_request_errors(mock, API_PRODUCE, 4, RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
                                      RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                                      RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
                                      RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND);
    kfk_relay_options o = relay_options();
    kfk_relay *r = relay_start(&o);
    wait_caught_up();
    assert_int_equal(status(r).delivered, 30);
    relay_free(r);
    consume_all(topic);
    assert_int_equal(n_got, 30);
    assert_int_equal(check_every_event(NULL, 0), 0);
}

/* Refused and failed Produce requests while many events of a few streams are in flight on
 * every partition, so that a refused batch is followed by acknowledged ones of the same
 * partition: every event still arrives, and each stream's events arrive in order once
 * duplicates are dropped (a consumer applies them by stream version). */
static void order_under(rd_kafka_resp_err_t e1, rd_kafka_resp_err_t e2, rd_kafka_resp_err_t e3,
                        rd_kafka_resp_err_t e4)
{
    n_log = 0;
    append_many(300, 6);
    rd_kafka_mock_push_request_errors(mock, API_PRODUCE, 4, e1, e2, e3, e4);
    kfk_relay_options o = relay_options();
    o.kafka.batch_size = 300;
    kfk_relay *r = relay_start(&o);
    wait_caught_up();
    relay_free(r);
    /* An event refused alone (the relay's search for the culprit of a refused batch) is in the
     * dead letters, not on the topic. */
    es_dead_letter_list dead = {0};
    app_error err = APP_ERROR_INIT;
    assert_int_equal(port.ops->list_dead_letters(port.self, CTX, NULL, 0, 100, &dead, &err), 0);
    const char *skip[100];
    for (size_t i = 0; i < dead.len; i++)
        skip[i] = dead.items[i].event_id;
    consume_all(topic);
    size_t dups = check_every_event(skip, dead.len);
    print_message("%zu messages, %zu duplicates, %zu dead-lettered, every stream in order\n", n_got,
                  dups, dead.len);
    es_dead_letter_list_free(&dead);
}

static void test_order_after_a_refused_batch(void **state)
{
    (void)state;
    order_under(RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE, RD_KAFKA_RESP_ERR_NO_ERROR,
                RD_KAFKA_RESP_ERR_NO_ERROR, RD_KAFKA_RESP_ERR_NO_ERROR);
}

static void test_order_after_mixed_faults(void **state)
{
    (void)state;
    order_under(RD_KAFKA_RESP_ERR_NO_ERROR, RD_KAFKA_RESP_ERR_INVALID_RECORD,
                RD_KAFKA_RESP_ERR_NO_ERROR, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION);
}

static void test_order_after_faults_in_a_row(void **state)
{
    (void)state;
    order_under(RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
                RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS, RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE);
}

static bool dead_letters_are(void *arg)
{
    size_t want = *(size_t *)arg;
    es_dead_letter_list list = {0};
    app_error err = APP_ERROR_INIT;
    if (port.ops->list_dead_letters(port.self, CTX, NULL, 0, 100, &list, &err) != 0)
        return false;
    bool ok = list.len == want;
    es_dead_letter_list_free(&list);
    return ok;
}

/* True once the broker holds at least *arg messages in the dead-letter topic (one partition).
 */
static bool dlq_holds(void *arg)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", rd_kafka_mock_cluster_bootstraps(mock), errstr,
                      sizeof errstr);
    rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    assert_non_null(rk);
    int64_t low = 0, high = 0;
    rd_kafka_resp_err_t e =
        rd_kafka_query_watermark_offsets(rk, dlq_topic, 0, &low, &high, TS_HANG_GUARD_MS);
    rd_kafka_destroy(rk);
    return e == RD_KAFKA_RESP_ERR_NO_ERROR && high >= *(const int64_t *)arg;
}

/* An event over the size limit and one the broker refuses for good go to the dead-letter
 * topic and table; the relay goes on; redrive sends them again once they fit. */

/* The relay's dead letters only here: none goes to a subscriber. */
static int no_subscriber(void *arg, es_store *events, const char *context, const es_dead_letter *d,
                         char *reason, size_t size)
{
    (void)arg;
    (void)events;
    (void)context;
    (void)reason;
    (void)size;
    fail_msg("dead letter %lld of %s went to a subscriber", (long long)d->id, d->subscriber);
    return -1;
}

static void test_permanent_failures_dead_lettered(void **state)
{
    (void)state;
    n_log = 0;
    append_many(5, 2);
    append("thing-big", 5000); /* over max_message_bytes below */
    append_many(5, 2);
    kfk_relay_options o = relay_options();
    o.kafka.max_message_bytes = 4000;
    kfk_relay *r = relay_start(&o);
    wait_caught_up();
    size_t want = 1;
    assert_int_equal(ts_wait_until(dead_letters_are, &want, TS_HANG_GUARD_MS), 0);
    assert_int_equal(status(r).dead_lettered, 1);
    assert_int_equal(status(r).delivered, 10);
    /* The errors below are for the next two Produce requests, so the dead-letter topic must
     * have taken its message first (and a refused batch would purge it while queued). */
    int64_t in_dlq = 1;
    assert_int_equal(ts_wait_until(dlq_holds, &in_dlq, TS_HANG_GUARD_MS), 0);

    /* The broker refuses a request twice: the batch, then the event alone. */
    rd_kafka_mock_push_request_errors(mock, API_PRODUCE, 2, RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
                                      RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE);
    append("thing-refused", 16);
    size_t refused = n_log - 1;
    wait_caught_up();
    append_many(5, 2); /* and the relay goes on */
    wait_caught_up();
    want = 2;
    assert_int_equal(ts_wait_until(dead_letters_are, &want, TS_HANG_GUARD_MS), 0);
    kfk_relay_status st = status(r);
    assert_int_equal(st.dead_lettered, 2);
    assert_int_equal(st.delivered, 15);
    in_dlq = 2; /* before the stop, which drops what is still queued */
    assert_int_equal(ts_wait_until(dlq_holds, &in_dlq, TS_HANG_GUARD_MS), 0);
    relay_free(r);

    const char *skip[] = {log_[5].id, log_[refused].id};
    consume_all(topic);
    assert_int_equal(n_got, 15);
    check_every_event(skip, 2);

    consume_all(dlq_topic);
    assert_int_equal(n_got, 2);
    assert_string_equal(got[0].event_id, log_[5].id);
    assert_true(got[0].truncated); /* too large for the dead-letter topic too: a stub */
    assert_non_null(strstr(got[0].dlq_reason, "MSG_SIZE_TOO_LARGE"));
    assert_string_equal(got[1].event_id, log_[refused].id);
    assert_false(got[1].truncated);
    assert_non_null(strstr(got[1].dlq_reason, "MSG_SIZE_TOO_LARGE"));

    es_dead_letter_list list = {0};
    app_error err = APP_ERROR_INIT;
    assert_int_equal(port.ops->list_dead_letters(port.self, CTX, NULL, 0, 10, &list, &err), 0);
    assert_int_equal(list.len, 2);
    assert_string_equal(list.items[0].event_id, log_[5].id);
    assert_string_equal(list.items[0].subscriber, KFK_RELAY_SUBSCRIBER);
    assert_non_null(strstr(list.items[0].error, "MSG_SIZE_TOO_LARGE"));
    char first_id[48];
    snprintf(first_id, sizeof first_id, CTX ":%lld", (long long)list.items[0].id);
    es_dead_letter_list_free(&list);

    /* Listing, then redriving: still too large fails and stays (one more attempt). */
    static const char *const contexts[] = {CTX};
    char *text = NULL;
    size_t text_len = 0, n = 0, sent = 0, failed = 0;
    FILE *f = open_memstream(&text, &text_len);
    assert_int_equal(kfk_dlq_list(&port, contexts, 1, f, &n, &err), 0);
    fclose(f);
    assert_int_equal(n, 2);
    assert_non_null(strstr(text, first_id));
    free(text);
    f = open_memstream(&text, &text_len);
    assert_int_equal(kfk_dlq_redrive(&port, &o.kafka, contexts, 1, first_id, no_subscriber, NULL, f,
                                     &sent, &failed, &err),
                     0);
    fclose(f);
    free(text);
    assert_int_equal(sent, 0);
    assert_int_equal(failed, 1);
    assert_int_equal(port.ops->list_dead_letters(port.self, CTX, NULL, 0, 10, &list, &err), 0);
    assert_int_equal(list.len, 2);
    assert_int_equal(list.items[0].attempts, 2);
    es_dead_letter_list_free(&list);

    /* With a larger limit, everything goes, and the table empties. */
    o.kafka.max_message_bytes = 100000;
    f = open_memstream(&text, &text_len);
    assert_int_equal(kfk_dlq_redrive(&port, &o.kafka, contexts, 1, NULL, no_subscriber, NULL, f,
                                     &sent, &failed, &err),
                     0);
    fclose(f);
    free(text);
    assert_int_equal(sent, 2);
    assert_int_equal(failed, 0);
    want = 0;
    assert_true(dead_letters_are(&want));
    consume_all(topic);
    assert_int_equal(n_got, 17);
    check_every_event(NULL, 0);

    f = open_memstream(&text, &text_len);
    assert_int_equal(kfk_dlq_redrive(&port, &o.kafka, contexts, 1, "99999", no_subscriber, NULL, f,
                                     &sent, &failed, &err),
                     APP_ENOTFOUND);
    assert_int_equal(kfk_dlq_redrive(&port, &o.kafka, contexts, 1, "x:y", no_subscriber, NULL, f,
                                     &sent, &failed, &err),
                     APP_EINVAL);
    fclose(f);
    free(text);
}

typedef struct backlog {
    kfk_relay *relay;
    int64_t head; /* of the log once the backlog was appended */
} backlog;

/* Degraded with the breaker not closed, and the status has looked at the log since the
 * backlog was appended (it reads the head once a second). */
static bool degraded_with_backlog(void *arg)
{
    const backlog *b = arg;
    kfk_relay_status st = status(b->relay);
    return st.degraded && strcmp(st.breaker, "closed") != 0 && st.head >= b->head;
}

static bool is_healthy(void *arg)
{
    return !status(arg).degraded;
}

/* The broker vanishes: appends go on, the relay reports degraded with its breaker open, the
 * checkpoint holds; the broker returns: the backlog drains, nothing lost, order kept. */
static void test_broker_outage(void **state)
{
    (void)state;
    n_log = 0;
    append_many(20, 4);
    kfk_relay_options o = relay_options();
    kfk_relay *r = relay_start(&o);
    wait_caught_up();

    rd_kafka_mock_broker_set_down(mock, 1);
    int64_t held = checkpoint();
    long long t0 = ts_now_ms();
    append_many(50, 4); /* appends succeed: they never go through Kafka */
    print_message("50 appends with the broker down took %lld ms\n", ts_now_ms() - t0);
    backlog b = {r, head()};
    assert_int_equal(ts_wait_until(degraded_with_backlog, &b, TS_HANG_GUARD_MS), 0);
    kfk_relay_status st = status(r);
    print_message("degraded: %s\n", st.detail);
    assert_int_equal(checkpoint(), held);
    assert_true(st.head - st.checkpoint >= 50);

    rd_kafka_mock_broker_set_up(mock, 1);
    t0 = ts_now_ms();
    wait_caught_up();
    print_message("backlog drained %lld ms after the broker returned\n", ts_now_ms() - t0);
    assert_int_equal(ts_wait_until(is_healthy, r, TS_HANG_GUARD_MS), 0); /* refreshed each second */
    assert_string_equal(status(r).breaker, "closed");
    relay_free(r);

    consume_all(topic);
    size_t dups = check_every_event(NULL, 0);
    print_message("%zu messages, %zu duplicates (at least once)\n", n_got, dups);
    assert_true(n_got >= 70);
}

/* The second relay's view of its store: the real one, counting the times it asked for the
 * relay lease and was refused. */
static const es_store_ops *lease_real_ops;
static atomic_int lease_refusals;

static int lease_counting_lead(void *self, const char *context, const char *name, bool *out,
                               app_error *err)
{
    int rc = lease_real_ops->lead(self, context, name, out, err);
    if (rc == 0 && !*out)
        atomic_fetch_add(&lease_refusals, 1);
    return rc;
}

static bool refused_twice(void *arg)
{
    (void)arg;
    return atomic_load(&lease_refusals) >= 2;
}

/* Two relays on one database: one relays, the other waits; when the first stops, the second
 * takes over from the checkpoint. */
static void test_one_relay_per_context(void **state)
{
    (void)state;
    n_log = 0;
    pg_event_store_options po = PG_EVENT_STORE_OPTIONS_INIT;
    po.dsn = dsn;
    pg_event_store *other = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(pg_event_store_new(&other, &po, &err), 0);
    es_store real_port = pg_event_store_port(other);
    static es_store_ops counting_ops;
    lease_real_ops = real_port.ops;
    counting_ops = *real_port.ops;
    counting_ops.lead = lease_counting_lead;
    atomic_store(&lease_refusals, 0);
    es_store other_port = {&counting_ops, real_port.self};

    kfk_relay_options o = relay_options();
    kfk_relay *a = relay_start(&o);
    append_many(10, 2);
    wait_caught_up();
    kfk_relay_options o2 = o;
    o2.events = &other_port;
    kfk_relay *b = relay_start(&o2);
    append_many(10, 2);
    wait_caught_up();
    /* b asked for the lease and was refused twice, so its status shows the first answer. */
    assert_int_equal(ts_wait_until(refused_twice, NULL, TS_HANG_GUARD_MS), 0);
    assert_true(status(a).leader);
    assert_false(status(b).leader);
    assert_int_equal(status(b).delivered, 0);

    relay_free(a); /* resigns */
    append_many(10, 2);
    wait_caught_up();
    assert_true(status(b).leader);
    assert_int_equal(status(b).delivered, 10);
    relay_free(b);
    pg_event_store_free(other);

    consume_all(topic);
    assert_int_equal(n_got, 30);
    assert_int_equal(check_every_event(NULL, 0), 0);
}

int main(void)
{
    dsn = getenv("APP_POSTGRES_DSN");
    if (!dsn || !*dsn) {
        fprintf(stderr, "test_kafka_mock: APP_POSTGRES_DSN is not set; it needs a PostgreSQL "
                        "server (test/run.sh starts one)\n");
        return 1;
    }
    srand((unsigned)time(NULL));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_relays_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relays_upcast_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transient_errors_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_permanent_failures_dead_lettered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_order_after_a_refused_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_order_after_mixed_faults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_order_after_faults_in_a_row, setup, teardown),
        cmocka_unit_test_setup_teardown(test_broker_outage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_relay_per_context, setup, teardown),
    };
    return cmocka_run_group_tests_name("kafka_mock", tests, NULL, NULL);
}
