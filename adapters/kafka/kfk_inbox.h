/* The inbound side of a split deployment: the log of a context that runs in another service
 * comes from its topic <prefix><source>.events (written by that service's relay) into this
 * service's inbox (ports/inbox_store.h), which the event store reads like any log. One
 * consumer thread per mirrored source, in the group <prefix><loaded contexts joined by
 * "-">.from.<source>; offsets live in the inbox, stored in the transaction that stores the
 * events, never in Kafka. A message that is not an event goes to the dead letters. A missing
 * topic or an unreachable broker is waited out, logged once per episode. */
#ifndef ADAPTERS_KAFKA_KFK_INBOX_H
#define ADAPTERS_KAFKA_KFK_INBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "adapters/kafka/kfk_config.h"
#include "core/error.h"
#include "ports/inbox_store.h"

typedef struct kfk_inbox kfk_inbox;

typedef struct kfk_inbox_options {
    kfk_options kafka;          /* brokers, prefix, client id, batch size; strings copied */
    inbox_store *inbox;         /* borrowed; must outlive the inbox */
    const char *const *sources; /* the mirrored contexts; copied */
    size_t n_sources;
    const char *const *loaded; /* the contexts this process runs (for the group name); copied */
    size_t n_loaded;
} kfk_inbox_options;

/* Checks the names (topics, groups) and declares the metrics; starts nothing. *out owned by
 * the caller: kfk_inbox_free. APP_ECONFIG for an illegal topic or group name. */
int kfk_inbox_new(kfk_inbox **out, const kfk_inbox_options *opts, app_error *err);
/* Starts one consumer thread per source. Succeeds while Kafka or the topic is missing. */
int kfk_inbox_start(kfk_inbox *ib, app_error *err);
/* Stores what was read, leaves the groups and joins the threads. */
void kfk_inbox_stop(kfk_inbox *ib);
void kfk_inbox_free(kfk_inbox *ib); /* accepts NULL; stops first */

/* The inbox's metric families (so that /metrics names them even before any inbox runs). */
void kfk_inbox_declare_metrics(void);

typedef struct kfk_inbox_status {
    char source[32];
    bool assigned;    /* this process consumes partitions of the topic */
    bool failing;     /* the broker, the topic or the inbox is not answering (detail says why) */
    char detail[256]; /* "" when not failing */
    int64_t stored;   /* the stored next offsets, summed over the assigned partitions */
    int64_t high;     /* the topic's high watermarks, summed likewise */
    uint64_t ingested, dead_lettered;
} kfk_inbox_status;

size_t kfk_inbox_count(const kfk_inbox *ib);
/* A snapshot of source i (0 <= i < count); safe from any thread. */
void kfk_inbox_status_of(kfk_inbox *ib, size_t i, kfk_inbox_status *out);

/* ---- pure parts, for the tests too ---- */

/* "<prefix><loaded[0]>-<loaded[1]>...from.<source>" into out, e.g. "order.from.user".
 * APP_ECONFIG when it does not fit or is not a legal group id (the topic name rules). */
int kfk_inbox_group_name(char *out, size_t size, const char *prefix, const char *const *loaded,
                         size_t n_loaded, const char *source, app_error *err);

/* A message value decoded as an event of the relay's shape ({"eventId","type",
 * "schemaVersion","streamId","version","data","metadata","recordedAt"}). Strings owned:
 * kfk_inbox_event_free. */
typedef struct kfk_inbox_event {
    char event_id[37];    /* lower-case UUID */
    char *stream_id;      /* non-empty */
    int64_t version;      /* >= 1 */
    char *type;           /* non-empty */
    int schema_version;   /* >= 1; 1 when absent */
    char *data;           /* JSON object text */
    char *metadata;       /* JSON object text; "{}" when absent */
    char recorded_at[40]; /* RFC 3339 UTC as sent, "" when absent or unreadable */
} kfk_inbox_event;

void kfk_inbox_event_free(kfk_inbox_event *ev); /* frees what ev owns; accepts NULL */

/* 0 and *out filled when value (len bytes, not NUL-terminated) is an event; APP_EINVAL with
 * the lower-case reason in reason (e.g. "not json", "no event id", "no type", "no stream id")
 * and *out empty when it is not, and then event_id holds its eventId when that was a valid
 * UUID ("" otherwise); APP_ENOMEM when out of memory. */
int kfk_inbox_parse(const void *value, size_t len, kfk_inbox_event *out, char *reason, size_t size);

#endif
