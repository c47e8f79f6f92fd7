/* The event-store port on PostgreSQL: one schema per context (<context>_ctx), appends
 * group-committed per context by a committer thread in libpq pipeline mode. */
#ifndef ADAPTERS_POSTGRES_PG_EVENT_STORE_H
#define ADAPTERS_POSTGRES_PG_EVENT_STORE_H

#include <stdint.h>

#include "adapters/postgres/pg_pool.h"
#include "core/error.h"
#include "ports/event_store.h"

typedef struct pg_event_store pg_event_store;

typedef struct pg_event_store_options {
    const char *dsn; /* libpq connection string or URI; copied */
    int pool_size;   /* connections for reads, checkpoints and ping */
    int connect_timeout_s;
    int max_batch; /* most appends written in one transaction */
    /* Contexts not loaded here whose log comes from Kafka into the inbox <context>_inbox
     * (kafka.inbox): every operation on such a context uses that schema, and appends to it
     * are refused (APP_EINVAL). Copied; may be NULL when n_mirrored is 0. */
    const char *const *mirrored;
    size_t n_mirrored;
} pg_event_store_options;

#define PG_EVENT_STORE_OPTIONS_INIT                                                                \
    {                                                                                              \
        NULL, 4, 5, 128, NULL, 0                                                                   \
    }

/* Creates the store and its LISTEN thread. Connects lazily: succeeds while PostgreSQL is
 * down (ping reports it). *out owned by caller; free with pg_event_store_free. */
int pg_event_store_new(pg_event_store **out, const pg_event_store_options *opts, app_error *err);
/* Stops the threads, fails appends still queued with APP_EUNAVAIL, frees. Accepts NULL. */
void pg_event_store_free(pg_event_store *s);

/* The port; its self is s, borrowed. */
es_store pg_event_store_port(pg_event_store *s);

/* The store's connection pool, borrowed (e.g. for pg_migrate_context). */
pg_pool *pg_event_store_pool(pg_event_store *s);

/* The backend pid of the session on which the store LISTENs for commits to context by other
 * processes, or 0 while there is none: not connected yet, reconnecting after losing it, or
 * context not used by this store yet (its first append or wait_for_append starts that).
 * While it is 0, waiters hear of other processes' commits only at their timeouts. For health
 * reports, for finding the session in pg_stat_activity, and for tests that must know a
 * NOTIFY will be heard. Thread-safe. */
int pg_event_store_listener_pid(pg_event_store *s, const char *context);

/* Transactions written by committers and the appends they carried (tests, metrics). */
void pg_event_store_stats(pg_event_store *s, uint64_t *batches, uint64_t *commands);

/* The session advisory lock that holds the lease of subscriber name in context: the two
 * int4 keys of pg_advisory_lock(ns, key). For operators and tests that look for a lease in
 * pg_locks (classid = ns, objid = key as unsigned, objsubid = 2) or hold one themselves. */
void pg_event_store_lease_lock(const char *context, const char *name, int32_t *ns, int32_t *key);

/* "user" -> "user_inbox" into out: the schema that holds a mirrored context's log (the event
 * store's tables, plus the Kafka offsets). APP_EINVAL as pg_context_schema. */
int pg_inbox_schema(const char *context, char *out, size_t size, app_error *err);

/* The NOTIFY channel that wakes readers of the log in schema ("<schema>_events"). */
void pg_log_channel(const char *schema, char *out, size_t size);

/* The transaction-level advisory lock every writer of the log in schema takes before it
 * draws positions, so that positions are handed out in commit order (see read_log): the two
 * int4 keys of pg_advisory_xact_lock(ns, key). */
void pg_event_store_append_lock(const char *schema, int32_t *ns, int32_t *key);

/* "user" -> "user_ctx" into out; APP_EINVAL unless context matches [a-z_]+ and fits. */
int pg_context_schema(const char *context, char *out, size_t size, app_error *err);

#endif
