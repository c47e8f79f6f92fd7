/* The inbox consumers: per mirrored source, one librdkafka high-level consumer in its own
 * thread, partitions assigned at the offsets stored in the inbox, batches stored with their
 * offsets in one transaction, and a rewind to the stored offsets whenever a batch could not
 * be stored. */
#include "adapters/kafka/kfk_inbox.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adapters/kafka/kfk_producer.h"
#include "core/backoff.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/text.h"
#include "core/trace.h"
#include "core/uuid.h"

#define M_LAG_EVENTS    "kafka_inbox_lag_events"
#define M_INGESTED      "kafka_inbox_events_total"
#define M_DEAD_LETTERED "kafka_inbox_dead_lettered_total"

#define POLL_MS          200    /* longest wait for a message, so stop is quick */
#define STATUS_EVERY_MS  1000   /* lag gauges and readiness */
#define METADATA_WAIT_MS 1000   /* a probe of the brokers while they seem away */
#define REPEAT_LOG_MS    60000  /* the same trouble is logged again at most this often */
#define METADATA_MS      "5000" /* how soon a topic created later is noticed */
#define CLOSE_GRACE_MS   3000

/* One message read and not stored yet. */
typedef struct inbox_entry {
    int32_t partition;
    int64_t offset;
    bool is_event;
    kfk_inbox_event ev; /* owned when is_event */
    char event_id[37];  /* of a rejected message, when it had a valid one */
    char reason[256];   /* why it is not an event */
} inbox_entry;

/* An assigned partition: what is stored and how far the topic goes. */
typedef struct inbox_part {
    int32_t partition;
    int64_t next; /* stored next offset; -1: nothing stored yet */
    int64_t low;  /* low watermark, for the lag when nothing is stored */
    int64_t high; /* high watermark; -1 unknown */
} inbox_part;

typedef struct inbox_worker {
    kfk_inbox *ib;
    char source[32];
    char topic[256];
    char group[256];
    char labels[64];
    pthread_t thread;
    bool started;

    /* Owned by the worker thread (librdkafka's callbacks run in it, from consumer_poll). */
    rd_kafka_t *rk;
    rd_kafka_topic_partition_list_t *pending; /* assigned by the group, not yet by us */
    inbox_part *parts;
    size_t n_parts;
    inbox_entry *batch;
    size_t n_batch;
    int64_t retry_at; /* monotonic ms before which a pending assignment is not tried */
    int64_t next_status_ms;
    /* The current trouble: its kind (NULL when none: the broker, the topic, the inbox...),
     * which decides what ends it and when it is logged again, and its detail. */
    const char *trouble_kind;
    char trouble[200];
    int64_t trouble_logged_ms;
    backoff bo;

    pthread_mutex_t lock; /* guards st */
    kfk_inbox_status st;
} inbox_worker;

struct kfk_inbox {
    kfk_options o;
    char *brokers, *topic_prefix, *client_id;
    inbox_store *inbox;
    inbox_worker *workers;
    size_t n_workers;
    atomic_bool stopping;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- pure parts ------------------------------------------------------------------------ */

int kfk_inbox_group_name(char *out, size_t size, const char *prefix, const char *const *loaded,
                         size_t n_loaded, const char *source, app_error *err)
{
    char joined[256] = "";
    size_t used = 0;
    for (size_t i = 0; i < n_loaded; i++) {
        int n = snprintf(joined + used, sizeof joined - used, "%s%s", i ? "-" : "", loaded[i]);
        if (n < 0 || (size_t)n >= sizeof joined - used)
            return app_error_set(err, APP_ECONFIG, "contexts: too many to name a consumer group");
        used += (size_t)n;
    }
    char middle[300];
    snprintf(middle, sizeof middle, "%s.from.", joined);
    /* A group id follows no rule of Kafka's own; the topic rules keep it readable in tools. */
    return kfk_topic_name(out, size, prefix, middle, source, err);
}

void kfk_inbox_event_free(kfk_inbox_event *ev)
{
    if (!ev)
        return;
    free(ev->stream_id);
    free(ev->type);
    free(ev->data);
    free(ev->metadata);
    memset(ev, 0, sizeof *ev);
}

/* A string that PostgreSQL's text and jsonb take: valid UTF-8 without NUL, and no \u0000
 * escape (jsonb refuses it). */
static bool storable(const char *s)
{
    return text_utf8_count(s, strlen(s)) >= 0 && !strstr(s, "\\u0000");
}

static bool whole_number(const cJSON *n, int64_t min, int64_t max, int64_t *out)
{
    if (!cJSON_IsNumber(n))
        return false;
    double v = n->valuedouble;
    if (v < (double)min || v > (double)max || v != (double)(int64_t)v)
        return false;
    *out = (int64_t)v;
    return true;
}

/* "2026-11-28T15:00:00.123456Z": the relay's form; anything else counts as absent. */
static bool rfc3339_utc(const char *s)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    size_t n = strlen(s);
    if (n < sizeof shape || n > 32 || s[n - 1] != 'Z')
        return false;
    for (size_t i = 0; i < sizeof shape - 1; i++)
        if (shape[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != shape[i])
            return false;
    const char *p = s + sizeof shape - 1;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++) {
        }
    return p == s + n - 1;
}

