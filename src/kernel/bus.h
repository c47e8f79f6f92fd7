/* The command bus and the query bus: look up the one handler a context registered for a
 * message name, run the middleware chain (logging, metrics, timing, retry), call it.
 * Messages are JSON objects so that a message can later leave the process unchanged. */
#ifndef KERNEL_BUS_H
#define KERNEL_BUS_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "ports/clock.h"
#include "ports/event_store.h"
#include "ports/read_store.h"

typedef struct bus bus;

/* Metadata every message carries; copied into the metadata of the events it causes. */
typedef struct bus_meta {
    char message_id[37];
    char correlation_id[129];
    char causation_id[129];
    char actor[129];
    char traceparent[64];
    char idempotency_key[129];
    /* The caller's address as the rate limit counts it ("a:192.0.2.7", an IPv6 /64), set by
     * the HTTP edge: the owner of an anonymous caller's Idempotency-Keys. Not recorded. */
    char client[64];
    /* The end user a trusted gateway authenticated (X-Authenticated-Userid), "" when none: the
     * request may touch only what is that user's. Also the actor. */
    char subject[129];
    /* When the caller stops waiting, in CLOCK_MONOTONIC ms (0: no deadline of its own). A
     * call to a context in another process gets the time left, no more. */
    int64_t deadline_ms;
    /* The caller's flag, set when the answer came from an Idempotency-Key record instead of
     * running the command (NULL: not wanted). Not part of what events record. */
    bool *replayed;
} bus_meta;

/* The Idempotency-Key a command runs under (see kernel/idempotency.h): the bus fills rec;
 * bus_append attaches it, with the reply, to the command's append. */
typedef struct bus_idem {
    es_idempotency rec;
    char *response; /* owned: rec.response */
    bool recorded;  /* an append carrying it committed */
} bus_idem;

/* What a handler may use. All borrowed for the duration of the call. */
typedef struct bus_ctx {
    es_store *events;
    rs_store *reads;
    const app_clock *clock;
    bus *bus;
    const bus_meta *meta;
    bus_idem *idem;      /* set while a command runs under an Idempotency-Key, else NULL */
    const char *context; /* the context a periodic task runs for; NULL elsewhere */
    int depth;           /* 1 for a message from outside the bus, 2 for one its handler sent... */
} bus_ctx;

/* A handler takes a borrowed JSON payload and, on success, may set *out to a JSON reply
 * owned by the caller. On failure it fills err and returns its code; *out stays NULL. */
typedef int (*bus_handler_fn)(const bus_ctx *ctx, const cJSON *payload, cJSON **out,
                              app_error *err);

enum bus_flags {
    /* The handler re-reads its aggregate, so the bus may run it again after APP_EVERSION. */
    BUS_RETRY_ON_CONFLICT = 1u << 0,
    /* Running the command again with the same payload changes nothing more (e.g. a
     * reservation per order): a caller in another process may send it again after a failure
     * that left the outcome unknown. Queries are always safe to repeat. */
    BUS_IDEMPOTENT = 1u << 1,
};

/* A row of a context's command or query table; tables end with a {NULL} sentinel. */
typedef struct bus_handler_def {
    const char *name; /* "<context>.<verb_noun>", e.g. "user.register_user" */
    bus_handler_fn fn;
    unsigned flags;
} bus_handler_def;

typedef enum bus_kind { BUS_COMMAND, BUS_QUERY } bus_kind;

typedef struct bus_call bus_call;

/* Where the messages of a context that runs in another process go (kernel/remote.h): call
 * sends call->payload there and fills *call->out or call->err as the handler would have. */
typedef struct bus_transport {
    int (*call)(void *self, bus_call *call);
    void *self;
} bus_transport;

/* One call travelling through the middleware chain. */
struct bus_call {
    bus_kind kind;
    const bus_handler_def *def; /* the owner's row; for a remote owner, fn is not called */
    const bus_transport *via;   /* NULL: the handler runs here */
    const bus_ctx *ctx;
    const cJSON *payload;
    cJSON **out;
    app_error *err;
    size_t next_middleware; /* private to the bus */
};

/* A middleware does its work around bus_call_next(call), whose result it returns. */
typedef int (*bus_middleware_fn)(bus_call *call);
int bus_call_next(bus_call *call);

typedef struct bus_options {
    es_store *events;
    rs_store *reads;
    const app_clock *clock;
    int max_conflict_retries; /* runs of a BUS_RETRY_ON_CONFLICT handler after the first */
    int idempotency_ttl_s;    /* how long an Idempotency-Key is kept; <= 0: a day */
} bus_options;

/* *out owned by the caller, freed with bus_free. */
int bus_new(bus **out, const bus_options *opts, app_error *err);
void bus_free(bus *b); /* accepts NULL */

/* Registration happens during start-up only (not thread-safe against dispatch). A name
 * registered twice is APP_EINTERNAL. The table must outlive the bus. */
int bus_register(bus *b, bus_kind kind, const bus_handler_def *table, app_error *err);
/* Registers the messages of table (a context compiled in but not loaded here) as served by
 * via: dispatch runs the middleware, then via->call instead of the handler. A name registered
 * locally or remotely already is APP_EINTERNAL. table and via must outlive the bus. */
int bus_register_remote(bus *b, bus_kind kind, const bus_handler_def *table,
                        const bus_transport *via, app_error *err);
/* Middleware run in the order added, outermost first. */
int bus_use(bus *b, bus_middleware_fn fn, app_error *err);

/* Dispatch; thread-safe after start-up. APP_EUNAVAIL (with a message naming the message)
 * when no handler is registered: the owning context does not run in this process, which
 * for the caller is the same as an owner that is down, never an answer about the data. */
int bus_send(bus *b, const char *command, const cJSON *payload, const bus_meta *meta, cJSON **out,
             app_error *err);
int bus_ask(bus *b, const char *query, const cJSON *payload, const bus_meta *meta, cJSON **out,
            app_error *err);

/* Like bus_send and bus_ask, but only to a handler in this process: a message whose owner
 * is elsewhere is APP_EUNAVAIL here too, so a call from another process is never passed on
 * (no loops between two misconfigured services). */
int bus_call_local(bus *b, bus_kind kind, const char *name, const cJSON *payload,
                   const bus_meta *meta, cJSON **out, app_error *err);

/* Whether the handler of name runs in this process (registered, and not remote). */
bool bus_serves(const bus *b, bus_kind kind, const char *name);

/* Records a message answered without the bus (an HTTP route's read on its loop thread) as
 * bus_mw_metrics records one: the same counters, the same labels. */
void bus_observe(bus_kind kind, const char *name, int rc, double seconds);

/* Fills meta with a fresh message id and the given correlation/causation (NULL -> new id). */
void bus_meta_init(bus_meta *meta, const char *correlation_id, const char *causation_id);

/* The options the bus was made with (idempotency_ttl_s resolved). */
const bus_options *bus_get_options(const bus *b);

/* The standard middleware. */
int bus_mw_logging(bus_call *call);
int bus_mw_metrics(bus_call *call); /* commands_total{command,outcome}, durations */

#endif
