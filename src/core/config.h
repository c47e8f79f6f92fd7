/* The typed configuration: loaded from YAML with libyaml, every key validated, then
 * overridden by APP_* environment variables (APP_<SECTION>_<KEY>, e.g. APP_HTTP_LISTEN). */
#ifndef CORE_CONFIG_H
#define CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"

#define CONFIG_MAX_CONTEXTS 8
#define CONFIG_MAX_API_KEYS 256
#define CONFIG_MAX_GATEWAYS 16

/* An API key as configured: its consumer, the SHA-256 of the key (the key itself is not
 * kept in the file) and its scopes. Written "consumer:<64 hex digits>[:scope,scope...]" (in
 * APP_AUTH_API_KEYS, whose items are comma-separated, the scopes are joined by '+'). */
typedef struct config_api_key {
    char consumer[65];
    unsigned char sha256[32];
    unsigned scopes; /* CONFIG_SCOPE_* bits; 0: every right (an entry without scopes) */
} config_api_key;

/* What an API key may do (auth.api_keys "consumer:sha256:read,write"). */
enum config_scope {
    CONFIG_SCOPE_READ = 1u << 0,  /* every GET */
    CONFIG_SCOPE_WRITE = 1u << 1, /* user and order commands */
    CONFIG_SCOPE_ADMIN = 1u << 2, /* products and stock, and every audit trail */
};

/* A trusted gateway: an address or a network ("10.0.0.7", "10.0.0.0/8", "fd00::/8"). */
typedef struct config_network {
    int family;             /* AF_INET or AF_INET6 */
    unsigned char addr[16]; /* network byte order; the first 4 for AF_INET */
    int prefix;             /* leading bits that must match */
} config_network;

typedef struct app_config {
    struct {
        char listen_host[256]; /* http.listen "host:port" */
        int listen_port;
        int threads;             /* http.threads: loop threads sharing the port, 1..64 */
        size_t max_body_bytes;   /* http.max_body_bytes, 1..67108864 */
        int request_timeout_ms;  /* http.request_timeout_ms */
        int shutdown_timeout_ms; /* http.shutdown_timeout_ms: grace for in-flight requests */
        int header_timeout_ms;   /* http.header_timeout_ms: a request's head, in all */
        int body_timeout_ms;     /* http.body_timeout_ms: a request's body, in all */
        int max_connections;     /* http.max_connections: 0 sizes it from RLIMIT_NOFILE */
        int max_requests_per_connection; /* http.max_requests_per_connection: 0 = no cap */
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
        bool context_roles;    /* postgres.context_roles: migrate gives each context a role */
    } postgres;
    struct {
        char url[512];       /* redis.url: redis://host:port/db */
        char key_prefix[64]; /* redis.key_prefix */
        int pool_size;       /* redis.pool_size */
        int timeout_ms;      /* redis.timeout_ms */
        bool loop_reads;     /* redis.loop_reads: HTTP loops read models themselves */
    } redis;
    struct {
        int level; /* log.level: a log_level */
    } log;
    struct {
        int batch_size;       /* subscriptions.batch_size: events per pull */
        int poll_interval_ms; /* subscriptions.poll_interval_ms: wait when idle */
        int lanes;            /* subscriptions.lanes: streams a saga handles at once */
        int max_attempts;     /* subscriptions.max_attempts: failures before a dead letter */
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
        int cache;   /* snapshots.cache: aggregates per context kept folded in memory */
    } snapshots;
    struct {
        int ttl_seconds; /* idempotency.ttl_seconds: how long a key answers with its first reply */
    } idempotency;
    struct {
        bool enabled;                  /* kafka.enabled: run the outbound relay */
        bool inbox;                    /* kafka.inbox: mirror logs of contexts not loaded here */
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
    struct {
        bool enabled; /* auth.enabled: every /v1 request needs a consumer */
        config_api_key api_keys[CONFIG_MAX_API_KEYS]; /* auth.api_keys */
        size_t n_api_keys;
        config_network trusted_gateways[CONFIG_MAX_GATEWAYS]; /* auth.trusted_gateways */
        size_t n_trusted_gateways;
    } auth;
    struct {
        int requests_per_minute; /* rate_limit.requests_per_minute: per consumer, 0 = off */
        int burst;               /* rate_limit.burst: requests allowed at once */
    } rate_limit;
    /* Where each context that is not loaded here is served, "" when nowhere (its messages are
     * then unavailable), and how calls there behave. See kernel/remote.h. */
    struct {
        char user[256];                /* remote.user: "http://host:port" */
        char order[256];               /* remote.order */
        char inventory[256];           /* remote.inventory */
        int timeout_ms;                /* remote.timeout_ms: a call with no caller's deadline */
        int pool_size;                 /* remote.pool_size: keep-alive connections per remote */
        int retry_backoff_ms;          /* remote.retry_backoff_ms: first retry delay */
        int retry_backoff_max_ms;      /* remote.retry_backoff_max_ms: longest retry delay */
        int breaker_failure_threshold; /* remote.breaker_failure_threshold: failures to open */
        int breaker_open_ms;           /* remote.breaker_open_ms: open before a probe */
        char token[256]; /* remote.token: the bearer token sent (best from APP_REMOTE_TOKEN) */
    } remote;
    /* Who may call this process's internal endpoints (/internal/v1/...): the bus of another
     * service, never a client. */
    struct {
        config_network trusted_peers[CONFIG_MAX_GATEWAYS]; /* internal.trusted_peers */
        size_t n_trusted_peers;
        bool has_token;                 /* internal.token_sha256 is set */
        unsigned char token_sha256[32]; /* internal.token_sha256: SHA-256 of the bearer token */
    } internal;
    /* Distributed tracing over OTLP/HTTP; off while tracing.endpoint is empty. The
     * OpenTelemetry variables (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME,
     * OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG, OTEL_RESOURCE_ATTRIBUTES) set these too. */
    struct {
        char endpoint[512];            /* tracing.endpoint: "http://host:4318" */
        char service_name[128];        /* tracing.service_name */
        char sampler[48];              /* tracing.sampler: parentbased_traceidratio, ... */
        char sampler_arg[32];          /* tracing.sampler_arg: the ratio, 0..1 */
        char resource_attributes[512]; /* tracing.resource_attributes: "k=v,k2=v2" */
        int queue_size;                /* tracing.queue_size: spans waiting at most */
        double ratio;                  /* from sampler and sampler_arg (config_load) */
        bool parent_based;             /* from sampler: a child follows its parent's flag */
    } tracing;
    char contexts[CONFIG_MAX_CONTEXTS][32]; /* contexts: [user, ...] */
    size_t n_contexts;
} app_config;

/* The remote.<context> URL of context, or NULL when it has none (or is no known context). */
const char *config_remote_url(const app_config *cfg, const char *context);

/* Defaults for every key (the values documented in the README). */
void config_defaults(app_config *cfg);

/* Loads path over the defaults, then applies the environment. On failure err names the key
 * and the line ("http.threads: expected an integer at line 4") and the code is
 * APP_ECONFIG. */
int config_load(const char *path, app_config *cfg, app_error *err);

/* Applies APP_* variables from envp-style lookup (getenv when lookup is NULL). */
int config_apply_env(app_config *cfg, const char *(*lookup)(const char *name), app_error *err);

#endif
