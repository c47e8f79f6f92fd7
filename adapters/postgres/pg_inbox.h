/* The inbox port on PostgreSQL: the copy of a mirrored context's log in the schema
 * <context>_inbox of this service's database, with the event store's tables (so the event
 * store reads it like any log) and the Kafka offsets of the consumers that feed it. */
#ifndef ADAPTERS_POSTGRES_PG_INBOX_H
#define ADAPTERS_POSTGRES_PG_INBOX_H

#include "adapters/postgres/pg_pool.h"
#include "core/error.h"
#include "kernel/module.h"
#include "ports/inbox_store.h"

/* The inbox's own migrations (adapters/postgres/inbox_migrations), {NULL} terminated;
 * generated into build/gen/pg_inbox_migrations.c. */
extern const mod_migration pg_inbox_migrations[];

/* Creates or brings up to date <source>_inbox: the event store's migrations, then the
 * inbox's. Safe to run again and from several processes at once (pg_migrate_context).
 * With role (not NULL), the schema belongs to that role, the service's
 * (pg_migrate_context_owned). *applied_out (may be NULL) is how many ran now. */
int pg_inbox_migrate(pg_pool *pool, const char *source, const char *role, int *applied_out,
                     app_error *err);

/* The port over pool (borrowed: it must outlive every use of the port; e.g. the event
 * store's, pg_event_store_pool). Thread-safe: each call borrows a connection of its own. */
inbox_store pg_inbox_port(pg_pool *pool);

#endif
