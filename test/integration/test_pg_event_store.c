/* The PostgreSQL event store against a real server (APP_POSTGRES_DSN): round trips,
 * expected versions, unique claims under contention, group commit, and a gap-free log. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adapters/postgres/pg_event_store.h"
#include "adapters/postgres/pg_migrate.h"
#include "adapters/postgres/pg_pool.h"
#include "core/uuid.h"
#include "test/support/pg_proxy.h"
#include "test/support/services.h"

#define CTX     "pgtest_es"  /* schema pgtest_es_ctx */
#define LOG_CTX "pgtest_log" /* a log only the tailing test writes */

static const char *dsn;
static pg_event_store *store;
static es_store port;

static void exec_sql(const char *sql)
{
    PGconn *conn = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(pg_connect(dsn, 5, &conn, &err), 0);
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    PQclear(res);
    PQfinish(conn);
    assert_true(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK);
}

/* Runs a query that answers one integer. */
static long long query_int(const char *sql)
{
    PGconn *conn = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(pg_connect(dsn, 5, &conn, &err), 0);
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        fail_msg("%s: %s", sql, PQerrorMessage(conn));
    long long n = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    PQfinish(conn);
    return n;
}

/* Terminates the other sessions that "SELECT pid FROM <from_where>" lists and returns once
 * each of them has exited. With a timeout, pg_terminate_backend (PostgreSQL 14+) waits until
 * the process is gone, not just signalled, so its socket is closed and a client's next look
 * at the connection sees the end; the timeout only guards against a hang. Returns how many
 * it saw exit. */
static long long terminate_backends(const char *from_where)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, %d)) FROM %s"
             " AND pid <> pg_backend_pid()",
             TS_HANG_GUARD_MS, from_where);
    return query_int(sql);
}

