/* The relay loop of one context: lease, checkpoint, a window of events in flight ordered by
 * position, delivery reports, purge-and-rewind on failure, dead letters, breaker, metrics. */
#include "adapters/kafka/kfk_relay.h"

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
#include "core/breaker.h"
#include "core/log.h"
#include "core/metrics.h"

#define M_DELIVERED     "kafka_relay_delivered_total"
#define M_RETRIED       "kafka_relay_retried_total"
#define M_DEAD_LETTERED "kafka_relay_dead_lettered_total"
#define M_LAG_EVENTS    "kafka_relay_lag_events"
#define M_LAG_SECONDS   "kafka_relay_lag_seconds"
#define M_LEADER        "kafka_relay_leader"
#define M_BREAKER       "kafka_relay_breaker_state"
#define M_CHECKPOINT    "kafka_relay_checkpoint"

#define SAVE_EVERY_MS    200  /* checkpoint writes while events stream */
#define STATUS_EVERY_MS  1000 /* head position and gauges */
#define STOP_GRACE_MS    5000 /* longest wait for acknowledgements at stop */
#define POLL_BUSY_MS     20   /* wait for delivery reports while messages are in flight */
#define IDLE_SLICE_MS    250  /* longest single idle wait, so stop is quick */
#define METADATA_WAIT_MS 1000 /* a probe of an idle producer whose brokers were down */

typedef enum slot_state {
    SLOT_PENDING,  /* to be produced */
    SLOT_INFLIGHT, /* produced, no report yet */
    SLOT_ACKED,    /* the broker has it */
    SLOT_FAILED,   /* a failed or purged report: produced again after the rewind */
    SLOT_REFUSED,  /* refused for good: to the dead letters */
    SLOT_DEAD,     /* in the dead letters */
} slot_state;

typedef struct kfk_slot {
    es_event ev; /* owned */
    slot_state state;
    int attempts;        /* times produced */
    bool solo;           /* produced alone, so a refusal is its own */
    bool local;          /* refused by the producer itself, before sending */
    int64_t produced_ms; /* monotonic */
    rd_kafka_resp_err_t err;
    trace_span *publish; /* the traced copy in flight, ended by its delivery report */
} kfk_slot;

typedef struct kfk_worker {
    kfk_relay *relay;
    char context[32];
    char topic[256];
    char dlq_topic[256];
    char labels[64];
    pthread_t thread;
    bool started;

    /* Owned by the worker thread (the delivery callbacks run in it too, from rd_kafka_poll). */
    rd_kafka_t *rk;
    kfk_slot *win; /* events read and not yet acknowledged, by position */
    size_t win_len;
    size_t outstanding;     /* main-topic messages without a report */
    size_t dlq_outstanding; /* dead-letter-topic messages without a report */
    int64_t checkpoint;     /* saved; -1 when it must be loaded */
    int64_t done_pos;       /* everything at or below is acknowledged or dead */
    int64_t read_pos;       /* highest position read into the window */
    int64_t solo_until;     /* produce one at a time up to here (finding a refused event) */
    bool rewind;            /* a failure: purge, wait for every report, produce again */
    int64_t retry_at;       /* monotonic ms before which nothing is produced */
    bool leader;
    bool failing;      /* the last attempt failed */
    bool suspect_down; /* librdkafka said every broker is down: to be confirmed by a probe */
    bool brokers_down; /* confirmed; cleared by a delivery or a metadata answer */
    bool fatal;        /* the producer must be replaced */
    char reason[160];  /* of the last failure */
    int64_t next_lead_ms, next_status_ms, last_save_ms, next_probe_ms;
    breaker br;
    backoff bo;

    pthread_mutex_t lock; /* guards st */
    kfk_relay_status st;
} kfk_worker;

struct kfk_relay {
    kfk_options o;
    char *brokers, *topic_prefix, *client_id;
    es_store *events;
    const app_clock *clock;
    kfk_worker *workers;
    size_t n_workers;
    atomic_bool stopping;
    pthread_mutex_t lock; /* with stop_cv: interruptible sleeps */
    pthread_cond_t stop_cv;
};

/* ---- time ------------------------------------------------------------------------------- */

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_now(void *self)
{
    (void)self;
    return mono_ms();
}

/* The breaker measures its open time on this clock: wall-clock jumps must not shorten it. */
static const app_clock kfk_mono_clock = {mono_now, NULL};

