/* Inbox port: this service's copy of the log of a context that runs elsewhere, fed from that
 * context's Kafka topic. Each batch of messages is stored with the consumer's next offsets
 * in one transaction, so a crash neither loses an event nor stores one twice; readers then
 * see the copy through the event-store port like any context's log. adapters/postgres
 * implements it, adapters/kafka feeds it. */
#ifndef PORTS_INBOX_STORE_H
#define PORTS_INBOX_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

/* One message of the topic. Borrowed strings. When reject is NULL it is an event and the
 * event fields are set; otherwise it is not one (reject says why) and goes to the dead
 * letters of the source in the inbox, with event_id when the message had a valid one. */
typedef struct inbox_message {
    int32_t partition;
    int64_t offset;
    const char *event_id; /* lower-case UUID, or NULL */
    const char *stream_id;
    int64_t version; /* within the stream, from 1 */
    const char *type;
    int schema_version;
    const char *data;        /* JSON object text */
    const char *metadata;    /* JSON object text */
    const char *recorded_at; /* RFC 3339 when the source recorded it; NULL: now */
    const char *reject;
} inbox_message;

/* Where a consumer group stands in one partition: the offset of the next message to read,
 * or -1 when nothing of that partition was stored yet. */
typedef struct inbox_position {
    int32_t partition;
    int64_t next_offset;
} inbox_position;

typedef struct inbox_store_ops {
    /* Fills parts[i].next_offset for (group, topic, parts[i].partition). */
    int (*load_offsets)(void *self, const char *source, const char *group, const char *topic,
                        inbox_position *parts, size_t n, app_error *err);
    /* In one transaction: the events of msgs in their order (one already stored, by event
     * id, is skipped), the rejected ones into the dead letters, and for each partition the
     * next offset past its last message (never moved backwards); then readers are woken.
     * *stored (may be NULL) counts the events new to the inbox. On failure nothing is kept:
     * APP_EUNAVAIL when the store cannot be reached; otherwise the store refused a message,
     * and *failed_at (may be NULL) is its index (n when it cannot tell), with the reason in
     * err detail, so the caller can reject that message and store the batch again. */
    int (*store)(void *self, const char *source, const char *group, const char *topic,
                 const inbox_message *msgs, size_t n, size_t *stored, size_t *failed_at,
                 app_error *err);
} inbox_store_ops;

typedef struct inbox_store {
    const inbox_store_ops *ops;
    void *self;
} inbox_store;

/* The dead-letter subscriber of the messages of partition p that are not events:
 * "kafka.inbox:<p>" (their position is the message's offset). */
#define INBOX_DEAD_LETTER_PREFIX "kafka.inbox:"

#endif
