/* A PostgreSQL role per context against a real server (APP_POSTGRES_DSN, an administrator
 * that may create roles): migrate gives each context schema to <context>_service, a
 * service's role reaches its own schema and the inbox schemas it owns and nothing else, and
 * a service migrates its own schema as its role. */
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
#include "core/uuid.h"
#include "kernel/module.h"
#include "test/support/services.h"

/* A database of its own: the roles get grants on it, and it is dropped at the end. */
#define DB      "pgtest_roles"
#define RACE_DB "pgtest_roles_race"

static const char *admin_dsn; /* the harness's database, as the administrator */
static char db_admin[1024];   /* DB, as the administrator */

static const char *const contexts[] = {"user", "order", "inventory"};
#define N_CONTEXTS (sizeof contexts / sizeof contexts[0])

static const mod_migration inbox_migrations[] = {
    {"001_inbox.sql", "CREATE TABLE {{schema}}.events (id bigint PRIMARY KEY, data jsonb);\n"},
    {NULL, NULL},
};

static const mod_migration probe_migrations[] = {
    {"900_probe.sql", "CREATE TABLE {{schema}}.role_probe (id int PRIMARY KEY);\n"},
    {NULL, NULL},
};

static PGconn *connect_as(const char *dsn)
{
    PGconn *conn = NULL;
    app_error err = APP_ERROR_INIT;
    if (pg_connect(dsn, 5, &conn, &err) != 0)
        fail_msg("%s: %s: %s", dsn, err.message, err.detail);
    return conn;
}

/* The connection string of DB as a context's role. */
static void role_dsn(const char *context, char *out, size_t size)
{
    char role[64];
    app_error err = APP_ERROR_INIT;
    assert_int_equal(pg_context_role(context, role, sizeof role, &err), 0);
    ts_dsn_with(admin_dsn, DB, role, out, size);
}

static PGconn *connect_role(const char *context)
{
    char dsn[1024];
    role_dsn(context, dsn, sizeof dsn);
    return connect_as(dsn);
}

static void exec_ok(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("%s: %s", sql, PQresultErrorMessage(res));
    PQclear(res);
}

static void exec_on(const char *dsn, const char *sql)
{
    PGconn *conn = connect_as(dsn);
    exec_ok(conn, sql);
    PQfinish(conn);
}

static long long query_int(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        fail_msg("%s: %s", sql, PQresultErrorMessage(res));
    long long n = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return n;
}

static long long admin_int(const char *sql)
{
    PGconn *conn = connect_as(db_admin);
    long long n = query_int(conn, sql);
    PQfinish(conn);
    return n;
}

/* sql must fail with SQLSTATE state. */
static void expect_sqlstate(PGconn *conn, const char *sql, const char *state)
{
    PGresult *res = PQexec(conn, sql);
    const char *got = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (PQresultStatus(res) != PGRES_FATAL_ERROR || !got || strcmp(got, state) != 0)
        fail_msg("%s: expected SQLSTATE %s, got status %s, SQLSTATE %s: %s", sql, state,
                 PQresStatus(PQresultStatus(res)), got ? got : "none", PQresultErrorMessage(res));
    PQclear(res);
}

static int migrate_owned(pg_pool *pool, const char *context, int *applied, app_error *err)
{
    const app_module *m = app_module_find(context);
    assert_non_null(m);
    char role[64];
    int rc = pg_context_role(context, role, sizeof role, err);
    if (rc == 0)
        rc = pg_migrate_context_owned(pool, m->schema, role, pg_store_migrations, m->migrations,
                                      applied, err);
    return rc;
}

/* Every context, as the administrator with roles; applied[i] is how many ran for each. */
static void migrate_all(int *applied)
{
    pg_pool *pool = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(pg_pool_new(&pool, db_admin, 1, 5, &err), 0);
    for (size_t i = 0; i < N_CONTEXTS; i++)
        if (migrate_owned(pool, contexts[i], &applied[i], &err) != 0)
            fail_msg("%s: %s: %s", contexts[i], err.message, err.detail);
    pg_pool_free(pool);
}

static int count_migrations(const mod_migration *m)
{
    int n = 0;
    for (; m && m->name; m++)
        n++;
    return n;
}

