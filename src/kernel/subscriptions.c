/* One thread per subscriber: read a batch after the checkpoint, hand each event to the
 * handler, save the checkpoint, wait for a wake-up when there is nothing new. */
#include "kernel/subscriptions.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/deadline.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/text.h"
#include "core/trace.h"
#include "kernel/event_json.h"

#define SUB_LEAD_CHECK_MS  1000 /* how often a subscriber confirms it still runs here */
#define SUB_BACKOFF_MIN_MS 100
#define SUB_BACKOFF_MAX_MS 5000
#define SUB_MAX_LANES      64
#define SUB_DLQ_CHECK_MS   1000 /* how often a subscriber looks for redrive requests */
#define SUB_DLQ_BATCH      16   /* dead letters it looks at each time */
#define SUB_DLQ_ERROR_MAX  480  /* bytes of the handler's error kept with a dead letter */
#define SUB_KEY_MAX        256  /* bytes of a read-model key a projection names (read_key) */
#define SUB_SAVE_MS        200  /* longest a busy subscriber goes without saving its checkpoint */

typedef struct sub_worker {
    sub_runner *runner;
    const char *owner;
    const mod_subscription *sub; /* a subscriber, or */
    const mod_task *task;        /* a periodic task */
    pthread_t thread;
    bool started;
    pthread_mutex_t lock; /* guards the status fields below */
    int64_t checkpoint;
    int64_t head;
    bool failing;
    bool standby;       /* another process holds the lease */
    double lag_seconds; /* age of the oldest event not handled yet */
    bool rebuilding;
    /* A projection with read-model generations (opts.models): */
    rm_writer *writer; /* what its handler writes through */
    rs_store writer_port;
    int64_t generation;      /* the one it builds */
    bool building;           /* from the start of the log, not readable until caught up */
    bool adopting;           /* built by a replay; switched to once caught up */
    int64_t replaced;        /* the generation it replaces when adopting (0: none) */
    int64_t drop_generation; /* an old generation to delete at drop_at_ms (0: none) */
    int64_t drop_at_ms;
    int64_t synced_ms; /* when the control records were last read */
    /* The event the handler last failed on and how often, not counting a dependency that was
     * down: at max_attempts it goes to the dead letters. */
    int64_t poison_position;
    int poison_attempts;
    int64_t dlq_checked_ms; /* when redrive requests were last looked for */
    char checkpoint_name[160];
    char labels[160]; /* its metrics' labels: subscriber="<name>" */
} sub_worker;

struct sub_runner {
    sub_runner_options opts;
    sub_worker *workers; /* subscribers first, then tasks */
    size_t n_workers;
    size_t n_subscribers;
    pthread_mutex_t lock;
    pthread_cond_t stop_cond;
    bool stopping;
};

int sub_runner_new(sub_runner **out, const sub_runner_options *opts, app_error *err)
{
    *out = NULL;
    sub_runner *r = calloc(1, sizeof *r);
    if (!r)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    r->opts = *opts;
    if (r->opts.batch_size <= 0)
        r->opts.batch_size = 500;
    if (r->opts.poll_interval_ms <= 0)
        r->opts.poll_interval_ms = 500;
    if (r->opts.lanes < 1)
        r->opts.lanes = 1;
    if (r->opts.lanes > SUB_MAX_LANES)
        r->opts.lanes = SUB_MAX_LANES;
    if (r->opts.max_attempts <= 0)
        r->opts.max_attempts = 5;
    if (r->opts.backoff_min_ms <= 0)
        r->opts.backoff_min_ms = SUB_BACKOFF_MIN_MS;
    if (r->opts.backoff_max_ms < r->opts.backoff_min_ms)
        r->opts.backoff_max_ms = SUB_BACKOFF_MAX_MS > r->opts.backoff_min_ms
                                     ? SUB_BACKOFF_MAX_MS
                                     : r->opts.backoff_min_ms;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->stop_cond, NULL);
    metrics_declare("subscription_checkpoint", METRIC_GAUGE,
                    "Last log position a subscriber has fully handled.");
    metrics_declare("subscription_lag_events", METRIC_GAUGE,
                    "Events between the head of the log and a subscriber's checkpoint.");
    metrics_declare("subscription_lag_seconds", METRIC_GAUGE,
                    "Age of the oldest event a subscriber has not handled yet (0 when caught up).");
    metrics_declare("subscription_events_total", METRIC_COUNTER, "Events handled by a subscriber.");
    metrics_declare("subscription_leader", METRIC_GAUGE,
                    "1 in the process a subscriber runs in (holding its lease), else 0.");
    metrics_declare("subscription_failures_total", METRIC_COUNTER,
                    "Failed attempts of a subscriber (handler or dependency errors).");
    metrics_declare("subscription_dead_lettered_total", METRIC_COUNTER,
                    "Events a subscriber's handler failed on subscriptions.max_attempts times, "
                    "put in the dead letters.");
    metrics_declare("subscription_redriven_total", METRIC_COUNTER,
                    "Dead letters handed to their subscriber again (app dlq redrive) and handled.");
    *out = r;
    return 0;
}