/* "2026-11-28T15:00:00.123456Z" -> Unix ms; 0 when unreadable. */
static int64_t rfc3339_ms(const char *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *rest = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!rest)
        return 0;
    int64_t ms = (int64_t)timegm(&tm) * 1000;
    if (rest[0] == '.') {
        int64_t scale = 100;
        for (const char *p = rest + 1; *p >= '0' && *p <= '9' && scale > 0; p++, scale /= 10)
            ms += (*p - '0') * scale;
    }
    return ms;
}

static bool relay_stopping(kfk_relay *r)
{
    return atomic_load(&r->stopping);
}

/* Sleeps ms unless the relay stops first. */
static void relay_sleep(kfk_relay *r, int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&r->lock);
    while (!relay_stopping(r))
        if (pthread_cond_timedwait(&r->stop_cv, &r->lock, &until) != 0)
            break;
    pthread_mutex_unlock(&r->lock);
}

/* ---- the window ------------------------------------------------------------------------- */

static kfk_slot *win_find(kfk_worker *w, int64_t position)
{
    size_t lo = 0, hi = w->win_len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int64_t p = w->win[mid].ev.position;
        if (p == position)
            return &w->win[mid];
        if (p < position)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* The strings an es_event owns (es_event_list_free would also free the array). */
static void slot_free(kfk_slot *s)
{
    free(s->ev.stream_id);
    free(s->ev.type);
    free(s->ev.data);
    free(s->ev.metadata);
    memset(&s->ev, 0, sizeof s->ev);
    free(s->publish); /* a report that never came: the span is not exported */
    s->publish = NULL;
}

static void win_clear(kfk_worker *w)
{
    for (size_t i = 0; i < w->win_len; i++)
        slot_free(&w->win[i]);
    w->win_len = 0;
}

/* Drops the acknowledged (or dead) prefix; done_pos follows it. */
static void win_advance(kfk_worker *w)
{
    size_t n = 0;
    while (n < w->win_len && (w->win[n].state == SLOT_ACKED || w->win[n].state == SLOT_DEAD)) {
        w->done_pos = w->win[n].ev.position;
        slot_free(&w->win[n]);
        n++;
    }
    if (n == 0)
        return;
    memmove(w->win, w->win + n, (w->win_len - n) * sizeof *w->win);
    w->win_len -= n;
    if (w->win_len == 0 && w->read_pos > w->done_pos)
        w->done_pos = w->read_pos;
}

/* ---- status ----------------------------------------------------------------------------- */

static void status_update(kfk_worker *w, int64_t head)
{
    kfk_relay *r = w->relay;
    breaker_state bs = breaker_current(&w->br);
    bool degraded = w->leader && (bs != BREAKER_CLOSED || w->failing || w->brokers_down);
    int64_t lag_ms = 0;
    for (size_t i = 0; i < w->win_len; i++) {
        if (w->win[i].state != SLOT_ACKED && w->win[i].state != SLOT_DEAD) {
            int64_t at = rfc3339_ms(w->win[i].ev.recorded_at);
            int64_t now = r->clock->now_ms(r->clock->self);
            lag_ms = at > 0 && now > at ? now - at : 0;
            break;
        }
    }
    double lag_s = (double)lag_ms / 1000.0;
    pthread_mutex_lock(&w->lock);
    kfk_relay_status *st = &w->st;
    st->leader = w->leader;
    st->degraded = degraded;
    st->breaker = breaker_state_name(bs);
    if (!degraded)
        st->detail[0] = '\0';
    else if (bs != BREAKER_CLOSED)
        snprintf(st->detail, sizeof st->detail, "%.31s: breaker %s after: %.159s", w->context,
                 breaker_state_name(bs), w->reason);
    else
        snprintf(st->detail, sizeof st->detail, "%.31s: %.159s", w->context,
                 w->reason[0] ? w->reason : "brokers are down");
    if (w->leader)
        st->checkpoint = w->done_pos;
    if (head >= 0)
        st->head = head;
    st->lag_seconds = w->leader ? lag_s : 0;
    int64_t lag = st->head > st->checkpoint ? st->head - st->checkpoint : 0;
    pthread_mutex_unlock(&w->lock);

    metrics_gauge_set(M_LEADER, w->labels, w->leader ? 1 : 0);
    metrics_gauge_set(M_BREAKER, w->labels, (double)bs);
    if (w->leader) {
        metrics_gauge_set(M_CHECKPOINT, w->labels, (double)w->done_pos);
        metrics_gauge_set(M_LAG_EVENTS, w->labels, (double)lag);
        metrics_gauge_set(M_LAG_SECONDS, w->labels, lag_s);
    } else {
        metrics_gauge_set(M_LAG_EVENTS, w->labels, 0);
        metrics_gauge_set(M_LAG_SECONDS, w->labels, 0);
    }
}

static void count(kfk_worker *w, const char *metric, uint64_t *field)
{
    metrics_counter_add(metric, w->labels, 1);
    pthread_mutex_lock(&w->lock);
    (*field)++;
    pthread_mutex_unlock(&w->lock);
}

/* ---- failures --------------------------------------------------------------------------- */

/* Stops everything in flight so that it can be produced again, in order, from the first
 * event not acknowledged. Purged messages report back with _PURGE_* errors. The purge
 * blocks until librdkafka's broker threads have done it: left to finish in the background,
 * it could purge an event produced after the rewind ended, whose report then marks it failed
 * with no rewind left to produce it again, and the relay would stall on it for good. */
static void start_rewind(kfk_worker *w)
{
    if (w->rewind)
        return;
    w->rewind = true;
    if (w->rk)
        rd_kafka_purge(w->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
}

/* A transient failure (Kafka unreachable, not acknowledging): one per episode counts against
 * the breaker, and producing resumes after a backoff (or once the breaker lets a probe by). */
static void relay_failure(kfk_worker *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void relay_failure(kfk_worker *w, const char *fmt, ...)
{
    if (w->rewind)
        return;
    breaker_state before = breaker_current(&w->br);
    breaker_failure(&w->br);
    breaker_state after = breaker_current(&w->br);
    int delay = backoff_next(&w->bo);
    w->retry_at = mono_ms() + delay;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->reason, sizeof w->reason, fmt, ap);
    va_end(ap);
    if (!w->failing || after != before)
        log_warn("kafka relay %s: %s; retrying in %d ms (breaker %s)", w->context, w->reason, delay,
                 breaker_state_name(after));
    w->failing = true;
    start_rewind(w);
}

static void relay_success(kfk_worker *w)
{
    if (w->failing || w->brokers_down || breaker_current(&w->br) != BREAKER_CLOSED)
        log_info("kafka relay %s: the broker takes events again", w->context);
    breaker_success(&w->br);
    backoff_reset(&w->bo);
    w->failing = false;
    w->suspect_down = false;
    w->brokers_down = false;
    w->reason[0] = '\0';
}

/* ---- librdkafka callbacks (run inside rd_kafka_poll, in the worker thread) --------------- */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    kfk_worker *w = opaque;
    if (!msg->_private) { /* a dead-letter-topic message */
        if (w->dlq_outstanding > 0)
            w->dlq_outstanding--;
        if (msg->err)
            log_warn("kafka relay %s: dead-letter topic %s did not take a message: %s "
                     "(the dead_letters table has it)",
                     w->context, w->dlq_topic, rd_kafka_err2str(msg->err));
        return;
    }
    kfk_slot *s = win_find(w, (int64_t)(intptr_t)msg->_private);
    if (!s || s->state != SLOT_INFLIGHT)
        return;
    kfk_publish_span_end(&s->publish, msg);
    if (w->outstanding > 0)
        w->outstanding--;
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        s->state = SLOT_ACKED;
        count(w, M_DELIVERED, &w->st.delivered);
        relay_success(w);
        return;
    }
    s->err = msg->err;
    if (msg->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE ||
        msg->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT) {
        s->state = SLOT_FAILED; /* our own rewind */
        return;
    }
    if (kfk_error_permanent(msg->err)) {
        relay_success(w); /* the broker answered: it is up, this event is the problem */
        if (s->solo) {
            s->state = SLOT_REFUSED;
            return;
        }
        /* A refused batch fails all its messages: find the guilty one by producing alone. */
        s->state = SLOT_FAILED;
        int64_t last = w->win_len ? w->win[w->win_len - 1].ev.position : s->ev.position;
        if (last > w->solo_until)
            w->solo_until = last;
        log_info("kafka relay %s: a batch was refused (%s); producing one by one to find the "
                 "event",
                 w->context, rd_kafka_err2str(msg->err));
        start_rewind(w);
        return;
    }
    s->state = SLOT_FAILED;
    relay_failure(w, "delivery failed: %s", rd_kafka_err2str(msg->err));
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    kfk_worker *w = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[256];
        rd_kafka_resp_err_t e = rd_kafka_fatal_error(rk, why, sizeof why);
        log_warn("kafka relay %s: fatal producer error %s: %s; starting a new producer", w->context,
                 rd_kafka_err2name(e), why);
        w->fatal = true;
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        /* The report can be late (queued while the brokers were away): with events in flight
         * it counts as a failed attempt, when idle a metadata probe checks it first. */
        log_debug("kafka relay %s: %s", w->context, reason);
        if (w->outstanding > 0)
            relay_failure(w, "every broker is down");
        w->suspect_down = true;
        w->next_probe_ms = 0;
    }
}