static int setup(void **state)
{
    (void)state;
    exec_sql("DROP SCHEMA IF EXISTS " CTX "_ctx CASCADE; DROP SCHEMA IF EXISTS " LOG_CTX
             "_ctx CASCADE");
    pg_event_store_options opts = PG_EVENT_STORE_OPTIONS_INIT;
    opts.dsn = dsn;
    opts.pool_size = 4;
    app_error err = APP_ERROR_INIT;
    if (pg_event_store_new(&store, &opts, &err) != 0) {
        fprintf(stderr, "pg_event_store_new: %s: %s\n", err.message, err.detail);
        return -1;
    }
    port = pg_event_store_port(store);
    const char *schemas[] = {CTX "_ctx", LOG_CTX "_ctx"};
    for (int i = 0; i < 2; i++) {
        if (pg_migrate_context(pg_event_store_pool(store), schemas[i], pg_store_migrations, NULL,
                               NULL, &err) != 0) {
            fprintf(stderr, "migrate: %s: %s\n", err.message, err.detail);
            return -1;
        }
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pg_event_store_free(store);
    store = NULL;
    return 0;
}

static void new_stream(char *out, size_t size)
{
    char id[UUID_STR_LEN];
    uuid_v4(id);
    snprintf(out, size, "test-%s", id);
}

/* Appends one event; returns the port's status. */
static int append_one(const char *context, const char *stream, int64_t expected,
                      const es_claim *claims, size_t n_claims, const es_claim *releases,
                      size_t n_releases, es_append_result *out, app_error *err)
{
    char id[UUID_STR_LEN];
    uuid_v4(id);
    es_new_event ev = {id, "test.thing.happened", 1, "{\"n\": 1}", "{\"correlationId\": \"c\"}"};
    es_append_req req = {context,  stream,   expected,   &ev,  1,   claims,
                         n_claims, releases, n_releases, NULL, NULL};
    es_append_result res;
    return port.ops->append(port.self, &req, out ? out : &res, err);
}

/* Appends one event recording an idempotency key; returns the port's status. */
static int append_keyed(const char *stream, int64_t expected, const es_idempotency *idem,
                        app_error *err)
{
    char id[UUID_STR_LEN];
    uuid_v4(id);
    es_new_event ev = {id, "test.thing.happened", 1, "{\"n\": 1}", "{}"};
    es_append_req req = {.context = CTX,
                         .stream_id = stream,
                         .expected_version = expected,
                         .events = &ev,
                         .n_events = 1,
                         .idempotency = idem};
    return port.ops->append(port.self, &req, NULL, err);
}

static void test_round_trip(void **state)
{
    (void)state;
    char stream[64], id1[UUID_STR_LEN], id2[UUID_STR_LEN];
    new_stream(stream, sizeof stream);
    uuid_v4(id1);
    uuid_v4(id2);
    es_new_event evs[2] = {
        {id1, "test.thing.created", 1, "{\"name\": \"a \\\"quoted\\\" \\u00e9 name\"}",
         "{\"correlationId\": \"x\"}"},
        {id2, "test.thing.renamed", 2, "{\"big\": 12345678901234567890, \"list\": [1, 2]}", "{}"},
    };
    es_append_req req = {CTX, stream, ES_NO_STREAM, evs, 2, NULL, 0, NULL, 0, NULL, NULL};
    es_append_result res = {0};
    app_error err = APP_ERROR_INIT;
    int rc = port.ops->append(port.self, &req, &res, &err);
    if (rc != 0)
        fail_msg("append: %s: %s", err.message, err.detail);
    assert_int_equal(res.version, 2);
    assert_true(res.first_position > 0);
    assert_int_equal(res.last_position, res.first_position + 1);

    es_event_list list = {0};
    assert_int_equal(port.ops->load_stream(port.self, CTX, stream, 0, &list, &err), 0);
    assert_int_equal(list.len, 2);
    assert_string_equal(list.items[0].event_id, id1);
    assert_string_equal(list.items[0].stream_id, stream);
    assert_string_equal(list.items[0].type, "test.thing.created");
    assert_int_equal(list.items[0].version, 1);
    assert_int_equal(list.items[0].position, res.first_position);
    assert_string_equal(list.items[0].data, "{\"name\": \"a \\\"quoted\\\" é name\"}");
    assert_string_equal(list.items[0].metadata, "{\"correlationId\": \"x\"}");
    assert_int_equal(list.items[1].schema_version, 2);
    assert_non_null(strstr(list.items[1].data, "12345678901234567890"));
    /* 2026-11-28T15:00:00.123456Z */
    const char *at = list.items[0].recorded_at;
    assert_int_equal(strlen(at), 27);
    assert_int_equal(at[10], 'T');
    assert_int_equal(at[19], '.');
    assert_int_equal(at[26], 'Z');
    es_event_list_free(&list);

    assert_int_equal(port.ops->load_stream(port.self, CTX, stream, 1, &list, &err), 0);
    assert_int_equal(list.len, 1);
    assert_string_equal(list.items[0].event_id, id2);
    es_event_list_free(&list);

    assert_int_equal(port.ops->load_stream(port.self, CTX, "test-none", 0, &list, &err), 0);
    assert_int_equal(list.len, 0);
    es_event_list_free(&list);

    int64_t head = 0;
    assert_int_equal(port.ops->head_position(port.self, CTX, &head, &err), 0);
    assert_true(head >= res.last_position);
}

static void test_expected_version(void **state)
{
    (void)state;
    char stream[64];
    new_stream(stream, sizeof stream);
    app_error err = APP_ERROR_INIT;
    es_append_result res = {0};
    assert_int_equal(append_one(CTX, stream, ES_NO_STREAM, NULL, 0, NULL, 0, &res, &err), 0);
    assert_int_equal(res.version, 1);
    assert_int_equal(append_one(CTX, stream, ES_NO_STREAM, NULL, 0, NULL, 0, &res, &err),
                     APP_EVERSION);
    assert_non_null(strstr(err.detail, "is at version 1"));
    assert_int_equal(append_one(CTX, stream, 5, NULL, 0, NULL, 0, &res, &err), APP_EVERSION);
    assert_int_equal(append_one(CTX, stream, 1, NULL, 0, NULL, 0, &res, &err), 0);
    assert_int_equal(res.version, 2);
    assert_int_equal(append_one(CTX, stream, ES_ANY_VERSION, NULL, 0, NULL, 0, &res, &err), 0);
    assert_int_equal(res.version, 3);
}

static void test_invalid_input(void **state)
{
    (void)state;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(append_one("User", "s-1", ES_ANY_VERSION, NULL, 0, NULL, 0, NULL, &err),
                     APP_EINVAL);
    assert_int_equal(append_one("user; drop", "s-1", ES_ANY_VERSION, NULL, 0, NULL, 0, NULL, &err),
                     APP_EINVAL);
    es_event_list list = {0};
    assert_int_equal(port.ops->read_log(port.self, "bad-name", 0, 10, &list, &err), APP_EINVAL);

    char id[UUID_STR_LEN];
    uuid_v4(id);
    const char *bad_data[] = {"{", "[1]", "{\"a\": \"\\u0000\"}", "{\"a\": \"\xff\"}"};
    for (size_t i = 0; i < sizeof bad_data / sizeof bad_data[0]; i++) {
        es_new_event ev = {id, "t.t.t", 1, bad_data[i], "{}"};
        es_append_req req = {CTX, "s-1", ES_ANY_VERSION, &ev, 1, NULL, 0, NULL, 0, NULL, NULL};
        es_append_result res;
        assert_int_equal(port.ops->append(port.self, &req, &res, &err), APP_EINVAL);
    }
    es_new_event ev = {"NOT-A-UUID", "t.t.t", 1, "{}", "{}"};
    es_append_req req = {CTX, "s-1", ES_ANY_VERSION, &ev, 1, NULL, 0, NULL, 0, NULL, NULL};
    es_append_result res;
    assert_int_equal(port.ops->append(port.self, &req, &res, &err), APP_EINVAL);
}

static void test_duplicate_event_id(void **state)
{
    (void)state;
    char s1[64], s2[64], id[UUID_STR_LEN];
    new_stream(s1, sizeof s1);
    new_stream(s2, sizeof s2);
    uuid_v4(id);
    es_new_event ev = {id, "t.t.t", 1, "{}", "{}"};
    es_append_req req = {CTX, s1, ES_ANY_VERSION, &ev, 1, NULL, 0, NULL, 0, NULL, NULL};
    es_append_result res;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(port.ops->append(port.self, &req, &res, &err), 0);
    req.stream_id = s2;
    assert_int_equal(port.ops->append(port.self, &req, &res, &err), APP_ECONFLICT);
    assert_string_equal(err.fields[0].field, "event_id");
    /* Nothing of the refused append was written. */
    es_event_list list = {0};
    assert_int_equal(port.ops->load_stream(port.self, CTX, s2, 0, &list, &err), 0);
    assert_int_equal(list.len, 0);
}

/* ---- contention ------------------------------------------------------------------ */

#define RACERS 50

typedef struct racer {
    const char *stream;
    int64_t expected;
    const char *claim_key;
    const es_idempotency *idem;
    const char *event_id; /* the event's id; a fresh one when NULL */
    pthread_barrier_t *start;
    int rc;
    app_error err;
} racer;

static void *racer_main(void *p)
{
    racer *r = p;
    char own[64];
    const char *stream = r->stream;
    if (!stream) {
        new_stream(own, sizeof own);
        stream = own;
    }
    es_claim claim = {"email", r->claim_key};
    pthread_barrier_wait(r->start);
    if (r->idem) {
        r->rc = append_keyed(stream, r->expected, r->idem, &r->err);
        return NULL;
    }
    if (r->event_id) {
        es_new_event ev = {r->event_id, "test.thing.happened", 1, "{}", "{}"};
        es_append_req req = {.context = CTX,
                             .stream_id = stream,
                             .expected_version = r->expected,
                             .events = &ev,
                             .n_events = 1};
        r->rc = port.ops->append(port.self, &req, NULL, &r->err);
        return NULL;
    }
    r->rc = append_one(CTX, stream, r->expected, r->claim_key ? &claim : NULL, r->claim_key ? 1 : 0,
                       NULL, 0, NULL, &r->err);
    return NULL;
}

static void race(racer *rs, int *ok, int *code_count, int code)
{
    pthread_t th[RACERS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, RACERS);
    for (int i = 0; i < RACERS; i++) {
        rs[i].start = &start;
        assert_int_equal(pthread_create(&th[i], NULL, racer_main, &rs[i]), 0);
    }
    for (int i = 0; i < RACERS; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&start);
    *ok = *code_count = 0;
    for (int i = 0; i < RACERS; i++) {
        if (rs[i].rc == 0)
            (*ok)++;
        else if (rs[i].rc == code)
            (*code_count)++;
        else
            fail_msg("racer %d: %d %s: %s", i, rs[i].rc, rs[i].err.message, rs[i].err.detail);
    }
}

static void test_same_version_race(void **state)
{
    (void)state;
    char stream[64];
    new_stream(stream, sizeof stream);
    app_error err = APP_ERROR_INIT;
    assert_int_equal(append_one(CTX, stream, ES_NO_STREAM, NULL, 0, NULL, 0, NULL, &err), 0);
    racer rs[RACERS];
    memset(rs, 0, sizeof rs);
    for (int i = 0; i < RACERS; i++) {
        rs[i].stream = stream;
        rs[i].expected = 1;
    }
    int ok, conflicts;
    race(rs, &ok, &conflicts, APP_EVERSION);
    assert_int_equal(ok, 1);
    assert_int_equal(conflicts, RACERS - 1);
    es_event_list list = {0};
    assert_int_equal(port.ops->load_stream(port.self, CTX, stream, 0, &list, &err), 0);
    assert_int_equal(list.len, 2);
    es_event_list_free(&list);
}

static void test_claim_race(void **state)
{
    (void)state;
    char key[64], id[UUID_STR_LEN];
    uuid_v4(id);
    snprintf(key, sizeof key, "%s@example.com", id);
    racer rs[RACERS];
    memset(rs, 0, sizeof rs);
    for (int i = 0; i < RACERS; i++) {
        rs[i].expected = ES_NO_STREAM;
        rs[i].claim_key = key;
    }
    int ok, taken;
    race(rs, &ok, &taken, APP_ECONFLICT);
    assert_int_equal(ok, 1);
    assert_int_equal(taken, RACERS - 1);
    for (int i = 0; i < RACERS; i++) {
        if (rs[i].rc == APP_ECONFLICT) {
            assert_int_equal(rs[i].err.n_fields, 1);
            assert_string_equal(rs[i].err.fields[0].field, "email");
            assert_string_equal(rs[i].err.fields[0].message, "is taken");
        }
    }
}

/* Fifty appends of one event id, each to a new stream, at once: they ride in a few batches,
 * so a duplicate meets its original in the same transaction as well as in an earlier one.
 * One is stored; each other one is refused alone, as a conflict on event_id, and writes
 * nothing; the others of its batch are stored or refused on their own merits. */
static void test_duplicate_event_race(void **state)
{
    (void)state;
    char id[UUID_STR_LEN], detail[96], sql[160];
    uuid_v4(id);
    racer rs[RACERS];
    memset(rs, 0, sizeof rs);
    for (int i = 0; i < RACERS; i++) {
        rs[i].expected = ES_NO_STREAM;
        rs[i].event_id = id;
    }
    int ok, taken;
    race(rs, &ok, &taken, APP_ECONFLICT);
    assert_int_equal(ok, 1);
    assert_int_equal(taken, RACERS - 1);
    snprintf(detail, sizeof detail, "event %s is already in the log", id);
    for (int i = 0; i < RACERS; i++) {
        if (rs[i].rc != APP_ECONFLICT)
            continue;
        assert_int_equal(rs[i].err.n_fields, 1);
        assert_string_equal(rs[i].err.fields[0].field, "event_id");
        assert_string_equal(rs[i].err.detail, detail);
    }
    snprintf(sql, sizeof sql, "SELECT count(*) FROM " CTX "_ctx.events WHERE event_id = '%s'", id);
    assert_int_equal(query_int(sql), 1);
}

static int64_t stream_len(const char *stream)
{
    es_event_list list = {0};
    app_error err = APP_ERROR_INIT;
    assert_int_equal(port.ops->load_stream(port.self, CTX, stream, 0, &list, &err), 0);
    int64_t n = (int64_t)list.len;
    es_event_list_free(&list);
    return n;
}

static bool key_found(const char *actor, const char *key, es_idem_record *rec)
{
    bool found = false;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(
        port.ops->idempotency_lookup(port.self, CTX, actor, key, 60, rec, &found, &err), 0);
    return found;
}

/* The key commits with the events or not at all; a live key refuses a second append
 * (writing nothing), also between 50 racers in shared batches; an expired one is replaced
 * and purged. */
static void test_idempotency_keys(void **state)
{
    (void)state;
    char s1[64], s2[64], key[64], id[UUID_STR_LEN];
    new_stream(s1, sizeof s1);
    new_stream(s2, sizeof s2);
    uuid_v4(id);
    snprintf(key, sizeof key, "key-%s", id);
    es_idempotency k = {"alice", key, "test.do_thing", "h1", "{\"zeta\":1,\"id\":\"x\"}", 60};
    app_error err = APP_ERROR_INIT;
    es_idem_record rec = {0};

    /* A failed append records nothing. */
    assert_int_equal(append_keyed(s1, 7, &k, &err), APP_EVERSION);
    assert_false(key_found("alice", key, &rec));

    assert_int_equal(append_keyed(s1, ES_NO_STREAM, &k, &err), 0);
    assert_true(key_found("alice", key, &rec));
    assert_string_equal(rec.command, "test.do_thing");
    assert_string_equal(rec.request_hash, "h1");
    assert_string_equal(rec.response, "{\"zeta\":1,\"id\":\"x\"}");
    es_idem_record_free(&rec);
    assert_false(key_found("bob", key, &rec));

    assert_int_equal(append_keyed(s2, ES_NO_STREAM, &k, &err), APP_EIDEMPOTENT);
    assert_int_equal(stream_len(s2), 0);
    assert_int_equal(port.ops->idempotency_save(port.self, CTX, &k, &err), APP_EIDEMPOTENT);
    es_idempotency bobs = k;
    bobs.actor = "bob";
    assert_int_equal(append_keyed(s2, ES_NO_STREAM, &bobs, &err), 0);

    /* Racers with one key, each on its own stream: one wins, the others write nothing. */
    uuid_v4(id);
    char race_key[64];
    snprintf(race_key, sizeof race_key, "race-%s", id);
    es_idempotency rk = k;
    rk.key = race_key;
    racer rs[RACERS];
    memset(rs, 0, sizeof rs);
    for (int i = 0; i < RACERS; i++) {
        rs[i].expected = ES_NO_STREAM;
        rs[i].idem = &rk;
    }
    int ok = 0, refused = 0;
    race(rs, &ok, &refused, APP_EIDEMPOTENT);
    assert_int_equal(ok, 1);
    assert_int_equal(refused, RACERS - 1);

    /* Expired: not found, replaced by the next append, deleted by a purge. */
    char sql[512];
    snprintf(sql, sizeof sql,
             "UPDATE " CTX "_ctx.idempotency_keys SET created_at = now() - interval '61 seconds'"
             " WHERE actor = 'alice' AND key IN ('%s', '%s')",
             key, race_key);
    exec_sql(sql);
    assert_false(key_found("alice", key, &rec));
    char s3[64];
    new_stream(s3, sizeof s3);
    k.request_hash = "h2";
    assert_int_equal(append_keyed(s3, ES_NO_STREAM, &k, &err), 0);
    assert_true(key_found("alice", key, &rec));
    assert_string_equal(rec.request_hash, "h2");
    es_idem_record_free(&rec);
    int64_t deleted = -1;
    assert_int_equal(port.ops->idempotency_purge(port.self, CTX, 60, &deleted, &err), 0);
    assert_int_equal(deleted, 1); /* the racers' key; alice's is new again, bob's is live */
    assert_true(key_found("bob", key, &rec));
    es_idem_record_free(&rec);

    /* Bad records are refused before anything is sent. */
    es_idempotency bad = k;
    bad.response = "not json";
    assert_int_equal(append_keyed(s3, ES_ANY_VERSION, &bad, &err), APP_EINVAL);
    assert_int_equal(stream_len(s3), 1);
}

static void test_release_claim(void **state)
{
    (void)state;
    char a[64], b[64], key[64], id[UUID_STR_LEN];
    new_stream(a, sizeof a);
    new_stream(b, sizeof b);
    uuid_v4(id);
    snprintf(key, sizeof key, "%s@example.com", id);
    es_claim claim = {"email", key};
    app_error err = APP_ERROR_INIT;
    assert_int_equal(append_one(CTX, a, ES_NO_STREAM, &claim, 1, NULL, 0, NULL, &err), 0);
    /* Claiming again what you own is fine. */
    assert_int_equal(append_one(CTX, a, 1, &claim, 1, NULL, 0, NULL, &err), 0);
    assert_int_equal(append_one(CTX, b, ES_NO_STREAM, &claim, 1, NULL, 0, NULL, &err),
                     APP_ECONFLICT);
    /* A refused append writes nothing: b still does not exist. */
    es_event_list list = {0};
    assert_int_equal(port.ops->load_stream(port.self, CTX, b, 0, &list, &err), 0);
    assert_int_equal(list.len, 0);
    /* Releasing a key b does not own changes nothing. */
    assert_int_equal(append_one(CTX, b, ES_NO_STREAM, NULL, 0, &claim, 1, NULL, &err), 0);
    assert_int_equal(append_one(CTX, b, 1, &claim, 1, NULL, 0, NULL, &err), APP_ECONFLICT);
    /* a releases it (e.g. an email change), then b can take it. */
    assert_int_equal(append_one(CTX, a, 2, NULL, 0, &claim, 1, NULL, &err), 0);
    assert_int_equal(append_one(CTX, b, 1, &claim, 1, NULL, 0, NULL, &err), 0);
    assert_int_equal(append_one(CTX, a, 3, &claim, 1, NULL, 0, NULL, &err), APP_ECONFLICT);
}

/* ---- group commit ------------------------------------------------------------------ */

#define GC_THREADS 48
#define GC_APPENDS 20

typedef struct gc_worker {
    char streams[GC_APPENDS][64];
    int64_t positions[GC_APPENDS];
    int failures;
    app_error err;
} gc_worker;

static void *gc_main(void *p)
{
    gc_worker *w = p;
    for (int i = 0; i < GC_APPENDS; i++) {
        new_stream(w->streams[i], sizeof w->streams[i]);
        es_append_result res = {0};
        if (append_one(CTX, w->streams[i], ES_NO_STREAM, NULL, 0, NULL, 0, &res, &w->err) != 0)
            w->failures++;
        w->positions[i] = res.last_position;
    }
    return NULL;
}

static void test_group_commit(void **state)
{
    (void)state;
    uint64_t b0, c0, b1, c1;
    pg_event_store_stats(store, &b0, &c0);
    gc_worker *ws = calloc(GC_THREADS, sizeof *ws);
    assert_non_null(ws);
    pthread_t th[GC_THREADS];
    for (int i = 0; i < GC_THREADS; i++)
        assert_int_equal(pthread_create(&th[i], NULL, gc_main, &ws[i]), 0);
    for (int i = 0; i < GC_THREADS; i++)
        pthread_join(th[i], NULL);
    pg_event_store_stats(store, &b1, &c1);
    for (int i = 0; i < GC_THREADS; i++)
        if (ws[i].failures)
            fail_msg("worker %d: %s: %s", i, ws[i].err.message, ws[i].err.detail);
    uint64_t batches = b1 - b0, commands = c1 - c0;
    print_message("group commit: %llu appends in %llu transactions\n", (unsigned long long)commands,
                  (unsigned long long)batches);
    assert_int_equal(commands, GC_THREADS * GC_APPENDS);
    assert_true(batches < commands);

    app_error err = APP_ERROR_INIT;
    for (int i = 0; i < GC_THREADS; i++) {
        for (int j = 0; j < GC_APPENDS; j++) {
            es_event_list list = {0};
            assert_int_equal(
                port.ops->load_stream(port.self, CTX, ws[i].streams[j], 0, &list, &err), 0);
            assert_int_equal(list.len, 1);
            assert_int_equal(list.items[0].position, ws[i].positions[j]);
            es_event_list_free(&list);
        }
    }
    free(ws);
}

/* An append that makes es_append raise (a stream id too long for the index) fails alone: the
 * committer retries the batch one command at a time. */
typedef struct poison_arg {
    pthread_barrier_t *start;
    const char *stream;
    int rc;
} poison_arg;

static void *poison_main(void *p)
{
    poison_arg *a = p;
    char own[64];
    const char *stream = a->stream;
    if (!stream) {
        new_stream(own, sizeof own);
        stream = own;
    }
    app_error err = APP_ERROR_INIT;
    pthread_barrier_wait(a->start);
    a->rc = append_one(CTX, stream, ES_NO_STREAM, NULL, 0, NULL, 0, NULL, &err);
    return NULL;
}

static void test_poison_fails_alone(void **state)
{
    (void)state;
    enum { N = 24 };
    /* Incompressible, far above the 2704-byte btree row limit. */
    size_t len = 12000;
    char *huge = malloc(len + 1);
    assert_non_null(huge);
    for (size_t i = 0; i < len; i += 32) {
        char id[UUID_STR_LEN];
        uuid_v4(id);
        memcpy(huge + i, id, len - i < 32 ? len - i : 32);
    }
    huge[len] = '\0';
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N);
    poison_arg args[N];
    pthread_t th[N];
    memset(args, 0, sizeof args);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            args[i].start = &start;
            args[i].stream = i == N / 2 ? huge : NULL;
            assert_int_equal(pthread_create(&th[i], NULL, poison_main, &args[i]), 0);
        }
        for (int i = 0; i < N; i++)
            pthread_join(th[i], NULL);
        for (int i = 0; i < N; i++)
            assert_int_equal(args[i].rc, i == N / 2 ? APP_EUNAVAIL : 0);
    }
    pthread_barrier_destroy(&start);
    free(huge);
}