static sub_worker *sub_runner_grow(sub_runner *r, app_error *err)
{
    sub_worker *grown = realloc(r->workers, (r->n_workers + 1) * sizeof *grown);
    if (!grown) {
        app_error_set(err, APP_ENOMEM, "out of memory");
        return NULL;
    }
    r->workers = grown;
    sub_worker *w = &r->workers[r->n_workers++];
    memset(w, 0, sizeof *w);
    w->runner = r;
    return w;
}

int sub_runner_add(sub_runner *r, const char *owner_context, const mod_subscription *sub,
                   app_error *err)
{
    if (r->n_workers != r->n_subscribers)
        return app_error_set(err, APP_EINTERNAL, "subscribers must be added before tasks");
    sub_worker *w = sub_runner_grow(r, err);
    if (!w)
        return err->code;
    w->owner = owner_context;
    w->sub = sub;
    snprintf(w->checkpoint_name, sizeof w->checkpoint_name, "%s", sub->name);
    char name[128];
    metrics_escape_label(sub->name, name, sizeof name);
    snprintf(w->labels, sizeof w->labels, "subscriber=\"%s\"", name);
    r->n_subscribers++;
    if (r->opts.models && rm_models_has(r->opts.models, sub->name)) {
        int rc = rm_writer_new(&w->writer, r->opts.models, sub->name, 0, false, err);
        if (rc != 0)
            return rc;
        w->writer_port = rm_writer_port(w->writer);
    }
    return 0;
}

int sub_runner_add_task(sub_runner *r, const char *owner_context, const mod_task *task,
                        app_error *err)
{
    if (task->interval_ms <= 0 || !task->run)
        return app_error_set(err, APP_EINTERNAL, "task %s needs an interval and a function",
                             task->name);
    sub_worker *w = sub_runner_grow(r, err);
    if (!w)
        return err->code;
    w->owner = owner_context;
    w->task = task;
    return 0;
}

static bool sub_stopping(sub_runner *r)
{
    pthread_mutex_lock(&r->lock);
    bool s = r->stopping;
    pthread_mutex_unlock(&r->lock);
    return s;
}

/* Sleeps up to ms unless the runner stops first. */
static void sub_sleep(sub_runner *r, int ms)
{
    struct timespec until;
    deadline_in_ms(CLOCK_REALTIME, ms, &until);
    pthread_mutex_lock(&r->lock);
    while (!r->stopping) {
        if (pthread_cond_timedwait(&r->stop_cond, &r->lock, &until) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&r->lock);
}

static void sub_set_status(sub_worker *w, int64_t checkpoint, int64_t head, bool failing)
{
    pthread_mutex_lock(&w->lock);
    if (checkpoint >= 0)
        w->checkpoint = checkpoint;
    if (head >= 0)
        w->head = head;
    w->failing = failing;
    int64_t cp = w->checkpoint, hd = w->head;
    pthread_mutex_unlock(&w->lock);

    metrics_gauge_set("subscription_checkpoint", w->labels, (double)cp);
    metrics_gauge_set("subscription_lag_events", w->labels, (double)(hd > cp ? hd - cp : 0));
}

/* Seconds since an RFC 3339 UTC time such as 2026-11-28T15:00:00.123456Z (0 if unreadable). */
static double sub_age_seconds(const char *recorded_at)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *rest = strptime(recorded_at, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!rest)
        return 0;
    double frac = *rest == '.' ? atof(rest) : 0;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    double age = (double)now.tv_sec + (double)now.tv_nsec / 1e9 - ((double)timegm(&tm) + frac);
    return age > 0 ? age : 0;
}

static void sub_set_lag(sub_worker *w, double seconds)
{
    pthread_mutex_lock(&w->lock);
    w->lag_seconds = seconds;
    pthread_mutex_unlock(&w->lock);
    metrics_gauge_set("subscription_lag_seconds", w->labels, seconds);
}

static void sub_failed(sub_worker *w, const char *what, const app_error *err, int *backoff_ms)
{
    metrics_counter_add("subscription_failures_total", w->labels, 1);
    log_warn("subscriber %s: %s: %s%s%s (retry in %d ms)", w->sub->name, what, err->message,
             err->detail[0] ? ": " : "", err->detail, *backoff_ms);
    sub_set_status(w, -1, -1, true);
    sub_sleep(w->runner, *backoff_ms);
    int most = w->runner->opts.backoff_max_ms;
    *backoff_ms = *backoff_ms * 2 > most ? most : *backoff_ms * 2;
}

static int64_t sub_elapsed_ms(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)(now.tv_sec - since->tv_sec) * 1000 + (now.tv_nsec - since->tv_nsec) / 1000000;
}

/* subscription_leader is 1 in the process a subscriber runs in; elsewhere its lag reads 0,
 * so that summing or taking the maximum over processes sees only the live figures. */