/* ---- the producer ----------------------------------------------------------------------- */

/* Waits for every outstanding report after a purge (they come back at once). */
static void drain_purged(kfk_worker *w)
{
    int64_t until = mono_ms() + 5000;
    while ((w->outstanding > 0 || w->dlq_outstanding > 0) && mono_ms() < until)
        rd_kafka_poll(w->rk, 10);
}

static void producer_close(kfk_worker *w)
{
    if (!w->rk)
        return;
    rd_kafka_purge(w->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    drain_purged(w);
    rd_kafka_destroy(w->rk);
    w->rk = NULL;
    /* Reports that never came: those messages are unacknowledged, so produced again. */
    for (size_t i = 0; i < w->win_len; i++)
        if (w->win[i].state == SLOT_INFLIGHT || w->win[i].state == SLOT_FAILED)
            w->win[i].state = SLOT_PENDING;
    w->rewind = false;
    w->outstanding = 0;
    w->dlq_outstanding = 0;
    w->fatal = false;
}

static int producer_open(kfk_worker *w)
{
    app_error err = APP_ERROR_INIT;
    kfk_options o = w->relay->o;
    /* The window bounds what is in flight; librdkafka's own queue needs no more room. */
    int rc = kfk_producer_new(&w->rk, &o, on_delivery, on_error, w, &err);
    if (rc)
        log_error("kafka relay %s: %s: %s", w->context, err.message, err.detail);
    return rc;
}

/* ---- one step at a time ------------------------------------------------------------------ */

static void lose_leadership(kfk_worker *w)
{
    producer_close(w);
    win_clear(w);
    w->checkpoint = -1;
    w->rewind = false;
    w->solo_until = 0;
    w->failing = false;
    w->suspect_down = false;
    w->brokers_down = false;
    w->reason[0] = '\0';
    breaker_success(&w->br);
    backoff_reset(&w->bo);
}

static void check_leadership(kfk_worker *w)
{
    es_store *es = w->relay->events;
    app_error err = APP_ERROR_INIT;
    bool leads = false;
    if (es->ops->lead(es->self, w->context, KFK_RELAY_SUBSCRIBER, &leads, &err) < 0)
        leads = false; /* the lease cannot be confirmed: someone else may take it */
    if (leads && !w->leader)
        log_info("kafka relay %s: this process relays %s to %s", w->context, w->context, w->topic);
    if (!leads && w->leader) {
        log_warn("kafka relay %s: lost the relay lease%s%s; another process takes over", w->context,
                 err.code ? ": " : "", err.code ? err.detail : "");
        lose_leadership(w);
    }
    w->leader = leads;
}

/* Records refused events as dead letters: the table first (it is what redrive reads), then
 * the dead-letter topic. Returns false when the table cannot be written (retried later). */
static bool dead_letter(kfk_worker *w, kfk_slot *s)
{
    es_store *es = w->relay->events;
    app_error err = APP_ERROR_INIT;
    char reason[160];
    if (s->local && s->err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE)
        snprintf(reason, sizeof reason,
                 "MSG_SIZE_TOO_LARGE: larger than kafka.max_message_bytes (%d)",
                 w->relay->o.max_message_bytes);
    else
        snprintf(reason, sizeof reason, "%s: %s%s", rd_kafka_err2name(s->err),
                 rd_kafka_err2str(s->err), s->local ? " (refused before sending)" : "");
    if (es->ops->add_dead_letter(es->self, w->context, KFK_RELAY_SUBSCRIBER, s->ev.position,
                                 s->ev.event_id, reason, &err) < 0) {
        log_warn("kafka relay %s: could not record dead letter at %" PRId64 ": %s: %s", w->context,
                 s->ev.position, err.message, err.detail);
        return false;
    }
    rd_kafka_resp_err_t e = kfk_produce_event(w->rk, w->dlq_topic, &s->ev, reason,
                                              w->relay->o.max_message_bytes / 2, NULL, NULL);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
        w->dlq_outstanding++;
    else
        log_warn("kafka relay %s: dead-letter topic %s: %s (the dead_letters table has it)",
                 w->context, w->dlq_topic, rd_kafka_err2str(e));
    s->state = SLOT_DEAD;
    count(w, M_DEAD_LETTERED, &w->st.dead_lettered);
    log_warn("kafka relay %s: event %s (position %" PRId64 ", %s) dead-lettered: %s", w->context,
             s->ev.event_id, s->ev.position, s->ev.type, reason);
    return true;
}

static void handle_refused(kfk_worker *w)
{
    for (size_t i = 0; i < w->win_len; i++) {
        if (w->win[i].state == SLOT_REFUSED && !dead_letter(w, &w->win[i])) {
            w->retry_at = mono_ms() + backoff_next(&w->bo);
            return;
        }
    }
}

/* After a purge, once every report is in: everything not acknowledged goes again. */
static void finish_rewind(kfk_worker *w)
{
    if (!w->rewind || w->outstanding > 0)
        return;
    for (size_t i = 0; i < w->win_len; i++)
        if (w->win[i].state == SLOT_FAILED || w->win[i].state == SLOT_INFLIGHT)
            w->win[i].state = SLOT_PENDING;
    w->rewind = false;
}

static void check_timeouts(kfk_worker *w, int64_t now)
{
    if (w->outstanding == 0 || w->rewind)
        return;
    for (size_t i = 0; i < w->win_len; i++) {
        if (w->win[i].state != SLOT_INFLIGHT)
            continue;
        if (now - w->win[i].produced_ms >= w->relay->o.message_timeout_ms)
            relay_failure(w, "no acknowledgement within %d ms", w->relay->o.message_timeout_ms);
        return; /* the first in flight is the oldest */
    }
}

static void save_checkpoint(kfk_worker *w, int64_t now, bool force)
{
    if (w->done_pos <= w->checkpoint || (!force && now - w->last_save_ms < SAVE_EVERY_MS))
        return;
    es_store *es = w->relay->events;
    app_error err = APP_ERROR_INIT;
    if (es->ops->save_checkpoint(es->self, w->context, KFK_RELAY_SUBSCRIBER, w->done_pos, &err) ==
        0) {
        w->checkpoint = w->done_pos;
        w->last_save_ms = now;
    } else {
        /* Harmless: the events after the saved one are produced again after a restart. */
        log_warn("kafka relay %s: could not save the checkpoint: %s: %s", w->context, err.message,
                 err.detail);
        w->last_save_ms = now;
    }
}

static int fill_window(kfk_worker *w)
{
    size_t cap = (size_t)w->relay->o.batch_size;
    if (w->rewind || w->win_len >= cap || (w->win_len > 0 && cap - w->win_len < cap / 4))
        return 0;
    es_store *es = w->relay->events;
    es_event_list batch = {0};
    app_error err = APP_ERROR_INIT;
    if (es->ops->read_log(es->self, w->context, w->read_pos, cap - w->win_len, &batch, &err) < 0) {
        log_warn("kafka relay %s: could not read the log: %s: %s", w->context, err.message,
                 err.detail);
        return -1;
    }
    for (size_t i = 0; i < batch.len; i++) {
        kfk_slot *s = &w->win[w->win_len++];
        memset(s, 0, sizeof *s);
        s->ev = batch.items[i]; /* the strings move into the window */
        s->state = SLOT_PENDING;
        w->read_pos = s->ev.position;
    }
    free(batch.items);
    return (int)batch.len;
}

/* Produces pending events in position order, as the breaker and the solo search allow. */
static void produce_pending(kfk_worker *w, int64_t now)
{
    if (w->rewind || !w->rk || now < w->retry_at)
        return;
    size_t cap = (size_t)w->relay->o.batch_size;
    for (size_t i = 0; i < w->win_len; i++) {
        kfk_slot *s = &w->win[i];
        if (s->state != SLOT_PENDING)
            continue;
        bool solo = s->ev.position <= w->solo_until;
        breaker_state bs = breaker_current(&w->br);
        if ((solo || bs == BREAKER_HALF_OPEN) && w->outstanding > 0)
            return;
        if (w->outstanding >= cap || !breaker_allow(&w->br))
            return;
        s->solo = solo || bs == BREAKER_HALF_OPEN;
        free(s->publish); /* an earlier try's, whose report never came */
        s->publish = NULL;
        rd_kafka_resp_err_t e = kfk_produce_event(w->rk, w->topic, &s->ev, NULL, 0,
                                                  (void *)(intptr_t)s->ev.position, &s->publish);
        if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (s->attempts++ > 0)
                count(w, M_RETRIED, &w->st.retried);
            s->state = SLOT_INFLIGHT;
            s->produced_ms = now;
            w->outstanding++;
            if (s->solo)
                return;
            continue;
        }
        breaker_release(&w->br); /* this one did not go */
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            return;
        if (e == RD_KAFKA_RESP_ERR__FATAL) {
            w->fatal = true;
            return;
        }
        if (kfk_error_permanent(e)) { /* refused before it left: it is this event's fault */
            s->err = e;
            s->local = true;
            s->state = SLOT_REFUSED;
            continue;
        }
        relay_failure(w, "could not produce: %s", rd_kafka_err2str(e));
        return;
    }
}