/* ---- the log, tailed while writers append ------------------------------------------ */

#define LOG_WRITERS 8
#define LOG_APPENDS 60

static atomic_int writers_left;

static void *log_writer(void *p)
{
    int *failures = p;
    char stream[64];
    new_stream(stream, sizeof stream);
    for (int i = 0; i < LOG_APPENDS; i++) {
        app_error err = APP_ERROR_INIT;
        /* Two events per append: positions come in pairs within one transaction. */
        char id1[UUID_STR_LEN], id2[UUID_STR_LEN];
        uuid_v4(id1);
        uuid_v4(id2);
        es_new_event evs[2] = {{id1, "t.t.a", 1, "{}", "{}"}, {id2, "t.t.b", 1, "{}", "{}"}};
        es_append_req req = {LOG_CTX, stream, i * 2, evs, 2, NULL, 0, NULL, 0, NULL, NULL};
        es_append_result res;
        if (port.ops->append(port.self, &req, &res, &err) != 0)
            (*failures)++;
    }
    atomic_fetch_sub(&writers_left, 1);
    return NULL;
}

typedef struct tail_state {
    int64_t *seen;
    size_t n_seen, cap;
    int bad_order;
    int errors;
} tail_state;

static void *log_tailer(void *p)
{
    tail_state *t = p;
    int64_t after = 0;
    for (;;) {
        bool writers_done = atomic_load(&writers_left) == 0;
        es_event_list list = {0};
        app_error err = APP_ERROR_INIT;
        if (port.ops->read_log(port.self, LOG_CTX, after, 17, &list, &err) != 0) {
            t->errors++;
            break;
        }
        for (size_t i = 0; i < list.len; i++) {
            if (list.items[i].position <= after)
                t->bad_order++;
            after = list.items[i].position;
            if (t->n_seen < t->cap)
                t->seen[t->n_seen++] = after;
        }
        size_t got = list.len;
        es_event_list_free(&list);
        if (got == 0) {
            if (writers_done)
                break; /* read to the end after every append returned */
            port.ops->wait_for_append(port.self, LOG_CTX, after, 200);
        }
    }
    return NULL;
}

