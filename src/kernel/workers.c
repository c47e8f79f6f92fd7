/* The worker pool: a fixed set of threads taking jobs from one bounded FIFO ring, so blocking
 * work leaves the event loops free and overload is refused at submit time. */
#include "kernel/workers.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct workers_job {
    workers_fn fn;
    void *arg;
} workers_job;

struct workers {
    pthread_mutex_t lock;
    pthread_cond_t not_empty;
    workers_job *ring;
    size_t cap, head, len;
    bool stopping;
    pthread_t *threads;
    int n_threads;
};

static void *workers_main(void *arg)
{
    workers *w = arg;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (w->len == 0 && !w->stopping)
            pthread_cond_wait(&w->not_empty, &w->lock);
        /* Stopping still drains: every accepted job runs exactly once. */
        if (w->len == 0)
            break;
        workers_job job = w->ring[w->head];
        w->head = (w->head + 1) % w->cap;
        w->len--;
        pthread_mutex_unlock(&w->lock);
        job.fn(job.arg);
        pthread_mutex_lock(&w->lock);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* Stops and joins the first n threads; the queue drains first. */
static void workers_join(workers *w, int n)
{
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_broadcast(&w->not_empty);
    pthread_mutex_unlock(&w->lock);
    for (int i = 0; i < n; i++)
        pthread_join(w->threads[i], NULL);
}

static void workers_release(workers *w)
{
    pthread_cond_destroy(&w->not_empty);
    pthread_mutex_destroy(&w->lock);
    free(w->threads);
    free(w->ring);
    free(w);
}

int workers_new(workers **out, int threads, size_t queue_size, app_error *err)
{
    *out = NULL;
    if (threads < 1 || queue_size < 1)
        return app_error_set(err, APP_ECONFIG,
                             "worker pool needs at least one thread and one "
                             "queue slot (got %d threads, %zu slots)",
                             threads, queue_size);
    workers *w = calloc(1, sizeof *w);
    if (!w)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    w->ring = calloc(queue_size, sizeof *w->ring);
    w->threads = calloc((size_t)threads, sizeof *w->threads);
    if (!w->ring || !w->threads) {
        free(w->ring);
        free(w->threads);
        free(w);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    w->cap = queue_size;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->not_empty, NULL);
    for (int i = 0; i < threads; i++) {
        int rc = pthread_create(&w->threads[i], NULL, workers_main, w);
        if (rc != 0) {
            workers_join(w, i);
            workers_release(w);
            return app_error_set(err, APP_EINTERNAL, "could not start worker thread: %s",
                                 strerror(rc));
        }
        w->n_threads = i + 1;
    }
    *out = w;
    return 0;
}

int workers_submit(workers *w, workers_fn fn, void *arg, app_error *err)
{
    pthread_mutex_lock(&w->lock);
    if (w->stopping || w->len == w->cap) {
        bool stopping = w->stopping;
        pthread_mutex_unlock(&w->lock);
        return app_error_set(err, APP_EUNAVAIL, "%s",
                             stopping ? "worker pool is stopping" : "worker queue is full");
    }
    w->ring[(w->head + w->len) % w->cap] = (workers_job){fn, arg};
    w->len++;
    pthread_mutex_unlock(&w->lock);
    /* After the unlock: a worker woken while the lock is still held would only block on it
     * again, and the submitter is an event loop that should not wait for it either. */
    pthread_cond_signal(&w->not_empty);
    return 0;
}

size_t workers_queued(workers *w)
{
    pthread_mutex_lock(&w->lock);
    size_t n = w->len;
    pthread_mutex_unlock(&w->lock);
    return n;
}

void workers_free(workers *w)
{
    if (!w)
        return;
    workers_join(w, w->n_threads);
    workers_release(w);
}