static void sub_set_leader(sub_worker *w, bool leads)
{
    metrics_gauge_set("subscription_leader", w->labels, leads ? 1 : 0);
    if (!leads) {
        metrics_gauge_set("subscription_lag_events", w->labels, 0);
        metrics_gauge_set("subscription_lag_seconds", w->labels, 0);
    }
}

/* When several processes share the database, each subscriber runs in one of them: the one
 * holding its lease. Confirmed at most once a second; a store without leases (tests) makes
 * every process the leader. */
static bool sub_still_leads(sub_worker *w, bool *leader, struct timespec *last)
{
    es_store *es = w->runner->opts.events;
    if (!es->ops->lead) {
        if (!*leader)
            sub_set_leader(w, true);
        *leader = true;
        return true;
    }
    if (*leader && sub_elapsed_ms(last) < SUB_LEAD_CHECK_MS)
        return true;
    bool leads = false;
    app_error err = APP_ERROR_INIT;
    if (es->ops->lead(es->self, w->owner, w->sub->name, &leads, &err) < 0)
        leads = false;
    clock_gettime(CLOCK_MONOTONIC, last);
    if (leads && !*leader)
        log_info("subscriber %s runs in this process", w->sub->name);
    else if (!leads && *leader)
        log_warn("subscriber %s lost its lease%s%s; another process takes over", w->sub->name,
                 err.code ? ": " : "", err.message);
    *leader = leads;
    sub_set_leader(w, leads);
    pthread_mutex_lock(&w->lock);
    w->standby = !leads;
    pthread_mutex_unlock(&w->lock);
    return leads;
}

static int64_t sub_now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static void sub_set_rebuilding(sub_worker *w, bool rebuilding)
{
    pthread_mutex_lock(&w->lock);
    w->rebuilding = rebuilding;
    pthread_mutex_unlock(&w->lock);
}

/* A projection follows the control records of its read model (read_models.h): the live
 * generation, one a replay built and announced, or none at all: the read store lost its
 * data (or is new), so a new generation is built from the start of the log. A change of
 * generation makes *checkpoint -1: each generation has its own. */
static int sub_sync_model(sub_worker *w, int64_t *checkpoint, app_error *err)
{
    rm_models *m = w->runner->opts.models;
    const char *name = w->sub->name;
    w->synced_ms = sub_now_ms();
    if (w->drop_generation && w->synced_ms >= w->drop_at_ms) {
        size_t deleted = 0;
        app_error derr = APP_ERROR_INIT;
        if (rm_drop(m, name, w->drop_generation, &deleted, &derr) == 0) {
            log_info("read model %s: generation %lld deleted (%zu keys)", name,
                     (long long)w->drop_generation, deleted);
            rm_forget_checkpoint(w->runner->opts.events, w->owner, name, w->drop_generation);
        } else
            log_warn("read model %s: could not delete generation %lld: %s", name,
                     (long long)w->drop_generation, derr.message);
        w->drop_generation = 0;
    }
    rm_control live;
    bool found;
    int rc = rm_control_load(m, name, &live, &found, err);
    if (rc != 0)
        return rc;
    if (!found) {
        /* Keys written before read models had generations are nobody's now. */
        size_t stale = 0;
        rc = rm_drop_unversioned(m, name, &stale, err);
        if (rc != 0)
            return rc;
        if (stale > 0)
            log_info("read model %s: %zu keys from before generations deleted", name, stale);
        /* Every generation it had is gone with them, whichever this process knew of (none,
         * when it started after the read store was emptied). */
        rm_forget_checkpoints(w->runner->opts.events, w->owner, name);
        live.generation = rm_new_generation(w->generation);
        live.building = true;
        rc = rm_control_save(m, name, &live, err);
        if (rc != 0)
            return rc;
        log_warn("read model %s is not in the read store (new, flushed or restarted empty): "
                 "building generation %lld from the event log",
                 name, (long long)live.generation);
    }
    rm_next next;
    bool announced;
    rc = rm_next_load(m, name, &next, &announced, err);
    if (rc != 0)
        return rc;
    bool adopting = announced && next.ready && next.generation != live.generation;
    int64_t target = adopting ? next.generation : live.generation;
    if (target != w->generation) {
        if (adopting)
            log_info("read model %s: taking over generation %lld that a replay built", name,
                     (long long)target);
        w->generation = target;
        rm_writer_set_generation(w->writer, target);
        rm_checkpoint_name(w->checkpoint_name, sizeof w->checkpoint_name, name, target);
        *checkpoint = -1;
    }
    w->adopting = adopting;
    w->replaced = adopting && !live.building ? live.generation : 0;
    w->building = live.building && !adopting;
    sub_set_rebuilding(w, w->building);
    return 0;
}

/* While a subscriber catches a generation up, nobody reads or writes it but the subscriber,
 * so its writes are buffered and sent once per batch; one built here from position 0 holds
 * nothing it did not write. */
static int sub_model_buffering(sub_worker *w, int64_t checkpoint, app_error *err)
{
    bool catching_up = w->building || w->adopting;
    return catching_up
               ? rm_writer_set_buffered(w->writer, true, w->building && checkpoint == 0, err)
               : rm_writer_set_batched(w->writer, err);
}