/* Once the brokers were reported down and nothing is in flight to tell, asks for metadata:
 * an idle relay reports an outage only when it is confirmed, and stops when it is over. */
static void probe_brokers(kfk_worker *w, int64_t now)
{
    if (!(w->suspect_down || w->brokers_down) || w->outstanding > 0 || now < w->next_probe_ms ||
        !w->rk)
        return;
    w->next_probe_ms = now + w->relay->o.breaker_open_ms;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = rd_kafka_metadata(w->rk, 0, NULL, &md, METADATA_WAIT_MS);
    if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_metadata_destroy(md);
        if (w->brokers_down)
            log_info("kafka relay %s: the brokers answer again", w->context);
        w->suspect_down = w->brokers_down = false;
        if (w->reason[0] && !w->failing)
            w->reason[0] = '\0';
        return;
    }
    if (!w->brokers_down)
        log_warn("kafka relay %s: no broker answers: %s", w->context, rd_kafka_err2str(e));
    w->brokers_down = true;
    w->suspect_down = false;
    if (!w->failing)
        snprintf(w->reason, sizeof w->reason, "no broker answers: %s", rd_kafka_err2str(e));
}

static bool has_pending(const kfk_worker *w)
{
    for (size_t i = 0; i < w->win_len; i++)
        if (w->win[i].state == SLOT_PENDING || w->win[i].state == SLOT_REFUSED)
            return true;
    return false;
}

