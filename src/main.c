/* The composition root: reads the configuration, wires adapters to ports, loads the
 * contexts through their phases (migrate, register, start), serves until a signal. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "adapters/kafka/kfk_dlq.h"
#include "adapters/kafka/kfk_inbox.h"
#include "adapters/kafka/kfk_relay.h"
#include "adapters/postgres/pg_event_store.h"
#include "adapters/postgres/pg_inbox.h"
#include "adapters/postgres/pg_migrate.h"
#include "adapters/postgres/pg_pool.h"
#include "adapters/redis/rds_store.h"
#include "core/cli.h"
#include "core/config.h"
#include "core/log.h"
#include "core/sd_notify.h"
#include "http/otlp.h"
#include "http/router.h"
#include "http/server.h"
#include "kernel/bus.h"
#include "kernel/idempotency.h"
#include "kernel/module.h"
#include "kernel/ops.h"
#include "kernel/read_models.h"
#include "kernel/remote.h"
#include "kernel/replay.h"
#include "kernel/subscriptions.h"
#include "kernel/upcast.h"
#include "kernel/workers.h"

#define EXIT_CONFIG 2
/* How long `dlq redrive` waits for the process running a subscriber to handle its dead letter
 * again (it looks for requests once a second). */
#define APP_REDRIVE_WAIT_MS 15000

typedef struct app {
    app_config cfg;
    const app_module *modules[CONFIG_MAX_CONTEXTS];
    size_t n_modules;
    pg_event_store *pg;
    rds_store *redis;
    es_store stored;      /* the adapter's port, as the events are stored */
    upcast_store *upcast; /* in front of it: old events in their current shape */
    es_store events;      /* what every reader and writer uses */
    rs_store redis_port;  /* the read store as it is */
    rm_models *models;    /* read-model generations over it */
    rs_store reads;       /* what queries and subscribers read through */
    bus *bus;
    remote *remote; /* NULL unless a context not loaded here has a remote */
    workers *pool;
    http_access *access; /* API keys, gateway consumers, rate limits */
    http_server *http;
    sub_runner *subs;
    kfk_relay *relay; /* NULL unless kafka.enabled */
    /* Contexts a loaded subscription reads that run elsewhere, their logs mirrored from
     * Kafka into <context>_inbox (kafka.enabled and kafka.inbox; else none). Borrowed from
     * the modules. */
    const char *mirrored[CONFIG_MAX_CONTEXTS];
    size_t n_mirrored;
    inbox_store inbox_port;
    kfk_inbox *inbox;       /* NULL unless some context is mirrored */
    otlp_exporter *tracing; /* NULL unless tracing.endpoint is set */
} app;

static void app_report(const char *what, const app_error *err)
{
    log_async_stop(); /* the lines logged before it come first */
    fprintf(stderr, "app: %s: %s%s%s\n", what, err->message, err->detail[0] ? ": " : "",
            err->detail);
}

static bool app_loads(const app *a, const char *context)
{
    for (size_t i = 0; i < a->n_modules; i++)
        if (strcmp(a->modules[i]->name, context) == 0)
            return true;
    return false;
}

/* The contexts compiled in but not loaded here that have a remote.<context>: their messages
 * go there. */
static int app_add_remotes(app *a, app_error *err)
{
    remote_options ro = {
        .timeout_ms = a->cfg.remote.timeout_ms,
        .pool_size = a->cfg.remote.pool_size,
        .retry_backoff_ms = a->cfg.remote.retry_backoff_ms,
        .retry_backoff_max_ms = a->cfg.remote.retry_backoff_max_ms,
        .breaker_failure_threshold = a->cfg.remote.breaker_failure_threshold,
        .breaker_open_ms = a->cfg.remote.breaker_open_ms,
        .token = a->cfg.remote.token,
        .clock = &app_system_clock,
    };
    for (size_t i = 0; app_modules[i]; i++) {
        const app_module *m = app_modules[i];
        const char *url = config_remote_url(&a->cfg, m->name);
        if (!url || app_loads(a, m->name))
            continue;
        int rc = a->remote ? 0 : remote_new(&a->remote, &ro, err);
        if (rc == 0)
            rc = remote_add(a->remote, a->bus, m->name, url, m->commands, m->queries, err);
        if (rc)
            return rc;
        log_info("context %s is served by %s", m->name, url);
    }
    return 0;
}