/* Caught up with the log: a generation being built or taken over becomes the live one. */
static int sub_model_caught_up(sub_worker *w, int64_t checkpoint, app_error *err)
{
    if (!w->writer || (!w->building && !w->adopting))
        return 0;
    rm_models *m = w->runner->opts.models;
    rm_control live = {w->generation, false};
    int rc = rm_control_save(m, w->sub->name, &live, err);
    if (rc == 0 && w->adopting)
        rc = rm_next_clear(m, w->sub->name, err);
    if (rc != 0)
        return rc;
    log_info("read model %s: generation %lld is live (caught up at position %lld)", w->sub->name,
             (long long)w->generation, (long long)checkpoint);
    if (w->replaced) {
        w->drop_generation = w->replaced; /* after readers have seen the switch */
        w->drop_at_ms = sub_now_ms() + RM_DROP_GRACE_MS;
    }
    w->building = w->adopting = false;
    w->replaced = 0;
    sub_set_rebuilding(w, false);
    return rm_writer_set_batched(w->writer, err);
}

/* Hands one event to the subscriber's handler, with the event's correlation as metadata. */
static int sub_handle(sub_worker *w, const es_event *ev, app_error *err)
{
    sub_runner *r = w->runner;
    bus_meta meta;
    event_bus_meta(ev, &meta);
    /* A span for the subscriber's handling, in the trace of the request that caused the
     * event: a saga's next step joins the placing request's trace. */
    trace_span span;
    trace_continue_tp(&span, "", TRACE_CONSUMER, meta.traceparent);
    trace_name(&span, "%s %s", w->sub->name, ev->type ? ev->type : "event");
    trace_ctx_format(&span.ctx, meta.traceparent);
    trace_ctx outer = trace_enter(&span);
    bus_ctx ctx = {.events = r->opts.events,
                   .reads = w->writer ? &w->writer_port : r->opts.reads,
                   .clock = r->opts.clock,
                   .bus = r->opts.bus,
                   .meta = &meta};
    int rc = w->sub->handle(&ctx, ev, err);
    if (span.recording) {
        trace_attr_str(&span, "app.subscriber", w->sub->name);
        trace_attr_str(&span, "app.event_id", ev->event_id);
        trace_attr_int(&span, "app.position", ev->position);
        if (rc != 0)
            trace_fail(&span, err->message);
    }
    trace_end(&span);
    trace_leave(&outer);
    return rc;
}

/* One lane of a batch handled by stream: the events whose stream hashes to it, in order,
 * up to its first failure. */
typedef struct sub_lane {
    sub_worker *w;
    const es_event_list *batch;
    bool *handled; /* per batch item, shared; each lane writes only its own items */
    size_t lane, n_lanes;
    size_t failed; /* index of its failed item, batch->len when none */
    app_error err;
    pthread_t thread;
    bool threaded; /* runs in thread; else on the subscriber's own thread */
} sub_lane;

static size_t sub_lane_of(const char *stream_id, size_t n_lanes)
{
    return text_fnv1a(stream_id) % n_lanes;
}

static void *sub_lane_main(void *arg)
{
    sub_lane *l = arg;
    const es_event_list *b = l->batch;
    for (size_t i = 0; i < b->len && !sub_stopping(l->w->runner); i++) {
        if (sub_lane_of(b->items[i].stream_id, l->n_lanes) != l->lane)
            continue;
        if (sub_handle(l->w, &b->items[i], &l->err) != 0) {
            l->failed = i;
            break;
        }
        l->handled[i] = true;
    }
    return NULL;
}

/* Handles a batch, by stream in lanes when the subscriber allows it. *done is the position
 * up to which every event is handled (the checkpoint may move there); on a failure returns
 * its code with err filled from the earliest failed event, which *failed points at (every
 * event before it is handled). */