/* Objects in schema not owned by role: the schema itself, relations, routines, types. */
static long long foreign_owned(const char *schema, const char *role)
{
    char sql[1024];
    snprintf(sql, sizeof sql,
             "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = '%s'"
             "          AND nspowner <> '%s'::regrole)"
             "     + (SELECT count(*) FROM pg_class WHERE relnamespace = '%s'::regnamespace"
             "          AND relowner <> '%s'::regrole)"
             "     + (SELECT count(*) FROM pg_proc WHERE pronamespace = '%s'::regnamespace"
             "          AND proowner <> '%s'::regrole)"
             "     + (SELECT count(*) FROM pg_type WHERE typnamespace = '%s'::regnamespace"
             "          AND typowner <> '%s'::regrole)",
             schema, role, schema, role, schema, role, schema, role);
    return admin_int(sql);
}

static int group_setup(void **state)
{
    (void)state;
    admin_dsn = getenv("APP_POSTGRES_DSN");
    if (!admin_dsn || !*admin_dsn)
        return -1;
    ts_dsn_with(admin_dsn, DB, NULL, db_admin, sizeof db_admin);
    exec_on(admin_dsn, "DROP DATABASE IF EXISTS " DB " WITH (FORCE)");
    /* Roles are the cluster's: none of an earlier run may stay, so that migrate creates them. */
    exec_on(admin_dsn, "DROP ROLE IF EXISTS user_service, order_service, inventory_service");
    exec_on(admin_dsn, "CREATE DATABASE " DB);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    exec_on(admin_dsn, "DROP DATABASE IF EXISTS " DB " WITH (FORCE)");
    exec_on(admin_dsn, "DROP DATABASE IF EXISTS " RACE_DB " WITH (FORCE)");
    exec_on(admin_dsn, "DROP ROLE IF EXISTS pgtest_race_service");
    return 0;
}

static void test_role_names(void **state)
{
    (void)state;
    char role[64];
    app_error err = APP_ERROR_INIT;
    assert_int_equal(pg_context_role("order", role, sizeof role, &err), 0);
    assert_string_equal(role, "order_service");
    assert_int_equal(pg_context_role("Order", role, sizeof role, &err), APP_EINVAL);
    assert_int_equal(pg_context_role("", role, sizeof role, &err), APP_EINVAL);
    assert_int_equal(pg_context_role("x;drop", role, sizeof role, &err), APP_EINVAL);
    assert_int_equal(pg_context_role("order", role, 13, &err), APP_EINVAL);

    pg_pool *pool = NULL;
    assert_int_equal(pg_pool_new(&pool, db_admin, 1, 5, &err), 0);
    assert_int_equal(
        pg_migrate_context_owned(pool, "order_ctx", "x\"; drop", NULL, NULL, NULL, &err),
        APP_EINVAL);
    assert_int_equal(pg_migrate_context_owned(pool, "order_ctx", NULL, NULL, NULL, NULL, &err),
                     APP_EINVAL);
    pg_pool_free(pool);
}

/* A monolith's database (the user schema migrated as the administrator, no roles) switched
 * to roles: every schema and everything in it ends up with its context's role. */
