/* Contexts that run in another process. A command or query whose owner is not loaded here
 * but has a remote (remote.<context>) goes to the owner's process over HTTP, as
 * POST /internal/v1/commands/{name} or /internal/v1/queries/{name}, with the whole bus
 * envelope: payload, correlation and causation ids, actor, traceparent, Idempotency-Key and
 * the time the caller has left. The answer, a result or an error with its code, message,
 * detail and field errors, comes back as if the handler had run in this process.
 *
 * Queries and commands their owner marks BUS_IDEMPOTENT are sent again, with backoff and
 * jitter, after a failure that left no answer, until the caller's deadline; any other
 * command goes once. A circuit breaker per remote fails calls fast while the remote keeps
 * failing. A remote that cannot be reached, or whose breaker is open, is APP_EUNAVAIL, the
 * same answer as for a context that runs nowhere, so callers never decide on a failed call.
 *
 * The other end is remote_routes: the internal endpoints, answering only trusted peers
 * (internal.trusted_peers, internal.token_sha256; see http/access.h). */
#ifndef KERNEL_REMOTE_H
#define KERNEL_REMOTE_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"
#include "kernel/bus.h"
#include "kernel/http_types.h"
#include "ports/clock.h"

typedef struct remote remote;

typedef struct remote_options {
    int timeout_ms;                /* a call whose caller has no deadline of its own */
    int pool_size;                 /* keep-alive connections per remote */
    int retry_backoff_ms;          /* first delay before sending again */
    int retry_backoff_max_ms;      /* longest delay */
    int breaker_failure_threshold; /* failed calls in a row that open a remote's breaker */
    int breaker_open_ms;           /* how long it stays open before a probe */
    const char *token;             /* sent as "Authorization: Bearer <token>", or NULL */
    const app_clock *clock;        /* for the breakers; NULL: the system clock */
} remote_options;

/* Declares the remote_* metrics, so that every process exports them (a monolith with none
 * of their series too, for dashboards and alerts). remote_new calls it. */
void remote_declare_metrics(void);

/* *out owned by the caller; remote_free. Copies what it needs from o. */
int remote_new(remote **out, const remote_options *o, app_error *err);
/* After the bus that uses it has stopped dispatching. Accepts NULL. */
void remote_free(remote *r);

/* Serves the commands and queries of context (the owner's tables, from its module
 * descriptor) from url ("http://host:port") through b. APP_ECONFIG naming the URL when it is
 * not one. */
int remote_add(remote *r, bus *b, const char *context, const char *url,
               const bus_handler_def *commands, const bus_handler_def *queries, app_error *err);

/* Adds (on) or removes a readiness check "remote.<context>" per remote: "degraded" until its
 * breaker is closed again. Remove them before remote_free. */
void remote_set_checks(remote *r, bool on);

/* The internal endpoints that answer other processes' calls, run through b (only to
 * handlers in this process: bus_call_local). */
extern const http_route_def remote_routes[];

/* ---- the wire format, for both ends and the tests ---- */

/* The request body for call with timeout_ms left. Owned by the caller; NULL out of memory. */
char *remote_envelope_text(const bus_call *call, int64_t timeout_ms);

/* Reads an envelope: fills meta (a fresh message id, the deadline from its timeout) and
 * points *payload into body. APP_EBADREQ with a field error when it is not one. */
int remote_envelope_parse(const cJSON *body, bus_meta *meta, const cJSON **payload, app_error *err);

/* The answer to a call: {"result": out} for rc 0, else a problem (RFC 9457) with err's
 * message as an extension. Owned by the caller; NULL out of memory. *status is its HTTP
 * status. */
char *remote_reply_text(int rc, const cJSON *out, const app_error *err, int *status);

/* Reads an answer of the given status: 0 and *out (owned by the caller, NULL for a null
 * result), or the error it carries. APP_EUNAVAIL when body is not an answer. */
int remote_reply_parse(int status, const char *body, cJSON **out, app_error *err);

#endif
