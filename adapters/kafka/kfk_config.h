/* Settings of the Kafka adapter, taken from the kafka.* keys of the configuration, and the
 * topic names they give: <prefix><context>.events and <prefix><context>.events.dlq. */
#ifndef ADAPTERS_KAFKA_KFK_CONFIG_H
#define ADAPTERS_KAFKA_KFK_CONFIG_H

#include <stddef.h>

#include "core/config.h"
#include "core/error.h"

/* KFK_OPTIONS_INIT or kfk_options_from_config; strings are borrowed. */
typedef struct kfk_options {
    const char *brokers; /* bootstrap servers, "host:port[,...]" */
    const char *topic_prefix;
    const char *client_id;
    int message_timeout_ms;   /* an event not acknowledged by then counts as a failed attempt */
    int retry_backoff_ms;     /* first delay before producing again after a failure */
    int retry_backoff_max_ms; /* longest such delay */
    int breaker_failure_threshold;
    int breaker_open_ms;
    int max_message_bytes; /* larger events are dead-lettered */
    int batch_size;        /* events produced and not yet acknowledged, at most */
    int poll_interval_ms;  /* longest idle wait for new events */
    int lead_interval_ms;  /* how often leadership is confirmed or tried */
} kfk_options;

#define KFK_OPTIONS_INIT                                                                           \
    {                                                                                              \
        "127.0.0.1:9092", "", "app", 10000, 100, 10000, 3, 5000, 1000000, 500, 500, 1000           \
    }

/* The options of cfg->kafka (and subscriptions.poll_interval_ms); strings borrowed from cfg. */
void kfk_options_from_config(kfk_options *out, const app_config *cfg);

/* "<prefix><context><suffix>" into out, e.g. suffix ".events". APP_ECONFIG when the name is
 * not a legal Kafka topic (letters, digits, '.', '_', '-'; at most 249 characters). */
int kfk_topic_name(char *out, size_t size, const char *prefix, const char *context,
                   const char *suffix, app_error *err);

#endif
