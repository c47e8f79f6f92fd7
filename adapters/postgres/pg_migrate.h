/* Schema migrations of one context: the event store's own tables, then the context's. */
#ifndef ADAPTERS_POSTGRES_PG_MIGRATE_H
#define ADAPTERS_POSTGRES_PG_MIGRATE_H

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

#endif
