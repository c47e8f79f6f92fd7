/* `app replay [--projection NAME]`: rebuilds read models from the event log while the
 * service keeps serving. Each projection is built into a new generation (read_models.h)
 * from position 0 to the head of the log, with buffered writes; then the process that runs
 * the projection takes it over, catches it up and switches to it, or, when no process runs
 * it, the replay does that itself. Only projections run: no saga step, no command, no
 * Kafka copy happens again. */
#ifndef KERNEL_REPLAY_H
#define KERNEL_REPLAY_H

#include <stdbool.h>
#include <stdio.h>

#include "core/error.h"
#include "kernel/module.h"
#include "kernel/read_models.h"
#include "ports/clock.h"
#include "ports/event_store.h"

typedef struct replay_target {
    const char *owner; /* the context whose schema keeps the checkpoint */
    const mod_subscription *sub;
} replay_target;

typedef struct replay_options {
    es_store *events;
    rm_models *models;
    const app_clock *clock;
    const replay_target *targets;
    size_t n_targets;
    int batch_size;     /* events per read */
    int switch_wait_ms; /* how long to wait for the running service to switch */
    FILE *out;          /* progress and summary lines */
    bool tty;           /* progress on one line, rewritten in place */
} replay_options;

/* Replays every target in turn. Fails with the first error; a read model that was not
 * switched to stays announced and is taken over when its projection runs again. */
int replay_run(const replay_options *opts, app_error *err);

#endif