static void test_log_tail(void **state)
{
    (void)state;
    tail_state t = {0};
    t.cap = LOG_WRITERS * LOG_APPENDS * 2 + 16;
    t.seen = calloc(t.cap, sizeof *t.seen);
    assert_non_null(t.seen);
    atomic_store(&writers_left, LOG_WRITERS);
    int failures[LOG_WRITERS] = {0};
    pthread_t tailer, writers[LOG_WRITERS];
    assert_int_equal(pthread_create(&tailer, NULL, log_tailer, &t), 0);
    for (int i = 0; i < LOG_WRITERS; i++)
        assert_int_equal(pthread_create(&writers[i], NULL, log_writer, &failures[i]), 0);
    for (int i = 0; i < LOG_WRITERS; i++)
        pthread_join(writers[i], NULL);
    pthread_join(tailer, NULL);
    for (int i = 0; i < LOG_WRITERS; i++)
        assert_int_equal(failures[i], 0);
    assert_int_equal(t.errors, 0);
    assert_int_equal(t.bad_order, 0);
    assert_int_equal(t.n_seen, LOG_WRITERS * LOG_APPENDS * 2);

    /* A reader from 0 afterwards gets the same sequence, each event once. */
    es_event_list list = {0};
    app_error err = APP_ERROR_INIT;
    assert_int_equal(port.ops->read_log(port.self, LOG_CTX, 0, 100000, &list, &err), 0);
    assert_int_equal(list.len, t.n_seen);
    for (size_t i = 0; i < list.len; i++)
        assert_int_equal(list.items[i].position, t.seen[i]);
    int64_t head = 0;
    assert_int_equal(port.ops->head_position(port.self, LOG_CTX, &head, &err), 0);
    assert_int_equal(head, list.items[list.len - 1].position);
    es_event_list_free(&list);
    assert_int_equal(port.ops->read_log(port.self, LOG_CTX, head, 10, &list, &err), 0);
    assert_int_equal(list.len, 0);
    free(t.seen);
}