static int app_select_modules(app *a, app_error *err)
{
    for (size_t i = 0; i < a->cfg.n_contexts; i++) {
        const app_module *m = app_module_find(a->cfg.contexts[i]);
        if (!m) {
            /* Configured but not compiled in: split deployments run a subset. */
            log_warn("context %s is not part of this build; skipped", a->cfg.contexts[i]);
            continue;
        }
        if (m->abi != APP_MODULE_ABI)
            return app_error_set(err, APP_ECONFIG, "context %s was built for module ABI %d",
                                 m->name, m->abi);
        if (m->configure && m->configure(&a->cfg, err) != 0)
            return err->code;
        a->modules[a->n_modules++] = m;
    }
    if (a->n_modules == 0)
        return app_error_set(err, APP_ECONFIG,
                             "contexts: none of the configured contexts is "
                             "part of this build");
    const char *remotes[CONFIG_MAX_CONTEXTS];
    size_t n_remotes = 0;
    for (size_t i = 0; app_modules[i] && n_remotes < CONFIG_MAX_CONTEXTS; i++) {
        if (!config_remote_url(&a->cfg, app_modules[i]->name))
            continue;
        if (app_loads(a, app_modules[i]->name))
            log_warn("remote.%s is ignored: context %s is loaded in this process",
                     app_modules[i]->name, app_modules[i]->name);
        else
            remotes[n_remotes++] = app_modules[i]->name;
    }
    return mod_check_contracts(a->modules, a->n_modules, app_modules, remotes, n_remotes, err);
}

/* With kafka.inbox, every log a loaded subscription reads whose context is not loaded here
 * comes from Kafka; without it, such logs are read from this database as always. */
static void app_find_mirrored(app *a)
{
    a->n_mirrored = 0;
    if (a->cfg.kafka.inbox && !a->cfg.kafka.enabled)
        log_warn("kafka.inbox is true but kafka.enabled is false: no log is mirrored");
    if (!a->cfg.kafka.enabled || !a->cfg.kafka.inbox)
        return;
    for (size_t i = 0; i < a->n_modules; i++) {
        for (const mod_subscription *s = a->modules[i]->subscriptions; s && s->name; s++) {
            bool known = app_loads(a, s->source_context);
            for (size_t j = 0; !known && j < a->n_mirrored; j++)
                known = strcmp(a->mirrored[j], s->source_context) == 0;
            if (!known && a->n_mirrored < CONFIG_MAX_CONTEXTS)
                a->mirrored[a->n_mirrored++] = s->source_context;
        }
    }
}

/* A log a subscription of m reads comes from a context loaded here, from Kafka (the inbox),
 * or from this database, which must then hold it: a split service without kafka.inbox would
 * otherwise wait forever for events that never arrive. */
static int app_check_logs(const app *a, pg_pool *pool, const app_module *m, app_error *err)
{
    for (const mod_subscription *s = m->subscriptions; s && s->name; s++) {
        bool mirrored = false, here = false;
        for (size_t j = 0; j < a->n_mirrored; j++)
            mirrored = mirrored || strcmp(a->mirrored[j], s->source_context) == 0;
        if (mirrored || app_loads(a, s->source_context))
            continue;
        const app_module *source = app_module_find(s->source_context);
        int rc = source ? pg_schema_has_log(pool, source->schema, &here, err) : 0;
        if (rc)
            return rc;
        if (!here)
            return app_error_set(err, APP_ECONFIG,
                                 "subscription %s of context %s reads the log of %s, which is "
                                 "not loaded here and not in this database; set kafka.enabled "
                                 "and kafka.inbox to read it from Kafka",
                                 s->name, m->name, s->source_context);
    }
    return 0;
}

/* Phase 1: every loaded context's schema is brought up to date, and every inbox. With
 * postgres.context_roles, each schema also belongs to its context's role (see
 * pg_migrate_context_owned), so that a service connecting as that role can touch its own
 * schema only; the inboxes belong to the role of the first context loaded. */