static int parse_refuse(char *reason, size_t size, const char *why)
{
    snprintf(reason, size, "%s", why);
    return APP_EINVAL;
}

/* A JSON object member as text, or "{}" when absent and allowed; NULL when not storable. */
static char *object_text(const cJSON *o, bool optional, const char *name, char *reason, size_t size,
                         int *rc)
{
    *rc = 0;
    char *text = NULL;
    if (!o && optional) {
        text = strdup("{}");
    } else if (!cJSON_IsObject(o)) {
        *rc = APP_EINVAL;
        snprintf(reason, size, "%s is not a json object", name);
        return NULL;
    } else {
        text = cJSON_PrintUnformatted(o);
    }
    if (!text) {
        *rc = APP_ENOMEM;
        snprintf(reason, size, "out of memory");
        return NULL;
    }
    if (!storable(text)) {
        free(text);
        *rc = APP_EINVAL;
        snprintf(reason, size, "%s holds text that is not valid utf-8", name);
        return NULL;
    }
    return text;
}

int kfk_inbox_parse(const void *value, size_t len, kfk_inbox_event *out, char *reason, size_t size)
{
    memset(out, 0, sizeof *out);
    if (!value || len == 0)
        return parse_refuse(reason, size, "empty message");
    cJSON *doc = cJSON_ParseWithLength(value, len);
    if (!doc)
        return parse_refuse(reason, size, "not json");
    int rc = 0;
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(doc, "eventId");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(doc, "type");
    const cJSON *stream = cJSON_GetObjectItemCaseSensitive(doc, "streamId");
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(doc, "version");
    const cJSON *schema = cJSON_GetObjectItemCaseSensitive(doc, "schemaVersion");
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(doc, "recordedAt");
    int64_t n = 0;
    if (!cJSON_IsObject(doc)) {
        rc = parse_refuse(reason, size, "not a json object");
        goto done;
    }
    if (!cJSON_IsString(id) || !uuid_valid(id->valuestring)) {
        rc = parse_refuse(reason, size,
                          cJSON_IsString(id) ? "eventId is not a lower-case uuid" : "no event id");
        goto done;
    }
    snprintf(out->event_id, sizeof out->event_id, "%s", id->valuestring);
    if (!cJSON_IsString(type) || !type->valuestring[0] || !storable(type->valuestring)) {
        rc = parse_refuse(reason, size, "no type");
        goto done;
    }
    if (!cJSON_IsString(stream) || !stream->valuestring[0] || !storable(stream->valuestring)) {
        rc = parse_refuse(reason, size, "no stream id");
        goto done;
    }
    if (!whole_number(version, 1, INT64_C(1) << 52, &out->version)) {
        rc = parse_refuse(reason, size, "no version (a whole number from 1)");
        goto done;
    }
    out->schema_version = 1;
    if (schema) {
        if (!whole_number(schema, 1, 1000000, &n)) {
            rc = parse_refuse(reason, size, "schemaVersion is not a whole number from 1");
            goto done;
        }
        out->schema_version = (int)n;
    }
    /* cJSON would cut a string at an escaped NUL, changing the event without a word. */
    if (memmem(value, len, "\\u0000", 6)) {
        rc = parse_refuse(reason, size, "holds \\u0000, which the inbox cannot store");
        goto done;
    }
    if (!(out->data = object_text(cJSON_GetObjectItemCaseSensitive(doc, "data"), false, "data",
                                  reason, size, &rc)))
        goto done;
    if (!(out->metadata = object_text(cJSON_GetObjectItemCaseSensitive(doc, "metadata"), true,
                                      "metadata", reason, size, &rc)))
        goto done;
    out->stream_id = strdup(stream->valuestring);
    out->type = strdup(type->valuestring);
    if (!out->stream_id || !out->type) {
        snprintf(reason, size, "out of memory");
        rc = APP_ENOMEM;
        goto done;
    }
    if (cJSON_IsString(at) && rfc3339_utc(at->valuestring))
        snprintf(out->recorded_at, sizeof out->recorded_at, "%s", at->valuestring);
done:
    cJSON_Delete(doc);
    if (rc != 0) {
        char keep[37];
        snprintf(keep, sizeof keep, "%s", out->event_id);
        kfk_inbox_event_free(out);
        snprintf(out->event_id, sizeof out->event_id, "%s", keep);
    }
    return rc;
}

