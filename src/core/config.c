/* Configuration: one table row per key drives defaults, YAML loading (libyaml document API,
 * so every value keeps its line) and APP_* environment overrides, with the same checks. */
#include "core/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <yaml.h>

#include "core/log.h"
#include "core/text.h"

/* Adding a type means one enum value and one case in cfg_set_scalar. */
typedef enum cfg_type {
    CFG_INT,       /* int within [min, max] */
    CFG_SIZE,      /* size_t within [min, max] */
    CFG_BOOL,      /* bool: true/false */
    CFG_STRING,    /* char[size], at most max characters, at least min */
    CFG_LISTEN,    /* "host:port" into listen_host (offset) and listen_port (offset2) */
    CFG_LOG_LEVEL, /* int log_level */
    CFG_LIST,      /* a list, each item checked and stored by the key's list operations */
    CFG_SHA256,    /* "" or 64 hex digits into unsigned char[32]; the bool at offset2 says set */
} cfg_type;

typedef struct cfg_where cfg_where;

/* How a CFG_LIST key checks and stores an item: in YAML a sequence, in the environment and
 * the default comma-separated. The items are the array at offset (size bytes), their count
 * the size_t at offset2. */
typedef struct cfg_list {
    int (*add)(app_config *cfg, const char *text, size_t len, const cfg_where *w, app_error *err);
    const char *item;  /* "a context name", for messages */
    const char *empty; /* the message when min items are required and none is given */
} cfg_list;

typedef struct cfg_key {
    const char *path; /* dotted YAML path; the variable is APP_ + upper-cased, '.' -> '_' */
    cfg_type type;
    size_t offset;
    size_t size;    /* sizeof the field, the whole buffer for strings */
    size_t offset2; /* CFG_LISTEN: the port; CFG_LIST: the item count (a size_t) */
    long long min, max;
    const char *prefix;   /* CFG_STRING: required leading text, or NULL */
    const char *def;      /* default, in the same syntax as an environment value */
    const cfg_list *list; /* CFG_LIST: its operations; min is the fewest items allowed */
} cfg_key;

static const cfg_list cfg_contexts_list, cfg_api_keys_list, cfg_gateways_list, cfg_peers_list;

#define CFG_FIELD(m) offsetof(app_config, m), sizeof(((app_config *)0)->m)