static int app_migrate(app *a, app_error *err)
{
    pg_pool *pool = NULL;
    int rc = pg_pool_new(&pool, a->cfg.postgres.dsn, 1, a->cfg.postgres.connect_timeout_s, err);
    for (size_t i = 0; rc == 0 && i < a->n_modules; i++) {
        const app_module *m = a->modules[i];
        int applied = 0;
        char role[64] = "";
        if (a->cfg.postgres.context_roles) {
            rc = pg_context_role(m->name, role, sizeof role, err);
            if (rc == 0)
                rc = pg_migrate_context_owned(pool, m->schema, role, pg_store_migrations,
                                              m->migrations, &applied, err);
        } else {
            rc = pg_migrate_context(pool, m->schema, pg_store_migrations, m->migrations, &applied,
                                    err);
        }
        if (rc == 0)
            log_info("context %s: schema %s up to date (%d migration%s applied)%s%s", m->name,
                     m->schema, applied, applied == 1 ? "" : "s", role[0] ? ", owned by role " : "",
                     role);
    }
    char inbox_role[64] = "";
    if (rc == 0 && a->cfg.postgres.context_roles && a->n_mirrored > 0)
        rc = pg_context_role(a->modules[0]->name, inbox_role, sizeof inbox_role, err);
    for (size_t i = 0; rc == 0 && i < a->n_mirrored; i++) {
        int applied = 0;
        rc = pg_inbox_migrate(pool, a->mirrored[i], inbox_role[0] ? inbox_role : NULL, &applied,
                              err);
        if (rc == 0)
            log_info("context %s: mirrored from kafka into schema %s_inbox (%d migration%s "
                     "applied)",
                     a->mirrored[i], a->mirrored[i], applied, applied == 1 ? "" : "s");
    }
    for (size_t i = 0; rc == 0 && i < a->n_modules; i++)
        rc = app_check_logs(a, pool, a->modules[i], err);
    pg_pool_free(pool);
    return rc;
}

/* Every reader gets events through the upcasters of every compiled-in context (a context may
 * read another's log, loaded in this process or not). */
static int app_open_upcasting(app *a, app_error *err)
{
    a->stored = pg_event_store_port(a->pg);
    int rc = upcast_store_new(&a->upcast, &a->stored, app_modules, err);
    if (rc == 0)
        a->events = upcast_store_port(a->upcast);
    return rc;
}

static int app_open_adapters(app *a, app_error *err)
{
    pg_event_store_options po = {
        .dsn = a->cfg.postgres.dsn,
        .pool_size = a->cfg.postgres.pool_size,
        .connect_timeout_s = a->cfg.postgres.connect_timeout_s,
        .max_batch = a->cfg.postgres.max_batch,
        .mirrored = a->mirrored,
        .n_mirrored = a->n_mirrored,
    };
    int rc = pg_event_store_new(&a->pg, &po, err);
    if (rc == 0)
        rc = app_open_upcasting(a, err);
    if (rc)
        return rc;

    rds_store_options ro = {
        .url = a->cfg.redis.url,
        .key_prefix = a->cfg.redis.key_prefix,
        .pool_size = a->cfg.redis.pool_size,
        .timeout_ms = a->cfg.redis.timeout_ms,
    };
    rc = rds_store_new(&a->redis, &ro, err);
    if (rc)
        return rc;
    a->redis_port = rds_store_port(a->redis);
    rc = rm_models_new(&a->models, &a->redis_port, err);
    for (size_t i = 0; rc == 0 && i < a->n_modules; i++)
        for (const mod_subscription *s = a->modules[i]->subscriptions; rc == 0 && s && s->name; s++)
            if (s->flags & MOD_SUB_PROJECTION)
                rc = rm_models_add(a->models, s, err);
    if (rc)
        return rc;
    a->reads = rm_models_port(a->models);
    return 0;
}

/* Phase 2: every context's commands, queries, routes and subscriptions are registered. */
/* Each HTTP loop thread reads Redis itself, for GETs answered from a read model there. */
static void app_loop_started(void *arg, struct event_base *base)
{
    app_error err = APP_ERROR_INIT;
    if (rds_store_attach_loop(arg, base, &err) != 0)
        log_warn("an HTTP loop reads through workers only: %s", err.message);
}

static void app_loop_stopping(void *arg, struct event_base *base)
{
    (void)base;
    rds_store_detach_loop(arg);
}

