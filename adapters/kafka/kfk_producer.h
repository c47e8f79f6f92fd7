/* The librdkafka side shared by the relay and the dead-letter commands: an idempotent
 * producer (acks=all) and an event turned into a message (key, JSON value, headers).
 * Internal to adapters/kafka. */
#ifndef ADAPTERS_KAFKA_KFK_PRODUCER_H
#define ADAPTERS_KAFKA_KFK_PRODUCER_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>

#include "adapters/kafka/kfk_config.h"
#include "core/error.h"
#include "core/trace.h"
#include "ports/event_store.h"

/* Header names, also documented in the README. */
#define KFK_H_EVENT_ID       "event-id"
#define KFK_H_EVENT_TYPE     "event-type"
#define KFK_H_SCHEMA_VERSION "schema-version"
#define KFK_H_CORRELATION_ID "correlation-id"
#define KFK_H_CAUSATION_ID   "causation-id"
#define KFK_H_TRACEPARENT    "traceparent"
#define KFK_H_CONTENT_TYPE   "content-type"
#define KFK_H_DLQ_REASON     "dlq-reason"

typedef void (*kfk_dr_fn)(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque);
typedef void (*kfk_error_fn)(rd_kafka_t *rk, int err, const char *reason, void *opaque);

/* librdkafka's log lines into ours: its critical ones as warnings, the rest as debug (the
 * relay and the inbox report outages themselves, once). Set with rd_kafka_conf_set_log_cb. */
void kfk_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf);

/* rd_kafka_conf_set, or APP_ECONFIG naming the setting (err detail says why). */
int kfk_set(rd_kafka_conf_t *conf, const char *name, const char *value, app_error *err);

/* A producer for o (idempotent, acks=all, no message timeout of its own: the caller decides
 * when an unacknowledged message has failed). dr and on_error may be NULL; opaque is passed to
 * both. *out owned by the caller (rd_kafka_destroy). APP_ECONFIG when librdkafka refuses a
 * setting (err detail names it). */
int kfk_producer_new(rd_kafka_t **out, const kfk_options *o, kfk_dr_fn dr, kfk_error_fn on_error,
                     void *opaque, app_error *err);

/* Produces ev to topic: key = stream id, value = the event JSON of API.md, the headers above;
 * dlq_reason adds the dlq-reason header, and a value larger than max_value_bytes (0: no limit)
 * is replaced by a stub without data (so the dead-letter topic takes what the main topic
 * refused). Returns librdkafka's immediate answer: RD_KAFKA_RESP_ERR_NO_ERROR when queued
 * (the delivery report tells the rest), e.g. MSG_SIZE_TOO_LARGE or _QUEUE_FULL otherwise,
 * or _BAD_MSG when the value cannot be built (out of memory).
 * The copy is a span ("<topic> publish", kind producer) in the trace of the event, when it has
 * one. With publish NULL the span ends here, once the message is queued; else a queued,
 * recording span is handed over in *publish (allocated), and the caller ends it with
 * kfk_publish_span_end when the broker has answered, so that it lasts until the ack. */
rd_kafka_resp_err_t kfk_produce_event(rd_kafka_t *rk, const char *topic, const es_event *ev,
                                      const char *dlq_reason, int max_value_bytes, void *msg_opaque,
                                      trace_span **publish);

/* Ends and frees the span kfk_produce_event handed over (nothing when *publish is NULL): with
 * the report's partition and offset, or its error. */
void kfk_publish_span_end(trace_span **publish, const rd_kafka_message_t *report);

/* True for errors about the message itself, that no retry can fix (too large, invalid
 * record): the event goes to the dead letters. Broker, network, topic and permission errors
 * are transient: the backlog waits for them to go away. */
bool kfk_error_permanent(rd_kafka_resp_err_t e);

#endif