/* ---- checkpoints, ping, wake-ups ----------------------------------------------------- */

static void test_snapshots(void **state)
{
    (void)state;
    char stream[64];
    new_stream(stream, sizeof stream);
    app_error err = APP_ERROR_INIT;
    es_snapshot snap = {.version = 9, .state = NULL};
    assert_int_equal(port.ops->load_snapshot(port.self, CTX, stream, &snap, &err), 0);
    assert_int_equal(snap.version, 0);
    assert_null(snap.state);

    /* Only a committed version can be snapshotted. */
    es_snapshot put = {1, 1, (char *)(uintptr_t) "{\"n\": 1}"};
    assert_int_equal(port.ops->save_snapshot(port.self, CTX, stream, &put, &err), APP_EINVAL);
    for (int i = 0; i < 3; i++)
        assert_int_equal(append_one(CTX, stream, i, NULL, 0, NULL, 0, NULL, &err), 0);
    put.version = 4;
    assert_int_equal(port.ops->save_snapshot(port.self, CTX, stream, &put, &err), APP_EINVAL);
    put.version = 2;
    assert_int_equal(port.ops->save_snapshot(port.self, CTX, stream, &put, &err), 0);
    assert_int_equal(port.ops->load_snapshot(port.self, CTX, stream, &snap, &err), 0);
    assert_int_equal(snap.version, 2);
    assert_int_equal(snap.schema_version, 1);
    assert_string_equal(snap.state, "{\"n\": 1}");
    es_snapshot_free(&snap);

    /* An older one never replaces a newer one; a newer one (any schema version) does. */
    es_snapshot older = {1, 1, (char *)(uintptr_t) "{\"n\": 0}"};
    assert_int_equal(port.ops->save_snapshot(port.self, CTX, stream, &older, &err), 0);
    assert_int_equal(port.ops->load_snapshot(port.self, CTX, stream, &snap, &err), 0);
    assert_int_equal(snap.version, 2);
    es_snapshot_free(&snap);
    es_snapshot newer = {3, 2, (char *)(uintptr_t) "{\"n\": 3}"};
    assert_int_equal(port.ops->save_snapshot(port.self, CTX, stream, &newer, &err), 0);
    assert_int_equal(port.ops->load_snapshot(port.self, CTX, stream, &snap, &err), 0);
    assert_int_equal(snap.version, 3);
    assert_int_equal(snap.schema_version, 2);
    assert_string_equal(snap.state, "{\"n\": 3}");
    es_snapshot_free(&snap);

    /* The state must be a JSON object. */
    es_snapshot bad = {3, 1, (char *)(uintptr_t) "[1]"};
    assert_int_equal(port.ops->save_snapshot(port.self, CTX, stream, &bad, &err), APP_EINVAL);
    bad.state = (char *)(uintptr_t) "{oops";
    assert_int_equal(port.ops->save_snapshot(port.self, CTX, stream, &bad, &err), APP_EINVAL);
}

static void test_checkpoints(void **state)
{
    (void)state;
    app_error err = APP_ERROR_INIT;
    int64_t pos = -1;
    assert_int_equal(port.ops->load_checkpoint(port.self, CTX, "test.projection", &pos, &err), 0);
    assert_int_equal(pos, 0);
    assert_int_equal(port.ops->save_checkpoint(port.self, CTX, "test.projection", 42, &err), 0);
    assert_int_equal(port.ops->load_checkpoint(port.self, CTX, "test.projection", &pos, &err), 0);
    assert_int_equal(pos, 42);
    assert_int_equal(port.ops->save_checkpoint(port.self, CTX, "test.projection", 43, &err), 0);
    assert_int_equal(port.ops->load_checkpoint(port.self, CTX, "test.projection", &pos, &err), 0);
    assert_int_equal(pos, 43);
    assert_int_equal(port.ops->load_checkpoint(port.self, CTX, "test.other", &pos, &err), 0);
    assert_int_equal(pos, 0);

    /* Forgetting a projection's generations takes "<name>" and "<name>@<n>", and nothing of
     * a name that only starts the same, nor one that a LIKE pattern's '_' would match. */
    static const char *const names[] = {"test.projection@17", "test.projection@18",
                                        "test.projection2",   "test.projection_x",
                                        "test_projection@1",  "test.projection"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        assert_int_equal(port.ops->save_checkpoint(port.self, CTX, names[i], 5, &err), 0);
    assert_int_equal(port.ops->remove_checkpoints(port.self, CTX, "test.projection", &err), 0);
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        assert_int_equal(port.ops->load_checkpoint(port.self, CTX, names[i], &pos, &err), 0);
        bool gone = strcmp(names[i], "test.projection") == 0 ||
                    strncmp(names[i], "test.projection@", 16) == 0;
        if (pos != (gone ? 0 : 5))
            fail_msg("checkpoint %s: %lld after forgetting test.projection's", names[i],
                     (long long)pos);
    }
}

static void test_ping(void **state)
{
    (void)state;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(port.ops->ping(port.self, &err), 0);
}

/* The statements prepared on pooled_conn's session, by counting pg_prepared_statements. */
static int64_t prepared_on(PGconn *conn)
{
    PGresult *res = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(pg_exec(conn, "SELECT count(*) FROM pg_prepared_statements", 0, NULL,
                             PGRES_TUPLES_OK, &res, &err),
                     0);
    int64_t n = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return n;
}

/* pg_pool_exec prepares a text on its first run on a connection and reuses it; a session
 * that lost its statements (DEALLOCATE ALL, as a pooler may do) still gets its answers, and
 * prepares again; texts past the table's room run unprepared, with the same answers. */