static int app_register(app *a, app_error *err)
{
    bus_options bo = {
        .events = &a->events,
        .reads = &a->reads,
        .clock = &app_system_clock,
        .max_conflict_retries = 50,
        .idempotency_ttl_s = a->cfg.idempotency.ttl_seconds,
    };
    int rc = bus_new(&a->bus, &bo, err);
    if (rc == 0)
        rc = bus_use(a->bus, bus_mw_logging, err);
    if (rc == 0)
        rc = bus_use(a->bus, bus_mw_metrics, err);
    if (rc == 0)
        rc = bus_use(a->bus, bus_mw_idempotency, err);
    if (rc == 0)
        rc = bus_register(a->bus, BUS_QUERY, ops_queries, err);
    if (rc == 0)
        rc = workers_new(&a->pool, a->cfg.workers.threads, (size_t)a->cfg.workers.queue_size, err);
    if (rc)
        return rc;

    http_access_options ao = {
        .required = a->cfg.auth.enabled,
        .keys = a->cfg.auth.api_keys,
        .n_keys = a->cfg.auth.n_api_keys,
        .gateways = a->cfg.auth.trusted_gateways,
        .n_gateways = a->cfg.auth.n_trusted_gateways,
        .requests_per_minute = a->cfg.rate_limit.requests_per_minute,
        .burst = a->cfg.rate_limit.burst,
        .internal_peers = a->cfg.internal.trusted_peers,
        .n_internal_peers = a->cfg.internal.n_trusted_peers,
        .has_token = a->cfg.internal.has_token,
    };
    memcpy(ao.token_sha256, a->cfg.internal.token_sha256, sizeof ao.token_sha256);
    rc = http_access_new(&a->access, &ao, err);
    if (rc)
        return rc;
    bool loop_reads = a->cfg.redis.loop_reads;
    http_server_options ho = {
        .host = a->cfg.http.listen_host,
        .port = a->cfg.http.listen_port,
        .threads = a->cfg.http.threads,
        .max_body_bytes = a->cfg.http.max_body_bytes,
        .request_timeout_ms = a->cfg.http.request_timeout_ms,
        .header_timeout_ms = a->cfg.http.header_timeout_ms,
        .body_timeout_ms = a->cfg.http.body_timeout_ms,
        .max_connections = a->cfg.http.max_connections,
        .max_requests_per_connection = a->cfg.http.max_requests_per_connection,
        .bus = a->bus,
        .pool = a->pool,
        .access = a->access,
        .loop_started = loop_reads ? app_loop_started : NULL,
        .loop_stopping = loop_reads ? app_loop_stopping : NULL,
        .loop_arg = a->redis,
    };
    rc = http_server_new(&a->http, &ho, err);
    if (rc == 0)
        rc = http_server_add_routes(a->http, ops_routes, err);
    if (rc == 0)
        rc = http_server_add_routes(a->http, remote_routes, err);
    remote_declare_metrics();
    if (rc == 0)
        rc = app_add_remotes(a, err);
    if (rc == 0)
        remote_set_checks(a->remote, true);

    sub_runner_options so = {
        .events = &a->events,
        .reads = &a->reads,
        .models = a->models,
        .bus = a->bus,
        .clock = &app_system_clock,
        .batch_size = a->cfg.subscriptions.batch_size,
        .poll_interval_ms = a->cfg.subscriptions.poll_interval_ms,
        .lanes = a->cfg.subscriptions.lanes,
        .max_attempts = a->cfg.subscriptions.max_attempts,
    };
    if (rc == 0)
        rc = sub_runner_new(&a->subs, &so, err);

    for (size_t i = 0; rc == 0 && i < a->n_modules; i++) {
        const app_module *m = a->modules[i];
        if (m->commands)
            rc = bus_register(a->bus, BUS_COMMAND, m->commands, err);
        if (rc == 0 && m->queries)
            rc = bus_register(a->bus, BUS_QUERY, m->queries, err);
        if (rc == 0 && m->routes)
            rc = http_server_add_routes(a->http, m->routes, err);
        for (const mod_subscription *s = m->subscriptions; rc == 0 && s && s->name; s++)
            rc = sub_runner_add(a->subs, m->name, s, err);
    }
    for (size_t i = 0; rc == 0 && i < a->n_modules; i++) {
        for (const mod_task *t = a->modules[i]->tasks; rc == 0 && t && t->name; t++)
            rc = sub_runner_add_task(a->subs, a->modules[i]->name, t, err);
        if (rc == 0)
            rc = sub_runner_add_task(a->subs, a->modules[i]->name, &idempotency_purge_task, err);
    }
    return rc;
}

