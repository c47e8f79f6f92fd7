/* Read-model generations: how a projection's read model is rebuilt from the log while the
 * service keeps serving, and switched over atomically.
 *
 * A projection's keys (mod_subscription.keys) live in the read store under a generation:
 * the logical key "user:42" of generation 1764350000123 of "user.projection" is stored as
 * "user.projection@1764350000123:user:42". The live generation is named by one control
 * record per projection, "read-model:<projection>" = {"generation":N,"state":"active"}, so
 * switching to a newly built generation is one write that every reader sees at once.
 * A replay builds generation M beside the live one and announces it, when it has caught up
 * with the log, in "read-model:<projection>:next" = {"generation":M,"ready":true}; the
 * process that runs the projection then takes it over, catches it up to the head of the
 * log and switches the control record to it. Old generations are deleted after a grace
 * period. A missing control record means the read store lost its data (or is new): the
 * projection builds a new generation from the start of the log, in state "building", and
 * queries of that projection's keys answer 503 until it has caught up.
 *
 * The reader port (rm_models_port) maps a projection's logical keys to its live generation
 * and passes any other key through; it reads the control records at most every
 * RM_CACHE_MS. A writer (rm_writer) is what a projection's handler writes through: its own
 * keys go to the generation it builds, the others read as above. */
#ifndef KERNEL_READ_MODELS_H
#define KERNEL_READ_MODELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "kernel/module.h"
#include "ports/read_store.h"

#define RM_CACHE_MS      250  /* how stale a reader's view of the control records may be */
#define RM_DROP_GRACE_MS 2000 /* an old generation outlives the switch by at least this */

typedef struct rm_models rm_models;

typedef struct rm_control {
    int64_t generation;
    bool building; /* built from the start of the log: not readable until caught up */
} rm_control;

typedef struct rm_next {
    int64_t generation;
    bool ready; /* fully built up to a recent position; its builder has stopped writing */
} rm_next;

/* store must outlive the registry. */
int rm_models_new(rm_models **out, rs_store *store, app_error *err);
void rm_models_free(rm_models *m); /* accepts NULL */
/* Registers a projection (MOD_SUB_PROJECTION with keys); the subscription must outlive m.
 * Before any use of the port. */
int rm_models_add(rm_models *m, const mod_subscription *projection, app_error *err);
bool rm_models_has(const rm_models *m, const char *projection);
/* The reader port; valid as long as m. */
rs_store rm_models_port(rm_models *m);
/* Forgets what the reader knows of the control records (tests, after a switch). */
void rm_models_invalidate(rm_models *m);

int rm_control_load(rm_models *m, const char *projection, rm_control *out, bool *found,
                    app_error *err);
int rm_control_save(rm_models *m, const char *projection, const rm_control *c, app_error *err);
int rm_next_load(rm_models *m, const char *projection, rm_next *out, bool *found, app_error *err);
int rm_next_save(rm_models *m, const char *projection, const rm_next *n, app_error *err);
int rm_next_clear(rm_models *m, const char *projection, app_error *err);
/* Deletes every key of one generation of a projection. */
int rm_drop(rm_models *m, const char *projection, int64_t generation, size_t *deleted,
            app_error *err);

/* Deletes the keys a projection wrote before read models had generations (its logical keys
 * as they are: no generation's key starts with one of them). */
int rm_drop_unversioned(rm_models *m, const char *projection, size_t *deleted, app_error *err);

/* Deletes the checkpoint generation was built under, in context's schema, once the
 * generation is gone (0: the checkpoint from before generations). Best effort: a failure is
 * logged; the row is only clutter. */
void rm_forget_checkpoint(es_store *es, const char *context, const char *projection,
                          int64_t generation);

/* Deletes the checkpoints of every generation of a projection, whichever they were: the read
 * store lost them all. Best effort, as above. */
void rm_forget_checkpoints(es_store *es, const char *context, const char *projection);

/* A fresh generation number greater than after (milliseconds since the epoch). */
int64_t rm_new_generation(int64_t after);
/* The checkpoint a generation is built under: "<projection>@<generation>". */
void rm_checkpoint_name(char *out, size_t size, const char *projection, int64_t generation);

typedef struct rm_writer rm_writer;

/* A projection's handlers write through it into generation. Buffered (replay only: the
 * generation was empty when it began and nobody else writes it) keeps what it wrote in
 * memory, so reads of its own keys need no round trip, and sends writes in batches on
 * rm_writer_flush. */
int rm_writer_new(rm_writer **out, rm_models *m, const char *projection, int64_t generation,
                  bool buffered, app_error *err);
void rm_writer_set_generation(rm_writer *w, int64_t generation); /* unbuffered writers */
/* Turns buffering on (complete: the generation holds nothing the writer did not write, so
 * a key it does not know is missing) or off (after sending what is pending). */
int rm_writer_set_buffered(rm_writer *w, bool buffered, bool complete, app_error *err);
/* Buffers a batch's writes in a live generation, which readers read meanwhile: they are sent
 * together on rm_writer_flush (one round trip, instead of one a write), and what the writer
 * remembered is forgotten then, since only the batch's own reads may use it. */
int rm_writer_set_batched(rm_writer *w, app_error *err);
/* Reads those of keys (logical; others are skipped) that a buffered writer would ask the
 * store for, in one round trip where the store can (rs_store_ops.get_many), and remembers
 * them until the next flush: a batch's handlers then read them without a round trip each.
 * Does nothing for an unbuffered writer or a store without get_many. */
int rm_writer_prefetch(rm_writer *w, const char *const *keys, size_t n, app_error *err);
int64_t rm_writer_generation(const rm_writer *w);
rs_store rm_writer_port(rm_writer *w);
int rm_writer_flush(rm_writer *w, app_error *err);
void rm_writer_free(rm_writer *w); /* accepts NULL; drops what was not flushed */

#endif
