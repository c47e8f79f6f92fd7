/* Rebuilds read models into new generations and switches to them (see replay.h). */
#include "kernel/replay.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernel/event_json.h"

#define REPLAY_POLL_MS     200
#define REPLAY_PROGRESS_MS 250  /* progress line refresh on a terminal */
#define REPLAY_LOG_MS      2000 /* progress line interval otherwise */

typedef struct replay_run_state {
    const replay_options *o;
    const replay_target *t;
    rm_writer *writer;
    char checkpoint_name[160];
    int64_t position; /* everything up to it is in the generation */
    int64_t head;
    int64_t start_position;
    size_t events;
    struct timespec started;
    int64_t printed_ms;
} replay_run_state;

static int64_t replay_elapsed_ms(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)(now.tv_sec - since->tv_sec) * 1000 + (now.tv_nsec - since->tv_nsec) / 1000000;
}

static void replay_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* "<done> events, <percent>%, <rate> events/s, <left> s left", at most every interval. */
static void replay_progress(replay_run_state *st, bool final)
{
    const replay_options *o = st->o;
    if (!o->out)
        return;
    int64_t ms = replay_elapsed_ms(&st->started);
    int interval = o->tty ? REPLAY_PROGRESS_MS : REPLAY_LOG_MS;
    if (!final && ms - st->printed_ms < interval)
        return;
    st->printed_ms = ms;
    double seconds = (double)ms / 1000.0;
    double rate = seconds > 0 ? (double)st->events / seconds : 0;
    int64_t span = st->head - st->start_position;
    int64_t done = st->position - st->start_position;
    double percent = span > 0 ? 100.0 * (double)done / (double)span : 100.0;
    if (percent > 100.0)
        percent = 100.0;
    double left = done > 0 && st->head > st->position
                      ? seconds * (double)(st->head - st->position) / (double)done
                      : 0;
    if (final) {
        fprintf(o->out, "%s%s: %zu events replayed in %.2f s (%.0f events/s)\n",
                o->tty ? "\r\033[K" : "", st->t->sub->name, st->events, seconds, rate);
    } else {
        fprintf(o->out, "%s%s: %zu events, %.0f%%, %.0f events/s, %.1f s left%s",
                o->tty ? "\r\033[K" : "", st->t->sub->name, st->events, percent, rate, left,
                o->tty ? "" : "\n");
    }
    fflush(o->out);
}

/* Hands the log after st->position to the projection until a read comes back short. */
static int replay_catch_up(replay_run_state *st, app_error *err)
{
    const replay_options *o = st->o;
    es_store *es = o->events;
    const char *source = st->t->sub->source_context;
    rs_store reads = rm_writer_port(st->writer);
    for (;;) {
        int rc = es->ops->head_position(es->self, source, &st->head, err);
        es_event_list batch = {0};
        if (rc == 0)
            rc = es->ops->read_log(es->self, source, st->position, (size_t)o->batch_size, &batch,
                                   err);
        if (rc != 0)
            return rc;
        int64_t done = st->position;
        for (size_t i = 0; rc == 0 && i < batch.len; i++) {
            bus_meta meta;
            event_bus_meta(&batch.items[i], &meta);
            bus_ctx ctx = {.events = es, .reads = &reads, .clock = o->clock, .meta = &meta};
            rc = st->t->sub->handle(&ctx, &batch.items[i], err);
            if (rc == 0) {
                done = batch.items[i].position;
                st->events++;
            }
        }
        size_t got = batch.len;
        es_event_list_free(&batch);
        if (rc == 0)
            rc = rm_writer_flush(st->writer, err);
        if (rc == 0 && done > st->position)
            rc = es->ops->save_checkpoint(es->self, st->t->owner, st->checkpoint_name, done, err);
        if (rc != 0)
            return rc;
        st->position = done;
        replay_progress(st, false);
        if (got < (size_t)o->batch_size)
            return 0;
    }
}

/* Whether the running service has made generation the live one of projection name. */
static int replay_switched(const replay_options *o, const char *name, int64_t generation,
                           bool *switched, app_error *err)
{
    rm_control live;
    bool found;
    *switched = false;
    int rc = rm_control_load(o->models, name, &live, &found, err);
    if (rc == 0 && found && live.generation == generation && !live.building) {
        *switched = true;
        if (o->out)
            fprintf(o->out, "%s: the service switched to generation %lld\n", name,
                    (long long)generation);
    }
    return rc;
}

/* Generation is built and announced: the process that runs the projection switches to it;
 * when none does, the replay catches it up and switches itself. */
