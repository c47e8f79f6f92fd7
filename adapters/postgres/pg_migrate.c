/* Applies the migrations of one context schema exactly once, even when several processes
 * start together: one transaction, serialized by an advisory lock on the schema. */
#include "adapters/postgres/pg_migrate.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIGRATE_LOCK_NS    0x6d696772 /* "migr": advisory lock namespace of migrations */
#define MIGRATE_ACQUIRE_MS 30000
/* Advisory lock (in MIGRATE_LOCK_NS) of the context roles' grants on the database. */
#define MIGRATE_ROLES_LOCK "context roles"

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

/* Runs a multi-statement script (no parameters) inside the surrounding transaction. */
static int exec_script(PGconn *conn, const char *sql, const char *what, app_error *err)
{
    PGresult *res = PQexec(conn, sql);
    int rc = 0;
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = pg_result_error(conn, res, what, err);
    PQclear(res);
    return rc;
}

/* The role of a schema: created once per cluster (another database may create it at the same
 * moment, hence the exception handler), with the connected user as a member, because only a
 * member may hand objects over to a role or SET ROLE to it (PostgreSQL 16 asks for the SET
 * option of that membership). The grants are written only when missing: a catalog row
 * updated by two migrations at once fails one of them ("tuple concurrently updated").
 * The names come in through app.migrate_* settings of this transaction, never as SQL text. */
static const char role_sql[] =
    "DO $do$\n"
    "DECLARE\n"
    "    v_role text := current_setting('app.migrate_role');\n"
    "    v_can_set boolean;\n"
    "BEGIN\n"
    "    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_role) THEN\n"
    "        BEGIN\n"
    "            EXECUTE format('CREATE ROLE %I LOGIN', v_role);\n"
    "        EXCEPTION WHEN duplicate_object OR unique_violation THEN\n"
    "            NULL;\n"
    "        END;\n"
    "    END IF;\n"
    "    IF current_setting('server_version_num')::int >= 160000 THEN\n"
    "        v_can_set := pg_has_role(current_user, v_role, 'SET');\n"
    "    ELSE\n"
    "        v_can_set := pg_has_role(current_user, v_role, 'MEMBER');\n"
    "    END IF;\n"
    "    IF NOT v_can_set THEN\n"
    "        BEGIN\n"
    "            EXECUTE format('GRANT %I TO %I', v_role, current_user);\n"
    "        EXCEPTION WHEN unique_violation THEN\n"
    "            NULL;\n"
    "        END;\n"
    "    END IF;\n"
    "    IF NOT EXISTS (SELECT 1 FROM pg_database d, aclexplode(d.datacl) a\n"
    "                    JOIN pg_roles r ON r.oid = a.grantee\n"
    "                   WHERE d.datname = current_database() AND r.rolname = v_role\n"
    "                     AND a.privilege_type = 'CREATE')\n"
    "       OR NOT EXISTS (SELECT 1 FROM pg_database d, aclexplode(d.datacl) a\n"
    "                       JOIN pg_roles r ON r.oid = a.grantee\n"
    "                      WHERE d.datname = current_database() AND r.rolname = v_role\n"
    "                        AND a.privilege_type = 'CONNECT') THEN\n"
    "        EXECUTE format('GRANT CONNECT, CREATE ON DATABASE %I TO %I', current_database(),\n"
    "                       v_role);\n"
    "    END IF;\n"
    "END\n"
    "$do$";

/* Creates the schema owned by its role, or hands it over with what is in it: the objects a
 * monolith's migrations made as the administrator. A sequence that belongs to a column
 * follows its table (and refuses to move alone); indexes and row types follow their tables,
 * array types their element types. PUBLIC loses whatever it had on the schema. */