/* ---- status ------------------------------------------------------------------------------ */

static bool inbox_stopping(const kfk_inbox *ib)
{
    return atomic_load(&ib->stopping);
}

/* The kinds of trouble (compared by address). */
static const char T_BROKER[] = "no broker answers";
static const char T_TOPIC[] = "no topic";
static const char T_KAFKA[] = "kafka";
static const char T_INBOX[] = "inbox"; /* loading or storing in PostgreSQL */
static const char T_MEMORY[] = "out of memory";

/* Logs a trouble when its kind starts or changes, or every REPEAT_LOG_MS while it lasts:
 * never once per poll, nor once per librdkafka reconnect. */
static void trouble(inbox_worker *w, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void trouble(inbox_worker *w, const char *kind, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->trouble, sizeof w->trouble, fmt, ap);
    va_end(ap);
    int64_t now = mono_ms();
    if (kind != w->trouble_kind || now - w->trouble_logged_ms >= REPEAT_LOG_MS) {
        log_warn("kafka inbox %s: %s; waiting and retrying", w->source, w->trouble);
        w->trouble_logged_ms = now;
    }
    w->trouble_kind = kind;
}

/* Ends a trouble of kind (NULL: of any kind). */
static void trouble_over(inbox_worker *w, const char *kind)
{
    if (!w->trouble_kind || (kind && kind != w->trouble_kind))
        return;
    log_info("kafka inbox %s: consuming %s again", w->source, w->topic);
    w->trouble_kind = NULL;
    w->trouble[0] = '\0';
    backoff_reset(&w->bo);
}

/* A broker or topic trouble is over once a metadata request answers (naming the topic,
 * for a missing one), even when no message comes to say so. A metadata request keeps to its
 * timeout; a ListOffsets request (rd_kafka_query_watermark_offsets) waits for the socket
 * timeout while the broker is away, so it is never used here. */
static void probe_trouble(inbox_worker *w)
{
    if (w->trouble_kind != T_BROKER && w->trouble_kind != T_TOPIC && w->trouble_kind != T_KAFKA)
        return;
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(w->rk, 0, NULL, &md, METADATA_WAIT_MS) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    bool topic = false;
    for (int i = 0; i < md->topic_cnt; i++)
        topic = topic || (strcmp(md->topics[i].topic, w->topic) == 0 && !md->topics[i].err &&
                          md->topics[i].partition_cnt > 0);
    rd_kafka_metadata_destroy(md);
    if (topic || w->trouble_kind != T_TOPIC)
        trouble_over(w, NULL);
}

static void status_update(inbox_worker *w)
{
    probe_trouble(w);
    int64_t stored = 0, high = 0;
    for (size_t i = 0; i < w->n_parts; i++) {
        inbox_part *p = &w->parts[i];
        /* What the last fetch said (nothing before the first one): asking the broker
         * could block for the socket timeout while it is away (see probe_trouble). */
        int64_t lo = -1, hi = -1;
        if (rd_kafka_get_watermark_offsets(w->rk, w->topic, p->partition, &lo, &hi) !=
            RD_KAFKA_RESP_ERR_NO_ERROR)
            lo = hi = -1;
        if (hi >= 0)
            p->high = hi;
        if (lo >= 0)
            p->low = lo;
        int64_t at = p->next >= 0 ? p->next : p->low;
        stored += at > 0 ? at : 0;
        high += p->high > 0 ? p->high : (at > 0 ? at : 0);
    }
    int64_t lag = high > stored ? high - stored : 0;
    metrics_gauge_set(M_LAG_EVENTS, w->labels, (double)lag);
    pthread_mutex_lock(&w->lock);
    w->st.assigned = w->n_parts > 0;
    w->st.failing = w->trouble_kind != NULL;
    snprintf(w->st.detail, sizeof w->st.detail, "%s", w->trouble);
    w->st.stored = stored;
    w->st.high = high;
    pthread_mutex_unlock(&w->lock);
}

