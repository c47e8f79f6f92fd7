/* Migrations against a real PostgreSQL (APP_POSTGRES_DSN): applied once, idempotent,
 * safe when two processes start together, and errors that name the file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/postgres/pg_migrate.h"
#include "adapters/postgres/pg_pool.h"

#define SCHEMA "pgtest_migrate_ctx"

static const char *dsn;

static const mod_migration ctx_migrations[] = {
    {"001_things.sql", "CREATE TABLE things (id int PRIMARY KEY);\n"},
    {"002_seed.sql", "INSERT INTO {{schema}}.things VALUES (1);\n"},
    {NULL, NULL},
};

static const mod_migration bad_migrations[] = {
    {"001_things.sql", "CREATE TABLE things (id int PRIMARY KEY);\n"},
    {"002_seed.sql", "INSERT INTO {{schema}}.things VALUES (1);\n"},
    {"003_bad.sql", "CREATE TABLE broken (id nosuchtype);\n"},
    {NULL, NULL},
};

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

static int64_t query_count(const char *sql)
{
    PGconn *conn = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(pg_connect(dsn, 5, &conn, &err), 0);
    PGresult *res = PQexec(conn, sql);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    int64_t n = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    PQfinish(conn);
    return n;
}

/* Every migration there is: the event store's and the test context's. */
static int all_migrations(void)
{
    int n = 0;
    for (const mod_migration *m = pg_store_migrations; m->name; m++)
        n++;
    for (const mod_migration *m = ctx_migrations; m->name; m++)
        n++;
    return n;
}

static void test_applied_once(void **state)
{
    (void)state;
    exec_sql("DROP SCHEMA IF EXISTS " SCHEMA " CASCADE");
    pg_pool *pool = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(pg_pool_new(&pool, dsn, 2, 5, &err), 0);

    int applied = -1;
    int rc = pg_migrate_context(pool, SCHEMA, pg_store_migrations, ctx_migrations, &applied, &err);
    if (rc != 0)
        fail_msg("%s: %s", err.message, err.detail);
    assert_int_equal(applied, all_migrations());
    assert_int_equal(
        pg_migrate_context(pool, SCHEMA, pg_store_migrations, ctx_migrations, &applied, &err), 0);
    assert_int_equal(applied, 0);

    assert_int_equal(query_count("SELECT count(*) FROM " SCHEMA ".schema_migrations"
                                 " WHERE name IN ('store/001_event_store.sql',"
                                 " '001_things.sql', '002_seed.sql')"),
                     3);
    assert_int_equal(query_count("SELECT count(*) FROM " SCHEMA ".things"), 1);
    assert_int_equal(query_count("SELECT count(*) FROM pg_proc p JOIN pg_namespace n"
                                 " ON n.oid = p.pronamespace WHERE n.nspname = '" SCHEMA "'"
                                 " AND p.proname = 'es_append'"),
                     1);
    pg_pool_free(pool);
}

typedef struct migrate_arg {
    int rc;
    int applied;
    app_error err;
} migrate_arg;

static void *migrate_thread(void *p)
{
    migrate_arg *a = p;
    pg_pool *pool = NULL;
    a->rc = pg_pool_new(&pool, dsn, 1, 5, &a->err);
    if (a->rc == 0)
        a->rc = pg_migrate_context(pool, SCHEMA, pg_store_migrations, ctx_migrations, &a->applied,
                                   &a->err);
    pg_pool_free(pool);
    return NULL;
}

static void test_concurrent(void **state)
{
    (void)state;
    for (int round = 0; round < 3; round++) {
        exec_sql("DROP SCHEMA IF EXISTS " SCHEMA " CASCADE");
        migrate_arg args[2];
        pthread_t th[2];
        memset(args, 0, sizeof args);
        for (int i = 0; i < 2; i++)
            assert_int_equal(pthread_create(&th[i], NULL, migrate_thread, &args[i]), 0);
        for (int i = 0; i < 2; i++)
            pthread_join(th[i], NULL);
        for (int i = 0; i < 2; i++)
            if (args[i].rc != 0)
                fail_msg("%s: %s", args[i].err.message, args[i].err.detail);
        assert_int_equal(args[0].applied + args[1].applied, all_migrations());
        assert_int_equal(query_count("SELECT count(*) FROM " SCHEMA ".schema_migrations"),
                         all_migrations());
    }
}

