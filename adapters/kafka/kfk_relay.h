/* The outbound relay: for each context, one thread pulls the context's log from its
 * checkpoint ("kafka.relay" in the context schema) and produces every event to
 * <prefix><context>.events (key = stream id, so an aggregate's events stay in order on one
 * partition). The checkpoint moves only below what the broker acknowledged: at least once,
 * never lost. Events Kafka refuses for good go to <prefix><context>.events.dlq and the
 * context's dead letters. A broker outage grows a backlog (behind a circuit breaker) that
 * drains when it returns; commands never wait for Kafka. Only the process holding the
 * context's relay lease (see es_store_ops.lead) relays it. */
#ifndef ADAPTERS_KAFKA_KFK_RELAY_H
#define ADAPTERS_KAFKA_KFK_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "adapters/kafka/kfk_config.h"
#include "core/error.h"
#include "ports/clock.h"
#include "ports/event_store.h"

/* The checkpoint, lease and dead-letter subscriber name in each context schema. */
#define KFK_RELAY_SUBSCRIBER "kafka.relay"

typedef struct kfk_relay kfk_relay;

typedef struct kfk_relay_options {
    kfk_options kafka;           /* strings copied */
    es_store *events;            /* borrowed; must outlive the relay */
    const char *const *contexts; /* whose logs are relayed; copied */
    size_t n_contexts;
    const app_clock *clock; /* wall clock for the lag in seconds; NULL: the system clock */
} kfk_relay_options;

/* Checks the options (topic names) and declares the metrics; starts nothing. *out owned by
 * the caller: kfk_relay_free. APP_ECONFIG for an illegal topic name. */
int kfk_relay_new(kfk_relay **out, const kfk_relay_options *opts, app_error *err);
/* Starts one thread per context. They connect lazily: this succeeds while Kafka is down. */
int kfk_relay_start(kfk_relay *r, app_error *err);
/* Waits briefly for acknowledgements of what is in flight, saves the checkpoints, gives the
 * leases up and joins the threads. What was not acknowledged is produced again later. */
void kfk_relay_stop(kfk_relay *r);
void kfk_relay_free(kfk_relay *r); /* accepts NULL; stops first */

typedef struct kfk_relay_status {
    char context[32];
    bool leader;   /* this process relays the context */
    bool degraded; /* leader and Kafka is not taking events (detail says why) */
    char detail[256];
    const char *breaker; /* "closed", "half-open" or "open" (static) */
    int64_t checkpoint;  /* everything at or below it is acknowledged or dead-lettered */
    int64_t head;        /* head of the context's log when last looked at */
    double lag_seconds;  /* age of the oldest event not acknowledged yet (0 unless leader) */
    uint64_t delivered, retried, dead_lettered;
} kfk_relay_status;

size_t kfk_relay_count(const kfk_relay *r);
/* A snapshot of context i (0 <= i < count); safe from any thread. */
void kfk_relay_status_of(kfk_relay *r, size_t i, kfk_relay_status *out);

/* For readiness: false when any context's relay is degraded, with the reasons in detail. */
bool kfk_relay_healthy(kfk_relay *r, char *detail, size_t size);

#endif
