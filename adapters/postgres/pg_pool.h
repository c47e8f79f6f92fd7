/* A blocking pool of libpq connections, connected lazily so the process can start while
 * PostgreSQL is down, plus the few helpers every PostgreSQL adapter file shares. */
#ifndef ADAPTERS_POSTGRES_PG_POOL_H
#define ADAPTERS_POSTGRES_PG_POOL_H

#include <postgresql/libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"

typedef struct pg_pool pg_pool;

/* Statements a pooled connection keeps prepared; past that, queries run unprepared. */
#define PG_POOL_PREPARED_MAX 128

/* Creates a pool of at most size connections to dsn (a libpq connection string or URI).
 * No connection is opened here. *out belongs to the caller; free it with pg_pool_free. */
int pg_pool_new(pg_pool **out, const char *dsn, int size, int connect_timeout_s, app_error *err);
/* Frees the pool and closes its connections; every connection must have been released.
 * Accepts NULL. */
void pg_pool_free(pg_pool *pool);

/* Borrows a connection, waiting up to timeout_ms for a free one and connecting if needed.
 * APP_EUNAVAIL when none is free in time or the connection fails (detail: libpq message).
 * *out is borrowed until pg_pool_release. */
int pg_pool_acquire(pg_pool *pool, int timeout_ms, PGconn **out, app_error *err);
/* Returns a connection. A broken one is closed and reopened on a later acquire; one left
 * inside a transaction is rolled back. */
void pg_pool_release(pg_pool *pool, PGconn *conn);

/* Opens one connection outside any pool (for dedicated committer and listener connections).
 * APP_EUNAVAIL with the libpq message in detail. *out owned by caller (PQfinish). */
int pg_connect(const char *dsn, int connect_timeout_s, PGconn **out, app_error *err);

/* False when conn is gone, including a server-side close that was not noticed yet. */
bool pg_conn_alive(PGconn *conn);

/* Fills err from a failed result (res may be NULL): APP_EUNAVAIL for connection loss,
 * shutdown, resource or serialization errors, APP_EINTERNAL for anything else. The server
 * message goes in detail. Returns the code. */
int pg_result_error(PGconn *conn, const PGresult *res, const char *what, app_error *err);

/* Runs sql with text parameters and expects status want (PGRES_COMMAND_OK or
 * PGRES_TUPLES_OK). On success *out (may be NULL to discard) owns the result (PQclear). */
int pg_exec(PGconn *conn, const char *sql, int n_params, const char *const *params,
            ExecStatusType want, PGresult **out, app_error *err);

/* pg_exec on a connection borrowed from pool, as a statement prepared on it: the first run
 * of a text on a connection prepares it, and later runs skip parsing and, once PostgreSQL
 * settles on a generic plan, planning. A connection that breaks forgets its statements. */
int pg_pool_exec(pg_pool *pool, PGconn *conn, const char *sql, int n_params,
                 const char *const *params, ExecStatusType want, PGresult **out, app_error *err);

/* True when name is a usable SQL identifier for a schema: [a-z_][a-z0-9_]*, at most 48. */
int pg_schema_name_valid(const char *name);

/* A stable 32-bit key for advisory locks on a name (FNV-1a). */
int32_t pg_lock_key(const char *name);

#endif