static void test_prepared_statements(void **state)
{
    (void)state;
    pg_pool *pool = pg_event_store_pool(store);
    PGconn *conn = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(pg_pool_acquire(pool, 1000, &conn, &err), 0);
    int64_t before = prepared_on(conn);
    const char *sql = "SELECT $1::int + 1";
    for (int i = 0; i < 3; i++) {
        char arg[16];
        snprintf(arg, sizeof arg, "%d", i);
        const char *params[] = {arg};
        PGresult *res = NULL;
        assert_int_equal(pg_pool_exec(pool, conn, sql, 1, params, PGRES_TUPLES_OK, &res, &err), 0);
        assert_int_equal(atoi(PQgetvalue(res, 0, 0)), i + 1);
        PQclear(res);
        assert_int_equal(prepared_on(conn), before + 1);
    }
    PQclear(PQexec(conn, "DEALLOCATE ALL"));
    const char *params[] = {"41"};
    PGresult *res = NULL;
    assert_int_equal(pg_pool_exec(pool, conn, sql, 1, params, PGRES_TUPLES_OK, &res, &err), 0);
    assert_int_equal(atoi(PQgetvalue(res, 0, 0)), 42);
    PQclear(res);
    assert_int_equal(pg_pool_exec(pool, conn, sql, 1, params, PGRES_TUPLES_OK, &res, &err), 0);
    PQclear(res);
    assert_int_equal(prepared_on(conn), 1);

    for (int i = 0; i < PG_POOL_PREPARED_MAX + 10; i++) {
        char text[64];
        snprintf(text, sizeof text, "SELECT $1::int * %d", i);
        assert_int_equal(pg_pool_exec(pool, conn, text, 1, params, PGRES_TUPLES_OK, &res, &err), 0);
        assert_int_equal(atoi(PQgetvalue(res, 0, 0)), 41 * i);
        PQclear(res);
    }
    assert_int_equal(prepared_on(conn), PG_POOL_PREPARED_MAX);
    /* A statement the server refuses is an error, as unprepared. */
    assert_int_equal(
        pg_pool_exec(pool, conn, "SELECT nope FROM nowhere", 0, NULL, PGRES_TUPLES_OK, NULL, &err),
        APP_EINTERNAL);
    pg_pool_release(pool, conn);

    /* The store's reads go through it: the same answers, twice. */
    char id[UUID_STR_LEN], stream[64];
    new_stream(stream, sizeof stream);
    uuid_v4(id);
    es_new_event ev = {id, "t.t.t", 1, "{}", "{}"};
    es_append_req req = {CTX, stream, ES_NO_STREAM, &ev, 1, NULL, 0, NULL, 0, NULL, NULL};
    es_append_result out;
    assert_int_equal(port.ops->append(port.self, &req, &out, &err), 0);
    for (int i = 0; i < 2; i++) {
        es_event_list list = {0};
        assert_int_equal(port.ops->load_stream(port.self, CTX, stream, 0, &list, &err), 0);
        assert_int_equal(list.len, 1);
        assert_string_equal(list.items[0].event_id, id);
        es_event_list_free(&list);
    }
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

typedef struct other_writer {
    pg_event_store *other;
    int rc;
} other_writer;

static void *other_main(void *p)
{
    other_writer *o = p;
    es_store other = pg_event_store_port(o->other);
    char id[UUID_STR_LEN], stream[64];
    uuid_v4(id);
    new_stream(stream, sizeof stream);
    es_new_event ev = {id, "t.t.t", 1, "{}", "{}"};
    es_append_req req = {CTX, stream, ES_NO_STREAM, &ev, 1, NULL, 0, NULL, 0, NULL, NULL};
    es_append_result res;
    app_error err = APP_ERROR_INIT;
    o->rc = other.ops->append(other.self, &req, &res, &err);
    return NULL;
}

static bool listening(void *arg)
{
    (void)arg;
    return pg_event_store_listener_pid(store, CTX) != 0;
}

/* A commit by another store (as if another process) wakes a waiter through NOTIFY. */
static void test_wakeup_across_stores(void **state)
{
    (void)state;
    pg_event_store_options opts = PG_EVENT_STORE_OPTIONS_INIT;
    opts.dsn = dsn;
    app_error err = APP_ERROR_INIT;
    other_writer o = {0};
    assert_int_equal(pg_event_store_new(&o.other, &opts, &err), 0);
    int64_t head = 0;
    assert_int_equal(port.ops->head_position(port.self, CTX, &head, &err), 0);
    /* A wait registers the context with the store (a no-op if an append did already); once
     * the listener says it LISTENs on it, a NOTIFY cannot be missed. */
    port.ops->wait_for_append(port.self, CTX, INT64_MAX, 0);
    if (ts_wait_until(listening, NULL, TS_HANG_GUARD_MS) != 0)
        fail_msg("the listener did not LISTEN on " CTX "_ctx_events");

    /* Whether the commit lands before the wait starts or during it, only its NOTIFY can end
     * the wait before the timeout: this store appends nothing meanwhile. The timeout is only
     * a hang guard. */
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, other_main, &o), 0);
    double started = now_ms();
    port.ops->wait_for_append(port.self, CTX, head, TS_HANG_GUARD_MS);
    double waited = now_ms() - started;
    pthread_join(th, NULL);
    assert_int_equal(o.rc, 0);
    print_message("woken after %.0f ms\n", waited);
    if (waited >= TS_HANG_GUARD_MS)
        fail_msg("no NOTIFY woke the waiter in %d ms", TS_HANG_GUARD_MS);
    pg_event_store_free(o.other);
}

static void test_unavailable(void **state)
{
    (void)state;
    pg_event_store_options opts = PG_EVENT_STORE_OPTIONS_INIT;
    opts.dsn = "postgresql://127.0.0.1:1/app";
    opts.connect_timeout_s = 2;
    pg_event_store *down = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(pg_event_store_new(&down, &opts, &err), 0); /* starts while down */
    es_store p = pg_event_store_port(down);
    assert_int_equal(p.ops->ping(p.self, &err), APP_EUNAVAIL);
    char id[UUID_STR_LEN];
    uuid_v4(id);
    es_new_event ev = {id, "t.t.t", 1, "{}", "{}"};
    es_append_req req = {CTX, "s-1", ES_ANY_VERSION, &ev, 1, NULL, 0, NULL, 0, NULL, NULL};
    es_append_result res;
    assert_int_equal(p.ops->append(p.self, &req, &res, &err), APP_EUNAVAIL);
    assert_true(strlen(err.detail) > 0);
    es_event_list list = {0};
    assert_int_equal(p.ops->read_log(p.self, CTX, 0, 10, &list, &err), APP_EUNAVAIL);
    pg_event_store_free(down);
}

/* ---- the commit's outcome when the connection breaks (test/support/pg_proxy) ------------- */

/* An append through a proxy that breaks the connection at the commit as fault says; returns
 * its result code, with the error in *err and the stream it wrote to in stream. */
static int append_cut(pg_proxy_fault fault, char *stream, size_t size, es_append_result *res,
                      app_error *err)
{
    pg_proxy *proxy = NULL;
    assert_int_equal(pg_proxy_start(&proxy, atoi(ts_env("APP_TEST_PG_PORT"))), 0);
    char via[512];
    snprintf(via, sizeof via, "%s port=%d sslmode=disable gssencmode=disable", dsn,
             pg_proxy_port(proxy));
    pg_event_store_options opts = PG_EVENT_STORE_OPTIONS_INIT;
    opts.dsn = via;
    opts.pool_size = 1;
    pg_event_store *cut = NULL;
    assert_int_equal(pg_event_store_new(&cut, &opts, err), 0);
    es_store p = pg_event_store_port(cut);
    new_stream(stream, size);
    char id[UUID_STR_LEN];
    uuid_v4(id);
    es_new_event ev = {id, "t.cut.happened", 1, "{}", "{}"};
    es_append_req req = {CTX, stream, ES_NO_STREAM, &ev, 1, NULL, 0, NULL, 0, NULL, NULL};
    /* A first append opens the committer's connection, so the next commit is the one cut. */
    char warm[64];
    new_stream(warm, sizeof warm);
    char wid[UUID_STR_LEN];
    uuid_v4(wid);
    es_new_event wev = {wid, "t.cut.happened", 1, "{}", "{}"};
    es_append_req wreq = {CTX, warm, ES_NO_STREAM, &wev, 1, NULL, 0, NULL, 0, NULL, NULL};
    assert_int_equal(p.ops->append(p.self, &wreq, res, err), 0);
    pg_proxy_arm(proxy, fault);
    int rc = p.ops->append(p.self, &req, res, err);
    assert_int_equal(pg_proxy_cuts(proxy), 1);
    pg_event_store_free(cut);
    pg_proxy_stop(proxy);
    return rc;
}

static long long events_of(const char *stream)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM " CTX "_ctx.events WHERE stream_id = '%s'",
             stream);
    return query_int(sql);
}