static void relay_step(kfk_worker *w)
{
    kfk_relay *r = w->relay;
    es_store *es = r->events;
    int64_t now = mono_ms();
    if (now >= w->next_lead_ms) {
        check_leadership(w);
        w->next_lead_ms = now + r->o.lead_interval_ms;
    }
    if (!w->leader) {
        status_update(w, -1);
        relay_sleep(r, r->o.lead_interval_ms);
        return;
    }
    if (w->fatal)
        producer_close(w);
    if (!w->rk && producer_open(w) != 0) {
        relay_sleep(r, backoff_next(&w->bo));
        return;
    }
    if (w->checkpoint < 0) {
        app_error err = APP_ERROR_INIT;
        int64_t cp = 0;
        if (es->ops->load_checkpoint(es->self, w->context, KFK_RELAY_SUBSCRIBER, &cp, &err) < 0) {
            log_warn("kafka relay %s: could not load the checkpoint: %s: %s", w->context,
                     err.message, err.detail);
            relay_sleep(r, backoff_next(&w->bo));
            return;
        }
        w->checkpoint = w->done_pos = w->read_pos = cp;
        w->last_save_ms = now;
    }

    rd_kafka_poll(w->rk, 0);
    handle_refused(w);
    check_timeouts(w, now);
    finish_rewind(w);
    win_advance(w);
    save_checkpoint(w, now, w->win_len == 0);
    int got = fill_window(w);
    produce_pending(w, mono_ms());
    probe_brokers(w, now);

    if (now >= w->next_status_ms) {
        int64_t head = -1;
        app_error err = APP_ERROR_INIT;
        if (es->ops->head_position(es->self, w->context, &head, &err) < 0)
            head = -1;
        status_update(w, head);
        w->next_status_ms = now + STATUS_EVERY_MS;
    }

    if (w->outstanding > 0 || w->dlq_outstanding > 0) {
        rd_kafka_poll(w->rk, POLL_BUSY_MS);
    } else if (has_pending(w) || w->rewind) {
        /* Held back by the backoff or the breaker. */
        int64_t wait = w->retry_at - mono_ms();
        int64_t open = breaker_wait_ms(&w->br);
        if (open > wait)
            wait = open;
        relay_sleep(r, wait < POLL_BUSY_MS    ? POLL_BUSY_MS
                       : wait > IDLE_SLICE_MS ? IDLE_SLICE_MS
                                              : wait);
        rd_kafka_poll(w->rk, 0);
    } else if (got <= 0) {
        int wait = r->o.poll_interval_ms < IDLE_SLICE_MS ? r->o.poll_interval_ms : IDLE_SLICE_MS;
        if (got < 0)
            relay_sleep(r, backoff_next(&w->bo));
        else
            es->ops->wait_for_append(es->self, w->context, w->read_pos, wait);
        rd_kafka_poll(w->rk, 0);
    }
}

