/* A fixed pool of threads for work that may block (database, Redis), with a bounded queue
 * so overload becomes a quick 503 instead of an unbounded backlog. */
#ifndef KERNEL_WORKERS_H
#define KERNEL_WORKERS_H

#include <stddef.h>

#include "core/error.h"

typedef struct workers workers;
typedef void (*workers_fn)(void *arg);

/* *out owned by the caller; free with workers_free. */
int workers_new(workers **out, int threads, size_t queue_size, app_error *err);
/* Queues fn(arg). APP_EUNAVAIL when the queue is full or the pool is stopping; then fn is
 * not called and arg stays the caller's. */
int workers_submit(workers *w, workers_fn fn, void *arg, app_error *err);
/* Jobs accepted and not yet taken by a thread: how far the pool is behind, for health
 * reports, metrics and tests that must see a job wait. Thread-safe; the answer may be stale
 * by the time the caller looks at it. */
size_t workers_queued(workers *w);
/* Runs every queued job, then joins the threads. Accepts NULL. */
void workers_free(workers *w);

#endif