/* The loaded contexts' names, for the Kafka relay and the dead-letter commands. */
static void app_context_names(const app *a, const char **out)
{
    for (size_t i = 0; i < a->n_modules; i++)
        out[i] = a->modules[i]->name;
}

/* The loaded contexts and then the mirrored ones: every context whose dead letters are in
 * this database. out holds CONFIG_MAX_CONTEXTS * 2; returns the count. */
static size_t app_dead_letter_contexts(const app *a, const char **out)
{
    app_context_names(a, out);
    for (size_t i = 0; i < a->n_mirrored; i++)
        out[a->n_modules + i] = a->mirrored[i];
    return a->n_modules + a->n_mirrored;
}

/* Topic names come from the prefix and the contexts: refuse illegal ones at start-up. */
static int app_check_kafka(const app *a, app_error *err)
{
    char topic[256];
    for (size_t i = 0; i < a->n_modules && a->cfg.kafka.enabled; i++) {
        int rc = kfk_topic_name(topic, sizeof topic, a->cfg.kafka.topic_prefix, a->modules[i]->name,
                                ".events.dlq", err);
        if (rc)
            return rc;
    }
    return 0;
}

static bool app_kafka_ready(void *arg, char *detail, size_t size)
{
    return kfk_relay_healthy(arg, detail, size);
}

/* The outbound relay, only with kafka.enabled: its own threads, never on the command path. */
static int app_start_relay(app *a, app_error *err)
{
    if (!a->cfg.kafka.enabled)
        return 0;
    const char *names[CONFIG_MAX_CONTEXTS];
    app_context_names(a, names);
    kfk_relay_options ro = {.events = &a->events, .contexts = names, .n_contexts = a->n_modules};
    kfk_options_from_config(&ro.kafka, &a->cfg);
    kfk_inbox_declare_metrics(); /* named in /metrics whether or not a context is mirrored */
    int rc = kfk_relay_new(&a->relay, &ro, err);
    if (rc == 0)
        rc = kfk_relay_start(a->relay, err);
    if (rc == 0) {
        ops_set_soft_check("kafka", app_kafka_ready, a->relay);
        log_info("kafka relay started: brokers %s, topics %s<context>.events", a->cfg.kafka.brokers,
                 a->cfg.kafka.topic_prefix);
    }
    return rc;
}

/* The inbox consumers, only for mirrored contexts: their own threads, like the relay. */
static int app_start_inbox(app *a, app_error *err)
{
    if (a->n_mirrored == 0)
        return 0;
    const char *names[CONFIG_MAX_CONTEXTS];
    app_context_names(a, names);
    a->inbox_port = pg_inbox_port(pg_event_store_pool(a->pg));
    kfk_inbox_options io = {
        .inbox = &a->inbox_port,
        .sources = a->mirrored,
        .n_sources = a->n_mirrored,
        .loaded = names,
        .n_loaded = a->n_modules,
    };
    kfk_options_from_config(&io.kafka, &a->cfg);
    int rc = kfk_inbox_new(&a->inbox, &io, err);
    if (rc == 0)
        rc = kfk_inbox_start(a->inbox, err);
    return rc;
}

static void app_stop_inbox(app *a)
{
    if (!a->inbox)
        return;
    /* The subscribers' report reads the inbox's status too. */
    ops_set_report("subscriptions", NULL, NULL);
    kfk_inbox_free(a->inbox); /* stores what it read and leaves the groups */
    a->inbox = NULL;
}

static void app_stop_relay(app *a)
{
    if (!a->relay)
        return;
    ops_set_soft_check("kafka", NULL, NULL);
    /* The subscribers' report reads the relay's status too. */
    ops_set_report("subscriptions", NULL, NULL);
    kfk_relay_free(a->relay); /* saves the checkpoints and gives the leases up */
    a->relay = NULL;
}

