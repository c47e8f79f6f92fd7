/* The inbox on a real PostgreSQL (APP_POSTGRES_DSN): a batch with its offsets in one
 * transaction, duplicates stored once, non-events in the dead letters, a forked stream
 * refused with the guilty message named, and the event store reading a mirrored context
 * from the inbox through the same port (and refusing appends to it), woken by NOTIFY. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/postgres/pg_event_store.h"
#include "adapters/postgres/pg_inbox.h"
#include "adapters/postgres/pg_pool.h"
#include "core/uuid.h"
#include "test/support/services.h"

#define SRC   "pgtest_src" /* mirrored here: schema pgtest_src_inbox */
#define GROUP "svc.from.pgtest_src"
#define TOPIC "pgtest_src.events"

static pg_event_store *store;
static es_store events;
static inbox_store inbox;

static int setup(void **state)
{
    (void)state;
    const char *dsn = getenv("APP_POSTGRES_DSN");
    if (!dsn) {
        fprintf(stderr, "test_pg_inbox: APP_POSTGRES_DSN is not set (run through test/run.sh)\n");
        return -1;
    }
    static const char *const mirrored[] = {SRC};
    pg_event_store_options opts = PG_EVENT_STORE_OPTIONS_INIT;
    opts.dsn = dsn;
    opts.mirrored = mirrored;
    opts.n_mirrored = 1;
    app_error err = APP_ERROR_INIT;
    if (pg_event_store_new(&store, &opts, &err) != 0) {
        fprintf(stderr, "pg_event_store_new: %s: %s\n", err.message, err.detail);
        return -1;
    }
    PGconn *conn = NULL;
    if (pg_pool_acquire(pg_event_store_pool(store), 5000, &conn, &err) != 0)
        return -1;
    PGresult *res = PQexec(conn, "DROP SCHEMA IF EXISTS " SRC "_inbox CASCADE");
    PQclear(res);
    pg_pool_release(pg_event_store_pool(store), conn);
    int applied = 0;
    if (pg_inbox_migrate(pg_event_store_pool(store), SRC, NULL, &applied, &err) != 0 ||
        applied < 2) {
        fprintf(stderr, "pg_inbox_migrate: %s: %s\n", err.message, err.detail);
        return -1;
    }
    events = pg_event_store_port(store);
    inbox = pg_inbox_port(pg_event_store_pool(store));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pg_event_store_free(store);
    return 0;
}

static inbox_message event_msg(int32_t partition, int64_t offset, const char *id,
                               const char *stream, int64_t version)
{
    inbox_message m = {partition, offset,
                       id,        stream,
                       version,   "src.thing.happened",
                       1,         "{\"n\": 1}",
                       "{}",      "2026-01-01T00:00:00.000000Z",
                       NULL};
    return m;
}

static size_t store_batch(const inbox_message *msgs, size_t n)
{
    size_t stored = 99, failed_at = 99;
    app_error err = APP_ERROR_INIT;
    int rc = inbox.ops->store(inbox.self, SRC, GROUP, TOPIC, msgs, n, &stored, &failed_at, &err);
    if (rc != 0)
        fail_msg("store: %s: %s", err.message, err.detail);
    return stored;
}

static void test_batch_duplicates_and_dead_letters(void **state)
{
    (void)state;
    char a[UUID_STR_LEN], b[UUID_STR_LEN], c[UUID_STR_LEN];
    uuid_v4(a);
    uuid_v4(b);
    uuid_v4(c);
    inbox_message batch[] = {
        event_msg(0, 10, a, "s-1", 1),
        event_msg(0, 11, a, "s-1", 1), /* produced twice */
        {0, 12, NULL, NULL, 0, NULL, 0, NULL, NULL, NULL, "not json"},
        event_msg(0, 13, b, "s-1", 2),
        event_msg(2, 40, c, "s-2", 1),
    };
    assert_int_equal(store_batch(batch, 5), 3);

    es_event_list log = {0};
    app_error err = APP_ERROR_INIT;
    assert_int_equal(events.ops->read_log(events.self, SRC, 0, 10, &log, &err), 0);
    assert_int_equal(log.len, 3);
    assert_string_equal(log.items[0].event_id, a);
    assert_string_equal(log.items[1].event_id, b);
    assert_int_equal(log.items[1].version, 2);
    assert_string_equal(log.items[2].event_id, c);
    assert_string_equal(log.items[0].recorded_at, "2026-01-01T00:00:00.000000Z");
    int64_t head = 0;
    assert_int_equal(events.ops->head_position(events.self, SRC, &head, &err), 0);
    assert_int_equal(head, log.items[2].position);
    es_event_list_free(&log);
    es_event_list stream = {0};
    assert_int_equal(events.ops->load_stream(events.self, SRC, "s-1", 0, &stream, &err), 0);
    assert_int_equal(stream.len, 2);
    es_event_list_free(&stream);

    inbox_position pos[] = {{0, 0}, {1, 0}, {2, 0}};
    assert_int_equal(inbox.ops->load_offsets(inbox.self, SRC, GROUP, TOPIC, pos, 3, &err), 0);
    assert_int_equal(pos[0].next_offset, 14);
    assert_int_equal(pos[1].next_offset, -1);
    assert_int_equal(pos[2].next_offset, 41);

    es_dead_letter_list dl = {0};
    assert_int_equal(events.ops->list_dead_letters(events.self, SRC, NULL, 0, 10, &dl, &err), 0);
    assert_int_equal(dl.len, 1);
    assert_string_equal(dl.items[0].subscriber, INBOX_DEAD_LETTER_PREFIX "0");
    assert_int_equal(dl.items[0].position, 12);
    assert_string_equal(dl.items[0].error, "not json");
    es_dead_letter_list_free(&dl);

    /* The same batch again (a consumer that read past its stored offsets): nothing new, and
     * the offsets never move back. */
    inbox_message older[] = {event_msg(0, 10, a, "s-1", 1)};
    assert_int_equal(store_batch(older, 1), 0);
    assert_int_equal(inbox.ops->load_offsets(inbox.self, SRC, GROUP, TOPIC, pos, 1, &err), 0);
    assert_int_equal(pos[0].next_offset, 14);
}