/* The COMMIT never reached the server: "not stored", and nothing is. */
static void test_commit_lost_on_the_way(void **state)
{
    (void)state;
    char stream[64];
    es_append_result res;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(append_cut(PGP_DROP_COMMIT, stream, sizeof stream, &res, &err), APP_EUNAVAIL);
    assert_string_equal(err.message, "event store append failed");
    assert_non_null(strstr(err.detail, "not stored"));
    assert_int_equal(events_of(stream), 0);
}

/* The server committed and answered everything but COMMIT: the append succeeded, and says so
 * with its result. */
static void test_commit_answer_lost(void **state)
{
    (void)state;
    char stream[64];
    es_append_result res = {0};
    app_error err = APP_ERROR_INIT;
    if (append_cut(PGP_LOSE_COMMIT_REPLY, stream, sizeof stream, &res, &err) != 0)
        fail_msg("an append that committed failed: %s: %s", err.message, err.detail);
    assert_int_equal(res.version, 1);
    assert_true(res.last_position > 0);
    assert_int_equal(events_of(stream), 1);
}

/* The server committed and every answer after the client's COMMIT was lost: the events are
 * stored but the append's own answer is not known, so the outcome is reported unknown
 * (a retry with the Idempotency-Key answers from its record). */
static void test_every_answer_lost(void **state)
{
    (void)state;
    char stream[64];
    es_append_result res;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(append_cut(PGP_LOSE_ALL_REPLIES, stream, sizeof stream, &res, &err),
                     APP_EUNAVAIL);
    assert_string_equal(err.message, APP_OUTCOME_UNKNOWN);
    assert_non_null(strstr(err.detail, "committed"));
    assert_int_equal(events_of(stream), 1);
}

/* The committer's connection dies between batches: the next append reconnects. */
static void test_committer_reconnects(void **state)
{
    (void)state;
    app_error err = APP_ERROR_INIT;
    char stream[64];
    new_stream(stream, sizeof stream);
    assert_int_equal(append_one(CTX, stream, ES_NO_STREAM, NULL, 0, NULL, 0, NULL, &err), 0);
    assert_true(terminate_backends("pg_stat_activity WHERE datname = current_database()") > 0);
    /* The backends are gone: the store notices before using a connection, so no request
     * fails. */
    int rc = append_one(CTX, stream, 1, NULL, 0, NULL, 0, NULL, &err);
    if (rc != 0)
        fail_msg("%s: %s", err.message, err.detail);
    assert_int_equal(port.ops->ping(port.self, &err), 0);
    es_event_list list = {0};
    assert_int_equal(port.ops->load_stream(port.self, CTX, stream, 0, &list, &err), 0);
    assert_int_equal(list.len, 2);
    es_event_list_free(&list);
}

static bool listening_anew(void *arg)
{
    int pid = pg_event_store_listener_pid(store, CTX);
    return pid != 0 && pid != *(const int *)arg;
}

/* Every backend killed (as in a server restart): the listener reconnects and LISTENs again. */
static void test_wakeup_after_listener_loss(void **state)
{
    port.ops->wait_for_append(port.self, CTX, INT64_MAX, 0); /* registers CTX, see above */
    if (ts_wait_until(listening, NULL, TS_HANG_GUARD_MS) != 0)
        fail_msg("the listener did not LISTEN on " CTX "_ctx_events");
    int lost = pg_event_store_listener_pid(store, CTX);
    assert_true(terminate_backends("pg_stat_activity WHERE datname = current_database()") > 0);
    /* Its old session is gone; a new one must take its place before a NOTIFY can be heard. */
    if (ts_wait_until(listening_anew, &lost, TS_HANG_GUARD_MS) != 0)
        fail_msg("the listener did not LISTEN again after losing session %d", lost);
    test_wakeup_across_stores(state);
}

/* Process state rides on an append: saved only when the append succeeds, due once its
 * deadline passes, never due again once done. */
static void test_process_deadlines(void **state)
{
    (void)state;
    char s1[64], s2[64], id1[UUID_STR_LEN], id2[UUID_STR_LEN], id3[UUID_STR_LEN];
    new_stream(s1, sizeof s1);
    new_stream(s2, sizeof s2);
    uuid_v4(id1);
    uuid_v4(id2);
    uuid_v4(id3);
    app_error err = APP_ERROR_INIT;
    es_new_event ev1 = {id1, "test.order.placed", 1, "{}", "{}"};
    es_process p1 = {"test.placement", s1, "{\"step\": \"placed\"}", 1000, false};
    es_append_req r1 = {CTX, s1, ES_NO_STREAM, &ev1, 1, NULL, 0, NULL, 0, &p1, NULL};
    assert_int_equal(port.ops->append(port.self, &r1, NULL, &err), 0);

    /* A refused append saves no process state. */
    es_new_event ev2 = {id2, "test.order.placed", 1, "{}", "{}"};
    es_process p2 = {"test.placement", s2, "{}", 1000, false};
    es_append_req r2 = {CTX, s2, 5, &ev2, 1, NULL, 0, NULL, 0, &p2, NULL};
    assert_int_equal(port.ops->append(port.self, &r2, NULL, &err), APP_EVERSION);

    es_due_list due = {0};
    assert_int_equal(port.ops->due_processes(port.self, CTX, "test.placement", 999, 10, &due, &err),
                     0);
    assert_int_equal(due.len, 0);
    es_due_list_free(&due);
    assert_int_equal(
        port.ops->due_processes(port.self, CTX, "test.placement", 1000, 10, &due, &err), 0);
    assert_int_equal(due.len, 1);
    assert_string_equal(due.items[0].id, s1);
    assert_int_equal(due.items[0].deadline_ms, 1000);
    assert_non_null(strstr(due.items[0].state, "placed"));
    es_due_list_free(&due);

    es_new_event ev3 = {id3, "test.order.confirmed", 1, "{}", "{}"};
    es_process p3 = {"test.placement", s1, "{\"step\": \"confirmed\"}", 0, true};
    es_append_req r3 = {CTX, s1, 1, &ev3, 1, NULL, 0, NULL, 0, &p3, NULL};
    assert_int_equal(port.ops->append(port.self, &r3, NULL, &err), 0);
    assert_int_equal(
        port.ops->due_processes(port.self, CTX, "test.placement", 4102444800000, 10, &due, &err),
        0);
    assert_int_equal(due.len, 0);
    es_due_list_free(&due);
}

/* Dead letters: recorded with the reason, recorded again as one more attempt, listed per
 * subscriber and in id order, removed once. */