static const char hand_over_sql[] =
    "DO $do$\n"
    "DECLARE\n"
    "    v_schema text := current_setting('app.migrate_schema');\n"
    "    v_role text := current_setting('app.migrate_role');\n"
    "    v_owner oid;\n"
    "    v_ns oid;\n"
    "    v_obj record;\n"
    "BEGIN\n"
    "    SELECT oid INTO v_owner FROM pg_roles WHERE rolname = v_role;\n"
    "    IF NOT FOUND THEN\n"
    "        RAISE EXCEPTION 'role % does not exist', v_role;\n"
    "    END IF;\n"
    "    SELECT oid INTO v_ns FROM pg_namespace WHERE nspname = v_schema;\n"
    "    IF NOT FOUND THEN\n"
    "        EXECUTE format('CREATE SCHEMA %I AUTHORIZATION %I', v_schema, v_role);\n"
    "        RETURN;\n"
    "    END IF;\n"
    "    IF (SELECT nspowner FROM pg_namespace WHERE oid = v_ns) <> v_owner THEN\n"
    "        EXECUTE format('ALTER SCHEMA %I OWNER TO %I', v_schema, v_role);\n"
    "    END IF;\n"
    "    FOR v_obj IN\n"
    "        SELECT c.relname, CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'\n"
    "                          WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE'\n"
    "                          ELSE 'TABLE' END AS kind\n"
    "          FROM pg_class c\n"
    "         WHERE c.relnamespace = v_ns AND c.relowner <> v_owner\n"
    "           AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')\n"
    "           AND NOT (c.relkind = 'S' AND EXISTS (\n"
    "                   SELECT 1 FROM pg_depend d\n"
    "                    WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid\n"
    "                      AND d.refclassid = 'pg_class'::regclass\n"
    "                      AND d.deptype IN ('a', 'i')))\n"
    "    LOOP\n"
    "        EXECUTE format('ALTER %s %I.%I OWNER TO %I', v_obj.kind, v_schema, v_obj.relname,\n"
    "                       v_role);\n"
    "    END LOOP;\n"
    "    FOR v_obj IN\n"
    "        SELECT p.oid::regprocedure AS sig FROM pg_proc p\n"
    "         WHERE p.pronamespace = v_ns AND p.proowner <> v_owner\n"
    "    LOOP\n"
    "        EXECUTE format('ALTER ROUTINE %s OWNER TO %I', v_obj.sig, v_role);\n"
    "    END LOOP;\n"
    "    FOR v_obj IN\n"
    "        SELECT t.typname FROM pg_type t\n"
    "         WHERE t.typnamespace = v_ns AND t.typowner <> v_owner\n"
    "           AND (t.typtype IN ('d', 'e', 'r')\n"
    "                OR (t.typtype = 'c' AND EXISTS (SELECT 1 FROM pg_class c\n"
    "                                                 WHERE c.oid = t.typrelid\n"
    "                                                   AND c.relkind = 'c')))\n"
    "    LOOP\n"
    "        EXECUTE format('ALTER TYPE %I.%I OWNER TO %I', v_schema, v_obj.typname, v_role);\n"
    "    END LOOP;\n"
    "    IF EXISTS (SELECT 1 FROM pg_namespace n, aclexplode(n.nspacl) a\n"
    "                WHERE n.oid = v_ns AND a.grantee = 0) THEN\n"
    "        EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', v_schema);\n"
    "    END IF;\n"
    "END\n"
    "$do$";

/* Inside the migration's transaction: role exists and owns schema; the rest of the
 * transaction runs as role. */
static int own_schema(PGconn *conn, const char *schema, const char *role, app_error *err)
{
    char ns[16], key[16], what[160];
    const char *params[] = {role, schema};
    PGresult *res = NULL;
    int rc = pg_exec(conn,
                     "SELECT current_user = $1::text, set_config('app.migrate_role', $1, true),"
                     " set_config('app.migrate_schema', $2, true)",
                     2, params, PGRES_TUPLES_OK, &res, err);
    if (rc < 0)
        return rc;
    bool is_role = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!is_role) {
        /* The database grants of all schemas are one catalog row: one writer at a time. */
        snprintf(ns, sizeof ns, "%d", MIGRATE_LOCK_NS);
        snprintf(key, sizeof key, "%d", (int)pg_lock_key(MIGRATE_ROLES_LOCK));
        const char *lock_params[] = {ns, key};
        rc = pg_exec(conn, "SELECT pg_advisory_xact_lock($1::int4, $2::int4)", 2, lock_params,
                     PGRES_TUPLES_OK, NULL, err);
        snprintf(what, sizeof what, "setting up role %s", role);
        if (rc == 0)
            rc = exec_script(conn, role_sql, what, err);
        if (rc < 0)
            return rc;
    }
    snprintf(what, sizeof what, "giving schema %s to role %s", schema, role);
    rc = exec_script(conn, hand_over_sql, what, err);
    if (rc < 0)
        return rc;
    /* role is a validated identifier; quoted so that a reserved word stays a name. */
    char sql[128];
    snprintf(sql, sizeof sql, "SET LOCAL ROLE \"%s\"", role);
    snprintf(what, sizeof what, "switching to role %s", role);
    return exec_script(conn, sql, what, err);
}

