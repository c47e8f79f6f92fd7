/* Subscribers (projections, sagas, relays) pulling a context's log from their checkpoint:
 * one thread each; live delivery and catch-up are the same loop, a wake-up only shortens
 * the wait. At least once: the checkpoint moves after the handler's effect is durable. An
 * event a handler keeps failing on (a poison event) goes to the dead letters after
 * max_attempts, so that one bad event never halts a read model or a saga; `app dlq redrive`
 * hands it to its subscriber again. */
#ifndef KERNEL_SUBSCRIPTIONS_H
#define KERNEL_SUBSCRIPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "kernel/bus.h"
#include "kernel/module.h"
#include "kernel/read_models.h"

typedef struct sub_runner sub_runner;

typedef struct sub_runner_options {
    es_store *events;
    rs_store *reads;
    /* Read-model generations (read_models.h): projections write into theirs and rebuild a
     * read model that went missing. NULL: projections write through reads as they are. */
    rm_models *models;
    bus *bus;
    const app_clock *clock;
    int batch_size;       /* events per pull */
    int poll_interval_ms; /* longest wait for a wake-up when idle */
    int lanes;            /* MOD_SUB_BY_STREAM subscribers: streams handled at once (<= 1: one) */
    /* Failures of a handler on one event (a dependency that is down never counts) after which
     * the event goes to the dead letters and the subscriber goes on; <= 0: 5. */
    int max_attempts;
    /* The wait after a failure, doubling from min to max; <= 0: 100 ms and 5 s. */
    int backoff_min_ms, backoff_max_ms;
} sub_runner_options;

/* What /health/ready and /metrics report of one subscriber. */
typedef struct sub_status {
    const char *name;
    int64_t checkpoint;
    int64_t head;
    bool failing;       /* the last attempt failed (its handler or a dependency) */
    bool standby;       /* it runs in another process that shares the database */
    bool rebuilding;    /* a projection building its read model from the start of the log */
    double lag_seconds; /* age of the oldest event it has not handled yet */
} sub_status;

int sub_runner_new(sub_runner **out, const sub_runner_options *opts, app_error *err);
/* owner_context is where the checkpoint lives. Before start only; sub must outlive r. */
int sub_runner_add(sub_runner *r, const char *owner_context, const mod_subscription *sub,
                   app_error *err);
/* A context's periodic task, run in its own thread by the same runner. Before start only. */
int sub_runner_add_task(sub_runner *r, const char *owner_context, const mod_task *task,
                        app_error *err);
int sub_runner_start(sub_runner *r, app_error *err);
/* Stops every subscriber after its current event and joins the threads. */
void sub_runner_stop(sub_runner *r);
void sub_runner_free(sub_runner *r); /* accepts NULL; stops first */

/* `app dlq redrive` of a dead letter of a subscriber (not the Kafka relay's): asks for it to
 * be delivered again, and waits up to timeout_ms for the process running the subscriber to do
 * it. 0 when it was handled and forgotten; else -1 with reason set: the handler failed again
 * (the dead letter stays, with the new error), or no process took it in time. */
int sub_dead_letter_redrive(es_store *events, const char *context, const es_dead_letter *d,
                            int timeout_ms, char *reason, size_t size);

/* Subscribers only (tasks are not counted). */
size_t sub_runner_count(const sub_runner *r);
/* Snapshot of subscriber i (0 <= i < count). */
void sub_runner_status(sub_runner *r, size_t i, sub_status *out);

#endif