static void test_migrate_gives_each_schema_its_role(void **state)
{
    (void)state;
    pg_pool *pool = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(pg_pool_new(&pool, db_admin, 1, 5, &err), 0);
    const app_module *user = app_module_find("user");
    assert_non_null(user);
    int applied = 0;
    if (pg_migrate_context(pool, user->schema, pg_store_migrations, user->migrations, &applied,
                           &err))
        fail_msg("%s: %s", err.message, err.detail);
    pg_pool_free(pool);
    assert_true(admin_int("SELECT count(*) FROM pg_class WHERE relnamespace = "
                          "'user_ctx'::regnamespace AND relowner = current_user::regrole") > 0);
    assert_int_equal(admin_int("SELECT count(*) FROM pg_roles WHERE rolname IN"
                               " ('user_service', 'order_service', 'inventory_service')"),
                     0);

    int counts[N_CONTEXTS];
    migrate_all(counts);
    assert_int_equal(counts[0], 0); /* user: migrated already, only handed over */
    for (size_t i = 1; i < N_CONTEXTS; i++)
        assert_int_equal(counts[i], count_migrations(pg_store_migrations) +
                                        count_migrations(app_module_find(contexts[i])->migrations));

    for (size_t i = 0; i < N_CONTEXTS; i++) {
        char schema[64], role[64], sql[512];
        snprintf(schema, sizeof schema, "%s_ctx", contexts[i]);
        snprintf(role, sizeof role, "%s_service", contexts[i]);
        assert_int_equal(foreign_owned(schema, role), 0);
        /* A login role and nothing more: no superuser, no role or database creation. */
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM pg_roles WHERE rolname = '%s' AND rolcanlogin"
                 " AND NOT rolsuper AND NOT rolcreaterole AND NOT rolcreatedb",
                 role);
        assert_int_equal(admin_int(sql), 1);
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM pg_namespace n, aclexplode(n.nspacl) a"
                 " WHERE n.nspname = '%s' AND a.grantee = 0",
                 schema);
        assert_int_equal(admin_int(sql), 0); /* nothing for PUBLIC */
        snprintf(sql, sizeof sql,
                 "SELECT has_database_privilege('%s', '" DB "', 'CONNECT')::int"
                 " + has_database_privilege('%s', '" DB "', 'CREATE')::int",
                 role, role);
        assert_int_equal(admin_int(sql), 2);
        for (size_t j = 0; j < N_CONTEXTS; j++) {
            char other[64];
            snprintf(other, sizeof other, "%s_ctx", contexts[j]);
            snprintf(sql, sizeof sql, "SELECT has_schema_privilege('%s', '%s', 'USAGE')::int", role,
                     other);
            assert_int_equal(admin_int(sql), i == j);
        }
    }
}

static void test_order_role_cannot_touch_user_schema(void **state)
{
    (void)state;
    PGconn *conn = connect_role("order");
    assert_int_equal(query_int(conn, "SELECT (current_user = 'order_service')::int"), 1);
    expect_sqlstate(conn, "SELECT count(*) FROM user_ctx.events", "42501");
    expect_sqlstate(conn, "SELECT stream_id FROM user_ctx.events LIMIT 1", "42501");
    expect_sqlstate(conn, "INSERT INTO user_ctx.checkpoints (subscriber, position) VALUES ('x', 1)",
                    "42501");
    expect_sqlstate(conn, "SELECT user_ctx.es_append('user-x', 0, '[]', '[]', '[]')", "42501");
    expect_sqlstate(conn, "SELECT count(*) FROM inventory_ctx.events", "42501");
    expect_sqlstate(conn, "CREATE TABLE user_ctx.intruder (id int)", "42501");
    PQfinish(conn);
}

static void test_order_role_reads_and_writes_its_schema(void **state)
{
    (void)state;
    PGconn *conn = connect_role("order");
    char id[UUID_STR_LEN], sql[1024];
    uuid_v4(id);
    snprintf(sql, sizeof sql,
             "SELECT order_ctx.es_append('order-role-test', 0,"
             " '[{\"event_id\": \"%s\", \"type\": \"order.order.placed\","
             " \"schema_version\": 1, \"data\": {}, \"metadata\": {}}]', '[]', '[]')->>'status'",
             id);
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        fail_msg("%s", PQresultErrorMessage(res));
    assert_string_equal(PQgetvalue(res, 0, 0), "ok");
    PQclear(res);
    assert_int_equal(query_int(conn, "SELECT count(*) FROM order_ctx.events"
                                     " WHERE stream_id = 'order-role-test'"),
                     1);
    exec_ok(conn, "INSERT INTO order_ctx.checkpoints (subscriber, position) VALUES ('t', 1)");
    exec_ok(conn, "UPDATE order_ctx.checkpoints SET position = 2 WHERE subscriber = 't'");
    assert_int_equal(
        query_int(conn, "SELECT position FROM order_ctx.checkpoints WHERE subscriber = 't'"), 2);
    exec_ok(conn, "DELETE FROM order_ctx.checkpoints WHERE subscriber = 't'");
    PQfinish(conn);
}

/* A service migrates its own schema as its role (a later release's migration included), and
 * cannot migrate another context's. */