/* Creates schema unless it exists. Looked up first because CREATE SCHEMA IF NOT EXISTS checks
 * the CREATE privilege on the database before it looks: a service whose role owns its
 * schema but may not create schemas must still be able to migrate it. */
static int ensure_schema(PGconn *conn, const char *schema, app_error *err)
{
    const char *params[] = {schema};
    PGresult *res = NULL;
    int rc = pg_exec(conn, "SELECT 1 FROM pg_namespace WHERE nspname = $1", 1, params,
                     PGRES_TUPLES_OK, &res, err);
    if (rc < 0)
        return rc;
    int exists = PQntuples(res) > 0;
    PQclear(res);
    if (exists)
        return 0;
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE SCHEMA %s", schema);
    return exec_script(conn, sql, "creating the schema", err);
}

static int migrate(pg_pool *pool, const char *schema, const char *role,
                   const mod_migration *store_migrations, const mod_migration *context_migrations,
                   int *applied_out, app_error *err)
{
    if (!pg_schema_name_valid(schema))
        return app_error_set(err, APP_EINVAL, "invalid schema name");
    if (role && !pg_schema_name_valid(role))
        return app_error_set(err, APP_EINVAL, "invalid role name");
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
    /* Taken before the schema is created: concurrent creations collide in the catalog. */
    rc = pg_exec(conn, "SELECT pg_advisory_xact_lock($1::int4, $2::int4)", 2, lock_params,
                 PGRES_TUPLES_OK, NULL, err);
    if (rc == 0)
        rc = role ? own_schema(conn, schema, role, err) : ensure_schema(conn, schema, err);
    if (rc < 0)
        goto done;
    snprintf(sql, sizeof sql,
             "CREATE TABLE IF NOT EXISTS %s.schema_migrations ("
             " name text PRIMARY KEY,"
             " applied_at timestamptz NOT NULL DEFAULT now());"
             "SET LOCAL search_path TO %s",
             schema, schema);
    rc = exec_script(conn, sql, "creating the schema", err);
    if (rc < 0)
        goto done;
    rc = apply_table(conn, schema, "store/", store_migrations, &applied, err);
    if (rc < 0)
        goto done;
    rc = apply_table(conn, schema, "", context_migrations, &applied, err);
    if (rc < 0)
        goto done;
    rc = pg_exec(conn, "COMMIT", 0, NULL, PGRES_COMMAND_OK, NULL, err);
done:
    pg_pool_release(pool, conn); /* rolls back whatever did not commit, SET LOCAL ROLE too */
    if (rc < 0)
        return rc;
    if (applied_out)
        *applied_out = applied;
    return 0;
}

int pg_migrate_context(pg_pool *pool, const char *schema, const mod_migration *store_migrations,
                       const mod_migration *context_migrations, int *applied_out, app_error *err)
{
    return migrate(pool, schema, NULL, store_migrations, context_migrations, applied_out, err);
}

int pg_migrate_context_owned(pg_pool *pool, const char *schema, const char *role,
                             const mod_migration *store_migrations,
                             const mod_migration *context_migrations, int *applied_out,
                             app_error *err)
{
    if (!role)
        return app_error_set(err, APP_EINVAL, "invalid role name");
    return migrate(pool, schema, role, store_migrations, context_migrations, applied_out, err);
}

int pg_context_role(const char *context, char *out, size_t size, app_error *err)
{
    static const char suffix[] = "_service";
    size_t len = context ? strlen(context) : 0;
    bool ok = len > 0 && len + sizeof suffix <= size && len + sizeof suffix - 1 <= 48;
    for (size_t i = 0; ok && i < len; i++)
        ok = context[i] == '_' || (context[i] >= 'a' && context[i] <= 'z');
    if (!ok) {
        app_error_set(err, APP_EINVAL, "invalid context name");
        if (err)
            app_error_field(err, "context", "must match [a-z_]+");
        return APP_EINVAL;
    }
    snprintf(out, size, "%s%s", context, suffix);
    return 0;
}

int pg_schema_has_log(pg_pool *pool, const char *schema, bool *out, app_error *err)
{
    *out = false;
    char table[96];
    snprintf(table, sizeof table, "%s.events", schema);
    const char *params[] = {table};
    PGconn *conn = NULL;
    int rc = pg_pool_acquire(pool, 5000, &conn, err);
    if (rc)
        return rc;
    PGresult *res = NULL;
    rc = pg_exec(conn, "SELECT to_regclass($1) IS NOT NULL", 1, params, PGRES_TUPLES_OK, &res, err);
    if (rc == 0)
        *out = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    pg_pool_release(pool, conn);
    return rc;
}
