/* Redis adapter for the read-store port: a small pool of blocking hiredis connections,
 * connected lazily so the process starts (and reports not ready) while Redis is down. */
#ifndef ADAPTERS_REDIS_RDS_STORE_H
#define ADAPTERS_REDIS_RDS_STORE_H

#include "core/error.h"
#include "ports/clock.h"
#include "ports/read_store.h"

struct event_base;

typedef struct rds_store rds_store;

typedef struct rds_store_options {
    const char *url;        /* redis://[[user]:password@]host[:port][/db]; copied */
    const char *key_prefix; /* prepended to every key, e.g. "app:"; NULL for none; copied */
    int pool_size;          /* connections kept open, at most; <= 0 means 4 */
    int timeout_ms;         /* connect and per-command timeout, and the longest wait for a
                             * free connection; <= 0 means 1000 */
    const app_clock *clock; /* times the circuit breaker's open second (see the errors
                             * below), read from the calling threads; NULL means the system
                             * clock; borrowed, outlives the store */
} rds_store_options;

#define RDS_STORE_OPTIONS_INIT                                                                     \
    {                                                                                              \
        NULL, NULL, 4, 1000, NULL                                                                  \
    }

/* Checks the options and makes the pool without connecting. APP_ECONFIG for a bad URL,
 * APP_ENOMEM. On failure *out is NULL. */
int rds_store_new(rds_store **out, const rds_store_options *opts, app_error *err);

/* The port view; borrowed, valid until rds_store_free. Every operation is thread-safe.
 *
 * Errors: APP_EUNAVAIL when Redis cannot be reached, times out, or answers that it cannot
 * serve (LOADING, READONLY, OOM...), with hiredis's or Redis's text in err->detail; the
 * broken connection is dropped and the next call reconnects. A connection that was
 * already open and fails is retried once on a fresh one (every operation is idempotent),
 * so a Redis restart costs no failed call. After 5 calls in a row find Redis unreachable, a
 * circuit breaker fails calls at once (APP_EUNAVAIL, "circuit breaker open" in the detail)
 * for 1 s by the options' clock; then one call probes, and an answer closes it.
 * APP_EINTERNAL for any other Redis error (e.g. WRONGTYPE). zadd with a NaN score is
 * APP_EINVAL. zrevrange: stop above INT64_MAX means "to the end" (pass SIZE_MAX); *out is
 * NULL when *n is 0. */
rs_store rds_store_port(rds_store *s);

/* Gives the calling thread, which runs base, a connection of its own for the port's
 * get_async (see rds_loop.h): GETs answered by base on this thread, with the store's URL,
 * prefix and timeout, but not its circuit breaker. One loop a thread. The process must ignore
 * SIGPIPE (hiredis writes with write(2) there). On the thread, before base stops running:
 * rds_store_detach_loop, which ends every pending GET with APP_EUNAVAIL. */
int rds_store_attach_loop(rds_store *s, struct event_base *base, app_error *err);
void rds_store_detach_loop(rds_store *s);

/* Closes every connection. No call may be in flight. Accepts NULL. */
void rds_store_free(rds_store *s);

#endif