/* Another event at a stream version the inbox holds is a fork, not a duplicate: refused,
 * naming the message, with nothing of the batch kept. */
static void test_fork_is_refused_naming_the_message(void **state)
{
    (void)state;
    char ok[UUID_STR_LEN], fork[UUID_STR_LEN];
    uuid_v4(ok);
    uuid_v4(fork);
    inbox_message batch[] = {event_msg(1, 5, ok, "s-3", 1), event_msg(1, 6, fork, "s-1", 1)};
    size_t stored = 99, failed_at = 99;
    app_error err = APP_ERROR_INIT;
    int rc = inbox.ops->store(inbox.self, SRC, GROUP, TOPIC, batch, 2, &stored, &failed_at, &err);
    assert_true(rc < 0 && rc != APP_EUNAVAIL);
    assert_int_equal(failed_at, 1);
    assert_non_null(strstr(err.detail, "duplicate key"));
    inbox_position pos[] = {{1, 0}};
    assert_int_equal(inbox.ops->load_offsets(inbox.self, SRC, GROUP, TOPIC, pos, 1, &err), 0);
    assert_int_equal(pos[0].next_offset, -1);
    es_event_list s3 = {0};
    assert_int_equal(events.ops->load_stream(events.self, SRC, "s-3", 0, &s3, &err), 0);
    assert_int_equal(s3.len, 0);
}

static void test_appends_to_a_mirrored_context_are_refused(void **state)
{
    (void)state;
    char id[UUID_STR_LEN];
    uuid_v4(id);
    es_new_event ev = {id, "src.thing.happened", 1, "{}", "{}"};
    es_append_req req = {.context = SRC,
                         .stream_id = "s-9",
                         .expected_version = ES_ANY_VERSION,
                         .events = &ev,
                         .n_events = 1};
    app_error err = APP_ERROR_INIT;
    assert_int_equal(events.ops->append(events.self, &req, NULL, &err), APP_EINVAL);
    assert_non_null(strstr(err.message, "mirrored from kafka"));
    assert_string_equal(err.fields[0].field, "context");
}

static bool listening(void *arg)
{
    (void)arg;
    return pg_event_store_listener_pid(store, SRC) != 0;
}

typedef struct later {
    char id[UUID_STR_LEN];
    size_t stored;
} later;

static void *store_later(void *p)
{
    later *l = p;
    inbox_message m = event_msg(3, 1, l->id, "s-4", 1);
    app_error err = APP_ERROR_INIT;
    inbox.ops->store(inbox.self, SRC, GROUP, TOPIC, &m, 1, &l->stored, NULL, &err);
    return NULL;
}

/* A batch stored by the inbox wakes readers of the mirrored log at once (NOTIFY on the
 * inbox's channel), as an append wakes readers of a context's own log. */
static void test_store_wakes_readers(void **state)
{
    (void)state;
    app_error err = APP_ERROR_INIT;
    int64_t head = 0;
    assert_int_equal(events.ops->head_position(events.self, SRC, &head, &err), 0);
    events.ops->wait_for_append(events.self, SRC, INT64_MAX, 0);
    if (ts_wait_until(listening, NULL, TS_HANG_GUARD_MS) != 0)
        fail_msg("the listener did not LISTEN on " SRC "_inbox_events");
    later l = {.stored = 0};
    uuid_v4(l.id);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, store_later, &l), 0);
    long long started = ts_now_ms();
    events.ops->wait_for_append(events.self, SRC, head, TS_HANG_GUARD_MS);
    long long waited = ts_now_ms() - started;
    pthread_join(th, NULL);
    assert_int_equal(l.stored, 1);
    if (waited >= TS_HANG_GUARD_MS)
        fail_msg("no NOTIFY woke the reader of the mirrored log");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_duplicates_and_dead_letters),
        cmocka_unit_test(test_fork_is_refused_naming_the_message),
        cmocka_unit_test(test_appends_to_a_mirrored_context_are_refused),
        cmocka_unit_test(test_store_wakes_readers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