static void test_error_names_file(void **state)
{
    (void)state;
    exec_sql("DROP SCHEMA IF EXISTS " SCHEMA " CASCADE");
    pg_pool *pool = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(pg_pool_new(&pool, dsn, 1, 5, &err), 0);
    int applied = 0;
    int rc = pg_migrate_context(pool, SCHEMA, pg_store_migrations, bad_migrations, &applied, &err);
    assert_true(rc < 0);
    assert_non_null(strstr(err.message, "003_bad.sql"));
    assert_non_null(strstr(err.detail, "nosuchtype"));
    /* Nothing is applied, not even the schema. */
    assert_int_equal(query_count("SELECT count(*) FROM pg_namespace WHERE nspname = '" SCHEMA "'"),
                     0);
    pg_pool_free(pool);
}

static void test_bad_schema_name(void **state)
{
    (void)state;
    pg_pool *pool = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(pg_pool_new(&pool, dsn, 1, 5, &err), 0);
    assert_int_equal(pg_migrate_context(pool, "x; drop", NULL, NULL, NULL, &err), APP_EINVAL);
    pg_pool_free(pool);
}

static void test_pool_unavailable(void **state)
{
    (void)state;
    pg_pool *pool = NULL;
    app_error err = APP_ERROR_INIT;
    /* Lazy: creating the pool never touches the server. */
    assert_int_equal(pg_pool_new(&pool, "postgresql://127.0.0.1:1/app", 2, 2, &err), 0);
    PGconn *conn = NULL;
    assert_int_equal(pg_pool_acquire(pool, 1000, &conn, &err), APP_EUNAVAIL);
    assert_true(strlen(err.detail) > 0);
    /* The failed slot is free again. */
    assert_int_equal(pg_pool_acquire(pool, 1000, &conn, &err), APP_EUNAVAIL);
    pg_pool_free(pool);
}

static void test_pool_reconnects_broken(void **state)
{
    (void)state;
    pg_pool *pool = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(pg_pool_new(&pool, dsn, 1, 5, &err), 0);
    PGconn *conn = NULL;
    assert_int_equal(pg_pool_acquire(pool, 1000, &conn, &err), 0);
    /* Kill our own backend from another session: the pooled connection is now broken. */
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)", PQbackendPID(conn));
    PGconn *other = NULL;
    assert_int_equal(pg_connect(dsn, 5, &other, &err), 0);
    PGresult *res = PQexec(other, sql);
    PQclear(res);
    PQfinish(other);
    res = PQexec(conn, "SELECT 1");
    assert_int_not_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    PQclear(res);
    pg_pool_release(pool, conn);

    /* A pool of one: the next acquire must give a working connection again. */
    assert_int_equal(pg_pool_acquire(pool, 1000, &conn, &err), 0);
    res = PQexec(conn, "SELECT 1");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    PQclear(res);
    /* Left inside a transaction: release rolls it back. */
    res = PQexec(conn, "BEGIN");
    PQclear(res);
    pg_pool_release(pool, conn);
    assert_int_equal(pg_pool_acquire(pool, 1000, &conn, &err), 0);
    assert_int_equal(PQtransactionStatus(conn), PQTRANS_IDLE);
    /* Pool exhausted: a second acquire times out. */
    PGconn *second = NULL;
    assert_int_equal(pg_pool_acquire(pool, 100, &second, &err), APP_EUNAVAIL);
    pg_pool_release(pool, conn);
    pg_pool_free(pool);
}

int main(void)
{
    dsn = getenv("APP_POSTGRES_DSN");
    if (!dsn || !*dsn) {
        fprintf(stderr, "test_pg_migrate: APP_POSTGRES_DSN is not set; it needs a PostgreSQL "
                        "server (test/run.sh starts one)\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_applied_once),     cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_error_names_file), cmocka_unit_test(test_bad_schema_name),
        cmocka_unit_test(test_pool_unavailable), cmocka_unit_test(test_pool_reconnects_broken),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
