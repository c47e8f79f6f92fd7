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
/* Runs every queued job, then joins the threads. Accepts NULL. */
void workers_free(workers *w);

#endif
