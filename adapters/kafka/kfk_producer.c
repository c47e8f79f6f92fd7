/* The idempotent producer's settings and the event-to-message mapping. */
#include "adapters/kafka/kfk_producer.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/trace.h"
#include "kernel/event_json.h"

void kfk_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    /* librdkafka repeats connection failures on every reconnect; the relay reports the
     * outage itself, once, so only librdkafka's critical messages are warnings here. */
    if (level <= 2)
        log_warn("kafka: %s: %s", fac, buf);
    else
        log_debug("kafka: %s: %s", fac, buf);
}

int kfk_set(rd_kafka_conf_t *conf, const char *name, const char *value, app_error *err)
{
    char why[256];
    if (rd_kafka_conf_set(conf, name, value, why, sizeof why) != RD_KAFKA_CONF_OK) {
        app_error_set(err, APP_ECONFIG, "kafka: librdkafka refused %s=%s", name, value);
        app_error_detail(err, "%s", why);
        return APP_ECONFIG;
    }
    return 0;
}

static int kfk_set_int(rd_kafka_conf_t *conf, const char *name, int value, app_error *err)
{
    char text[24];
    snprintf(text, sizeof text, "%d", value);
    return kfk_set(conf, name, text, err);
}

int kfk_producer_new(rd_kafka_t **out, const kfk_options *o, kfk_dr_fn dr, kfk_error_fn on_error,
                     void *opaque, app_error *err)
{
    *out = NULL;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    /* Idempotence keeps one partition's messages in order and written once across
     * librdkafka's own retries; the relay never lets a message time out inside librdkafka
     * (which could leave a gap before later messages), it purges and produces again. And a
     * batch the broker refuses must not be followed by later messages of its partition, or a
     * stream's retried event would land after its successors: with the gapless guarantee
     * such a refusal is a fatal error instead, the relay replaces the producer and produces
     * again, in log order, from the first event not acknowledged. */
    int rc = kfk_set(conf, "bootstrap.servers", o->brokers, err);
    if (rc == 0)
        rc = kfk_set(conf, "client.id", o->client_id, err);
    if (rc == 0)
        rc = kfk_set(conf, "enable.idempotence", "true", err);
    if (rc == 0)
        rc = kfk_set(conf, "enable.gapless.guarantee", "true", err);
    if (rc == 0)
        rc = kfk_set(conf, "acks", "all", err);
    if (rc == 0)
        rc = kfk_set(conf, "message.timeout.ms", "0", err);
    if (rc == 0)
        rc = kfk_set(conf, "max.in.flight.requests.per.connection", "5", err);
    if (rc == 0)
        rc = kfk_set(conf, "linger.ms", "5", err);
    if (rc == 0) /* the Java client's partitioner: same key, same partition, across clients */
        rc = kfk_set(conf, "partitioner", "murmur2_random", err);
    if (rc == 0)
        rc = kfk_set_int(conf, "retry.backoff.ms", o->retry_backoff_ms, err);
    if (rc == 0)
        rc = kfk_set_int(conf, "reconnect.backoff.ms", o->retry_backoff_ms, err);
    if (rc == 0)
        rc = kfk_set_int(conf, "reconnect.backoff.max.ms",
                         o->retry_backoff_max_ms > o->retry_backoff_ms ? o->retry_backoff_max_ms
                                                                       : o->retry_backoff_ms,
                         err);
    if (rc == 0)
        rc = kfk_set_int(conf, "message.max.bytes", o->max_message_bytes, err);
    if (rc) {
        rd_kafka_conf_destroy(conf);
        return rc;
    }
    rd_kafka_conf_set_log_cb(conf, kfk_log);
    if (dr)
        rd_kafka_conf_set_dr_msg_cb(conf, dr);
    if (on_error)
        rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_opaque(conf, opaque);
    char why[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof why);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        app_error_set(err, APP_ECONFIG, "kafka: could not create a producer");
        app_error_detail(err, "%s", why);
        return APP_ECONFIG;
    }
    *out = rk;
    return 0;
}

/* Adds name: the string value of field in the event metadata, when there is one. */
static void kfk_meta_header(rd_kafka_headers_t *h, const cJSON *meta, const char *field,
                            const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(meta, field);
    if (cJSON_IsString(v) && v->valuestring[0])
        rd_kafka_header_add(h, name, -1, v->valuestring, -1);
}

