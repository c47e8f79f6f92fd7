/* Commands on one stream, decided together and appended at once.
 *
 * Commands that change one busy aggregate at the same time (the placement saga reserving a
 * product's stock for many orders) would each load it, decide, and race to append at the
 * same version: all but one fail with a version conflict, load again and go round again, and
 * each winner costs a commit of its own. Through a combiner they queue by stream instead.
 * The first to arrive leads: it takes every operation queued on its stream, and runs them in
 * one go through the caller's run function, which loads the aggregate once, decides the
 * operations in order, each on the state the ones before it left, and appends all their
 * events in one append. Operations that arrive meanwhile wait, and the next group is led by
 * the first of them as soon as this one is done. So a stream sees one append in flight at a
 * time from this process, and a hot aggregate costs a commit per group, not per command.
 *
 * An operation's result is its own: run sets op->rc and op->err per operation (one refused
 * operation does not fail the others). An append that fails fails every operation of the
 * group with its error; with APP_EVERSION (another process appended) the bus runs each
 * command again, and they group again.
 *
 * Streams are hashed onto slots; streams that share a slot take turns. Thread-safe. */
#ifndef KERNEL_COMBINER_H
#define KERNEL_COMBINER_H

#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"

/* Operations a group holds at most; more wait for the next group. */
#define COMB_GROUP_MAX 64

/* One operation, on its caller's stack. The caller sets arg (what run needs to decide it);
 * run sets rc and err. */
typedef struct comb_op {
    void *arg;
    int rc;
    app_error err;
    /* The combiner's own. */
    const char *stream;
    struct comb_op *next;
    bool done, lead;
} comb_op;

/* Runs ops[0..n) of stream (n >= 1, in arrival order), on the thread of ops[0]'s caller, the
 * group's leader: sets every op's rc and err. */
typedef void (*comb_run_fn)(const char *stream, comb_op *const *ops, size_t n);

typedef struct comb_table comb_table;

/* A table of slots (at least 1); NULL when out of memory. */
comb_table *comb_table_new(size_t slots);
/* No operation may be running. Accepts NULL. */
void comb_table_free(comb_table *t);

/* Runs op on stream, alone or in a group with others queued on it, and returns op->rc when
 * it is done (op->err set when it is not 0). stream must outlive the call. */
int comb_run(comb_table *t, const char *stream, comb_op *op, comb_run_fn run);

/* Operations waiting on stream now (not those of the group that runs): what is about to be
 * grouped. */
size_t comb_queued(comb_table *t, const char *stream);

#endif
