/* A Redis connection owned by one libevent loop: GETs sent with hiredis's asynchronous API
 * and answered on the loop's thread, so that a read needs no worker and never blocks the
 * loop. The read-store port offers it as get_async (rds_store_attach_loop). */
#ifndef ADAPTERS_REDIS_RDS_LOOP_H
#define ADAPTERS_REDIS_RDS_LOOP_H

#include <stdbool.h>

#include "adapters/redis/rds_url.h"
#include "core/error.h"
#include "ports/read_store.h"

struct event_base;

typedef struct rds_loop rds_loop;

/* A connection made through base, on base's thread, lazily on the first get. url is copied;
 * prefix (NULL for none) is prepended to every key; a GET not answered within timeout_ms
 * ends with APP_EUNAVAIL, and so does every other one then pending on the connection,
 * which is closed. */
int rds_loop_new(rds_loop **out, struct event_base *base, const rds_url *url, const char *prefix,
                 int timeout_ms, app_error *err);

/* Starts GET <prefix><key> (on the loop's thread); done runs from the loop, never before this
 * returns: value NULL for a missing key; APP_EUNAVAIL when the connection failed or the
 * answer did not come in time, or Redis answered that it cannot serve; APP_EINTERNAL for any
 * other error reply. Nonzero when nothing started (done is not called): APP_EUNAVAIL for a
 * second after a connection could not be made, so that a Redis that is down costs the loop
 * one attempt a second. */
int rds_loop_get(rds_loop *l, const char *key, rs_get_done done, void *arg, app_error *err);

/* Ends every pending GET with APP_EUNAVAIL (their done runs before it returns) and closes
 * the connection. On the loop's thread. Accepts NULL. */
void rds_loop_free(rds_loop *l);

/* Redis error replies that mean "cannot serve now" (LOADING, READONLY, ...) rather than "bad
 * command" (rds_store.c). */
bool rds_reply_error_transient(const char *msg);

#endif