static void count(inbox_worker *w, const char *metric, uint64_t *field, size_t n)
{
    if (n == 0)
        return;
    metrics_counter_add(metric, w->labels, (double)n);
    pthread_mutex_lock(&w->lock);
    *field += n;
    pthread_mutex_unlock(&w->lock);
}

/* ---- the batch --------------------------------------------------------------------------- */

static void batch_clear(inbox_worker *w)
{
    for (size_t i = 0; i < w->n_batch; i++)
        if (w->batch[i].is_event)
            kfk_inbox_event_free(&w->batch[i].ev);
    w->n_batch = 0;
}

/* False when out of memory: then the message is not taken (it must not become a dead
 * letter for that). */
static bool batch_add(inbox_worker *w, const rd_kafka_message_t *m)
{
    inbox_entry *e = &w->batch[w->n_batch];
    memset(e, 0, sizeof *e);
    e->partition = m->partition;
    e->offset = m->offset;
    kfk_inbox_event ev;
    int rc = kfk_inbox_parse(m->payload, m->len, &ev, e->reason, sizeof e->reason);
    if (rc == APP_ENOMEM)
        return false;
    w->n_batch++;
    if (rc == 0) {
        e->is_event = true;
        e->ev = ev;
    } else {
        snprintf(e->event_id, sizeof e->event_id, "%s", ev.event_id);
        log_warn("kafka inbox %s: message at offset %" PRId64 " of %s [%d] is not an event (%s); "
                 "to the dead letters",
                 w->source, e->offset, w->topic, (int)e->partition, e->reason);
    }
    return true;
}

static inbox_part *part_find(inbox_worker *w, int32_t partition)
{
    for (size_t i = 0; i < w->n_parts; i++)
        if (w->parts[i].partition == partition)
            return &w->parts[i];
    return NULL;
}

/* Forgets the assignment, keeping the group's list so that it is assigned again from the
 * stored offsets (after a batch that could not be stored, what was read after them is read
 * again). */
static void rewind_to_stored(inbox_worker *w)
{
    batch_clear(w);
    if (!w->pending) {
        rd_kafka_topic_partition_list_t *now = NULL;
        if (rd_kafka_assignment(w->rk, &now) == RD_KAFKA_RESP_ERR_NO_ERROR)
            w->pending = now;
    }
    rd_kafka_assign(w->rk, NULL);
    w->n_parts = 0;
    w->retry_at = mono_ms() + backoff_next(&w->bo);
}

/* Stores the batch with its offsets. A message the store refuses (something it cannot take
 * that the checks let by) is rejected with the store's reason and the batch stored again, so
 * one bad message never blocks the partition. Returns 0 when stored. */
static int batch_store(inbox_worker *w)
{
    if (w->n_batch == 0)
        return 0;
    inbox_message *msgs = calloc(w->n_batch, sizeof *msgs);
    if (!msgs) {
        trouble(w, T_MEMORY, "out of memory");
        rewind_to_stored(w);
        return -1;
    }
    int rc = -1;
    for (size_t attempt = 0; attempt <= w->n_batch; attempt++) {
        size_t rejects = 0;
        for (size_t i = 0; i < w->n_batch; i++) {
            const inbox_entry *e = &w->batch[i];
            inbox_message *m = &msgs[i];
            memset(m, 0, sizeof *m);
            m->partition = e->partition;
            m->offset = e->offset;
            if (e->is_event) {
                m->event_id = e->ev.event_id;
                m->stream_id = e->ev.stream_id;
                m->version = e->ev.version;
                m->type = e->ev.type;
                m->schema_version = e->ev.schema_version;
                m->data = e->ev.data;
                m->metadata = e->ev.metadata;
                m->recorded_at = e->ev.recorded_at[0] ? e->ev.recorded_at : NULL;
            } else {
                m->event_id = e->event_id[0] ? e->event_id : NULL;
                m->reject = e->reason;
                rejects++;
            }
        }
        app_error err = APP_ERROR_INIT;
        size_t stored = 0, failed_at = w->n_batch;
        inbox_store *st = w->ib->inbox;
        rc = st->ops->store(st->self, w->source, w->group, w->topic, msgs, w->n_batch, &stored,
                            &failed_at, &err);
        if (rc == 0) {
            for (size_t i = 0; i < w->n_batch; i++) {
                inbox_part *p = part_find(w, w->batch[i].partition);
                if (p && w->batch[i].offset + 1 > p->next)
                    p->next = w->batch[i].offset + 1;
            }
            count(w, M_INGESTED, &w->st.ingested, stored);
            count(w, M_DEAD_LETTERED, &w->st.dead_lettered, rejects);
            break;
        }
        inbox_entry *bad = failed_at < w->n_batch ? &w->batch[failed_at] : NULL;
        if (rc == APP_EUNAVAIL || !bad || !bad->is_event) {
            trouble(w, T_INBOX, "could not store in the inbox: %s: %s", err.message, err.detail);
            rewind_to_stored(w);
            break;
        }
        log_warn("kafka inbox %s: the inbox refused the event at offset %" PRId64
                 " of %s [%d]: %s; to the dead letters",
                 w->source, bad->offset, w->topic, (int)bad->partition, err.detail);
        snprintf(bad->event_id, sizeof bad->event_id, "%s", bad->ev.event_id);
        snprintf(bad->reason, sizeof bad->reason, "the inbox refused it: %.200s", err.detail);
        kfk_inbox_event_free(&bad->ev);
        bad->is_event = false;
    }
    free(msgs);
    if (rc == 0) {
        batch_clear(w);
        trouble_over(w, T_INBOX);
        trouble_over(w, T_MEMORY);
    }
    return rc == 0 ? 0 : -1;
}