static void test_dead_letters(void **state)
{
    (void)state;
    app_error err = APP_ERROR_INIT;
    char id1[UUID_STR_LEN];
    uuid_v4(id1);
    exec_sql("DELETE FROM " CTX "_ctx.dead_letters");
    assert_int_equal(
        port.ops->add_dead_letter(port.self, CTX, "kafka.relay", 7, id1, "message too large", &err),
        0);
    assert_int_equal(port.ops->add_dead_letter(port.self, CTX, "other", 9, "", "rejected", &err),
                     0);
    assert_int_equal(
        port.ops->add_dead_letter(port.self, CTX, "kafka.relay", 7, id1, "still too large", &err),
        0);

    es_dead_letter_list list = {0};
    assert_int_equal(
        port.ops->list_dead_letters(port.self, CTX, "kafka.relay", 0, 100, &list, &err), 0);
    assert_int_equal(list.len, 1);
    assert_int_equal(list.items[0].position, 7);
    assert_string_equal(list.items[0].event_id, id1);
    assert_string_equal(list.items[0].error, "still too large");
    assert_string_equal(list.items[0].subscriber, "kafka.relay");
    assert_int_equal(list.items[0].attempts, 2);
    assert_true(strlen(list.items[0].created_at) > 20);
    int64_t first = list.items[0].id;
    es_dead_letter_list_free(&list);

    assert_int_equal(port.ops->list_dead_letters(port.self, CTX, NULL, 0, 100, &list, &err), 0);
    assert_int_equal(list.len, 2);
    assert_true(list.items[0].id < list.items[1].id);
    assert_string_equal(list.items[1].event_id, "");
    int64_t second = list.items[1].id;
    es_dead_letter_list_free(&list);
    assert_int_equal(port.ops->list_dead_letters(port.self, CTX, NULL, first, 100, &list, &err), 0);
    assert_int_equal(list.len, 1);
    assert_int_equal(list.items[0].id, second);
    assert_false(list.items[0].redrive_requested);
    es_dead_letter_list_free(&list);

    /* A redrive request is seen in the list, and recording the dead letter again (the redrive
     * failed) clears it. */
    assert_int_equal(port.ops->request_redrive(port.self, CTX, second, &err), 0);
    assert_int_equal(port.ops->list_dead_letters(port.self, CTX, "other", 0, 10, &list, &err), 0);
    assert_true(list.len == 1 && list.items[0].redrive_requested);
    es_dead_letter_list_free(&list);
    assert_int_equal(port.ops->add_dead_letter(port.self, CTX, "other", 9, "", "again", &err), 0);
    assert_int_equal(port.ops->list_dead_letters(port.self, CTX, "other", 0, 10, &list, &err), 0);
    assert_true(list.len == 1 && !list.items[0].redrive_requested);
    assert_int_equal(list.items[0].attempts, 2);
    assert_string_equal(list.items[0].error, "again");
    es_dead_letter_list_free(&list);
    assert_int_equal(port.ops->request_redrive(port.self, CTX, 999999, &err), APP_ENOTFOUND);

    assert_int_equal(port.ops->remove_dead_letter(port.self, CTX, first, &err), 0);
    assert_int_equal(port.ops->remove_dead_letter(port.self, CTX, first, &err), APP_ENOTFOUND);
    assert_int_equal(port.ops->list_dead_letters(port.self, CTX, "kafka.relay", 0, 10, &list, &err),
                     0);
    assert_int_equal(list.len, 0);
    es_dead_letter_list_free(&list);

    assert_int_equal(
        port.ops->add_dead_letter(port.self, CTX, "kafka.relay", 8, "not-a-uuid", "x", &err),
        APP_EINVAL);
    assert_int_equal(port.ops->add_dead_letter(port.self, "Bad-Context", "s", 8, "", "x", &err),
                     APP_EINVAL);
}

/* Kills the session holding the lease (as if its process died or lost its connection) and
 * returns once it has exited, so its lock is free. Resigned leases were unlocked, so the
 * holder is the only session with a lease lock. */
static void kill_lease_holder(void)
{
    assert_int_equal(terminate_backends("pg_locks WHERE locktype = 'advisory'"
                                        " AND classid = 1818583396 AND objsubid = 2 AND granted"),
                     1);
}

/* One leader per (context, name) across stores; the lease moves on when its holder dies or
 * resigns, and the old holder notices it lost it. */
static void test_leadership(void **state)
{
    (void)state;
    app_error err = APP_ERROR_INIT;
    pg_event_store_options opts = PG_EVENT_STORE_OPTIONS_INIT;
    opts.dsn = dsn;
    pg_event_store *other = NULL;
    assert_int_equal(pg_event_store_new(&other, &opts, &err), 0);
    es_store b = pg_event_store_port(other);

    bool a_leads = false, b_leads = true;
    assert_int_equal(port.ops->lead(port.self, CTX, "kafka.relay", &a_leads, &err), 0);
    assert_true(a_leads);
    assert_int_equal(b.ops->lead(b.self, CTX, "kafka.relay", &b_leads, &err), 0);
    assert_false(b_leads);
    /* Asking again confirms; other names and contexts are separate leases. */
    assert_int_equal(port.ops->lead(port.self, CTX, "kafka.relay", &a_leads, &err), 0);
    assert_true(a_leads);
    assert_int_equal(b.ops->lead(b.self, CTX, "other.role", &b_leads, &err), 0);
    assert_true(b_leads);
    assert_int_equal(b.ops->lead(b.self, LOG_CTX, "kafka.relay", &b_leads, &err), 0);
    assert_true(b_leads);
    b.ops->resign(b.self, CTX, "other.role");
    b.ops->resign(b.self, LOG_CTX, "kafka.relay");

    /* The holder's session dies: it notices, and the other store takes over. */
    kill_lease_holder();
    assert_int_equal(b.ops->lead(b.self, CTX, "kafka.relay", &b_leads, &err), 0);
    assert_true(b_leads);
    assert_int_equal(port.ops->lead(port.self, CTX, "kafka.relay", &a_leads, &err), 0);
    assert_false(a_leads);

    /* Resigning hands it back at once. */
    b.ops->resign(b.self, CTX, "kafka.relay");
    assert_int_equal(port.ops->lead(port.self, CTX, "kafka.relay", &a_leads, &err), 0);
    assert_true(a_leads);
    port.ops->resign(port.self, CTX, "kafka.relay");
    port.ops->resign(port.self, CTX, "never.held"); /* harmless */
    pg_event_store_free(other);

    /* A store that cannot reach the database leads nothing and says why. */
    opts.dsn = "postgresql://127.0.0.1:1/app";
    opts.connect_timeout_s = 2;
    assert_int_equal(pg_event_store_new(&other, &opts, &err), 0);
    b = pg_event_store_port(other);
    b_leads = true;
    assert_int_equal(b.ops->lead(b.self, CTX, "kafka.relay", &b_leads, &err), APP_EUNAVAIL);
    assert_false(b_leads);
    pg_event_store_free(other);
}

int main(void)
{
    dsn = getenv("APP_POSTGRES_DSN");
    if (!dsn || !*dsn) {
        fprintf(stderr, "test_pg_event_store: APP_POSTGRES_DSN is not set; it needs a "
                        "PostgreSQL server (test/run.sh starts one)\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_expected_version),
        cmocka_unit_test(test_invalid_input),
        cmocka_unit_test(test_duplicate_event_id),
        cmocka_unit_test(test_duplicate_event_race),
        cmocka_unit_test(test_same_version_race),
        cmocka_unit_test(test_claim_race),
        cmocka_unit_test(test_release_claim),
        cmocka_unit_test(test_idempotency_keys),
        cmocka_unit_test(test_group_commit),
        cmocka_unit_test(test_poison_fails_alone),
        cmocka_unit_test(test_log_tail),
        cmocka_unit_test(test_checkpoints),
        cmocka_unit_test(test_snapshots),
        cmocka_unit_test(test_process_deadlines),
        cmocka_unit_test(test_ping),
        cmocka_unit_test(test_prepared_statements),
        cmocka_unit_test(test_wakeup_across_stores),
        cmocka_unit_test(test_unavailable),
        cmocka_unit_test(test_commit_lost_on_the_way),
        cmocka_unit_test(test_commit_answer_lost),
        cmocka_unit_test(test_every_answer_lost),
        cmocka_unit_test(test_committer_reconnects),
        cmocka_unit_test(test_wakeup_after_listener_loss),
        cmocka_unit_test(test_dead_letters),
        cmocka_unit_test(test_leadership),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