static int replay_switch(replay_run_state *st, int64_t generation, app_error *err)
{
    const replay_options *o = st->o;
    es_store *es = o->events;
    const char *name = st->t->sub->name;
    bool leads = false;
    int rc = es->ops->lead ? es->ops->lead(es->self, st->t->owner, name, &leads, err) : 0;
    if (rc != 0)
        return rc;
    if (!es->ops->lead)
        leads = true; /* a store without leases: nobody else can be running it */
    if (leads) {
        rm_control live;
        bool found;
        rc = rm_control_load(o->models, name, &live, &found, err);
        if (rc == 0 && st->position == 0)
            rc = es->ops->load_checkpoint(es->self, st->t->owner, st->checkpoint_name,
                                          &st->position, err);
        if (rc == 0)
            rc = replay_catch_up(st, err);
        rm_control next_live = {generation, false};
        if (rc == 0)
            rc = rm_control_save(o->models, name, &next_live, err);
        if (rc == 0)
            rc = rm_next_clear(o->models, name, err);
        if (es->ops->resign)
            es->ops->resign(es->self, st->t->owner, name);
        if (rc != 0)
            return rc;
        if (o->out)
            fprintf(o->out, "%s: no running process has it; switched to generation %lld\n", name,
                    (long long)generation);
        if (found && live.generation != generation) {
            replay_sleep_ms(RM_DROP_GRACE_MS); /* readers in other processes see the switch */
            size_t deleted = 0;
            rc = rm_drop(o->models, name, live.generation, &deleted, err);
            if (rc == 0)
                rm_forget_checkpoint(o->events, st->t->owner, name, live.generation);
            if (rc == 0 && o->out)
                fprintf(o->out, "%s: generation %lld deleted (%zu keys)\n", name,
                        (long long)live.generation, deleted);
        }
        return rc;
    }
    if (o->out)
        fprintf(o->out, "%s: waiting for the running service to switch to generation %lld\n", name,
                (long long)generation);
    struct timespec since;
    clock_gettime(CLOCK_MONOTONIC, &since);
    for (;;) {
        bool switched;
        rc = replay_switched(o, name, generation, &switched, err);
        if (rc != 0 || switched)
            return rc;
        rm_next next;
        bool announced;
        rc = rm_next_load(o->models, name, &next, &announced, err);
        if (rc != 0)
            return rc;
        /* The service makes the generation live, then withdraws the announcement: one that
         * is gone may have switched between the two reads, so look again before failing. */
        if (!announced || next.generation != generation) {
            rc = replay_switched(o, name, generation, &switched, err);
            if (rc != 0 || switched)
                return rc;
            return app_error_set(err, APP_ECONFLICT,
                                 "%s: generation %lld is no longer announced (the read store "
                                 "lost its data, or another replay replaced it); run the "
                                 "replay again",
                                 name, (long long)generation);
        }
        if (replay_elapsed_ms(&since) > o->switch_wait_ms)
            return app_error_set(err, APP_EUNAVAIL,
                                 "%s: the running service did not switch to generation %lld "
                                 "within %d ms; it stays announced and is taken over when the "
                                 "projection runs",
                                 name, (long long)generation, o->switch_wait_ms);
        replay_sleep_ms(REPLAY_POLL_MS);
    }
}

static int replay_one(const replay_options *o, const replay_target *t, app_error *err)
{
    const char *name = t->sub->name;
    replay_run_state st = {.o = o, .t = t};
    clock_gettime(CLOCK_MONOTONIC, &st.started);

    rm_control live;
    bool has_live;
    rm_next old;
    bool has_old;
    int rc = rm_control_load(o->models, name, &live, &has_live, err);
    if (rc == 0)
        rc = rm_next_load(o->models, name, &old, &has_old, err);
    if (rc != 0)
        return rc;
    if (has_old && old.ready && !(has_live && old.generation == live.generation)) {
        /* A finished replay nobody switched to yet: complete that switch first. */
        rc = rm_writer_new(&st.writer, o->models, name, old.generation, false, err);
        rm_checkpoint_name(st.checkpoint_name, sizeof st.checkpoint_name, name, old.generation);
        if (rc == 0)
            rc = replay_switch(&st, old.generation, err);
        rm_writer_free(st.writer);
        if (rc != 0)
            return rc;
        return replay_one(o, t, err);
    }
    if (has_old && !old.ready) {
        size_t deleted = 0;
        rc = rm_drop(o->models, name, old.generation, &deleted, err);
        if (rc != 0)
            return rc;
        rm_forget_checkpoint(o->events, t->owner, name, old.generation);
        if (o->out)
            fprintf(o->out, "%s: removed generation %lld of an unfinished replay (%zu keys)\n",
                    name, (long long)old.generation, deleted);
    }

    int64_t after = has_live ? live.generation : 0;
    if (has_old && old.generation > after)
        after = old.generation;
    int64_t generation = rm_new_generation(after);
    rm_next next = {generation, false};
    rc = rm_next_save(o->models, name, &next, err);
    if (rc == 0)
        rc = rm_writer_new(&st.writer, o->models, name, generation, true, err);
    if (rc != 0)
        return rc;
    rm_checkpoint_name(st.checkpoint_name, sizeof st.checkpoint_name, name, generation);
    if (o->out)
        fprintf(o->out, "%s: building generation %lld from the %s log\n", name,
                (long long)generation, t->sub->source_context);
    rc = replay_catch_up(&st, err);
    if (rc == 0) {
        replay_progress(&st, true);
        rm_next still;
        bool announced;
        rc = rm_next_load(o->models, name, &still, &announced, err);
        if (rc == 0 && (!announced || still.generation != generation))
            rc = app_error_set(err, APP_ECONFLICT,
                               "%s: the read store lost generation %lld while it was built "
                               "(flushed or restarted empty?); run the replay again",
                               name, (long long)generation);
    }
    if (rc == 0) {
        next.ready = true; /* from here on, this process writes nothing into it */
        rc = rm_next_save(o->models, name, &next, err);
    }
    if (rc == 0)
        rc = replay_switch(&st, generation, err);
    rm_writer_free(st.writer);
    return rc;
}

int replay_run(const replay_options *opts, app_error *err)
{
    replay_options o = *opts;
    if (o.batch_size <= 0)
        o.batch_size = 1000;
    if (o.switch_wait_ms <= 0)
        o.switch_wait_ms = 60000;
    for (size_t i = 0; i < o.n_targets; i++) {
        int rc = replay_one(&o, &o.targets[i], err);
        if (rc != 0)
            return rc;
    }
    return 0;
}
