/* End to end, a split deployment's inventory service under its own PostgreSQL role: an
 * administrator runs `app migrate` with postgres.context_roles into a database of its own,
 * then the app serves `contexts: [inventory]` connected as inventory_service. */
#include <cjson/cJSON.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "adapters/postgres/pg_pool.h"
#include "core/uuid.h"
#include "test/support/http_client.h"
#include "test/support/services.h"

#define DB   "pgtest_e2e_roles"
#define ROLE "inventory_service"

static ts_app app;
static char db_admin[1024]; /* DB as the harness's administrator */
static char db_role[1024];  /* DB as the inventory service's role */
static char env_admin_dsn[1100], env_role_dsn[1100];

static const char *const json_headers[] = {"Content-Type: application/json", NULL};

/* Runs sql on dsn; the first column of the first row as a number, or 0 for a command.
 * fail (a test) or only report (a teardown) when it does not succeed. */
static long long sql_on(const char *dsn, const char *sql, bool fail)
{
    PGconn *conn = NULL;
    app_error err = APP_ERROR_INIT;
    if (pg_connect(dsn, 5, &conn, &err) != 0) {
        if (fail)
            fail_msg("%s: %s", err.message, err.detail);
        fprintf(stderr, "test_context_roles: %s: %s\n", err.message, err.detail);
        return -1;
    }
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    long long n = 0;
    if (st == PGRES_TUPLES_OK && PQntuples(res) > 0)
        n = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    else if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        n = -1;
        if (fail) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(res));
            PQclear(res);
            PQfinish(conn);
            fail_msg("%s: %s", sql, msg);
        }
        fprintf(stderr, "test_context_roles: %s: %s", sql, PQresultErrorMessage(res));
    }
    PQclear(res);
    PQfinish(conn);
    return n;
}

static int group_setup(void **state)
{
    (void)state;
    const char *admin = getenv("APP_POSTGRES_DSN");
    if (!admin || !*admin) {
        fprintf(stderr, "test_context_roles: APP_POSTGRES_DSN is not set; run it through "
                        "test/run.sh\n");
        return -1;
    }
    ts_dsn_with(admin, DB, NULL, db_admin, sizeof db_admin);
    ts_dsn_with(admin, DB, ROLE, db_role, sizeof db_role);
    snprintf(env_admin_dsn, sizeof env_admin_dsn, "APP_POSTGRES_DSN=%s", db_admin);
    snprintf(env_role_dsn, sizeof env_role_dsn, "APP_POSTGRES_DSN=%s", db_role);
    if (sql_on(admin, "DROP DATABASE IF EXISTS " DB " WITH (FORCE)", false) < 0 ||
        sql_on(admin, "CREATE DATABASE " DB, false) < 0)
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    ts_app_group_end(state);
    const char *admin = getenv("APP_POSTGRES_DSN");
    sql_on(admin, "DROP DATABASE IF EXISTS " DB " WITH (FORCE)", false);
    return 0;
}

static void test_admin_migrates_with_roles(void **state)
{
    (void)state;
    static const char *const args[] = {"--config", "config/app.yaml", "migrate", NULL};
    const char *const env[] = {env_admin_dsn, "APP_CONTEXTS=inventory",
                               "APP_POSTGRES_CONTEXT_ROLES=true", NULL};
    for (int run = 0; run < 2; run++) { /* the second run finds everything in place */
        ts_app mig;
        ts_app_spawn(&mig, args, env);
        int status = ts_app_wait(&mig, TS_HANG_GUARD_MS);
        if (status != 0) {
            ts_app_dump_log(&mig, 4000);
            fail_msg("migrate run %d exited with status %d", run + 1, status);
        }
    }
    assert_int_equal(sql_on(db_admin,
                            "SELECT count(*) FROM pg_namespace WHERE nspname = 'inventory_ctx'"
                            " AND nspowner = '" ROLE "'::regrole",
                            true),
                     1);
    assert_int_equal(sql_on(db_admin,
                            "SELECT count(*) FROM pg_class"
                            " WHERE relnamespace = 'inventory_ctx'::regnamespace"
                            " AND relowner <> '" ROLE "'::regrole",
                            true),
                     0);
    /* Only the loaded context: no other schema was made. */
    assert_int_equal(
        sql_on(db_admin, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE '%_ctx'", true), 1);
}

static tc_response call(const char *method, const char *path, const char *body)
{
    tc_response r;
    memset(&r, 0, sizeof r);
    assert_int_equal(tc_http("127.0.0.1", app.port, method, path, body ? json_headers : NULL, body,
                             body ? strlen(body) : 0, &r),
                     0);
    return r;
}

static bool product_readable(void *path)
{
    tc_response r = call("GET", path, NULL);
    bool ok = r.status == 200;
    tc_response_free(&r);
    return ok;
}

static void test_inventory_service_serves_products(void **state)
{
    (void)state;
    const char *const env[] = {env_role_dsn, "APP_CONTEXTS=inventory",
                               "APP_REDIS_KEY_PREFIX=pgtest-roles:", NULL};
    assert_int_equal(ts_app_start(&app, env), 0);
    /* Connected as the role, not as the administrator. */
    assert_true(sql_on(db_admin,
                       "SELECT count(*) FROM pg_stat_activity WHERE datname = '" DB "'"
                       " AND usename = '" ROLE "'",
                       true) > 0);
    assert_int_equal(sql_on(db_admin,
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = '" DB "'"
                            " AND usename <> '" ROLE "' AND pid <> pg_backend_pid()"
                            " AND backend_type = 'client backend'",
                            true),
                     0);

    char id[UUID_STR_LEN], sku[32], path[96], body[256];
    uuid_v4(id);
    snprintf(sku, sizeof sku, "ROLE-%.8s", id);
    for (char *p = sku; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    snprintf(body, sizeof body,
             "{\"sku\":\"%s\",\"name\":\"Gadget\",\"price\":{\"amount\":990,"
             "\"currency\":\"EUR\"},\"stock\":3}",
             sku);
    tc_response r = call("POST", "/v1/products", body);
    if (r.status != 201)
        fail_msg("create %s: %d %.*s", sku, r.status, (int)r.body_len, r.body ? r.body : "");
    tc_response_free(&r);

    snprintf(path, sizeof path, "/v1/products/%s", sku);
    if (ts_wait_until(product_readable, path, TS_HANG_GUARD_MS) != 0)
        fail_msg("GET %s never answered 200", path);
    r = call("GET", path, NULL);
    assert_int_equal(r.status, 200);
    cJSON *p = tc_json(&r);
    assert_string_equal(cJSON_GetObjectItem(p, "sku")->valuestring, sku);
    assert_int_equal((int)cJSON_GetObjectItem(p, "onHand")->valuedouble, 3);
    cJSON_Delete(p);
    tc_response_free(&r);

    /* The event went into the role's schema, by the role. */
    assert_int_equal(sql_on(db_role, "SELECT count(*) FROM inventory_ctx.events", true), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_admin_migrates_with_roles),
        cmocka_unit_test(test_inventory_service_serves_products),
        cmocka_unit_test(ts_test_app_stops_cleanly),
    };
    ts_app_share(&app);
    return cmocka_run_group_tests_name("e2e a context under its own role", tests, group_setup,
                                       group_teardown);
}