/* ---- assignment ------------------------------------------------------------------------ */

/* Assigns the pending partitions at their stored offsets (the beginning when none). */
static void try_assign(inbox_worker *w)
{
    rd_kafka_topic_partition_list_t *l = w->pending;
    if (!l || mono_ms() < w->retry_at)
        return;
    inbox_position *pos = calloc((size_t)(l->cnt > 0 ? l->cnt : 1), sizeof *pos);
    inbox_part *parts = calloc((size_t)(l->cnt > 0 ? l->cnt : 1), sizeof *parts);
    if (!pos || !parts) {
        free(pos);
        free(parts);
        trouble(w, T_MEMORY, "out of memory");
        w->retry_at = mono_ms() + backoff_next(&w->bo);
        return;
    }
    for (int i = 0; i < l->cnt; i++)
        pos[i].partition = l->elems[i].partition;
    app_error err = APP_ERROR_INIT;
    inbox_store *st = w->ib->inbox;
    if (st->ops->load_offsets(st->self, w->source, w->group, w->topic, pos, (size_t)l->cnt, &err) <
        0) {
        trouble(w, T_INBOX, "could not load the stored offsets: %s: %s", err.message, err.detail);
        w->retry_at = mono_ms() + backoff_next(&w->bo);
        free(pos);
        free(parts);
        return;
    }
    for (int i = 0; i < l->cnt; i++) {
        l->elems[i].offset =
            pos[i].next_offset >= 0 ? pos[i].next_offset : RD_KAFKA_OFFSET_BEGINNING;
        parts[i] = (inbox_part){pos[i].partition, pos[i].next_offset, 0, -1};
    }
    free(pos);
    rd_kafka_resp_err_t e = rd_kafka_assign(w->rk, l);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        trouble(w, T_KAFKA, "could not assign the partitions: %s", rd_kafka_err2str(e));
        w->retry_at = mono_ms() + backoff_next(&w->bo);
        free(parts);
        return;
    }
    free(w->parts);
    w->parts = parts;
    w->n_parts = (size_t)l->cnt;
    rd_kafka_topic_partition_list_destroy(l);
    w->pending = NULL;
    log_info("kafka inbox %s: consuming %zu partition%s of %s from the stored offsets", w->source,
             w->n_parts, w->n_parts == 1 ? "" : "s", w->topic);
    trouble_over(w, T_INBOX);
    trouble_over(w, T_TOPIC); /* partitions: the topic is there */
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    inbox_worker *w = opaque;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (w->pending)
            rd_kafka_topic_partition_list_destroy(w->pending);
        w->pending = rd_kafka_topic_partition_list_copy(parts);
        if (!w->pending) {
            trouble(w, T_MEMORY, "out of memory");
            rd_kafka_assign(rk, NULL);
            return;
        }
        w->retry_at = 0;
        try_assign(w);
        return;
    }
    /* Revoked (or a rebalance error): what was read is stored first, so the next owner of
     * these partitions starts after it; if that fails it reads it again (deduplicated). */
    batch_store(w);
    batch_clear(w);
    if (w->pending)
        rd_kafka_topic_partition_list_destroy(w->pending);
    w->pending = NULL;
    w->n_parts = 0;
    rd_kafka_assign(rk, NULL);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    inbox_worker *w = opaque;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || err == RD_KAFKA_RESP_ERR__TRANSPORT ||
        err == RD_KAFKA_RESP_ERR__RESOLVE)
        trouble(w, T_BROKER, "no broker answers: %s", reason);
    else
        log_debug("kafka inbox %s: %s: %s", w->source, rd_kafka_err2name(err), reason);
}