static void test_service_migrates_as_its_role(void **state)
{
    (void)state;
    char dsn[1024];
    role_dsn("order", dsn, sizeof dsn);
    pg_pool *pool = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(pg_pool_new(&pool, dsn, 1, 5, &err), 0);
    const app_module *order = app_module_find("order");
    int applied = -1;
    if (pg_migrate_context(pool, order->schema, pg_store_migrations, order->migrations, &applied,
                           &err))
        fail_msg("%s: %s", err.message, err.detail);
    assert_int_equal(applied, 0);
    /* With postgres.context_roles on in the service's own configuration too. */
    if (migrate_owned(pool, "order", &applied, &err))
        fail_msg("%s: %s", err.message, err.detail);
    assert_int_equal(applied, 0);
    if (pg_migrate_context(pool, order->schema, NULL, probe_migrations, &applied, &err))
        fail_msg("%s: %s", err.message, err.detail);
    assert_int_equal(applied, 1);
    assert_int_equal(foreign_owned("order_ctx", "order_service"), 0);

    const app_module *user = app_module_find("user");
    assert_true(pg_migrate_context(pool, user->schema, NULL, probe_migrations, &applied, &err) < 0);
    assert_non_null(strstr(err.detail, "permission denied"));
    assert_true(migrate_owned(pool, "user", &applied, &err) < 0);
    assert_int_equal(admin_int("SELECT count(*) FROM pg_class"
                               " WHERE relnamespace = 'user_ctx'::regnamespace"
                               " AND relname = 'role_probe'"),
                     0);
    pg_pool_free(pool);
}

/* The inbox schemas a service keeps of other contexts' events: one it creates as its role
 * is its own; one an administrator creates for it is handed to it. The other roles cannot
 * read either. */
static void test_inbox_schemas_belong_to_their_service(void **state)
{
    (void)state;
    char dsn[1024];
    role_dsn("order", dsn, sizeof dsn);
    pg_pool *pool = NULL;
    app_error err = APP_ERROR_INIT;
    int applied = 0;
    assert_int_equal(pg_pool_new(&pool, dsn, 1, 5, &err), 0);
    if (pg_migrate_context(pool, "user_inbox", NULL, inbox_migrations, &applied, &err))
        fail_msg("%s: %s", err.message, err.detail);
    pg_pool_free(pool);
    assert_int_equal(applied, 1);
    assert_int_equal(foreign_owned("user_inbox", "order_service"), 0);

    assert_int_equal(pg_pool_new(&pool, db_admin, 1, 5, &err), 0);
    if (pg_migrate_context_owned(pool, "inventory_inbox", "order_service", NULL, inbox_migrations,
                                 &applied, &err))
        fail_msg("%s: %s", err.message, err.detail);
    pg_pool_free(pool);
    assert_int_equal(applied, 1);
    assert_int_equal(foreign_owned("inventory_inbox", "order_service"), 0);

    PGconn *conn = connect_role("order");
    exec_ok(conn, "INSERT INTO user_inbox.events VALUES (1, '{}')");
    exec_ok(conn, "INSERT INTO inventory_inbox.events VALUES (1, '{}')");
    assert_int_equal(query_int(conn, "SELECT count(*) FROM user_inbox.events"), 1);
    assert_int_equal(query_int(conn, "SELECT count(*) FROM inventory_inbox.events"), 1);
    PQfinish(conn);
    conn = connect_role("user");
    expect_sqlstate(conn, "SELECT count(*) FROM user_inbox.events", "42501");
    expect_sqlstate(conn, "SELECT count(*) FROM inventory_inbox.events", "42501");
    PQfinish(conn);
    conn = connect_role("inventory");
    expect_sqlstate(conn, "SELECT count(*) FROM user_inbox.events", "42501");
    PQfinish(conn);
}