/* At stop: a short wait for acknowledgements, then the checkpoint, then the lease. */
static void relay_finish(kfk_worker *w)
{
    es_store *es = w->relay->events;
    if (w->rk && w->leader) {
        int64_t until = mono_ms() + (w->relay->o.message_timeout_ms < STOP_GRACE_MS
                                         ? w->relay->o.message_timeout_ms
                                         : STOP_GRACE_MS);
        while ((w->outstanding > 0 || w->dlq_outstanding > 0) && mono_ms() < until) {
            rd_kafka_poll(w->rk, 50);
            handle_refused(w);
        }
        win_advance(w);
        save_checkpoint(w, mono_ms(), true);
    }
    producer_close(w);
    win_clear(w);
    if (w->leader)
        es->ops->resign(es->self, w->context, KFK_RELAY_SUBSCRIBER);
    w->leader = false;
    status_update(w, -1);
}

static void *relay_thread(void *arg)
{
    kfk_worker *w = arg;
    while (!relay_stopping(w->relay))
        relay_step(w);
    relay_finish(w);
    return NULL;
}

/* ---- life cycle --------------------------------------------------------------------------- */

int kfk_relay_new(kfk_relay **out, const kfk_relay_options *opts, app_error *err)
{
    *out = NULL;
    if (!opts->events || opts->n_contexts == 0)
        return app_error_set(err, APP_EINVAL, "kafka relay needs an event store and contexts");
    kfk_relay *r = calloc(1, sizeof *r);
    if (!r)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->stop_cv, NULL);
    atomic_init(&r->stopping, false);
    r->o = opts->kafka;
    r->events = opts->events;
    r->clock = opts->clock ? opts->clock : &app_system_clock;
    int rc = 0;
    r->brokers = strdup(opts->kafka.brokers ? opts->kafka.brokers : "");
    r->topic_prefix = strdup(opts->kafka.topic_prefix ? opts->kafka.topic_prefix : "");
    r->client_id = strdup(opts->kafka.client_id ? opts->kafka.client_id : "app");
    r->workers = calloc(opts->n_contexts, sizeof *r->workers);
    if (!r->brokers || !r->topic_prefix || !r->client_id || !r->workers) {
        rc = app_error_set(err, APP_ENOMEM, "out of memory");
        goto fail;
    }
    r->o.brokers = r->brokers;
    r->o.topic_prefix = r->topic_prefix;
    r->o.client_id = r->client_id;
    if (r->o.batch_size < 1)
        r->o.batch_size = 1;
    if (r->o.lead_interval_ms < 10)
        r->o.lead_interval_ms = 1000;
    if (r->o.poll_interval_ms < 1)
        r->o.poll_interval_ms = 500;
    if (r->o.message_timeout_ms < 1)
        r->o.message_timeout_ms = 10000;

    for (size_t i = 0; i < opts->n_contexts; i++) {
        kfk_worker *w = &r->workers[i];
        w->relay = r;
        r->n_workers++;
        pthread_mutex_init(&w->lock, NULL);
        if (strlen(opts->contexts[i]) >= sizeof w->context) {
            rc = app_error_set(err, APP_EINVAL, "context name is too long");
            goto fail;
        }
        snprintf(w->context, sizeof w->context, "%s", opts->contexts[i]);
        if ((rc = kfk_topic_name(w->topic, sizeof w->topic, r->topic_prefix, w->context, ".events",
                                 err)) < 0 ||
            (rc = kfk_topic_name(w->dlq_topic, sizeof w->dlq_topic, r->topic_prefix, w->context,
                                 ".events.dlq", err)) < 0)
            goto fail;
        snprintf(w->labels, sizeof w->labels, "context=\"%s\"", w->context);
        w->win = calloc((size_t)r->o.batch_size, sizeof *w->win);
        if (!w->win) {
            rc = app_error_set(err, APP_ENOMEM, "out of memory");
            goto fail;
        }
        w->checkpoint = -1;
        breaker_init(&w->br, &kfk_mono_clock, r->o.breaker_failure_threshold, r->o.breaker_open_ms);
        backoff_init(&w->bo, r->o.retry_backoff_ms, r->o.retry_backoff_max_ms, 0);
        snprintf(w->st.context, sizeof w->st.context, "%s", w->context);
        w->st.breaker = breaker_state_name(BREAKER_CLOSED);
    }

    metrics_declare(M_DELIVERED, METRIC_COUNTER, "Events the broker acknowledged, per context.");
    metrics_declare(M_RETRIED, METRIC_COUNTER,
                    "Events produced again after a failed or unacknowledged attempt.");
    metrics_declare(M_DEAD_LETTERED, METRIC_COUNTER,
                    "Events Kafka refused for good, sent to the dead letters.");
    metrics_declare(M_LAG_EVENTS, METRIC_GAUGE,
                    "Events in the context's log not yet acknowledged by Kafka.");
    metrics_declare(M_LAG_SECONDS, METRIC_GAUGE,
                    "Age of the oldest event not yet acknowledged by Kafka.");
    metrics_declare(M_LEADER, METRIC_GAUGE, "1 when this process relays the context.");
    metrics_declare(M_BREAKER, METRIC_GAUGE,
                    "Relay circuit breaker: 0 closed, 1 half-open, 2 open.");
    metrics_declare(M_CHECKPOINT, METRIC_GAUGE, "Highest position relayed or dead-lettered.");
    *out = r;
    return 0;