/* ---- the consumer ---------------------------------------------------------------------- */

static int consumer_open(inbox_worker *w)
{
    kfk_inbox *ib = w->ib;
    app_error err = APP_ERROR_INIT;
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (!conf)
        return -1;
    /* Offsets are the inbox's, stored with the events: Kafka's own commits stay off. */
    int rc = kfk_set(conf, "bootstrap.servers", ib->o.brokers, &err);
    if (rc == 0)
        rc = kfk_set(conf, "client.id", ib->o.client_id, &err);
    if (rc == 0)
        rc = kfk_set(conf, "group.id", w->group, &err);
    if (rc == 0)
        rc = kfk_set(conf, "enable.auto.commit", "false", &err);
    if (rc == 0)
        rc = kfk_set(conf, "enable.auto.offset.store", "false", &err);
    if (rc == 0)
        rc = kfk_set(conf, "auto.offset.reset", "earliest", &err);
    if (rc == 0) /* a consumer that died is replaced within this, not the default 45 s */
        rc = kfk_set(conf, "session.timeout.ms", "10000", &err);
    if (rc == 0) /* a topic created after the start is found this soon */
        rc = kfk_set(conf, "topic.metadata.refresh.interval.ms", METADATA_MS, &err);
    char backoff_text[24];
    snprintf(backoff_text, sizeof backoff_text, "%d", ib->o.retry_backoff_max_ms);
    if (rc == 0)
        rc = kfk_set(conf, "reconnect.backoff.max.ms", backoff_text, &err);
    if (rc) {
        rd_kafka_conf_destroy(conf);
        trouble(w, T_KAFKA, "%s: %s", err.message, err.detail);
        return -1;
    }
    rd_kafka_conf_set_log_cb(conf, kfk_log);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_opaque(conf, w);
    char why[256];
    w->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof why);
    if (!w->rk) {
        rd_kafka_conf_destroy(conf);
        trouble(w, T_KAFKA, "could not make a consumer: %s", why);
        return -1;
    }
    rd_kafka_poll_set_consumer(w->rk);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    if (!topics) {
        rd_kafka_destroy(w->rk);
        w->rk = NULL;
        return -1;
    }
    rd_kafka_topic_partition_list_add(topics, w->topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t e = rd_kafka_subscribe(w->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        trouble(w, T_KAFKA, "could not subscribe to %s: %s", w->topic, rd_kafka_err2str(e));
        rd_kafka_destroy(w->rk);
        w->rk = NULL;
        return -1;
    }
    return 0;
}