static void test_migrate_again_changes_nothing(void **state)
{
    (void)state;
    long long before = admin_int("SELECT count(*) FROM pg_auth_members m"
                                 " JOIN pg_roles r ON r.oid = m.roleid"
                                 " WHERE r.rolname LIKE '%\\_service'");
    int counts[N_CONTEXTS];
    migrate_all(counts);
    for (size_t i = 0; i < N_CONTEXTS; i++) {
        char schema[64], role[64];
        snprintf(schema, sizeof schema, "%s_ctx", contexts[i]);
        snprintf(role, sizeof role, "%s_service", contexts[i]);
        assert_int_equal(counts[i], 0);
        assert_int_equal(foreign_owned(schema, role), 0);
    }
    assert_int_equal(admin_int("SELECT count(*) FROM pg_auth_members m"
                               " JOIN pg_roles r ON r.oid = m.roleid"
                               " WHERE r.rolname LIKE '%\\_service'"),
                     before);
    /* The data written as the role is still there, and still the role's alone. */
    PGconn *conn = connect_role("order");
    assert_int_equal(query_int(conn, "SELECT count(*) FROM order_ctx.events"
                                     " WHERE stream_id = 'order-role-test'"),
                     1);
    PQfinish(conn);
    conn = connect_role("user");
    expect_sqlstate(conn, "SELECT count(*) FROM order_ctx.events", "42501");
    PQfinish(conn);
}

/* The race's role, its grant on DB and its schema there, if any. */
static void drop_race_role(void)
{
    if (admin_int("SELECT count(*) FROM pg_roles WHERE rolname = 'pgtest_race_service'") == 0)
        return;
    exec_on(db_admin, "DROP OWNED BY pgtest_race_service");
    exec_on(admin_dsn, "DROP ROLE pgtest_race_service");
}

typedef struct race_arg {
    const char *dsn;
    int rc;
    app_error err;
} race_arg;

static void *race_thread(void *p)
{
    race_arg *a = p;
    pg_pool *pool = NULL;
    a->rc = pg_pool_new(&pool, a->dsn, 1, 5, &a->err);
    if (a->rc == 0)
        a->rc = pg_migrate_context_owned(pool, "pgtest_race_ctx", "pgtest_race_service",
                                         pg_store_migrations, NULL, NULL, &a->err);
    pg_pool_free(pool);
    return NULL;
}

/* A role is the cluster's: two databases (and two processes on one) migrating at once both
 * succeed, one of them creating the role. */
static void test_concurrent_role_creation(void **state)
{
    (void)state;
    char race_db[1024];
    ts_dsn_with(admin_dsn, RACE_DB, NULL, race_db, sizeof race_db);
    for (int round = 0; round < 3; round++) {
        exec_on(admin_dsn, "DROP DATABASE IF EXISTS " RACE_DB " WITH (FORCE)");
        drop_race_role();
        exec_on(admin_dsn, "CREATE DATABASE " RACE_DB);
        race_arg args[3] = {{db_admin, 0, APP_ERROR_INIT},
                            {race_db, 0, APP_ERROR_INIT},
                            {db_admin, 0, APP_ERROR_INIT}};
        pthread_t th[3];
        for (int i = 0; i < 3; i++)
            assert_int_equal(pthread_create(&th[i], NULL, race_thread, &args[i]), 0);
        for (int i = 0; i < 3; i++)
            pthread_join(th[i], NULL);
        for (int i = 0; i < 3; i++)
            if (args[i].rc != 0)
                fail_msg("round %d, migration %d: %s: %s", round, i, args[i].err.message,
                         args[i].err.detail);
        assert_int_equal(foreign_owned("pgtest_race_ctx", "pgtest_race_service"), 0);
    }
    exec_on(admin_dsn, "DROP DATABASE IF EXISTS " RACE_DB " WITH (FORCE)");
    drop_race_role();
}

int main(void)
{
    if (!getenv("APP_POSTGRES_DSN") || !*getenv("APP_POSTGRES_DSN")) {
        fprintf(stderr, "test_pg_roles: APP_POSTGRES_DSN is not set; it needs a PostgreSQL "
                        "server (test/run.sh starts one)\n");
        return 1;
    }
    /* In this order: each test builds on the database the ones before left. */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_role_names),
        cmocka_unit_test(test_migrate_gives_each_schema_its_role),
        cmocka_unit_test(test_order_role_cannot_touch_user_schema),
        cmocka_unit_test(test_order_role_reads_and_writes_its_schema),
        cmocka_unit_test(test_service_migrates_as_its_role),
        cmocka_unit_test(test_inbox_schemas_belong_to_their_service),
        cmocka_unit_test(test_migrate_again_changes_nothing),
        cmocka_unit_test(test_concurrent_role_creation),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
