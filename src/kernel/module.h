/* A bounded context is one const descriptor that the kernel loads through fixed phases
 * (migrate, register, start, stop), in the spirit of nginx's ngx_module_t. */
#ifndef KERNEL_MODULE_H
#define KERNEL_MODULE_H

#include "core/config.h"
#include "core/error.h"
#include "kernel/bus.h"
#include "kernel/http_types.h"
#include "ports/event_store.h"

#define APP_MODULE_ABI 4

/* One migration: applied once, in name order, inside the context's schema. */
typedef struct mod_migration {
    const char *name; /* "001_create_read_tables.sql" */
    const char *sql;
} mod_migration;

/* A subscriber pulls one context's log from its checkpoint. Handlers must be idempotent:
 * delivery is at least once. ctx->meta carries the event's correlation id and the event id
 * as causation. A failure stops the subscriber at that event and retries it later. */
typedef int (*mod_event_fn)(const bus_ctx *ctx, const es_event *ev, app_error *err);

/* The read-model key (logical, "user:<id>") a projection's handler reads before it writes
 * for ev, into out; false when it reads none. */
typedef bool (*mod_key_fn)(const es_event *ev, char *out, size_t size);

typedef struct mod_subscription {
    const char *name;           /* unique per context, e.g. "user.projection" */
    const char *source_context; /* whose log it reads */
    mod_event_fn handle;
    unsigned flags;
    /* A projection's read-model keys: the logical key prefixes it alone writes, NULL
     * terminated ({"user:", NULL}). The kernel keeps them per generation so that a replay
     * can build a new one beside the live one and switch over atomically. */
    const char *const *keys;
    /* Optional, for a projection: the key its handler reads for an event. The kernel then
     * reads a batch's keys in one round trip before handling the batch, instead of one
     * round trip per event. */
    mod_key_fn read_key;
} mod_subscription;

enum mod_subscription_flags {
    MOD_SUB_PROJECTION = 1u << 0, /* writes read models; rebuilt by replay */
    /* Events of different streams may be handled at the same time (those of one stream stay
     * in log order, one after the other): a saga whose steps wait for commits of their own
     * keeps many instances going. Not for projections. */
    MOD_SUB_BY_STREAM = 1u << 1,
};

/* A periodic job of a context (e.g. cancelling sagas past their deadline). It runs in one
 * kernel thread, every interval_ms, with the same ctx a subscriber gets. A failure is
 * logged and the job runs again at the next interval. */
typedef int (*mod_task_fn)(const bus_ctx *ctx, app_error *err);

typedef struct mod_task {
    const char *name; /* unique, e.g. "order.placement_deadlines" */
    int interval_ms;
    mod_task_fn run;
} mod_task;

/* Schema evolution: turns the data of a stored event of event_type in schema version
 * from_version into the shape of version from_version + 1, in place. Rows chain (v1 -> v2 ->
 * v3); every reader (aggregates, projections, the Kafka relay) gets events through the
 * kernel's upcasting store (kernel/upcast.h), so a context's domain decodes only the current
 * version. A failure (err set, non-zero) leaves the event as it was stored. */
typedef int (*mod_upcast_fn)(cJSON *data, app_error *err);

typedef struct mod_upcaster {
    const char *event_type; /* "inventory.product.created" */
    int from_version;
    mod_upcast_fn upcast;
} mod_upcaster;

/* Called once at start-up, before anything else of the module, with the whole config.
 * A context keeps what it needs (it must not keep the pointer). */
typedef int (*mod_configure_fn)(const app_config *cfg, app_error *err);

typedef struct app_module {
    int abi;                               /* APP_MODULE_ABI */
    const char *name;                      /* "user" */
    const char *schema;                    /* "user_ctx" */
    const mod_migration *migrations;       /* {NULL} terminated */
    const bus_handler_def *commands;       /* {NULL} terminated */
    const bus_handler_def *queries;        /* {NULL} terminated */
    const http_route_def *routes;          /* {0} terminated */
    const mod_subscription *subscriptions; /* {NULL} terminated */
    const mod_task *tasks;                 /* {NULL} terminated, or NULL */
    const mod_upcaster *upcasters;         /* {NULL} terminated, or NULL */
    mod_configure_fn configure;            /* or NULL */
    /* Its contract with the other contexts: the commands and queries of theirs it sends
     * through the bus, {NULL} terminated, or NULL for none. The logs of theirs it reads are
     * its subscriptions' source_context. The kernel checks both at start-up
     * (mod_check_contracts), so that a misspelt name stops the start instead of leaving work
     * waiting for an answer that never comes. */
    const char *const *sends;
} app_module;

/* The kernel's array of every context compiled into the binary, NULL terminated. */
extern const app_module *const app_modules[];

/* The module named name among app_modules, or NULL. */
const app_module *app_module_find(const char *name);

/* Checks the contracts of the n loaded contexts against all, every context compiled in
 * ({NULL} terminated): each message a context sends belongs to a context of all (the one
 * named before its first '.') that handles it as a command or a query, and that context is
 * loaded or among the n_remotes contexts served elsewhere (remotes, by name); each log a
 * subscription reads is a context's of all. On failure APP_ECONFIG, naming the message (or
 * subscription) and the context it comes from. */
int mod_check_contracts(const app_module *const *loaded, size_t n, const app_module *const *all,
                        const char *const *remotes, size_t n_remotes, app_error *err);

#endif
