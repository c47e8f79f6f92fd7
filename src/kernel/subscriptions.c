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

#define SUB_LEAD_CHECK_MS  1000 /* how often a subscriber confirms it still runs here */
#define SUB_BACKOFF_MIN_MS 100
#define SUB_BACKOFF_MAX_MS 5000

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
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->stop_cond, NULL);
    metrics_declare("subscription_checkpoint", METRIC_GAUGE,
                    "Last log position a subscriber has fully handled.");
    metrics_declare("subscription_lag_events", METRIC_GAUGE,
                    "Events between the head of the log and a subscriber's checkpoint.");
    metrics_declare("subscription_lag_seconds", METRIC_GAUGE,
                    "Age of the oldest event a subscriber has not handled yet (0 when caught up).");
    metrics_declare("subscription_events_total", METRIC_COUNTER, "Events handled by a subscriber.");
    metrics_declare("subscription_failures_total", METRIC_COUNTER,
                    "Failed attempts of a subscriber (handler or dependency errors).");
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
    r->n_subscribers++;
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

    char name[128], labels[160];
    metrics_escape_label(w->sub->name, name, sizeof name);
    snprintf(labels, sizeof labels, "subscriber=\"%s\"", name);
    metrics_gauge_set("subscription_checkpoint", labels, (double)cp);
    metrics_gauge_set("subscription_lag_events", labels, (double)(hd > cp ? hd - cp : 0));
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
    char name[128], labels[160];
    metrics_escape_label(w->sub->name, name, sizeof name);
    snprintf(labels, sizeof labels, "subscriber=\"%s\"", name);
    metrics_gauge_set("subscription_lag_seconds", labels, seconds);
}

/* The event's correlation id carries on; the event itself is the cause of what follows. */
static void sub_event_meta(const es_event *ev, bus_meta *meta)
{
    const char *correlation = NULL;
    cJSON *md = cJSON_Parse(ev->metadata ? ev->metadata : "{}");
    if (md) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(md, "correlationId");
        if (cJSON_IsString(c))
            correlation = c->valuestring;
    }
    bus_meta_init(meta, correlation, ev->event_id);
    snprintf(meta->actor, sizeof meta->actor, "subscriber");
    cJSON_Delete(md);
}

static void sub_failed(sub_worker *w, const char *what, const app_error *err, int *backoff_ms)
{
    char name[128], labels[160];
    metrics_escape_label(w->sub->name, name, sizeof name);
    snprintf(labels, sizeof labels, "subscriber=\"%s\"", name);
    metrics_counter_add("subscription_failures_total", labels, 1);
    log_warn("subscriber %s: %s: %s%s%s (retry in %d ms)", w->sub->name, what, err->message,
             err->detail[0] ? ": " : "", err->detail, *backoff_ms);
    sub_set_status(w, -1, -1, true);
    sub_sleep(w->runner, *backoff_ms);
    *backoff_ms = *backoff_ms * 2 > SUB_BACKOFF_MAX_MS ? SUB_BACKOFF_MAX_MS : *backoff_ms * 2;
}

static int64_t sub_elapsed_ms(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)(now.tv_sec - since->tv_sec) * 1000 + (now.tv_nsec - since->tv_nsec) / 1000000;
}

/* When several processes share the database, each subscriber runs in one of them: the one
 * holding its lease. Confirmed at most once a second; a store without leases (tests) makes
 * every process the leader. */
static bool sub_still_leads(sub_worker *w, bool *leader, struct timespec *last)
{
    es_store *es = w->runner->opts.events;
    if (!es->ops->lead)
        return true;
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
    pthread_mutex_lock(&w->lock);
    w->standby = !leads;
    pthread_mutex_unlock(&w->lock);
    return leads;
}

static void *sub_thread(void *arg)
{
    sub_worker *w = arg;
    sub_runner *r = w->runner;
    es_store *es = r->opts.events;
    const char *source = w->sub->source_context;
    int backoff_ms = SUB_BACKOFF_MIN_MS;
    int64_t checkpoint = -1;
    char labels[160], name[128];
    metrics_escape_label(w->sub->name, name, sizeof name);
    snprintf(labels, sizeof labels, "subscriber=\"%s\"", name);

    bool leader = false;
    struct timespec last_lead = {0, 0};
    while (!sub_stopping(r)) {
        app_error err = APP_ERROR_INIT;
        if (!sub_still_leads(w, &leader, &last_lead)) {
            checkpoint = -1; /* another process moves it meanwhile */
            sub_sleep(r, SUB_LEAD_CHECK_MS);
            continue;
        }
        if (checkpoint < 0) {
            if (es->ops->load_checkpoint(es->self, w->owner, w->sub->name, &checkpoint, &err)) {
                checkpoint = -1;
                sub_failed(w, "could not load checkpoint", &err, &backoff_ms);
                continue;
            }
            sub_set_status(w, checkpoint, -1, false);
        }

        es_event_list batch = {0};
        if (es->ops->read_log(es->self, source, checkpoint, (size_t)r->opts.batch_size, &batch,
                              &err)) {
            sub_failed(w, "could not read the log", &err, &backoff_ms);
            continue;
        }
        int64_t head = -1;
        if (es->ops->head_position(es->self, source, &head, &err) != 0)
            head = -1;
        sub_set_lag(w, batch.len ? sub_age_seconds(batch.items[0].recorded_at) : 0);
        if (batch.len == 0) {
            es_event_list_free(&batch);
            sub_set_status(w, checkpoint, head, false);
            es->ops->wait_for_append(es->self, source, checkpoint, r->opts.poll_interval_ms);
            continue;
        }
        sub_set_status(w, -1, head, false);

        int64_t done = checkpoint;
        int rc = 0;
        for (size_t i = 0; i < batch.len && !sub_stopping(r); i++) {
            bus_meta meta;
            sub_event_meta(&batch.items[i], &meta);
            bus_ctx ctx = {es, r->opts.reads, r->opts.clock, r->opts.bus, &meta};
            rc = w->sub->handle(&ctx, &batch.items[i], &err);
            if (rc != 0)
                break;
            done = batch.items[i].position;
            metrics_counter_add("subscription_events_total", labels, 1);
        }
        es_event_list_free(&batch);

        if (done > checkpoint) {
            app_error cerr = APP_ERROR_INIT;
            if (es->ops->save_checkpoint(es->self, w->owner, w->sub->name, done, &cerr) == 0) {
                checkpoint = done;
                sub_set_status(w, checkpoint, -1, rc != 0);
            } else {
                /* The effects are idempotent, so handling them again later is harmless. */
                sub_failed(w, "could not save checkpoint", &cerr, &backoff_ms);
                checkpoint = -1;
                continue;
            }
        }
        if (rc != 0) {
            sub_failed(w, "handler failed", &err, &backoff_ms);
            continue;
        }
        backoff_ms = SUB_BACKOFF_MIN_MS;
    }
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
        bus_ctx ctx = {r->opts.events, r->opts.reads, r->opts.clock, r->opts.bus, &meta};
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
    pthread_mutex_unlock(&w->lock);
}
