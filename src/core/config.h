/* The typed configuration: loaded from YAML with libyaml, every key validated, then
 * overridden by APP_* environment variables (APP_<SECTION>_<KEY>, e.g. APP_HTTP_LISTEN). */
#ifndef CORE_CONFIG_H
#define CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"

#define CONFIG_MAX_CONTEXTS 8

typedef struct app_config {
    struct {
        char listen_host[256]; /* http.listen "host:port" */
        int listen_port;
        int threads;             /* http.threads: loop threads sharing the port, 1..64 */
        size_t max_body_bytes;   /* http.max_body_bytes, 1..67108864 */
        int request_timeout_ms;  /* http.request_timeout_ms */
        int shutdown_timeout_ms; /* http.shutdown_timeout_ms: grace for in-flight requests */
    } http;
    struct {
        int threads;    /* workers.threads: blocking handler pool, 1..256 */
        int queue_size; /* workers.queue_size: pending jobs before 503 */
    } workers;
    struct {
        char dsn[1024];        /* postgres.dsn: libpq connection string */
        int pool_size;         /* postgres.pool_size */
        int connect_timeout_s; /* postgres.connect_timeout_s */
        int max_batch;         /* postgres.max_batch: commands per group commit */
    } postgres;
    struct {
        char url[512];       /* redis.url: redis://host:port/db */
        char key_prefix[64]; /* redis.key_prefix */
        int pool_size;       /* redis.pool_size */
        int timeout_ms;      /* redis.timeout_ms */
    } redis;
    struct {
        int level; /* log.level: a log_level */
    } log;
    struct {
        int batch_size;       /* subscriptions.batch_size: events per pull */
        int poll_interval_ms; /* subscriptions.poll_interval_ms: wait when idle */
        int lanes;            /* subscriptions.lanes: streams a saga handles at once */
    } subscriptions;
    struct {
        int placement_timeout_ms; /* order.placement_timeout_ms: pending orders time out */
    } order;
    /* Per aggregate type: after an append that takes a stream past a multiple of N events,
     * its state is saved as a snapshot, and loading reads only the events after it. 0: never
     * (loading still uses a snapshot that exists). */
    struct {
        int user;    /* snapshots.user */
        int order;   /* snapshots.order */
        int product; /* snapshots.product */
    } snapshots;
    struct {
        int ttl_seconds; /* idempotency.ttl_seconds: how long a key answers with its first reply */
    } idempotency;
    struct {
        bool enabled;                  /* kafka.enabled: run the outbound relay */
        char brokers[512];             /* kafka.brokers: "host:port[,host:port...]" */
        char topic_prefix[128];        /* kafka.topic_prefix: topics are <prefix><context>.events */
        char client_id[128];           /* kafka.client_id */
        int message_timeout_ms;        /* kafka.message_timeout_ms: unacknowledged -> retried */
        int retry_backoff_ms;          /* kafka.retry_backoff_ms: first retry delay */
        int retry_backoff_max_ms;      /* kafka.retry_backoff_max_ms: longest retry delay */
        int breaker_failure_threshold; /* kafka.breaker_failure_threshold: failures to open */
        int breaker_open_ms;           /* kafka.breaker_open_ms: open before a probe */
        int max_message_bytes;         /* kafka.max_message_bytes: larger events dead-letter */
        int batch_size;                /* kafka.batch_size: events in flight at most */
    } kafka;
    char contexts[CONFIG_MAX_CONTEXTS][32]; /* contexts: [user, ...] */
    size_t n_contexts;
} app_config;

/* Defaults for every key (the values documented in the README). */
void config_defaults(app_config *cfg);

/* Loads path over the defaults, then applies the environment. On failure err names the key
 * and the line ("http.threads: expected an integer at line 4") and the code is
 * APP_ECONFIG. */
int config_load(const char *path, app_config *cfg, app_error *err);

/* Applies APP_* variables from envp-style lookup (getenv when lookup is NULL). */
int config_apply_env(app_config *cfg, const char *(*lookup)(const char *name), app_error *err);

#endif