static const cfg_key cfg_keys[] = {
    {"http.listen", CFG_LISTEN, CFG_FIELD(http.listen_host), offsetof(app_config, http.listen_port),
     0, 0, NULL, "127.0.0.1:8080", NULL},
    {"http.threads", CFG_INT, CFG_FIELD(http.threads), 0, 1, 64, NULL, "2", NULL},
    {"http.max_body_bytes", CFG_SIZE, CFG_FIELD(http.max_body_bytes), 0, 1, 67108864, NULL,
     "1048576", NULL},
    {"http.request_timeout_ms", CFG_INT, CFG_FIELD(http.request_timeout_ms), 0, 100, 600000, NULL,
     "30000", NULL},
    {"http.shutdown_timeout_ms", CFG_INT, CFG_FIELD(http.shutdown_timeout_ms), 0, 0, 600000, NULL,
     "10000", NULL},
    {"http.header_timeout_ms", CFG_INT, CFG_FIELD(http.header_timeout_ms), 0, 100, 600000, NULL,
     "10000", NULL},
    {"http.body_timeout_ms", CFG_INT, CFG_FIELD(http.body_timeout_ms), 0, 100, 3600000, NULL,
     "30000", NULL},
    {"http.max_connections", CFG_INT, CFG_FIELD(http.max_connections), 0, 0, 1000000, NULL, "0",
     NULL},
    {"http.max_requests_per_connection", CFG_INT, CFG_FIELD(http.max_requests_per_connection), 0, 0,
     1000000, NULL, "1000", NULL},
    {"workers.threads", CFG_INT, CFG_FIELD(workers.threads), 0, 1, 256, NULL, "32", NULL},
    {"workers.queue_size", CFG_INT, CFG_FIELD(workers.queue_size), 0, 1, 1000000, NULL, "4096",
     NULL},
    {"postgres.dsn", CFG_STRING, CFG_FIELD(postgres.dsn), 0, 1, 1023, NULL,
     "host=127.0.0.1 port=55432 dbname=app user=app", NULL},
    {"postgres.pool_size", CFG_INT, CFG_FIELD(postgres.pool_size), 0, 1, 256, NULL, "8", NULL},
    {"postgres.connect_timeout_s", CFG_INT, CFG_FIELD(postgres.connect_timeout_s), 0, 1, 600, NULL,
     "5", NULL},
    {"postgres.max_batch", CFG_INT, CFG_FIELD(postgres.max_batch), 0, 1, 10000, NULL, "256", NULL},
    {"postgres.context_roles", CFG_BOOL, CFG_FIELD(postgres.context_roles), 0, 0, 0, NULL, "false",
     NULL},
    {"redis.url", CFG_STRING, CFG_FIELD(redis.url), 0, 1, 511, "redis://",
     "redis://127.0.0.1:56379/0", NULL},
    {"redis.key_prefix", CFG_STRING, CFG_FIELD(redis.key_prefix), 0, 0, 63, NULL, "app:", NULL},
    {"redis.pool_size", CFG_INT, CFG_FIELD(redis.pool_size), 0, 1, 256, NULL, "8", NULL},
    {"redis.timeout_ms", CFG_INT, CFG_FIELD(redis.timeout_ms), 0, 10, 60000, NULL, "1000", NULL},
    {"redis.loop_reads", CFG_BOOL, CFG_FIELD(redis.loop_reads), 0, 0, 0, NULL, "true", NULL},
    {"log.level", CFG_LOG_LEVEL, CFG_FIELD(log.level), 0, 0, 0, NULL, "info", NULL},
    {"subscriptions.batch_size", CFG_INT, CFG_FIELD(subscriptions.batch_size), 0, 1, 100000, NULL,
     "500", NULL},
    {"subscriptions.poll_interval_ms", CFG_INT, CFG_FIELD(subscriptions.poll_interval_ms), 0, 10,
     60000, NULL, "500", NULL},
    {"subscriptions.lanes", CFG_INT, CFG_FIELD(subscriptions.lanes), 0, 1, 64, NULL, "32", NULL},
    {"subscriptions.max_attempts", CFG_INT, CFG_FIELD(subscriptions.max_attempts), 0, 1, 1000, NULL,
     "5", NULL},
    {"order.placement_timeout_ms", CFG_INT, CFG_FIELD(order.placement_timeout_ms), 0, 100, 3600000,
     NULL, "30000", NULL},
    {"snapshots.user", CFG_INT, CFG_FIELD(snapshots.user), 0, 0, 1000000, NULL, "0", NULL},
    {"snapshots.order", CFG_INT, CFG_FIELD(snapshots.order), 0, 0, 1000000, NULL, "0", NULL},
    {"snapshots.product", CFG_INT, CFG_FIELD(snapshots.product), 0, 0, 1000000, NULL, "100", NULL},
    {"snapshots.cache", CFG_INT, CFG_FIELD(snapshots.cache), 0, 0, 65536, NULL, "256", NULL},
    {"idempotency.ttl_seconds", CFG_INT, CFG_FIELD(idempotency.ttl_seconds), 0, 1, 2592000, NULL,
     "86400", NULL},
    {"kafka.enabled", CFG_BOOL, CFG_FIELD(kafka.enabled), 0, 0, 0, NULL, "false", NULL},
    {"kafka.inbox", CFG_BOOL, CFG_FIELD(kafka.inbox), 0, 0, 0, NULL, "false", NULL},
    {"kafka.brokers", CFG_STRING, CFG_FIELD(kafka.brokers), 0, 1, 511, NULL, "127.0.0.1:9092",
     NULL},
    {"kafka.topic_prefix", CFG_STRING, CFG_FIELD(kafka.topic_prefix), 0, 0, 127, NULL, "", NULL},
    {"kafka.client_id", CFG_STRING, CFG_FIELD(kafka.client_id), 0, 1, 127, NULL, "app", NULL},
    {"kafka.message_timeout_ms", CFG_INT, CFG_FIELD(kafka.message_timeout_ms), 0, 100, 3600000,
     NULL, "10000", NULL},
    {"kafka.retry_backoff_ms", CFG_INT, CFG_FIELD(kafka.retry_backoff_ms), 0, 1, 60000, NULL, "100",
     NULL},
    {"kafka.retry_backoff_max_ms", CFG_INT, CFG_FIELD(kafka.retry_backoff_max_ms), 0, 1, 600000,
     NULL, "10000", NULL},
    {"kafka.breaker_failure_threshold", CFG_INT, CFG_FIELD(kafka.breaker_failure_threshold), 0, 1,
     1000, NULL, "3", NULL},
    {"kafka.breaker_open_ms", CFG_INT, CFG_FIELD(kafka.breaker_open_ms), 0, 10, 3600000, NULL,
     "5000", NULL},
    {"kafka.max_message_bytes", CFG_INT, CFG_FIELD(kafka.max_message_bytes), 0, 1000, 100000000,
     NULL, "1000000", NULL},
    {"kafka.batch_size", CFG_INT, CFG_FIELD(kafka.batch_size), 0, 1, 100000, NULL, "500", NULL},
    {"auth.enabled", CFG_BOOL, CFG_FIELD(auth.enabled), 0, 0, 0, NULL, "false", NULL},
    {"auth.api_keys", CFG_LIST, CFG_FIELD(auth.api_keys), offsetof(app_config, auth.n_api_keys), 0,
     CONFIG_MAX_API_KEYS, NULL, "", &cfg_api_keys_list},
    {"auth.trusted_gateways", CFG_LIST, CFG_FIELD(auth.trusted_gateways),
     offsetof(app_config, auth.n_trusted_gateways), 0, CONFIG_MAX_GATEWAYS, NULL, "",
     &cfg_gateways_list},
    {"rate_limit.requests_per_minute", CFG_INT, CFG_FIELD(rate_limit.requests_per_minute), 0, 0,
     60000000, NULL, "0", NULL},
    {"rate_limit.burst", CFG_INT, CFG_FIELD(rate_limit.burst), 0, 1, 1000000, NULL, "100", NULL},
    {"remote.user", CFG_STRING, CFG_FIELD(remote.user), 0, 0, 255, "http://", "", NULL},
    {"remote.order", CFG_STRING, CFG_FIELD(remote.order), 0, 0, 255, "http://", "", NULL},
    {"remote.inventory", CFG_STRING, CFG_FIELD(remote.inventory), 0, 0, 255, "http://", "", NULL},
    {"remote.timeout_ms", CFG_INT, CFG_FIELD(remote.timeout_ms), 0, 10, 600000, NULL, "5000", NULL},
    {"remote.pool_size", CFG_INT, CFG_FIELD(remote.pool_size), 0, 1, 256, NULL, "16", NULL},
    {"remote.retry_backoff_ms", CFG_INT, CFG_FIELD(remote.retry_backoff_ms), 0, 1, 60000, NULL,
     "50", NULL},
    {"remote.retry_backoff_max_ms", CFG_INT, CFG_FIELD(remote.retry_backoff_max_ms), 0, 1, 600000,
     NULL, "1000", NULL},
    {"remote.breaker_failure_threshold", CFG_INT, CFG_FIELD(remote.breaker_failure_threshold), 0, 1,
     1000, NULL, "5", NULL},
    {"remote.breaker_open_ms", CFG_INT, CFG_FIELD(remote.breaker_open_ms), 0, 10, 3600000, NULL,
     "2000", NULL},
    {"remote.token", CFG_STRING, CFG_FIELD(remote.token), 0, 0, 255, NULL, "", NULL},
    {"internal.trusted_peers", CFG_LIST, CFG_FIELD(internal.trusted_peers),
     offsetof(app_config, internal.n_trusted_peers), 0, CONFIG_MAX_GATEWAYS, NULL,
     "127.0.0.0/8,::1", &cfg_peers_list},
    {"internal.token_sha256", CFG_SHA256, CFG_FIELD(internal.token_sha256),
     offsetof(app_config, internal.has_token), 0, 0, NULL, "", NULL},
    {"tracing.endpoint", CFG_STRING, CFG_FIELD(tracing.endpoint), 0, 0, 511, "http://", "", NULL},
    {"tracing.service_name", CFG_STRING, CFG_FIELD(tracing.service_name), 0, 1, 127, NULL, "app",
     NULL},
    {"tracing.sampler", CFG_STRING, CFG_FIELD(tracing.sampler), 0, 1, 47, NULL,
     "parentbased_traceidratio", NULL},
    {"tracing.sampler_arg", CFG_STRING, CFG_FIELD(tracing.sampler_arg), 0, 0, 31, NULL, "1.0",
     NULL},
    {"tracing.resource_attributes", CFG_STRING, CFG_FIELD(tracing.resource_attributes), 0, 0, 511,
     NULL, "", NULL},
    {"tracing.queue_size", CFG_INT, CFG_FIELD(tracing.queue_size), 0, 1, 1000000, NULL, "2048",
     NULL},
    {"contexts", CFG_LIST, CFG_FIELD(contexts), offsetof(app_config, n_contexts), 1,
     CONFIG_MAX_CONTEXTS, NULL, "user,order,inventory", &cfg_contexts_list},
};

