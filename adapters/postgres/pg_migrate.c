/* Applies the migrations of one context schema exactly once, even when several processes
 * start together: one transaction, serialized by an advisory lock on the schema. */
#include "adapters/postgres/pg_migrate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIGRATE_LOCK_NS    0x6d696772 /* "migr": advisory lock namespace of migrations */
#define MIGRATE_ACQUIRE_MS 30000

/* sql with every {{schema}} replaced by schema; NULL when out of memory. */
static char *substitute_schema(const char *sql, const char *schema)
{
    static const char token[] = "{{schema}}";
    size_t tlen = sizeof token - 1, slen = strlen(schema), n = 0;
    for (const char *p = strstr(sql, token); p; p = strstr(p + tlen, token))
        n++;
    size_t len = strlen(sql) + n * slen + 1;
    char *out = malloc(len);
    if (!out)
        return NULL;
    char *w = out;
    const char *r = sql;
    for (const char *p = strstr(r, token); p; p = strstr(r, token)) {
        memcpy(w, r, (size_t)(p - r));
        w += p - r;
        memcpy(w, schema, slen);
        w += slen;
        r = p + tlen;
    }
    strcpy(w, r);
    return out;
}

static int apply_one(PGconn *conn, const char *schema, const char *recorded_name,
                     const mod_migration *m, int *applied, app_error *err)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT 1 FROM %s.schema_migrations WHERE name = $1", schema);
    const char *params[] = {recorded_name};
    PGresult *res = NULL;
    int rc = pg_exec(conn, sql, 1, params, PGRES_TUPLES_OK, &res, err);
    if (rc < 0)
        return rc;
    int done = PQntuples(res) > 0;
    PQclear(res);
    if (done)
        return 0;

    char *body = substitute_schema(m->sql, schema);
    if (!body)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    /* PQexec runs a multi-statement script inside the surrounding transaction. */
    res = PQexec(conn, body);
    free(body);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        rc = pg_result_error(conn, res, "migration", err);
        PQclear(res);
        if (err) {
            char detail[sizeof err->detail];
            snprintf(detail, sizeof detail, "%s", err->detail);
            app_error_set(err, rc, "migration %s of schema %s failed", recorded_name, schema);
            app_error_detail(err, "%s", detail);
        }
        return rc;
    }
    PQclear(res);
    snprintf(sql, sizeof sql, "INSERT INTO %s.schema_migrations (name) VALUES ($1)", schema);
    rc = pg_exec(conn, sql, 1, params, PGRES_COMMAND_OK, NULL, err);
    if (rc < 0)
        return rc;
    (*applied)++;
    return 0;
}

static int apply_table(PGconn *conn, const char *schema, const char *prefix,
                       const mod_migration *table, int *applied, app_error *err)
{
    for (const mod_migration *m = table; m && m->name; m++) {
        char name[256];
        snprintf(name, sizeof name, "%s%s", prefix, m->name);
        int rc = apply_one(conn, schema, name, m, applied, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

int pg_migrate_context(pg_pool *pool, const char *schema, const mod_migration *store_migrations,
                       const mod_migration *context_migrations, int *applied_out, app_error *err)
{
    if (!pg_schema_name_valid(schema))
        return app_error_set(err, APP_EINVAL, "invalid schema name");
    PGconn *conn = NULL;
    int rc = pg_pool_acquire(pool, MIGRATE_ACQUIRE_MS, &conn, err);
    if (rc < 0)
        return rc;

    int applied = 0;
    char sql[512], ns[16], key[16];
    snprintf(ns, sizeof ns, "%d", MIGRATE_LOCK_NS);
    snprintf(key, sizeof key, "%d", (int)pg_lock_key(schema));
    const char *lock_params[] = {ns, key};
    rc = pg_exec(conn, "BEGIN", 0, NULL, PGRES_COMMAND_OK, NULL, err);
    if (rc < 0)
        goto done;
    /* Taken before CREATE SCHEMA: concurrent IF NOT EXISTS can still collide in the catalog. */
    rc = pg_exec(conn, "SELECT pg_advisory_xact_lock($1::int4, $2::int4)", 2, lock_params,
                 PGRES_TUPLES_OK, NULL, err);
    if (rc < 0)
        goto done;
    snprintf(sql, sizeof sql,
             "CREATE SCHEMA IF NOT EXISTS %s;"
             "CREATE TABLE IF NOT EXISTS %s.schema_migrations ("
             " name text PRIMARY KEY,"
             " applied_at timestamptz NOT NULL DEFAULT now());"
             "SET LOCAL search_path TO %s",
             schema, schema, schema);
    {
        PGresult *res = PQexec(conn, sql);
        if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
            rc = pg_result_error(conn, res, "creating the schema", err);
            PQclear(res);
            goto done;
        }
        PQclear(res);
    }
    rc = apply_table(conn, schema, "store/", store_migrations, &applied, err);
    if (rc < 0)
        goto done;
    rc = apply_table(conn, schema, "", context_migrations, &applied, err);
    if (rc < 0)
        goto done;
    rc = pg_exec(conn, "COMMIT", 0, NULL, PGRES_COMMAND_OK, NULL, err);
done:
    pg_pool_release(pool, conn); /* rolls back whatever did not commit */
    if (rc < 0)
        return rc;
    if (applied_out)
        *applied_out = applied;
    return 0;
}
