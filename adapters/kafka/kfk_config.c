/* The Kafka adapter's settings and topic names. */
#include "adapters/kafka/kfk_config.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define KFK_TOPIC_MAX 249 /* Kafka's own limit */

void kfk_options_from_config(kfk_options *out, const app_config *cfg)
{
    kfk_options o = KFK_OPTIONS_INIT;
    o.brokers = cfg->kafka.brokers;
    o.topic_prefix = cfg->kafka.topic_prefix;
    o.client_id = cfg->kafka.client_id;
    o.message_timeout_ms = cfg->kafka.message_timeout_ms;
    o.retry_backoff_ms = cfg->kafka.retry_backoff_ms;
    o.retry_backoff_max_ms = cfg->kafka.retry_backoff_max_ms;
    o.breaker_failure_threshold = cfg->kafka.breaker_failure_threshold;
    o.breaker_open_ms = cfg->kafka.breaker_open_ms;
    o.max_message_bytes = cfg->kafka.max_message_bytes;
    o.batch_size = cfg->kafka.batch_size;
    o.poll_interval_ms = cfg->subscriptions.poll_interval_ms;
    *out = o;
}

int kfk_topic_name(char *out, size_t size, const char *prefix, const char *context,
                   const char *suffix, app_error *err)
{
    int n = snprintf(out, size, "%s%s%s", prefix ? prefix : "", context, suffix);
    if (n < 0 || (size_t)n >= size || n > KFK_TOPIC_MAX)
        return app_error_set(err, APP_ECONFIG, "kafka.topic_prefix: topic name is too long");
    bool ok = n > 0 && strcmp(out, ".") != 0 && strcmp(out, "..") != 0;
    for (const char *p = out; ok && *p; p++)
        ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
             *p == '.' || *p == '_' || *p == '-';
    if (!ok)
        return app_error_set(err, APP_ECONFIG,
                             "kafka.topic_prefix: \"%.60s\" is not a legal topic name "
                             "(letters, digits, '.', '_' and '-')",
                             out);
    return 0;
}