#define CFG_N_KEYS (sizeof cfg_keys / sizeof cfg_keys[0])

static const char *const cfg_context_names[] = {"user", "order", "inventory"};

/* Where a value came from, so every message names the key and the line or the variable. */
struct cfg_where {
    const char *name; /* dotted key or APP_* variable */
    size_t line;      /* 1-based; 0 when unknown or from the environment */
    bool env;
    bool secret; /* the value may hold a password or token: never quoted back as it is */
};

/* Keys whose values may carry a password or a token. */
static bool cfg_secret_key(const char *path)
{
    return strcmp(path, "postgres.dsn") == 0 || strcmp(path, "redis.url") == 0 ||
           strncmp(path, "remote.", 7) == 0;
}

/* text with its secrets masked, for a message: "scheme://user:***@host", "password=***",
 * and a bare token entirely. */
static void cfg_mask(const char *text, size_t len, char *out, size_t size)
{
    size_t o = 0;
    const char *scheme = NULL;
    for (size_t i = 0; i + 2 < len; i++)
        if (text[i] == ':' && text[i + 1] == '/' && text[i + 2] == '/') {
            scheme = text + i + 3;
            break;
        }
    bool url = scheme != NULL;
    bool conninfo = !url && memchr(text, '=', len) != NULL;
    if (!url && !conninfo) {
        snprintf(out, size, "***");
        return;
    }
    for (size_t i = 0; i < len && o + 4 < size;) {
        const char *p = text + i;
        if (url && p >= scheme && *p == ':' && memchr(p, '@', len - i)) {
            /* "user:password@": the password up to the '@'. */
            const char *at = memchr(p, '@', len - i);
            const char *slash = memchr(scheme, '/', (size_t)(text + len - scheme));
            if (!slash || at < slash) {
                o += (size_t)snprintf(out + o, size - o, ":***");
                i = (size_t)(at - text);
                continue;
            }
        }
        if (conninfo && (size_t)(text + len - p) > 9 && strncasecmp(p, "password", 8) == 0) {
            size_t j = i + 8;
            while (j < len && text[j] == ' ')
                j++;
            if (j < len && text[j] == '=') {
                o += (size_t)snprintf(out + o, size - o, "password=***");
                j++;
                while (j < len && text[j] == ' ')
                    j++;
                if (j < len && text[j] == '\'') {
                    for (j++; j < len && text[j] != '\''; j++)
                        if (text[j] == '\\')
                            j++;
                    j++;
                } else {
                    while (j < len && text[j] != ' ')
                        j++;
                }
                i = j;
                continue;
            }
        }
        out[o++] = *p;
        i++;
    }
    out[o < size ? o : size - 1] = '\0';
}

/* The longest value quoted back in a message; app_error.message is short. */
#define CFG_QUOTE_MAX 40

/* text is the offending value, quoted back for environment variables (whose line is not
 * known); NULL when what already shows it. */
static int cfg_fail(app_error *err, const cfg_where *w, const char *text, size_t len,
                    const char *what)
{
    char masked[CFG_QUOTE_MAX * 2 + 16];
    if (w->env && text && w->secret) {
        cfg_mask(text, len, masked, sizeof masked);
        text = masked;
        len = strlen(masked);
    }
    if (w->env && text)
        return app_error_set(err, APP_ECONFIG, "%s: %s, got \"%.*s%s\"", w->name, what,
                             (int)(len > CFG_QUOTE_MAX ? CFG_QUOTE_MAX : len), text,
                             len > CFG_QUOTE_MAX ? "..." : "");
    if (w->line)
        return app_error_set(err, APP_ECONFIG, "%s: %s at line %zu", w->name, what, w->line);
    return app_error_set(err, APP_ECONFIG, "%s: %s", w->name, what);
}

static void *cfg_at(app_config *cfg, size_t offset)
{
    return (char *)cfg + offset;
}

/* Strict base-10 integer: optional sign, digits, nothing else. -1 when not an integer,
 * 1 when it does not fit a long long. */
static int cfg_parse_ll(const char *text, size_t len, long long *out)
{
    char buf[32];
    size_t i = 0;
    if (len == 0 || len >= sizeof buf) {
        /* Still an integer when long digits overflow; tell that apart for the message. */
        if (len == 0)
            return -1;
        if (text[0] == '-' || text[0] == '+')
            i = 1;
        if (i == len)
            return -1;
        for (; i < len; i++)
            if (!isdigit((unsigned char)text[i]))
                return -1;
        return 1;
    }
    memcpy(buf, text, len);
    buf[len] = '\0';
    if (buf[0] == '-' || buf[0] == '+')
        i = 1;
    if (buf[i] == '\0')
        return -1;
    for (; buf[i]; i++)
        if (!isdigit((unsigned char)buf[i]))
            return -1;
    errno = 0;
    long long v = strtoll(buf, NULL, 10);
    if (errno == ERANGE)
        return 1;
    *out = v;
    return 0;
}

static int cfg_set_int(const cfg_key *k, app_config *cfg, const char *text, size_t len,
                       const cfg_where *w, app_error *err)
{
    long long v = 0;
    int rc = cfg_parse_ll(text, len, &v);
    if (rc < 0)
        return cfg_fail(err, w, text, len, "expected an integer");
    if (rc > 0 || v < k->min || v > k->max) {
        char what[128];
        snprintf(what, sizeof what, "%.*s%s is out of range %lld..%lld",
                 (int)(len > CFG_QUOTE_MAX ? CFG_QUOTE_MAX : len), text,
                 len > CFG_QUOTE_MAX ? "..." : "", k->min, k->max);
        return cfg_fail(err, w, NULL, 0, what);
    }
    if (k->type == CFG_SIZE)
        *(size_t *)cfg_at(cfg, k->offset) = (size_t)v;
    else
        *(int *)cfg_at(cfg, k->offset) = (int)v;
    return 0;
}