static void consumer_close(inbox_worker *w)
{
    if (!w->rk)
        return;
    /* Revokes through on_rebalance (which stores the batch) and leaves the group, for at
     * most CLOSE_GRACE_MS (none while no broker answers): rd_kafka_consumer_close would wait
     * for an absent broker, and the stop must end within its grace. Left without leaving,
     * the group notices within session.timeout.ms. */
    bool closed = false;
    rd_kafka_queue_t *q = rd_kafka_queue_new(w->rk);
    rd_kafka_error_t *e = q ? rd_kafka_consumer_close_queue(w->rk, q) : NULL;
    if (q && !e) {
        int64_t until = mono_ms() + (w->trouble_kind == T_BROKER ? 0 : CLOSE_GRACE_MS);
        while (!(closed = rd_kafka_consumer_closed(w->rk)) && mono_ms() < until)
            rd_kafka_queue_poll_callback(q, 100);
    }
    if (e)
        rd_kafka_error_destroy(e);
    if (q)
        rd_kafka_queue_destroy(q);
    batch_clear(w);
    if (w->pending)
        rd_kafka_topic_partition_list_destroy(w->pending);
    w->pending = NULL;
    w->n_parts = 0;
    rd_kafka_destroy_flags(w->rk, closed ? 0 : RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    w->rk = NULL;
}

/* A message with an error: a missing topic or an unreachable partition is waited out. */
static void message_error(inbox_worker *w, const rd_kafka_message_t *m)
{
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
        return;
    if (m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
        m->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC)
        trouble(w, T_TOPIC, "topic %s does not exist yet", w->topic);
    else
        trouble(w, T_KAFKA, "%s", rd_kafka_message_errstr(m));
}

/* A span of the message's receipt, a child of the publish span its traceparent names: the
 * trace of the request that caused the event goes on in this service. */
static void inbox_trace(const rd_kafka_message_t *m)
{
    if (!trace_enabled())
        return;
    rd_kafka_headers_t *h = NULL;
    const void *value = NULL;
    size_t len = 0;
    char tp[TRACEPARENT_LEN] = "";
    if (rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        rd_kafka_header_get_last(h, KFK_H_TRACEPARENT, &value, &len) ==
            RD_KAFKA_RESP_ERR_NO_ERROR &&
        value && len < sizeof tp) {
        memcpy(tp, value, len);
        tp[len] = '\0';
    }
    const char *topic = rd_kafka_topic_name(m->rkt);
    trace_span span;
    trace_continue_tp(&span, "", TRACE_CONSUMER, tp);
    trace_name(&span, "%s receive", topic);
    trace_attr_str(&span, "messaging.system", "kafka");
    trace_attr_str(&span, "messaging.destination.name", topic);
    trace_attr_int(&span, "messaging.kafka.partition", m->partition);
    trace_attr_int(&span, "messaging.kafka.offset", m->offset);
    trace_end(&span);
}

/* Reads up to a batch (the first read waits up to POLL_MS, the rest only take what is
 * there), then stores it. */
static void inbox_step(inbox_worker *w)
{
    size_t cap = (size_t)w->ib->o.batch_size;
    try_assign(w);
    for (size_t i = 0; w->n_batch < cap && !inbox_stopping(w->ib); i++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(w->rk, i == 0 ? POLL_MS : 0);
        if (!m)
            break;
        if (m->err) {
            message_error(w, m);
        } else if (w->n_parts > 0 && part_find(w, m->partition)) {
            if (!batch_add(w, m)) {
                rd_kafka_message_destroy(m);
                trouble(w, T_MEMORY, "out of memory");
                rewind_to_stored(w);
                return;
            }
            inbox_trace(m);
            /* Messages flow: the broker and the topic are there. */
            trouble_over(w, T_BROKER);
            trouble_over(w, T_TOPIC);
            trouble_over(w, T_KAFKA);
        }
        rd_kafka_message_destroy(m);
    }
    batch_store(w);
    int64_t now = mono_ms();
    if (now >= w->next_status_ms) {
        status_update(w);
        w->next_status_ms = now + STATUS_EVERY_MS;
    }
}

static void *inbox_thread(void *arg)
{
    inbox_worker *w = arg;
    while (!inbox_stopping(w->ib)) {
        if (!w->rk && consumer_open(w) != 0) {
            /* In slices, so that a stop is not kept waiting. */
            for (int64_t until = mono_ms() + backoff_next(&w->bo);
                 mono_ms() < until && !inbox_stopping(w->ib);)
                sleep_ms(POLL_MS / 4);
            continue;
        }
        inbox_step(w);
    }
    batch_store(w);
    consumer_close(w);
    pthread_mutex_lock(&w->lock);
    w->st.assigned = false;
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* ---- life cycle -------------------------------------------------------------------------- */

void kfk_inbox_declare_metrics(void)
{
    metrics_declare(M_LAG_EVENTS, METRIC_GAUGE,
                    "Messages of a mirrored context's topic not yet in this service's inbox "
                    "(high watermark minus stored offset, over the partitions this process "
                    "consumes).");
    metrics_declare(M_INGESTED, METRIC_COUNTER,
                    "Events of a mirrored context stored in the inbox (duplicates not counted).");
    metrics_declare(M_DEAD_LETTERED, METRIC_COUNTER,
                    "Messages of a mirrored context's topic that were not events, sent to the "
                    "inbox's dead letters.");
}

int kfk_inbox_new(kfk_inbox **out, const kfk_inbox_options *opts, app_error *err)
{
    *out = NULL;
    if (!opts->inbox || opts->n_sources == 0 || opts->n_loaded == 0)
        return app_error_set(err, APP_EINVAL, "kafka inbox needs an inbox, sources and contexts");
    kfk_inbox *ib = calloc(1, sizeof *ib);
    if (!ib)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    atomic_init(&ib->stopping, false);
    ib->o = opts->kafka;
    ib->inbox = opts->inbox;
    int rc = 0;
    ib->brokers = strdup(opts->kafka.brokers ? opts->kafka.brokers : "");
    ib->topic_prefix = strdup(opts->kafka.topic_prefix ? opts->kafka.topic_prefix : "");
    ib->client_id = strdup(opts->kafka.client_id ? opts->kafka.client_id : "app");
    ib->workers = calloc(opts->n_sources, sizeof *ib->workers);
    if (!ib->brokers || !ib->topic_prefix || !ib->client_id || !ib->workers) {
        rc = app_error_set(err, APP_ENOMEM, "out of memory");
        goto fail;
    }
    ib->o.brokers = ib->brokers;
    ib->o.topic_prefix = ib->topic_prefix;
    ib->o.client_id = ib->client_id;
    if (ib->o.batch_size < 1)
        ib->o.batch_size = 500;
    for (size_t i = 0; i < opts->n_sources; i++) {
        inbox_worker *w = &ib->workers[i];
        w->ib = ib;
        ib->n_workers++;
        pthread_mutex_init(&w->lock, NULL);
        if (strlen(opts->sources[i]) >= sizeof w->source) {
            rc = app_error_set(err, APP_EINVAL, "context name is too long");
            goto fail;
        }
        snprintf(w->source, sizeof w->source, "%s", opts->sources[i]);
        if ((rc = kfk_topic_name(w->topic, sizeof w->topic, ib->topic_prefix, w->source, ".events",
                                 err)) < 0 ||
            (rc = kfk_inbox_group_name(w->group, sizeof w->group, ib->topic_prefix, opts->loaded,
                                       opts->n_loaded, w->source, err)) < 0)
            goto fail;
        snprintf(w->labels, sizeof w->labels, "source=\"%s\"", w->source);
        w->batch = calloc((size_t)ib->o.batch_size, sizeof *w->batch);
        if (!w->batch) {
            rc = app_error_set(err, APP_ENOMEM, "out of memory");
            goto fail;
        }
        backoff_init(&w->bo, ib->o.retry_backoff_ms, ib->o.retry_backoff_max_ms, 0);
        snprintf(w->st.source, sizeof w->st.source, "%s", w->source);
        metrics_gauge_set(M_LAG_EVENTS, w->labels, 0);
        metrics_counter_add(M_INGESTED, w->labels, 0);
        metrics_counter_add(M_DEAD_LETTERED, w->labels, 0);
    }
    kfk_inbox_declare_metrics();
    *out = ib;
    return 0;
fail:
    kfk_inbox_free(ib);
    return rc;
}

int kfk_inbox_start(kfk_inbox *ib, app_error *err)
{
    for (size_t i = 0; i < ib->n_workers; i++) {
        inbox_worker *w = &ib->workers[i];
        if (pthread_create(&w->thread, NULL, inbox_thread, w) != 0) {
            kfk_inbox_stop(ib);
            return app_error_set(err, APP_EINTERNAL, "could not start the kafka inbox of %s",
                                 w->source);
        }
        w->started = true;
        log_info("kafka inbox %s: topic %s, group %s", w->source, w->topic, w->group);
    }
    return 0;
}

void kfk_inbox_stop(kfk_inbox *ib)
{
    atomic_store(&ib->stopping, true);
    for (size_t i = 0; i < ib->n_workers; i++) {
        if (ib->workers[i].started) {
            pthread_join(ib->workers[i].thread, NULL);
            ib->workers[i].started = false;
        }
    }
}

void kfk_inbox_free(kfk_inbox *ib)
{
    if (!ib)
        return;
    kfk_inbox_stop(ib);
    for (size_t i = 0; i < ib->n_workers; i++) {
        inbox_worker *w = &ib->workers[i];
        consumer_close(w); /* a thread that never started leaves none; this is for safety */
        batch_clear(w);
        free(w->batch);
        free(w->parts);
        pthread_mutex_destroy(&w->lock);
    }
    free(ib->workers);
    free(ib->brokers);
    free(ib->topic_prefix);
    free(ib->client_id);
    free(ib);
}

size_t kfk_inbox_count(const kfk_inbox *ib)
{
    return ib->n_workers;
}

void kfk_inbox_status_of(kfk_inbox *ib, size_t i, kfk_inbox_status *out)
{
    inbox_worker *w = &ib->workers[i];
    pthread_mutex_lock(&w->lock);
    *out = w->st;
    pthread_mutex_unlock(&w->lock);
}