fail:
    kfk_relay_free(r);
    return rc;
}

int kfk_relay_start(kfk_relay *r, app_error *err)
{
    for (size_t i = 0; i < r->n_workers; i++) {
        kfk_worker *w = &r->workers[i];
        if (pthread_create(&w->thread, NULL, relay_thread, w) != 0) {
            kfk_relay_stop(r);
            return app_error_set(err, APP_EINTERNAL, "could not start the kafka relay of %s",
                                 w->context);
        }
        w->started = true;
    }
    return 0;
}

void kfk_relay_stop(kfk_relay *r)
{
    pthread_mutex_lock(&r->lock);
    atomic_store(&r->stopping, true);
    pthread_cond_broadcast(&r->stop_cv);
    pthread_mutex_unlock(&r->lock);
    for (size_t i = 0; i < r->n_workers; i++) {
        if (r->workers[i].started) {
            pthread_join(r->workers[i].thread, NULL);
            r->workers[i].started = false;
        }
    }
}

void kfk_relay_free(kfk_relay *r)
{
    if (!r)
        return;
    kfk_relay_stop(r);
    for (size_t i = 0; i < r->n_workers; i++) {
        win_clear(&r->workers[i]);
        free(r->workers[i].win);
        pthread_mutex_destroy(&r->workers[i].lock);
    }
    free(r->workers);
    free(r->brokers);
    free(r->topic_prefix);
    free(r->client_id);
    pthread_cond_destroy(&r->stop_cv);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

size_t kfk_relay_count(const kfk_relay *r)
{
    return r->n_workers;
}

void kfk_relay_status_of(kfk_relay *r, size_t i, kfk_relay_status *out)
{
    kfk_worker *w = &r->workers[i];
    pthread_mutex_lock(&w->lock);
    *out = w->st;
    pthread_mutex_unlock(&w->lock);
}

bool kfk_relay_healthy(kfk_relay *r, char *detail, size_t size)
{
    bool healthy = true;
    size_t used = 0;
    if (size > 0)
        detail[0] = '\0';
    for (size_t i = 0; i < r->n_workers; i++) {
        kfk_relay_status st;
        kfk_relay_status_of(r, i, &st);
        if (!st.degraded)
            continue;
        healthy = false;
        if (used < size) {
            int n = snprintf(detail + used, size - used, "%s%s", used ? "; " : "", st.detail);
            used += n > 0 ? (size_t)n : 0;
        }
    }
    return healthy;
}