static bool cfg_text_is(const char *text, size_t len, const char *word)
{
    return strlen(word) == len && memcmp(text, word, len) == 0;
}

static int cfg_set_bool(const cfg_key *k, app_config *cfg, const char *text, size_t len,
                        const cfg_where *w, app_error *err)
{
    bool v;
    if (cfg_text_is(text, len, "true"))
        v = true;
    else if (cfg_text_is(text, len, "false"))
        v = false;
    else
        return cfg_fail(err, w, text, len, "expected true or false");
    *(bool *)cfg_at(cfg, k->offset) = v;
    return 0;
}

static int cfg_set_string(const cfg_key *k, app_config *cfg, const char *text, size_t len,
                          const cfg_where *w, app_error *err)
{
    if (memchr(text, '\0', len))
        return cfg_fail(err, w, NULL, 0, "must not contain a NUL byte");
    if (len == 0 && k->min > 0)
        return cfg_fail(err, w, NULL, 0, "missing required value");
    if (len > (size_t)k->max || len >= k->size) {
        char what[96];
        snprintf(what, sizeof what, "value is too long (at most %lld characters)", k->max);
        return cfg_fail(err, w, text, len, what);
    }
    if (k->prefix && len > 0 &&
        (len < strlen(k->prefix) || memcmp(text, k->prefix, strlen(k->prefix)))) {
        char what[96];
        snprintf(what, sizeof what, "must start with %s", k->prefix);
        return cfg_fail(err, w, text, len, what);
    }
    char *dst = cfg_at(cfg, k->offset);
    memcpy(dst, text, len);
    dst[len] = '\0';
    return 0;
}

/* "host:port" or "[v6]:port"; the host is stored without brackets. */
static int cfg_set_listen(const cfg_key *k, app_config *cfg, const char *text, size_t len,
                          const cfg_where *w, app_error *err)
{
    const char *host = text, *port;
    size_t host_len;
    if (memchr(text, '\0', len))
        return cfg_fail(err, w, NULL, 0, "must not contain a NUL byte");
    if (len == 0)
        return cfg_fail(err, w, NULL, 0, "missing required value");
    if (text[0] == '[') {
        const char *close = memchr(text, ']', len);
        if (!close || close + 1 >= text + len || close[1] != ':')
            return cfg_fail(err, w, text, len, "expected \"host:port\" or \"[ipv6]:port\"");
        host = text + 1;
        host_len = (size_t)(close - host);
        port = close + 2;
    } else {
        const char *colon = memchr(text, ':', len);
        if (!colon || memchr(colon + 1, ':', len - (size_t)(colon + 1 - text)))
            return cfg_fail(err, w, text, len, "expected \"host:port\" or \"[ipv6]:port\"");
        host_len = (size_t)(colon - text);
        port = colon + 1;
    }
    if (host_len == 0)
        return cfg_fail(err, w, text, len, "host must not be empty");
    for (size_t i = 0; i < host_len; i++)
        if (isspace((unsigned char)host[i]))
            return cfg_fail(err, w, text, len, "host must not contain spaces");
    if (host_len >= k->size)
        return cfg_fail(err, w, text, len, "host is too long");
    size_t port_len = len - (size_t)(port - text);
    long long p = 0;
    int rc = cfg_parse_ll(port, port_len, &p);
    if (rc < 0 || port[0] == '+' || port[0] == '-')
        return cfg_fail(err, w, text, len, "port must be a number");
    if (rc > 0 || p < 1 || p > 65535) {
        char what[96];
        snprintf(what, sizeof what, "port %.*s is out of range 1..65535",
                 (int)(port_len > 12 ? 12 : port_len), port);
        return cfg_fail(err, w, text, len, what);
    }
    char *dst = cfg_at(cfg, k->offset);
    memcpy(dst, host, host_len);
    dst[host_len] = '\0';
    *(int *)cfg_at(cfg, k->offset2) = (int)p;
    return 0;
}

static int cfg_set_log_level(const cfg_key *k, app_config *cfg, const char *text, size_t len,
                             const cfg_where *w, app_error *err)
{
    char buf[16];
    int level = -1;
    if (len < sizeof buf && !memchr(text, '\0', len)) {
        memcpy(buf, text, len);
        buf[len] = '\0';
        level = log_level_parse(buf);
    }
    if (level < 0) {
        char what[128];
        snprintf(what, sizeof what, "unknown level \"%.*s\" (expected debug, info, warn or error)",
                 (int)(len > CFG_QUOTE_MAX ? CFG_QUOTE_MAX : len), text);
        return cfg_fail(err, w, NULL, 0, what);
    }
    *(int *)cfg_at(cfg, k->offset) = level;
    return 0;
}

/* ---- lists ---- */

static int cfg_context_add(app_config *cfg, const char *text, size_t len, const cfg_where *w,
                           app_error *err)
{
    bool known = false;
    for (size_t i = 0; i < sizeof cfg_context_names / sizeof cfg_context_names[0]; i++)
        known = known || cfg_text_is(text, len, cfg_context_names[i]);
    char what[128];
    int shown = (int)(len > CFG_QUOTE_MAX ? CFG_QUOTE_MAX : len);
    if (!known) {
        snprintf(what, sizeof what, "unknown context \"%.*s\" (expected user, order or inventory)",
                 shown, text);
        return cfg_fail(err, w, NULL, 0, what);
    }
    for (size_t i = 0; i < cfg->n_contexts; i++)
        if (cfg_text_is(text, len, cfg->contexts[i])) {
            snprintf(what, sizeof what, "duplicate context \"%.*s\"", shown, text);
            return cfg_fail(err, w, NULL, 0, what);
        }
    if (cfg->n_contexts >= CONFIG_MAX_CONTEXTS)
        return cfg_fail(err, w, NULL, 0, "too many contexts");
    memcpy(cfg->contexts[cfg->n_contexts], text, len);
    cfg->contexts[cfg->n_contexts][len] = '\0';
    cfg->n_contexts++;
    return 0;
}

static const cfg_list cfg_contexts_list = {cfg_context_add, "a context name",
                                           "at least one context is required"};