static int sub_handle_batch(sub_worker *w, const es_event_list *batch, int64_t *done,
                            const es_event **failed, app_error *err)
{
    sub_runner *r = w->runner;
    *failed = NULL;
    size_t n_lanes = (w->sub->flags & MOD_SUB_BY_STREAM) ? (size_t)r->opts.lanes : 1;
    if (n_lanes > batch->len)
        n_lanes = batch->len;
    if (n_lanes <= 1) {
        for (size_t i = 0; i < batch->len && !sub_stopping(r); i++) {
            int rc = sub_handle(w, &batch->items[i], err);
            if (rc != 0) {
                *failed = &batch->items[i];
                return rc;
            }
            *done = batch->items[i].position;
            metrics_counter_add("subscription_events_total", w->labels, 1);
        }
        return 0;
    }
    bool *handled = calloc(batch->len, sizeof *handled);
    sub_lane *lanes = calloc(n_lanes, sizeof *lanes);
    if (!handled || !lanes) {
        free(handled);
        free(lanes);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    for (size_t l = 0; l < n_lanes; l++) {
        lanes[l] = (sub_lane){.w = w,
                              .batch = batch,
                              .handled = handled,
                              .lane = l,
                              .n_lanes = n_lanes,
                              .failed = batch->len};
        /* Lane 0 runs here; one that cannot get a thread runs here too, after it. */
        lanes[l].threaded =
            l > 0 && pthread_create(&lanes[l].thread, NULL, sub_lane_main, &lanes[l]) == 0;
    }
    for (size_t l = 0; l < n_lanes; l++) {
        if (lanes[l].threaded)
            pthread_join(lanes[l].thread, NULL);
        else
            sub_lane_main(&lanes[l]);
    }
    int rc = 0;
    size_t first_failed = batch->len;
    for (size_t l = 0; l < n_lanes; l++) {
        if (lanes[l].failed < first_failed) {
            first_failed = lanes[l].failed;
            *err = lanes[l].err;
            rc = err->code ? err->code : APP_EINTERNAL;
            *failed = &batch->items[first_failed];
        }
    }
    size_t n_handled = 0;
    for (size_t i = 0; i < batch->len; i++)
        n_handled += handled[i];
    metrics_counter_add("subscription_events_total", w->labels, (double)n_handled);
    for (size_t i = 0; i < batch->len && handled[i]; i++)
        *done = batch->items[i].position;
    free(handled);
    free(lanes);
    return rc;
}

/* ---- poison events and their redrive ------------------------------------------------------ */

/* A failure that says nothing about the event: a dependency down or busy, a conflict to retry,
 * memory. The subscriber waits and tries again, and never dead-letters for it. */
static bool sub_transient(int code)
{
    return code == APP_EUNAVAIL || code == APP_ENOMEM || code == APP_EVERSION ||
           code == APP_ERATELIMIT;
}

static void sub_error_text(const app_error *err, char *out, size_t size)
{
    snprintf(out, size, "%.160s%s%.300s",
             err->message[0] ? err->message : app_error_slug(err->code), err->detail[0] ? ": " : "",
             err->detail);
}

/* Counts a failure of the handler on ev; at max_attempts records ev in the dead letters of
 * context (the log it is in) and returns true: the subscriber may go past it. */
static bool sub_poisoned(sub_worker *w, const char *context, const es_event *ev,
                         const app_error *err)
{
    es_store *es = w->runner->opts.events;
    if (sub_transient(err->code) || !es->ops->add_dead_letter)
        return false;
    if (w->poison_position != ev->position) {
        w->poison_position = ev->position;
        w->poison_attempts = 0;
    }
    if (++w->poison_attempts < w->runner->opts.max_attempts)
        return false;
    char why[SUB_DLQ_ERROR_MAX];
    sub_error_text(err, why, sizeof why);
    app_error derr = APP_ERROR_INIT;
    if (es->ops->add_dead_letter(es->self, context, w->sub->name, ev->position, ev->event_id, why,
                                 &derr) != 0) {
        log_warn("subscriber %s: could not put event %s in the dead letters: %s", w->sub->name,
                 ev->event_id, derr.message);
        return false; /* tried again, and counted again, later */
    }
    metrics_counter_add("subscription_dead_lettered_total", w->labels, 1);
    log_error("subscriber %s: event %s (position %lld, %s) failed %d times; put in the dead "
              "letters of %s and skipped (app dlq list): %s",
              w->sub->name, ev->event_id, (long long)ev->position, ev->type ? ev->type : "?",
              w->poison_attempts, context, why);
    w->poison_attempts = 0;
    return true;
}

/* Hands the dead letter d (of context) to the handler again; forgets it when handled, else
 * records the new error (which also clears the request). */
static void sub_redrive_one(sub_worker *w, const char *context, const es_dead_letter *d)
{
    es_store *es = w->runner->opts.events;
    es_event_list one = {0};
    app_error err = APP_ERROR_INIT;
    int rc = es->ops->read_log(es->self, context, d->position - 1, 1, &one, &err);
    if (rc == 0 && (one.len != 1 || one.items[0].position != d->position ||
                    (d->event_id[0] && strcmp(one.items[0].event_id, d->event_id) != 0)))
        rc = app_error_set(&err, APP_ENOTFOUND, "the event at position %lld is not in the log",
                           (long long)d->position);
    if (rc == 0)
        rc = sub_handle(w, &one.items[0], &err);
    if (rc == 0 && w->writer)
        rc = rm_writer_flush(w->writer, &err);
    es_event_list_free(&one);
    app_error derr = APP_ERROR_INIT;
    if (rc == 0) {
        if (es->ops->remove_dead_letter(es->self, context, d->id, &derr) != 0)
            log_warn("subscriber %s: dead letter %s:%lld handled again, but not forgotten: %s",
                     w->sub->name, context, (long long)d->id, derr.message);
        metrics_counter_add("subscription_redriven_total", w->labels, 1);
        log_info("subscriber %s: dead letter %s:%lld (position %lld) handled again", w->sub->name,
                 context, (long long)d->id, (long long)d->position);
        return;
    }
    char why[SUB_DLQ_ERROR_MAX];
    sub_error_text(&err, why, sizeof why);
    if (es->ops->add_dead_letter(es->self, context, d->subscriber, d->position, d->event_id, why,
                                 &derr) != 0)
        log_warn("subscriber %s: could not record the redrive of %s:%lld: %s", w->sub->name,
                 context, (long long)d->id, derr.message);
    log_warn("subscriber %s: dead letter %s:%lld failed again: %s", w->sub->name, context,
             (long long)d->id, why);
}

/* Looks, at most once a second, for dead letters of this subscriber that `app dlq redrive`
 * asked to be delivered again, and delivers them. */
static void sub_redrive_requested(sub_worker *w, const char *context)
{
    es_store *es = w->runner->opts.events;
    if (!es->ops->list_dead_letters || !es->ops->request_redrive ||
        sub_now_ms() - w->dlq_checked_ms < SUB_DLQ_CHECK_MS)
        return;
    w->dlq_checked_ms = sub_now_ms();
    int64_t after = 0;
    for (;;) {
        es_dead_letter_list list = {0};
        app_error err = APP_ERROR_INIT;
        if (es->ops->list_dead_letters(es->self, context, w->sub->name, after, SUB_DLQ_BATCH, &list,
                                       &err) != 0)
            return; /* the log's own read reports the store being down */
        for (size_t i = 0; i < list.len && !sub_stopping(w->runner); i++) {
            after = list.items[i].id;
            if (list.items[i].redrive_requested)
                sub_redrive_one(w, context, &list.items[i]);
        }
        size_t got = list.len;
        es_dead_letter_list_free(&list);
        if (got < SUB_DLQ_BATCH)
            return;
    }
}

int sub_dead_letter_redrive(es_store *events, const char *context, const es_dead_letter *d,
                            int timeout_ms, char *reason, size_t size)
{
    app_error err = APP_ERROR_INIT;
    if (!events->ops->request_redrive ||
        events->ops->request_redrive(events->self, context, d->id, &err) != 0) {
        snprintf(reason, size, "could not ask for it: %s", err.message);
        return -1;
    }
    struct timespec started;
    clock_gettime(CLOCK_MONOTONIC, &started);
    do {
        struct timespec pause = {0, 100 * 1000000};
        nanosleep(&pause, NULL);
        es_dead_letter_list now = {0};
        if (events->ops->list_dead_letters(events->self, context, d->subscriber, d->id - 1, 1, &now,
                                           &err) != 0)
            continue; /* the store is away a moment: ask again */
        bool gone = now.len == 0 || now.items[0].id != d->id;
        bool failed = !gone && !now.items[0].redrive_requested;
        if (failed)
            snprintf(reason, size, "failed again: %s", now.items[0].error);
        es_dead_letter_list_free(&now);
        if (gone)
            return 0;
        if (failed)
            return -1;
    } while (sub_elapsed_ms(&started) < timeout_ms);
    snprintf(reason, size,
             "not handled within %d ms: is a process running subscriber %s? (still requested; "
             "it runs when one does)",
             timeout_ms, d->subscriber);
    return -1;
}

/* Reads the models a projection's batch will read, in one round trip: its handlers then
 * find them in the writer instead of asking the store one event at a time. A failure is
 * left to the handlers' own reads, which ask again and report it. */
static void sub_prefetch(sub_worker *w, const es_event_list *batch)
{
    if (!w->writer || !w->sub->read_key || batch->len < 2)
        return;
    char **keys = calloc(batch->len, sizeof *keys);
    size_t n = 0;
    for (size_t i = 0; keys && i < batch->len; i++) {
        char key[SUB_KEY_MAX];
        if (w->sub->read_key(&batch->items[i], key, sizeof key) && (keys[n] = strdup(key)))
            n++;
    }
    app_error err = APP_ERROR_INIT;
    if (n > 0 && rm_writer_prefetch(w->writer, (const char *const *)keys, n, &err) != 0)
        log_debug("%s: reading the batch's read models ahead failed (%s); each is read "
                  "as it is handled",
                  w->sub->name, err.message);
    for (size_t i = 0; i < n; i++)
        free(keys[i]);
    free(keys);
}

/* The checkpoint as stored, and when it was stored. */
typedef struct sub_saved {
    int64_t position;
    int64_t at_ms;
} sub_saved;

/* Stores the checkpoint; false (reported) when it could not. Events handled since the last
 * save are handled again after a restart, which idempotent handlers allow: the checkpoint
 * never runs ahead of what is handled, only behind it. */
static bool sub_save(sub_worker *w, int64_t checkpoint, sub_saved *saved, int *backoff_ms)
{
    es_store *es = w->runner->opts.events;
    app_error err = APP_ERROR_INIT;
    if (es->ops->save_checkpoint(es->self, w->owner, w->checkpoint_name, checkpoint, &err) != 0) {
        sub_failed(w, "could not save checkpoint", &err, backoff_ms);
        return false;
    }
    *saved = (sub_saved){checkpoint, sub_now_ms()};
    return true;
}

/* Caught up at checkpoint: waits for an append after it, or until a checkpoint not saved yet
 * is due (the next turn finds nothing new and saves it), or the poll interval. */
static void sub_wait(sub_worker *w, int64_t checkpoint, const sub_saved *saved)
{
    sub_runner *r = w->runner;
    es_store *es = r->opts.events;
    int64_t ms = r->opts.poll_interval_ms;
    if (checkpoint > saved->position) {
        int64_t due = saved->at_ms + SUB_SAVE_MS - sub_now_ms();
        ms = due < 1 ? 1 : due < ms ? due : ms;
    }
    if (es->ops->wait_for_append)
        es->ops->wait_for_append(es->self, w->sub->source_context, checkpoint, (int)ms);
    else
        sub_sleep(r, (int)ms);
}

/* The head of the log for the status, with a batch in hand: asked of the store at most every
 * SUB_LEAD_CHECK_MS, and in between at least the batch's last position. */
static int64_t sub_head(sub_worker *w, const char *source, const es_event_list *batch,
                        int64_t *asked_ms)
{
    es_store *es = w->runner->opts.events;
    int64_t head = batch->items[batch->len - 1].position, now = sub_now_ms();
    pthread_mutex_lock(&w->lock);
    if (w->head > head)
        head = w->head;
    pthread_mutex_unlock(&w->lock);
    if (now - *asked_ms >= SUB_LEAD_CHECK_MS) {
        app_error err = APP_ERROR_INIT;
        int64_t stored = -1;
        if (es->ops->head_position(es->self, source, &stored, &err) == 0 && stored > head)
            head = stored;
        *asked_ms = now;
    }
    return head;
}

static void *sub_thread(void *arg)
{
    sub_worker *w = arg;
    sub_runner *r = w->runner;
    es_store *es = r->opts.events;
    const char *source = w->sub->source_context;
    int backoff_ms = r->opts.backoff_min_ms;
    int64_t checkpoint = -1; /* handled up to here; -1: load it */
    sub_saved saved = {-1, 0};
    int64_t head_ms = 0;

    bool leader = false;
    struct timespec last_lead = {0, 0};
    while (!sub_stopping(r)) {
        app_error err = APP_ERROR_INIT;
        if (!sub_still_leads(w, &leader, &last_lead)) {
            checkpoint = -1; /* another process moves it meanwhile */
            sub_sleep(r, SUB_LEAD_CHECK_MS);
            continue;
        }
        if (w->writer && (checkpoint < 0 || sub_now_ms() - w->synced_ms >= SUB_LEAD_CHECK_MS) &&
            sub_sync_model(w, &checkpoint, &err) != 0) {
            sub_failed(w, "could not read the read model's control record", &err, &backoff_ms);
            continue;
        }
        if (checkpoint < 0) {
            if (es->ops->load_checkpoint(es->self, w->owner, w->checkpoint_name, &checkpoint,
                                         &err)) {
                checkpoint = -1;
                sub_failed(w, "could not load checkpoint", &err, &backoff_ms);
                continue;
            }
            if (w->writer && sub_model_buffering(w, checkpoint, &err) != 0) {
                checkpoint = -1;
                sub_failed(w, "could not write the read model", &err, &backoff_ms);
                continue;
            }
            saved = (sub_saved){checkpoint, sub_now_ms()};
            sub_set_status(w, checkpoint, -1, false);
        }

        sub_redrive_requested(w, source);

        es_event_list batch = {0};
        if (es->ops->read_log(es->self, source, checkpoint, (size_t)r->opts.batch_size, &batch,
                              &err)) {
            sub_failed(w, "could not read the log", &err, &backoff_ms);
            continue;
        }
        sub_set_lag(w, batch.len ? sub_age_seconds(batch.items[0].recorded_at) : 0);
        if (batch.len == 0) {
            es_event_list_free(&batch);
            if (checkpoint > saved.position && sub_now_ms() - saved.at_ms >= SUB_SAVE_MS &&
                !sub_save(w, checkpoint, &saved, &backoff_ms)) {
                checkpoint = -1;
                continue;
            }
            if (sub_model_caught_up(w, checkpoint, &err) != 0) {
                sub_failed(w, "could not switch to the new read model", &err, &backoff_ms);
                continue;
            }
            /* Nothing committed after it: the head of the log is the checkpoint. */
            sub_set_status(w, checkpoint, checkpoint, false);
            sub_wait(w, checkpoint, &saved);
            continue;
        }
        sub_set_status(w, -1, sub_head(w, source, &batch, &head_ms), false);

        sub_prefetch(w, &batch);
        int64_t done = checkpoint;
        const es_event *failed = NULL;
        int rc = sub_handle_batch(w, &batch, &done, &failed, &err);
        /* A poison event: every event before it is handled, so once it is in the dead letters
         * the checkpoint may move past it (later ones other lanes handled already are handled
         * again: handlers are idempotent). */
        bool skipped = rc != 0 && failed && sub_poisoned(w, source, failed, &err);
        if (skipped) {
            done = failed->position;
            rc = 0;
        }
        /* All of a short read handled: caught up with the log a moment ago. */
        bool short_read = !skipped && batch.len < (size_t)r->opts.batch_size &&
                          done == batch.items[batch.len - 1].position;
        es_event_list_free(&batch);
        if (w->writer && done > checkpoint) {
            app_error ferr = APP_ERROR_INIT;
            if (rm_writer_flush(w->writer, &ferr) != 0) {
                /* Kept and sent with the next batch; the checkpoint stays below them. */
                sub_failed(w, "could not write the read model", &ferr, &backoff_ms);
                continue;
            }
        }

        if (done > checkpoint) {
            checkpoint = done;
            sub_set_status(w, checkpoint, -1, rc != 0);
        }
        /* Saved now when a failure, a skip or a new read model makes it worth keeping, else
         * at most every SUB_SAVE_MS while events keep coming, and when they stop. */
        bool due = rc != 0 || skipped || (short_read && (w->building || w->adopting)) ||
                   sub_now_ms() - saved.at_ms >= SUB_SAVE_MS;
        if (due && checkpoint > saved.position && !sub_save(w, checkpoint, &saved, &backoff_ms)) {
            checkpoint = -1;
            continue;
        }
        if (rc != 0) {
            sub_failed(w, "handler failed", &err, &backoff_ms);
            continue;
        }
        if (short_read && sub_model_caught_up(w, checkpoint, &err) != 0) {
            sub_failed(w, "could not switch to the new read model", &err, &backoff_ms);
            continue;
        }
        backoff_ms = r->opts.backoff_min_ms;
        if (short_read)
            sub_wait(w, checkpoint, &saved); /* rather than read again to find nothing */
    }
    if (leader && checkpoint > saved.position)
        sub_save(w, checkpoint, &saved, &backoff_ms); /* what it handled, for the next start */
    if (leader && es->ops->resign)
        es->ops->resign(es->self, w->owner, w->sub->name); /* the next process starts now */
    return NULL;
}

/* A periodic task: sleep, run, log a failure, again, until the runner stops. */
static void *task_thread(void *arg)
{
    sub_worker *w = arg;
    sub_runner *r = w->runner;
    while (!sub_stopping(r)) {
        sub_sleep(r, w->task->interval_ms);
        if (sub_stopping(r))
            break;
        bus_meta meta;
        bus_meta_init(&meta, NULL, NULL);
        snprintf(meta.actor, sizeof meta.actor, "task");
        bus_ctx ctx = {.events = r->opts.events,
                       .reads = r->opts.reads,
                       .clock = r->opts.clock,
                       .bus = r->opts.bus,
                       .meta = &meta,
                       .context = w->owner};
        app_error err = APP_ERROR_INIT;
        if (w->task->run(&ctx, &err) != 0)
            log_warn("task %s failed: %s%s%s", w->task->name, err.message,
                     err.detail[0] ? ": " : "", err.detail);
    }
    return NULL;
}

int sub_runner_start(sub_runner *r, app_error *err)
{
    for (size_t i = 0; i < r->n_workers; i++) {
        sub_worker *w = &r->workers[i];
        pthread_mutex_init(&w->lock, NULL);
        if (pthread_create(&w->thread, NULL, w->task ? task_thread : sub_thread, w) != 0) {
            pthread_mutex_destroy(&w->lock);
            sub_runner_stop(r);
            return app_error_set(err, APP_EINTERNAL, "could not start %s",
                                 w->task ? w->task->name : w->sub->name);
        }
        w->started = true;
    }
    return 0;
}

void sub_runner_stop(sub_runner *r)
{
    pthread_mutex_lock(&r->lock);
    r->stopping = true;
    pthread_cond_broadcast(&r->stop_cond);
    pthread_mutex_unlock(&r->lock);
    for (size_t i = 0; i < r->n_workers; i++) {
        sub_worker *w = &r->workers[i];
        if (w->started) {
            pthread_join(w->thread, NULL);
            pthread_mutex_destroy(&w->lock);
            w->started = false;
        }
    }
}

void sub_runner_free(sub_runner *r)
{
    if (!r)
        return;
    sub_runner_stop(r);
    pthread_cond_destroy(&r->stop_cond);
    pthread_mutex_destroy(&r->lock);
    for (size_t i = 0; i < r->n_workers; i++)
        rm_writer_free(r->workers[i].writer);
    free(r->workers);
    free(r);
}

size_t sub_runner_count(const sub_runner *r)
{
    return r->n_subscribers;
}

void sub_runner_status(sub_runner *r, size_t i, sub_status *out)
{
    sub_worker *w = &r->workers[i];
    out->name = w->sub->name;
    pthread_mutex_lock(&w->lock);
    out->checkpoint = w->checkpoint;
    out->head = w->head;
    out->failing = w->failing;
    out->standby = w->standby;
    out->lag_seconds = w->lag_seconds;
    out->rebuilding = w->rebuilding;
    pthread_mutex_unlock(&w->lock);
}
