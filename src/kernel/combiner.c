/* The combiner: a slot is a lock, a condition and a queue of waiting operations. A slot is
 * busy while a group of it runs; the leader of a group hands the slot to the first waiter
 * when it is done, so no waiter is left behind when the slot goes idle. */
#include "kernel/combiner.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/text.h"

typedef struct comb_slot {
    pthread_mutex_t lock;
    pthread_cond_t cv;
    comb_op *head, *tail; /* waiting, in arrival order */
    bool busy;            /* a group runs */
} comb_slot;

struct comb_table {
    size_t n_slots;
    comb_slot *slots;
};

comb_table *comb_table_new(size_t slots)
{
    comb_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->n_slots = slots ? slots : 1;
    t->slots = calloc(t->n_slots, sizeof *t->slots);
    if (!t->slots) {
        free(t);
        return NULL;
    }
    for (size_t i = 0; i < t->n_slots; i++) {
        pthread_mutex_init(&t->slots[i].lock, NULL);
        pthread_cond_init(&t->slots[i].cv, NULL);
    }
    return t;
}

void comb_table_free(comb_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n_slots; i++) {
        pthread_mutex_destroy(&t->slots[i].lock);
        pthread_cond_destroy(&t->slots[i].cv);
    }
    free(t->slots);
    free(t);
}

/* Moves the waiters on stream (at most room of them, in order) from s's queue to group. */
static size_t comb_take(comb_slot *s, const char *stream, comb_op **group, size_t room)
{
    size_t n = 0;
    comb_op *prev = NULL;
    for (comb_op *cur = s->head; cur && n < room;) {
        comb_op *next = cur->next;
        if (strcmp(cur->stream, stream) == 0) {
            if (prev)
                prev->next = next;
            else
                s->head = next;
            if (s->tail == cur)
                s->tail = prev;
            cur->next = NULL;
            group[n++] = cur;
        } else {
            prev = cur;
        }
        cur = next;
    }
    return n;
}

static comb_slot *comb_slot_of(comb_table *t, const char *stream)
{
    return &t->slots[text_fnv1a(stream) % t->n_slots];
}

size_t comb_queued(comb_table *t, const char *stream)
{
    comb_slot *s = comb_slot_of(t, stream);
    size_t n = 0;
    pthread_mutex_lock(&s->lock);
    for (const comb_op *op = s->head; op; op = op->next)
        n += strcmp(op->stream, stream) == 0;
    pthread_mutex_unlock(&s->lock);
    return n;
}

int comb_run(comb_table *t, const char *stream, comb_op *op, comb_run_fn run)
{
    comb_slot *s = comb_slot_of(t, stream);
    op->stream = stream;
    op->next = NULL;
    op->done = op->lead = false;
    op->rc = 0;
    op->err = (app_error)APP_ERROR_INIT;

    pthread_mutex_lock(&s->lock);
    if (s->busy) {
        if (s->tail)
            s->tail->next = op;
        else
            s->head = op;
        s->tail = op;
        while (!op->done && !op->lead)
            pthread_cond_wait(&s->cv, &s->lock);
        if (op->done) {
            pthread_mutex_unlock(&s->lock);
            return op->rc;
        }
        /* Handed the slot: lead the next group. */
    }
    s->busy = true;
    comb_op *group[COMB_GROUP_MAX];
    group[0] = op;
    size_t n = 1 + comb_take(s, stream, group + 1, COMB_GROUP_MAX - 1);
    pthread_mutex_unlock(&s->lock);

    run(stream, group, n);

    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < n; i++)
        group[i]->done = true;
    comb_op *next = s->head;
    if (next) {
        s->head = next->next;
        if (!s->head)
            s->tail = NULL;
        next->next = NULL;
        next->lead = true;
    } else {
        s->busy = false;
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->lock);
    return op->rc;
}