/* The scopes of an API key: read, write, admin, separated by ',' (or '+', which survives the
 * comma-separated environment variable). */
static int cfg_scopes(const char *text, size_t len, unsigned *out, const cfg_where *w,
                      app_error *err)
{
    static const struct {
        const char *name;
        unsigned bit;
    } known[] = {
        {"read", CONFIG_SCOPE_READ}, {"write", CONFIG_SCOPE_WRITE}, {"admin", CONFIG_SCOPE_ADMIN}};
    *out = 0;
    for (size_t i = 0; i <= len;) {
        size_t n = 0;
        while (i + n < len && text[i + n] != ',' && text[i + n] != '+')
            n++;
        bool found = false;
        for (size_t k = 0; k < sizeof known / sizeof known[0] && !found; k++)
            if (strlen(known[k].name) == n && memcmp(known[k].name, text + i, n) == 0) {
                *out |= known[k].bit;
                found = true;
            }
        if (!found)
            return cfg_fail(err, w, NULL, 0,
                            "scopes after the key's SHA-256 must be read, write or admin, "
                            "separated by ',' or '+'");
        i += n + 1;
    }
    return 0;
}

/* "consumer:<sha256 of the key, 64 hex digits>[:scopes]". The consumer becomes the actor of what
 * the key's requests do, so it is kept to characters that read well in logs and events. */