static void app_report_subscriber(cJSON *o, const char *name, const char *status,
                                  int64_t checkpoint, int64_t head, double lag_seconds)
{
    cJSON *s = cJSON_AddObjectToObject(o, name);
    if (!s)
        return;
    cJSON_AddStringToObject(s, "status", status);
    cJSON_AddNumberToObject(s, "checkpoint", (double)checkpoint);
    cJSON_AddNumberToObject(s, "lagEvents", (double)(head > checkpoint ? head - checkpoint : 0));
    cJSON_AddNumberToObject(s, "lagSeconds", lag_seconds);
}

/* The readiness section of the subscribers: where each runs and how far behind it is. The
 * Kafka relay of a context is one of them, under "<context>.kafka_relay". */
static cJSON *app_subscriptions_report(void *arg)
{
    app *a = arg;
    cJSON *o = cJSON_CreateObject();
    for (size_t i = 0; o && i < sub_runner_count(a->subs); i++) {
        sub_status st;
        sub_runner_status(a->subs, i, &st);
        app_report_subscriber(o, st.name,
                              st.standby      ? "standby"
                              : st.failing    ? "failing"
                              : st.rebuilding ? "rebuilding"
                                              : "running",
                              st.checkpoint, st.head, st.lag_seconds);
    }
    for (size_t i = 0; o && a->relay && i < kfk_relay_count(a->relay); i++) {
        kfk_relay_status st;
        kfk_relay_status_of(a->relay, i, &st);
        char name[64];
        snprintf(name, sizeof name, "%s.kafka_relay", st.context);
        app_report_subscriber(o, name,
                              !st.leader    ? "standby"
                              : st.degraded ? "failing"
                                            : "running",
                              st.checkpoint, st.head, st.lag_seconds);
    }
    for (size_t i = 0; o && a->inbox && i < kfk_inbox_count(a->inbox); i++) {
        kfk_inbox_status st;
        kfk_inbox_status_of(a->inbox, i, &st);
        char name[64];
        snprintf(name, sizeof name, "%s.kafka_inbox", st.source);
        /* Offsets, not positions: checkpoint is the stored next offsets, and lagEvents the
         * messages of the topic not yet in the inbox. */
        app_report_subscriber(o, name,
                              st.failing    ? "failing"
                              : st.assigned ? "running"
                                            : "standby",
                              st.stored, st.high, 0);
    }
    return o;
}

static void app_close(app *a)
{
    app_stop_inbox(a);
    app_stop_relay(a);
    http_server_free(a->http);
    http_access_free(a->access);
    a->access = NULL;
    ops_set_report("subscriptions", NULL, NULL);
    sub_runner_free(a->subs);
    workers_free(a->pool);
    remote_set_checks(a->remote, false);
    remote_free(a->remote); /* nothing dispatches any more */
    a->remote = NULL;
    bus_free(a->bus);
    upcast_store_free(a->upcast);
    a->upcast = NULL;
    pg_event_store_free(a->pg);
    rm_models_free(a->models);
    rds_store_free(a->redis);
    /* Last: every span has ended, and what is queued is sent. */
    otlp_stop(a->tracing);
    a->tracing = NULL;
}

/* Tracing over OTLP/HTTP when tracing.endpoint (OTEL_EXPORTER_OTLP_ENDPOINT) is set. */
static int app_start_tracing(app *a, app_error *err)
{
    if (!a->cfg.tracing.endpoint[0])
        return 0;
    otlp_options o = {
        .endpoint = a->cfg.tracing.endpoint,
        .service_name = a->cfg.tracing.service_name,
        .attributes = a->cfg.tracing.resource_attributes,
        .ratio = a->cfg.tracing.ratio,
        .parent_based = a->cfg.tracing.parent_based,
        .queue_size = (size_t)a->cfg.tracing.queue_size,
    };
    return otlp_start(&a->tracing, &o, err);
}

