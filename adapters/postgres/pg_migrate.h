/* Schema migrations of one context: the event store's own tables, then the context's. */
#ifndef ADAPTERS_POSTGRES_PG_MIGRATE_H
#define ADAPTERS_POSTGRES_PG_MIGRATE_H

#include <stdbool.h>

#include "adapters/postgres/pg_pool.h"
#include "core/error.h"
#include "kernel/module.h"

/* The event store migrations (the .sql files of adapters/postgres/migrations), {NULL} terminated;
 * generated into build/gen/pg_store_migrations.c. {{schema}} stands for the schema. */
extern const mod_migration pg_store_migrations[];

/* Creates schema if needed and applies, in one transaction under an advisory lock on the
 * schema, every migration not yet recorded in <schema>.schema_migrations: store_migrations
 * first (recorded as "store/<name>"), then context_migrations, both run with search_path set
 * to schema and {{schema}} replaced by it. Either table may be NULL. Safe to run again and
 * from several processes at once. *applied_out (may be NULL) is how many ran now.
 * Errors name the migration and carry the server message in detail; nothing is applied. */
int pg_migrate_context(pg_pool *pool, const char *schema, const mod_migration *store_migrations,
                       const mod_migration *context_migrations, int *applied_out, app_error *err);

/* Whether schema holds an event log (schema.events) in the connected database. */
int pg_schema_has_log(pg_pool *pool, const char *schema, bool *out, app_error *err);

/* The role a context's service connects as when postgres.context_roles is on:
 * "<context>_service". APP_EINVAL unless context matches [a-z_]+ and the name fits size. */
int pg_context_role(const char *context, char *out, size_t size, app_error *err);

/* pg_migrate_context for a schema that belongs to role, in the same one transaction:
 * - unless the session already is role (a service migrating its own schema): creates role
 *   (LOGIN, no password, no other attribute) if the cluster has none, makes the connected
 *   user a member of it (so that it may hand objects to it), and grants it CONNECT and
 *   CREATE on the current database (CREATE: the service creates its own inbox schemas);
 * - creates schema owned by role, or hands an existing schema and everything in it
 *   (tables, views, sequences, routines, types) over to role, and revokes whatever PUBLIC
 *   had on it;
 * - applies the migrations as role (SET LOCAL ROLE), so what they create is role's too.
 * Nothing is granted on any other schema. Safe to run again, and from several processes
 * (also on other databases of the cluster) at once. The connected user needs CREATEROLE
 * (or superuser) and CREATE on the database the first time; role must be [a-z_][a-z0-9_]*.
 * Also the way to give a service an inbox schema an administrator creates for it. */
int pg_migrate_context_owned(pg_pool *pool, const char *schema, const char *role,
                             const mod_migration *store_migrations,
                             const mod_migration *context_migrations, int *applied_out,
                             app_error *err);

#endif