static int cfg_api_key_add(app_config *cfg, const char *text, size_t len, const cfg_where *w,
                           app_error *err)
{
    const char *colon = memchr(text, ':', len);
    if (!colon)
        return cfg_fail(err, w, NULL, 0,
                        "expected \"consumer:sha256-of-the-key\" (64 hex digits after the colon)");
    size_t name_len = (size_t)(colon - text);
    const char *hex = colon + 1;
    const char *scopes = memchr(hex, ':', len - name_len - 1);
    size_t hex_len = (size_t)((scopes ? scopes : text + len) - hex);
    if (name_len == 0 || name_len >= sizeof cfg->auth.api_keys[0].consumer)
        return cfg_fail(err, w, NULL, 0, "the consumer name must be 1 to 64 characters");
    for (size_t i = 0; i < name_len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (!isalnum(c) && c != '.' && c != '_' && c != '-' && c != '@')
            return cfg_fail(err, w, NULL, 0,
                            "the consumer name may hold letters, digits and . _ - @ only");
    }
    config_api_key key = {0};
    memcpy(key.consumer, text, name_len);
    if (hex_len != 64)
        return cfg_fail(err, w, NULL, 0,
                        "expected the key's SHA-256 as 64 hex digits after the colon "
                        "(printf %s KEY | sha256sum)");
    for (size_t i = 0; i < 32; i++) {
        int hi = text_hex_digit(hex[2 * i]), lo = text_hex_digit(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return cfg_fail(err, w, NULL, 0,
                            "expected the key's SHA-256 as 64 hex digits after the colon "
                            "(printf %s KEY | sha256sum)");
        key.sha256[i] = (unsigned char)(hi << 4 | lo);
    }
    if (scopes && cfg_scopes(scopes + 1, (size_t)(text + len - scopes - 1), &key.scopes, w, err))
        return err->code;
    for (size_t i = 0; i < cfg->auth.n_api_keys; i++)
        if (memcmp(cfg->auth.api_keys[i].sha256, key.sha256, sizeof key.sha256) == 0)
            return cfg_fail(err, w, NULL, 0, "the same key is listed twice");
    if (cfg->auth.n_api_keys >= CONFIG_MAX_API_KEYS)
        return cfg_fail(err, w, NULL, 0, "too many API keys");
    cfg->auth.api_keys[cfg->auth.n_api_keys++] = key;
    return 0;
}

static const cfg_list cfg_api_keys_list = {cfg_api_key_add, "\"consumer:sha256-of-the-key\"", NULL};

/* A numeric address, optionally "/prefix": "10.0.0.7", "10.0.0.0/8", "::1", "fd00::/8". */
static int cfg_network_parse(const char *text, size_t len, const cfg_where *w, config_network *out,
                             app_error *err)
{
    char buf[INET6_ADDRSTRLEN + 8];
    const char *what = "expected an IP address or network (\"10.0.0.7\", \"10.0.0.0/8\", "
                       "\"fd00::/8\")";
    if (len >= sizeof buf || memchr(text, '\0', len))
        return cfg_fail(err, w, text, len, what);
    memcpy(buf, text, len);
    buf[len] = '\0';
    config_network net = {0};
    char *slash = strchr(buf, '/');
    if (slash)
        *slash = '\0';
    if (inet_pton(AF_INET, buf, net.addr) == 1) {
        net.family = AF_INET;
        net.prefix = 32;
    } else if (inet_pton(AF_INET6, buf, net.addr) == 1) {
        net.family = AF_INET6;
        net.prefix = 128;
    } else {
        return cfg_fail(err, w, text, len, what);
    }
    if (slash) {
        long long bits = 0;
        int max = net.prefix;
        const char *p = slash + 1;
        if (cfg_parse_ll(p, strlen(p), &bits) != 0 || !isdigit((unsigned char)p[0]) || bits < 0 ||
            bits > max)
            return cfg_fail(err, w, text, len,
                            net.family == AF_INET ? "the prefix length must be 0..32"
                                                  : "the prefix length must be 0..128");
        net.prefix = (int)bits;
    }
    *out = net;
    return 0;
}

static int cfg_gateway_add(app_config *cfg, const char *text, size_t len, const cfg_where *w,
                           app_error *err)
{
    config_network net;
    int rc = cfg_network_parse(text, len, w, &net, err);
    if (rc)
        return rc;
    if (cfg->auth.n_trusted_gateways >= CONFIG_MAX_GATEWAYS)
        return cfg_fail(err, w, NULL, 0, "too many trusted gateways");
    cfg->auth.trusted_gateways[cfg->auth.n_trusted_gateways++] = net;
    return 0;
}

static const cfg_list cfg_gateways_list = {cfg_gateway_add, "an IP address or network", NULL};

static int cfg_peer_add(app_config *cfg, const char *text, size_t len, const cfg_where *w,
                        app_error *err)
{
    config_network net;
    int rc = cfg_network_parse(text, len, w, &net, err);
    if (rc)
        return rc;
    if (cfg->internal.n_trusted_peers >= CONFIG_MAX_GATEWAYS)
        return cfg_fail(err, w, NULL, 0, "too many trusted peers");
    cfg->internal.trusted_peers[cfg->internal.n_trusted_peers++] = net;
    return 0;
}

static const cfg_list cfg_peers_list = {cfg_peer_add, "an IP address or network", NULL};

/* A token's SHA-256, so that the file holds no secret: "" (none) or 64 hex digits. */
static int cfg_set_sha256(const cfg_key *k, app_config *cfg, const char *text, size_t len,
                          const cfg_where *w, app_error *err)
{
    unsigned char digest[32];
    bool *set = cfg_at(cfg, k->offset2);
    if (len == 0) {
        memset(cfg_at(cfg, k->offset), 0, k->size);
        *set = false;
        return 0;
    }
    const char *what =
        "expected the token's SHA-256 as 64 hex digits (printf %s TOKEN | sha256sum)";
    if (len != 64)
        return cfg_fail(err, w, NULL, 0, what);
    for (size_t i = 0; i < 32; i++) {
        int hi = text_hex_digit(text[2 * i]), lo = text_hex_digit(text[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return cfg_fail(err, w, NULL, 0, what);
        digest[i] = (unsigned char)(hi << 4 | lo);
    }
    memcpy(cfg_at(cfg, k->offset), digest, sizeof digest);
    *set = true;
    return 0;
}

static void cfg_list_clear(const cfg_key *k, app_config *cfg)
{
    memset(cfg_at(cfg, k->offset), 0, k->size);
    *(size_t *)cfg_at(cfg, k->offset2) = 0;
}

static int cfg_list_done(const cfg_key *k, app_config *cfg, const cfg_where *w, app_error *err)
{
    if (*(size_t *)cfg_at(cfg, k->offset2) < (size_t)k->min)
        return cfg_fail(err, w, NULL, 0, k->list->empty);
    return 0;
}

/* Comma-separated items, spaces around them ignored: the environment and default syntax. */
static int cfg_set_list(const cfg_key *k, app_config *cfg, const char *text, size_t len,
                        const cfg_where *w, app_error *err)
{
    cfg_list_clear(k, cfg);
    size_t i = 0;
    while (i < len) {
        size_t start = i, end;
        while (i < len && text[i] != ',')
            i++;
        end = i;
        while (start < end && isspace((unsigned char)text[start]))
            start++;
        while (end > start && isspace((unsigned char)text[end - 1]))
            end--;
        if (end > start) {
            int rc = k->list->add(cfg, text + start, end - start, w, err);
            if (rc)
                return rc;
        }
        i++; /* past the comma */
    }
    return cfg_list_done(k, cfg, w, err);
}

static int cfg_set_scalar(const cfg_key *k, app_config *cfg, const char *text, size_t len,
                          const cfg_where *w, app_error *err)
{
    switch (k->type) {
    case CFG_INT:
    case CFG_SIZE:
        return cfg_set_int(k, cfg, text, len, w, err);
    case CFG_BOOL:
        return cfg_set_bool(k, cfg, text, len, w, err);
    case CFG_STRING:
        return cfg_set_string(k, cfg, text, len, w, err);
    case CFG_LISTEN:
        return cfg_set_listen(k, cfg, text, len, w, err);
    case CFG_LOG_LEVEL:
        return cfg_set_log_level(k, cfg, text, len, w, err);
    case CFG_LIST:
        return cfg_set_list(k, cfg, text, len, w, err);
    case CFG_SHA256:
        return cfg_set_sha256(k, cfg, text, len, w, err);
    }
    return app_error_set(err, APP_EINTERNAL, "%s: unhandled configuration type", k->path);
}

const char *config_remote_url(const app_config *cfg, const char *context)
{
    const char *url = !context                            ? NULL
                      : strcmp(context, "user") == 0      ? cfg->remote.user
                      : strcmp(context, "order") == 0     ? cfg->remote.order
                      : strcmp(context, "inventory") == 0 ? cfg->remote.inventory
                                                          : NULL;
    return url && url[0] ? url : NULL;
}

static int cfg_check_tracing(app_config *cfg, app_error *err);

void config_defaults(app_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < CFG_N_KEYS; i++) {
        app_error err = APP_ERROR_INIT;
        cfg_where w = {cfg_keys[i].path, 0, false, false};
        /* The defaults are constants checked by the unit tests; failing here is a bug. */
        if (cfg_set_scalar(&cfg_keys[i], cfg, cfg_keys[i].def, strlen(cfg_keys[i].def), &w, &err)) {
            fprintf(stderr, "config: bad built-in default: %s\n", err.message);
            abort();
        }
    }
    app_error err = APP_ERROR_INIT;
    if (cfg_check_tracing(cfg, &err) != 0)
        abort();
}

/* ---- environment ---- */

static const char *cfg_getenv(const char *name)
{
    return getenv(name);
}

int config_apply_env(app_config *cfg, const char *(*lookup)(const char *name), app_error *err)
{
    if (!lookup)
        lookup = cfg_getenv;
    app_config tmp = *cfg;
    /* OpenTelemetry's own variables first, so that APP_TRACING_* wins over them. */
    static const char *const otel[][2] = {
        {"OTEL_EXPORTER_OTLP_ENDPOINT", "tracing.endpoint"},
        {"OTEL_SERVICE_NAME", "tracing.service_name"},
        {"OTEL_TRACES_SAMPLER", "tracing.sampler"},
        {"OTEL_TRACES_SAMPLER_ARG", "tracing.sampler_arg"},
        {"OTEL_RESOURCE_ATTRIBUTES", "tracing.resource_attributes"},
    };
    for (size_t i = 0; i < sizeof otel / sizeof otel[0]; i++) {
        const char *value = lookup(otel[i][0]);
        for (size_t k = 0; value && k < CFG_N_KEYS; k++) {
            if (strcmp(cfg_keys[k].path, otel[i][1]) != 0)
                continue;
            cfg_where w = {otel[i][0], 0, true, false};
            int rc = cfg_set_scalar(&cfg_keys[k], &tmp, value, strlen(value), &w, err);
            if (rc)
                return rc;
        }
    }
    for (size_t i = 0; i < CFG_N_KEYS; i++) {
        char name[96] = "APP_";
        size_t o = 4;
        for (const char *p = cfg_keys[i].path; *p && o + 1 < sizeof name; p++)
            name[o++] = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
        name[o] = '\0';
        const char *value = lookup(name);
        if (!value)
            continue;
        cfg_where w = {name, 0, true, cfg_secret_key(cfg_keys[i].path)};
        int rc = cfg_set_scalar(&cfg_keys[i], &tmp, value, strlen(value), &w, err);
        if (rc)
            return rc;
    }
    *cfg = tmp;
    return 0;
}

/* ---- YAML ---- */

typedef struct cfg_yaml {
    yaml_document_t *doc;
    app_config *cfg;
    app_error *err;
} cfg_yaml;

static size_t cfg_line(const yaml_node_t *node)
{
    return node->start_mark.line + 1;
}

static bool cfg_node_is_null(const yaml_node_t *node)
{
    if (node->type != YAML_SCALAR_NODE || node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = (const char *)node->data.scalar.value;
    size_t n = node->data.scalar.length;
    return n == 0 || cfg_text_is(v, n, "~") || cfg_text_is(v, n, "null") ||
           cfg_text_is(v, n, "Null") || cfg_text_is(v, n, "NULL");
}

static const char *cfg_type_expect(cfg_type type)
{
    switch (type) {
    case CFG_INT:
    case CFG_SIZE:
        return "expected an integer";
    case CFG_BOOL:
        return "expected true or false";
    case CFG_LIST:
        return "expected a list";
    case CFG_STRING:
    case CFG_LISTEN:
    case CFG_LOG_LEVEL:
    case CFG_SHA256:
        break;
    }
    return "expected a string";
}

static int cfg_yaml_list(cfg_yaml *y, const cfg_key *k, yaml_node_t *node, const cfg_where *w)
{
    cfg_list_clear(k, y->cfg);
    if (cfg_node_is_null(node) && k->min == 0)
        return 0; /* "api_keys:" with nothing: none */
    if (node->type != YAML_SEQUENCE_NODE)
        return cfg_fail(y->err, w, NULL, 0, cfg_type_expect(k->type));
    for (yaml_node_item_t *it = node->data.sequence.items.start; it < node->data.sequence.items.top;
         it++) {
        yaml_node_t *item = yaml_document_get_node(y->doc, *it);
        cfg_where iw = {w->name, cfg_line(item), false, false};
        if (item->type != YAML_SCALAR_NODE || cfg_node_is_null(item)) {
            char what[96];
            snprintf(what, sizeof what, "expected %s", k->list->item);
            return cfg_fail(y->err, &iw, NULL, 0, what);
        }
        int rc = k->list->add(y->cfg, (const char *)item->data.scalar.value,
                              item->data.scalar.length, &iw, y->err);
        if (rc)
            return rc;
    }
    return cfg_list_done(k, y->cfg, w, y->err);
}

static int cfg_yaml_value(cfg_yaml *y, const cfg_key *k, yaml_node_t *node, const cfg_where *w)
{
    if (k->type == CFG_LIST)
        return cfg_yaml_list(y, k, node, w);
    if (cfg_node_is_null(node)) {
        /* An empty optional string is a value; anything else needs one. */
        if (k->type == CFG_STRING && k->min == 0)
            return cfg_set_scalar(k, y->cfg, "", 0, w, y->err);
        return cfg_fail(y->err, w, NULL, 0, "missing required value");
    }
    if (node->type != YAML_SCALAR_NODE)
        return cfg_fail(y->err, w, NULL, 0, cfg_type_expect(k->type));
    /* A quoted "4" is a string in YAML; numbers and booleans must be plain. */
    bool plain = node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    if (!plain && (k->type == CFG_INT || k->type == CFG_SIZE || k->type == CFG_BOOL))
        return cfg_fail(y->err, w, NULL, 0, cfg_type_expect(k->type));
    return cfg_set_scalar(k, y->cfg, (const char *)node->data.scalar.value,
                          node->data.scalar.length, w, y->err);
}

static bool cfg_is_section(const char *path)
{
    size_t n = strlen(path);
    for (size_t i = 0; i < CFG_N_KEYS; i++)
        if (strncmp(cfg_keys[i].path, path, n) == 0 && cfg_keys[i].path[n] == '.')
            return true;
    return false;
}

static int cfg_yaml_mapping(cfg_yaml *y, yaml_node_t *map, const char *prefix)
{
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top;
         pair++) {
        yaml_node_t *key = yaml_document_get_node(y->doc, pair->key);
        yaml_node_t *value = yaml_document_get_node(y->doc, pair->value);
        size_t line = cfg_line(key);
        if (key->type != YAML_SCALAR_NODE)
            return app_error_set(y->err, APP_ECONFIG, "%s%sexpected a key name at line %zu", prefix,
                                 prefix[0] ? ": " : "", line);
        const char *name = (const char *)key->data.scalar.value;
        size_t name_len = key->data.scalar.length;
        /* "http.threads: 2" at the top would look like a key path; keys are nested instead. */
        bool odd_name = name_len == 0 || memchr(name, '.', name_len) != NULL;

        char path[128];
        int n = snprintf(path, sizeof path, "%s%s%.*s", prefix, prefix[0] ? "." : "", (int)name_len,
                         name);
        if (n < 0 || (size_t)n >= sizeof path || strlen(path) != (size_t)n)
            return app_error_set(y->err, APP_ECONFIG, "%.60s...: unknown key at line %zu", path,
                                 line);

        /* Duplicate keys would silently let the later one win; say so instead. */
        for (yaml_node_pair_t *prev = map->data.mapping.pairs.start; prev < pair; prev++) {
            yaml_node_t *pk = yaml_document_get_node(y->doc, prev->key);
            if (pk->type == YAML_SCALAR_NODE && pk->data.scalar.length == name_len &&
                memcmp(pk->data.scalar.value, name, name_len) == 0)
                return app_error_set(y->err, APP_ECONFIG,
                                     "%s: duplicate key at line %zu (first at line %zu)", path,
                                     line, cfg_line(pk));
        }

        const cfg_key *k = NULL;
        for (size_t i = 0; i < CFG_N_KEYS && !k && !odd_name; i++)
            if (strcmp(cfg_keys[i].path, path) == 0)
                k = &cfg_keys[i];
        int rc;
        if (k) {
            cfg_where w = {path, cfg_line(value), false, false};
            rc = cfg_yaml_value(y, k, value, &w);
        } else if (!odd_name && cfg_is_section(path)) {
            if (cfg_node_is_null(value))
                continue; /* an empty section keeps its defaults */
            if (value->type != YAML_MAPPING_NODE)
                return app_error_set(y->err, APP_ECONFIG, "%s: expected a mapping at line %zu",
                                     path, cfg_line(value));
            rc = cfg_yaml_mapping(y, value, path);
        } else {
            return app_error_set(y->err, APP_ECONFIG, "%s: unknown key at line %zu", path, line);
        }
        if (rc)
            return rc;
    }
    return 0;
}

static int cfg_yaml_error(const yaml_parser_t *parser, app_error *err)
{
    const char *problem = parser->problem ? parser->problem : "malformed YAML";
    if (parser->error == YAML_MEMORY_ERROR)
        return app_error_set(err, APP_ENOMEM, "out of memory while reading configuration");
    if (parser->context)
        return app_error_set(err, APP_ECONFIG, "YAML syntax error at line %zu column %zu: %s %s",
                             parser->problem_mark.line + 1, parser->problem_mark.column + 1,
                             problem, parser->context);
    return app_error_set(err, APP_ECONFIG, "YAML syntax error at line %zu column %zu: %s",
                         parser->problem_mark.line + 1, parser->problem_mark.column + 1, problem);
}

/* Parses text (a whole YAML file) over cfg. */
static int cfg_load_yaml(const unsigned char *text, size_t len, app_config *cfg, app_error *err)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    bool have_doc = false;
    int rc = 0;
    if (!yaml_parser_initialize(&parser))
        return app_error_set(err, APP_ENOMEM, "out of memory while reading configuration");
    yaml_parser_set_input_string(&parser, text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        rc = cfg_yaml_error(&parser, err);
        goto out;
    }
    have_doc = true;

    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root && !cfg_node_is_null(root)) {
        if (root->type != YAML_MAPPING_NODE) {
            rc = app_error_set(err, APP_ECONFIG,
                               "the top level must be a mapping of sections at line %zu",
                               cfg_line(root));
            goto out;
        }
        cfg_yaml y = {&doc, cfg, err};
        rc = cfg_yaml_mapping(&y, root, "");
        if (rc)
            goto out;
    }

    /* A second document would be ignored silently; refuse it (and find trailing errors). */
    yaml_document_t next;
    if (!yaml_parser_load(&parser, &next)) {
        rc = cfg_yaml_error(&parser, err);
        goto out;
    }
    yaml_node_t *next_root = yaml_document_get_root_node(&next);
    if (next_root)
        rc = app_error_set(err, APP_ECONFIG, "a second YAML document at line %zu is not allowed",
                           next.start_mark.line + 1);
    yaml_document_delete(&next);

out:
    if (have_doc)
        yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

/* Config files are small; reading the whole file gives clean errors for directories too. */
#define CFG_MAX_FILE (1024 * 1024)

static int cfg_read_file(const char *path, unsigned char **out, size_t *out_len, app_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return app_error_set(err, APP_ECONFIG, "cannot open config file %s: %s", path,
                             strerror(errno));
    unsigned char *buf = malloc(CFG_MAX_FILE + 1);
    if (!buf) {
        fclose(f);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    size_t n = fread(buf, 1, CFG_MAX_FILE + 1, f);
    int saved = errno;
    bool failed = ferror(f) != 0;
    fclose(f);
    if (failed) {
        free(buf);
        return app_error_set(err, APP_ECONFIG, "cannot read config file %s: %s", path,
                             strerror(saved));
    }
    if (n > CFG_MAX_FILE) {
        free(buf);
        return app_error_set(err, APP_ECONFIG, "config file %s is larger than %d bytes", path,
                             CFG_MAX_FILE);
    }
    *out = buf;
    *out_len = n;
    return 0;
}

/* tracing.sampler and tracing.sampler_arg, as OpenTelemetry defines them, into ratio and
 * parent_based. */
static int cfg_check_tracing(app_config *cfg, app_error *err)
{
    static const struct {
        const char *name;
        double ratio; /* < 0: sampler_arg */
        bool parent_based;
    } samplers[] = {
        {"always_on", 1, false},
        {"always_off", 0, false},
        {"traceidratio", -1, false},
        {"parentbased_always_on", 1, true},
        {"parentbased_always_off", 0, true},
        {"parentbased_traceidratio", -1, true},
    };
    const char *name = cfg->tracing.sampler;
    for (size_t i = 0; i < sizeof samplers / sizeof samplers[0]; i++) {
        if (strcmp(samplers[i].name, name) != 0)
            continue;
        cfg->tracing.parent_based = samplers[i].parent_based;
        cfg->tracing.ratio = samplers[i].ratio;
        if (samplers[i].ratio >= 0)
            return 0;
        const char *arg = cfg->tracing.sampler_arg[0] ? cfg->tracing.sampler_arg : "1.0";
        char *end;
        double v = strtod(arg, &end);
        if (end == arg || *end || !(v >= 0 && v <= 1))
            return app_error_set(err, APP_ECONFIG,
                                 "tracing.sampler_arg: a ratio from 0 to 1 is expected for %s, "
                                 "got \"%s\"",
                                 name, arg);
        cfg->tracing.ratio = v;
        return 0;
    }
    return app_error_set(err, APP_ECONFIG,
                         "tracing.sampler: expected always_on, always_off, traceidratio, "
                         "parentbased_always_on, parentbased_always_off or "
                         "parentbased_traceidratio, got \"%s\"",
                         name);
}

int config_load(const char *path, app_config *cfg, app_error *err)
{
    app_config tmp;
    config_defaults(&tmp);
    if (path) {
        unsigned char *text = NULL;
        size_t len = 0;
        int rc = cfg_read_file(path, &text, &len, err);
        if (rc)
            return rc;
        rc = cfg_load_yaml(text, len, &tmp, err);
        free(text);
        if (rc)
            return rc;
    }
    int rc = config_apply_env(&tmp, NULL, err);
    if (rc)
        return rc;
    rc = cfg_check_tracing(&tmp, err);
    if (rc)
        return rc;
    if (tmp.auth.enabled && tmp.auth.n_api_keys == 0 && tmp.auth.n_trusted_gateways == 0)
        return app_error_set(err, APP_ECONFIG,
                             "auth.enabled: true, but neither auth.api_keys nor "
                             "auth.trusted_gateways is set, so every request would be refused");
    *cfg = tmp;
    return 0;
}