/* What the dead-letter topic gets for an event too large to send whole. */
static char *kfk_stub(const es_event *ev)
{
    cJSON *o = cJSON_CreateObject();
    bool ok = o && cJSON_AddStringToObject(o, "eventId", ev->event_id) &&
              cJSON_AddStringToObject(o, "type", ev->type) &&
              cJSON_AddNumberToObject(o, "schemaVersion", ev->schema_version) &&
              cJSON_AddStringToObject(o, "streamId", ev->stream_id) &&
              cJSON_AddNumberToObject(o, "version", (double)ev->version) &&
              cJSON_AddNumberToObject(o, "position", (double)ev->position) &&
              cJSON_AddBoolToObject(o, "truncated", 1) &&
              cJSON_AddStringToObject(o, "recordedAt", ev->recorded_at);
    char *text = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return text;
}

rd_kafka_resp_err_t kfk_produce_event(rd_kafka_t *rk, const char *topic, const es_event *ev,
                                      const char *dlq_reason, int max_value_bytes, void *msg_opaque,
                                      trace_span **publish)
{
    cJSON *json = event_to_json(ev);
    char *value = json ? cJSON_PrintUnformatted(json) : NULL;
    cJSON_Delete(json);
    if (value && max_value_bytes > 0 && strlen(value) > (size_t)max_value_bytes) {
        free(value);
        value = kfk_stub(ev);
    }
    rd_kafka_headers_t *h = value ? rd_kafka_headers_new(8) : NULL;
    if (!h) {
        free(value);
        return RD_KAFKA_RESP_ERR__BAD_MSG;
    }
    char schema_version[16];
    snprintf(schema_version, sizeof schema_version, "%d", ev->schema_version);
    rd_kafka_header_add(h, KFK_H_EVENT_ID, -1, ev->event_id, -1);
    rd_kafka_header_add(h, KFK_H_EVENT_TYPE, -1, ev->type, -1);
    rd_kafka_header_add(h, KFK_H_SCHEMA_VERSION, -1, schema_version, -1);
    cJSON *meta = cJSON_Parse(ev->metadata ? ev->metadata : "{}");
    kfk_meta_header(h, meta, "correlationId", KFK_H_CORRELATION_ID);
    kfk_meta_header(h, meta, "causationId", KFK_H_CAUSATION_ID);
    /* The copy to Kafka is a span in the trace of the request that caused the event; the
     * message's traceparent names it, so that a consumer's span is its child. */
    trace_span span;
    trace_continue_tp(&span, "", TRACE_PRODUCER,
                      cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(meta, "traceparent")));
    trace_name(&span, "%s publish", topic);
    char tp[TRACEPARENT_LEN];
    trace_ctx_format(&span.ctx, tp);
    if (tp[0])
        rd_kafka_header_add(h, KFK_H_TRACEPARENT, -1, tp, -1);
    cJSON_Delete(meta);
    rd_kafka_header_add(h, KFK_H_CONTENT_TYPE, -1, "application/json", -1);
    if (dlq_reason)
        rd_kafka_header_add(h, KFK_H_DLQ_REASON, -1, dlq_reason, -1);

    rd_kafka_resp_err_t e = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(ev->stream_id, strlen(ev->stream_id)),
        RD_KAFKA_V_VALUE(value, strlen(value)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(msg_opaque), RD_KAFKA_V_END);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
        rd_kafka_headers_destroy(h); /* on success librdkafka owns them */
    if (span.recording) {
        trace_attr_str(&span, "messaging.system", "kafka");
        trace_attr_str(&span, "messaging.destination.name", topic);
        trace_attr_str(&span, "messaging.kafka.message.key", ev->stream_id);
        trace_attr_str(&span, "app.event_id", ev->event_id);
        if (dlq_reason)
            trace_attr_str(&span, "app.dead_letter", dlq_reason);
        if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
            trace_fail(&span, rd_kafka_err2str(e));
    }
    if (publish && span.recording && e == RD_KAFKA_RESP_ERR_NO_ERROR &&
        (*publish = malloc(sizeof **publish)) != NULL)
        **publish = span; /* ends with the delivery report */
    else
        trace_end(&span);
    free(value);
    return e;
}

void kfk_publish_span_end(trace_span **publish, const rd_kafka_message_t *report)
{
    trace_span *span = *publish;
    if (!span)
        return;
    if (report->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        trace_attr_int(span, "messaging.destination.partition.id", report->partition);
        trace_attr_int(span, "messaging.kafka.offset", report->offset);
    } else {
        trace_fail(span, rd_kafka_err2str(report->err));
    }
    trace_end(span);
    free(span);
    *publish = NULL;
}

bool kfk_error_permanent(rd_kafka_resp_err_t e)
{
    switch (e) {
    case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE:
    case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
    case RD_KAFKA_RESP_ERR_INVALID_RECORD:
    case RD_KAFKA_RESP_ERR_INVALID_TIMESTAMP:
    case RD_KAFKA_RESP_ERR__BAD_MSG:
    case RD_KAFKA_RESP_ERR__INVALID_ARG:
        return true;
    default:
        return false;
    }
}