/* Phase 3: serve until SIGTERM or SIGINT, then stop in reverse order. */
static int app_serve(app *a)
{
    app_error err = APP_ERROR_INIT;
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    /* Blocked before any thread starts, so every thread inherits the mask and only the
     * main thread's sigwait sees them. */
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* Log lines go out through one writer thread from here on (core/log.h): no request waits
     * on stderr. */
    if (log_async_start(0) != 0)
        log_warn("could not start the log writer thread; writing log lines directly");

    int rc = app_migrate(a, &err);
    if (rc == 0)
        rc = app_start_tracing(a, &err);
    if (rc == 0)
        rc = app_open_adapters(a, &err);
    if (rc == 0)
        rc = app_register(a, &err);
    if (rc == 0)
        rc = sub_runner_start(a->subs, &err);
    if (rc == 0)
        rc = app_start_relay(a, &err);
    if (rc == 0)
        rc = app_start_inbox(a, &err);
    if (rc == 0)
        ops_set_report("subscriptions", app_subscriptions_report, a);
    if (rc == 0)
        rc = http_server_start(a->http, &err);
    if (rc) {
        app_report("could not start", &err);
        app_close(a);
        return rc == APP_ECONFIG ? EXIT_CONFIG : EXIT_FAILURE;
    }
    log_info("serving on %s:%d with %d loop threads, %d workers, contexts:%s%s%s",
             a->cfg.http.listen_host, http_server_port(a->http), a->cfg.http.threads,
             a->cfg.workers.threads, a->n_modules > 0 ? " " : "",
             a->n_modules > 0 ? a->modules[0]->name : "", a->n_modules > 1 ? " ..." : "");

    char status[320];
    snprintf(status, sizeof status, "READY=1\nSTATUS=serving on %s:%d", a->cfg.http.listen_host,
             http_server_port(a->http));
    if (sd_notify_state(status) != 0)
        log_warn("could not tell systemd the service is ready (NOTIFY_SOCKET): %s",
                 strerror(errno));

    int sig = 0;
    sigwait(&stop_signals, &sig);
    log_info("received %s; stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    sd_notify_state("STOPPING=1\nSTATUS=stopping: finishing requests in flight");
    http_server_stop(a->http, a->cfg.http.shutdown_timeout_ms);
    sub_runner_stop(a->subs);
    app_stop_inbox(a);
    app_stop_relay(a);
    app_close(a);
    log_info("stopped");
    log_async_stop();
    return EXIT_SUCCESS;
}

/* A subscriber's dead letter is handled again by the process that runs the subscriber, which
 * has every port it needs: this one asks and waits for it. */
static int app_redrive_to(void *arg, es_store *events, const char *context, const es_dead_letter *d,
                          char *reason, size_t size)
{
    (void)arg;
    return sub_dead_letter_redrive(events, context, d, APP_REDRIVE_WAIT_MS, reason, size);
}

/* `dlq list` and `dlq redrive [ID]`: the event store only, no server. */
static int app_dlq(app *a, const cli_args *args)
{
    app_error err = APP_ERROR_INIT;
    pg_event_store_options po = {
        .dsn = a->cfg.postgres.dsn,
        .pool_size = 1,
        .connect_timeout_s = a->cfg.postgres.connect_timeout_s,
        .max_batch = 1,
        .mirrored = a->mirrored,
        .n_mirrored = a->n_mirrored,
    };
    int rc = pg_event_store_new(&a->pg, &po, &err);
    if (rc == 0)
        rc = app_open_upcasting(a, &err);
    if (rc) {
        app_report("could not open the event store", &err);
        pg_event_store_free(a->pg);
        return EXIT_FAILURE;
    }
    const char *names[CONFIG_MAX_CONTEXTS * 2];
    size_t n_names = app_dead_letter_contexts(a, names);
    size_t sent = 0, failed = 0;
    if (args->command == CLI_DLQ_LIST) {
        rc = kfk_dlq_list(&a->events, names, n_names, stdout, NULL, &err);
    } else {
        kfk_options ko;
        kfk_options_from_config(&ko, &a->cfg);
        rc = kfk_dlq_redrive(&a->events, &ko, names, n_names, args->dlq_id, app_redrive_to, NULL,
                             stdout, &sent, &failed, &err);
        if (rc == 0)
            printf("%zu sent, %zu failed\n", sent, failed);
    }
    if (rc)
        app_report(args->command == CLI_DLQ_LIST ? "dlq list failed" : "dlq redrive failed", &err);
    upcast_store_free(a->upcast);
    a->upcast = NULL;
    pg_event_store_free(a->pg);
    a->pg = NULL;
    return rc || failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* `replay [--projection NAME]`: the event store and the read store, no server. */
static int app_replay(app *a, const cli_args *args)
{
    app_error err = APP_ERROR_INIT;
    replay_target targets[CONFIG_MAX_CONTEXTS * 8];
    size_t n = 0;
    for (size_t i = 0; i < a->n_modules; i++)
        for (const mod_subscription *s = a->modules[i]->subscriptions; s && s->name; s++)
            if ((s->flags & MOD_SUB_PROJECTION) && n < sizeof targets / sizeof targets[0] &&
                (!args->projection || strcmp(args->projection, s->name) == 0))
                targets[n++] = (replay_target){a->modules[i]->name, s};
    if (n == 0) {
        fprintf(stderr, "app: replay: no projection named %s in the loaded contexts; known:",
                args->projection ? args->projection : "(any)");
        for (size_t i = 0; i < a->n_modules; i++)
            for (const mod_subscription *s = a->modules[i]->subscriptions; s && s->name; s++)
                if (s->flags & MOD_SUB_PROJECTION)
                    fprintf(stderr, " %s", s->name);
        fprintf(stderr, "\n");
        return EXIT_CONFIG;
    }
    int rc = app_migrate(a, &err);
    if (rc == 0)
        rc = app_start_tracing(a, &err);
    if (rc == 0)
        rc = app_open_adapters(a, &err);
    if (rc == 0) {
        replay_options ro = {
            .events = &a->events,
            .models = a->models,
            .clock = &app_system_clock,
            .targets = targets,
            .n_targets = n,
            .batch_size = 1000,
            .out = stdout,
            .tty = isatty(STDOUT_FILENO) != 0,
        };
        rc = replay_run(&ro, &err);
    }
    if (rc)
        app_report("replay failed", &err);
    upcast_store_free(a->upcast);
    pg_event_store_free(a->pg);
    rm_models_free(a->models);
    rds_store_free(a->redis);
    a->upcast = NULL;
    a->pg = NULL;
    a->models = NULL;
    a->redis = NULL;
    return rc ? EXIT_FAILURE : EXIT_SUCCESS;
}

static void app_print_routes(const char *owner, const http_route_def *routes)
{
    for (const http_route_def *r = routes; r && r->pattern; r++) {
        char methods[64];
        http_methods_format(r->methods, methods, sizeof methods);
        printf("%-18s %-40s %s\n", methods, r->pattern, owner);
    }
}

/* `routes`: what this configuration serves, by owner: a context, ops or internal. */
static int app_routes(const app *a)
{
    for (size_t i = 0; i < a->n_modules; i++)
        app_print_routes(a->modules[i]->name, a->modules[i]->routes);
    app_print_routes("ops", ops_routes);
    app_print_routes("internal (other services)", remote_routes);
    return EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
    cli_args args;
    app_error err = APP_ERROR_INIT;
    if (cli_parse(argc, argv, &args, &err)) {
        fprintf(stderr, "app: %s\n", err.message);
        cli_usage(stderr, argv[0]);
        return EXIT_CONFIG;
    }
    if (args.help) {
        cli_usage(stdout, argv[0]);
        return EXIT_SUCCESS;
    }
    if (args.version) {
        printf("app %s\n", APP_VERSION);
        return EXIT_SUCCESS;
    }

    static app a;
    if (config_load(args.config_path, &a.cfg, &err)) {
        fprintf(stderr, "app: config error: %s\n", err.message);
        return EXIT_CONFIG;
    }
    log_set_level((log_level)a.cfg.log.level);
    if (app_select_modules(&a, &err) || app_check_kafka(&a, &err)) {
        fprintf(stderr, "app: config error: %s\n", err.message);
        return EXIT_CONFIG;
    }
    app_find_mirrored(&a);

    switch (args.command) {
    case CLI_CHECK_CONFIG:
        printf("%s: configuration is valid\n", args.config_path);
        return EXIT_SUCCESS;
    case CLI_MIGRATE:
        if (app_migrate(&a, &err)) {
            app_report("migration failed", &err);
            return EXIT_FAILURE;
        }
        return EXIT_SUCCESS;
    case CLI_SERVE:
        return app_serve(&a);
    case CLI_DLQ_LIST:
    case CLI_DLQ_REDRIVE:
        return app_dlq(&a, &args);
    case CLI_REPLAY:
        return app_replay(&a, &args);
    case CLI_ROUTES:
        return app_routes(&a);
    default:
        fprintf(stderr, "app: command not available in this build\n");
        return EXIT_CONFIG;
    }
}
