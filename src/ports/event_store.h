/* Event-store port: append with an expected stream version, load a stream, read a
 * context's log in commit order, keep subscriber checkpoints and aggregate snapshots.
 * Contexts and the kernel use only this header; adapters/postgres implements it. */
#ifndef PORTS_EVENT_STORE_H
#define PORTS_EVENT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#define ES_ANY_VERSION (-1) /* append without a version check */
#define ES_NO_STREAM   0    /* the stream must not exist yet */

/* An event as stored. Every string is owned by the event; es_event_list_free frees them. */
typedef struct es_event {
    int64_t position;  /* global position in the context's log */
    char *stream_id;   /* e.g. "user-<uuid>" */
    int64_t version;   /* version within the stream, from 1 */
    char event_id[37]; /* UUID, lower-case canonical */
    char *type;        /* "<context>.<aggregate>.<past-tense-verb>" */
    int schema_version;
    char *data;           /* JSON object text */
    char *metadata;       /* JSON object text */
    char recorded_at[40]; /* RFC 3339 UTC, e.g. 2026-11-28T15:00:00.123456Z */
} es_event;

typedef struct es_event_list {
    es_event *items;
    size_t len;
} es_event_list;

void es_event_list_free(es_event_list *list); /* accepts NULL and empty lists */

/* An event to append. Borrowed strings; the store copies what it keeps. */
typedef struct es_new_event {
    const char *event_id; /* UUID */
    const char *type;
    int schema_version;
    const char *data;     /* JSON object text */
    const char *metadata; /* JSON object text */
} es_new_event;

/* A unique key owned by a stream (e.g. scope "email", key "a@b.c"), claimed or released in
 * the same transaction as the events: the way a context keeps a value unique across
 * aggregates under any concurrency. */
typedef struct es_claim {
    const char *scope;
    const char *key;
} es_claim;

/* The durable state of a long-running process (a saga instance), saved in the same
 * transaction as the events of the append that carries it. Borrowed strings. */
typedef struct es_process {
    const char *name;    /* the kind of process, e.g. "order.placement" */
    const char *id;      /* the instance, e.g. an order id */
    const char *state;   /* JSON object text */
    int64_t deadline_ms; /* Unix time in ms when it is due if still not done; 0 for none */
    bool done;           /* finished: never due again */
} es_process;

/* An Idempotency-Key and the first answer to the request that used it, recorded in the
 * owning context's schema. Borrowed strings. */
typedef struct es_idempotency {
    const char *actor;        /* who sent the request: keys of different callers never meet */
    const char *key;          /* the Idempotency-Key, 1..128 printable characters */
    const char *command;      /* the bus message it ran, e.g. "user.register_user" */
    const char *request_hash; /* hex SHA-256 of the command and its payload */
    const char *response;     /* JSON text of the reply the command gave */
    int ttl_seconds;          /* a record older than this counts as gone */
} es_idempotency;

/* A recorded key, as idempotency_lookup returns it. Strings owned; es_idem_record_free. */
typedef struct es_idem_record {
    char *command;
    char *request_hash;
    char *response;
} es_idem_record;

void es_idem_record_free(es_idem_record *rec); /* frees what rec owns, not rec; accepts NULL */

typedef struct es_append_req {
    const char *context; /* the owning context ("user"); its schema is <context>_ctx */
    const char *stream_id;
    int64_t expected_version; /* ES_ANY_VERSION, ES_NO_STREAM or the current version */
    const es_new_event *events;
    size_t n_events;
    const es_claim *claims; /* claimed for stream_id; a key owned by another stream fails */
    size_t n_claims;
    const es_claim *releases; /* released if owned by stream_id */
    size_t n_releases;
    const es_process *process; /* optional: upserted in the same transaction */
    /* Optional: recorded in the same transaction, so the key and the first answer exist
     * exactly when the events do. A live record of the same (actor, key) fails the append
     * with APP_EIDEMPOTENT and writes nothing. */
    const es_idempotency *idempotency;
} es_append_req;

typedef struct es_append_result {
    int64_t version;        /* stream version after the append */
    int64_t first_position; /* global positions of the appended events */
    int64_t last_position;
} es_append_result;

/* A process whose deadline has passed. Strings owned; es_due_list_free frees them. */
typedef struct es_due_process {
    char *id;
    char *state; /* JSON object text */
    int64_t deadline_ms;
} es_due_process;

typedef struct es_due_list {
    es_due_process *items;
    size_t len;
} es_due_list;

void es_due_list_free(es_due_list *list); /* accepts NULL and empty lists */

/* An event a subscriber gave up on (one Kafka refuses for good, one a projection or saga
 * failed on max_attempts times), kept with the reason until it is sent again. Strings owned;
 * es_dead_letter_list_free frees them. */
typedef struct es_dead_letter {
    int64_t id; /* unique within the context */
    char *subscriber;
    int64_t position;  /* of the event in the context's log */
    char event_id[37]; /* "" when unknown */
    char *error;
    int attempts;
    char created_at[40];    /* RFC 3339 UTC */
    bool redrive_requested; /* to be delivered again by the process running its subscriber */
} es_dead_letter;

typedef struct es_dead_letter_list {
    es_dead_letter *items;
    size_t len;
} es_dead_letter_list;

void es_dead_letter_list_free(es_dead_letter_list *list); /* accepts NULL and empty lists */

/* The folded state of a stream up to a version, so that loading reads only the events after
 * it. schema_version is the shape of state as the aggregate's code defines it: a reader that
 * knows another version ignores the snapshot and folds the whole stream. */
typedef struct es_snapshot {
    int64_t version;    /* stream version the state includes; 0 when there is none */
    int schema_version; /* of state */
    char *state;        /* JSON object text, owned; es_snapshot_free frees it */
} es_snapshot;

void es_snapshot_free(es_snapshot *snap); /* frees what snap owns, not snap; accepts NULL */

typedef struct es_store_ops {
    /* Durable when it returns 0. Fails with APP_EVERSION (expected version differs; err
     * detail holds the current one), APP_ECONFLICT (a claim is owned by another stream;
     * err field is the claim scope) or APP_EUNAVAIL. Concurrent appends are group-committed. */
    int (*append)(void *self, const es_append_req *req, es_append_result *out, app_error *err);
    /* Events of one stream with version > after_version, oldest first. *out owned by caller. */
    int (*load_stream)(void *self, const char *context, const char *stream_id,
                       int64_t after_version, es_event_list *out, app_error *err);
    /* At most limit events of one stream with version > after_version, oldest first: a page of
     * its audit trail. *out owned by caller. Optional: NULL where the store has none (then
     * load_stream serves, unbounded). */
    int (*read_stream)(void *self, const char *context, const char *stream_id,
                       int64_t after_version, size_t limit, es_event_list *out, app_error *err);
    /* At most limit events with position > after_position, in commit order with no gaps:
     * an event never appears below a position already returned. *out owned by caller. */
    int (*read_log)(void *self, const char *context, int64_t after_position, size_t limit,
                    es_event_list *out, app_error *err);
    /* Highest committed position of a context's log (0 when empty). */
    int (*head_position)(void *self, const char *context, int64_t *out, app_error *err);
    /* Subscriber checkpoints live in the subscriber's context schema. 0 when none yet. */
    int (*load_checkpoint)(void *self, const char *context, const char *subscriber, int64_t *out,
                           app_error *err);
    int (*save_checkpoint)(void *self, const char *context, const char *subscriber,
                           int64_t position, app_error *err);
    /* Forgets a checkpoint that nothing will read again (a deleted read-model generation's);
     * one that does not exist is fine. */
    int (*remove_checkpoint)(void *self, const char *context, const char *subscriber,
                             app_error *err);
    /* Forgets the checkpoints of subscriber and of every generation of it
     * ("<subscriber>@<generation>"): what a read model that the read store lost was built
     * under, whichever generation that was. */
    int (*remove_checkpoints)(void *self, const char *context, const char *subscriber,
                              app_error *err);
    /* Blocks up to timeout_ms until an append to context commits (in this process or, where
     * the adapter listens, in another). Returns 0 on wake-up or timeout alike. */
    int (*wait_for_append)(void *self, const char *context, int64_t after_position, int timeout_ms);
    int (*ping)(void *self, app_error *err);
    /* Processes of kind name in context that are not done and whose deadline is at or
     * before now_ms, earliest first, at most limit. *out owned by the caller. */
    int (*due_processes)(void *self, const char *context, const char *name, int64_t now_ms,
                         size_t limit, es_due_list *out, app_error *err);
    /* Records in context that subscriber gave up on the event at position; recording the
     * same (subscriber, position) again counts one more attempt, keeps the latest error and
     * clears a redrive request. */
    int (*add_dead_letter)(void *self, const char *context, const char *subscriber,
                           int64_t position, const char *event_id, const char *error,
                           app_error *err);
    /* Dead letters of subscriber (NULL: of every subscriber) with id > after_id, oldest first,
     * at most limit. *out owned by the caller. */
    int (*list_dead_letters)(void *self, const char *context, const char *subscriber,
                             int64_t after_id, size_t limit, es_dead_letter_list *out,
                             app_error *err);
    /* Forgets one (once it was sent again); APP_ENOTFOUND when context has no such id. */
    int (*remove_dead_letter)(void *self, const char *context, int64_t id, app_error *err);
    /* Asks for one to be delivered again to its subscriber (redrive_requested), by whichever
     * process runs the subscriber; APP_ENOTFOUND when context has no such id. */
    int (*request_redrive)(void *self, const char *context, int64_t id, app_error *err);
    /* Leadership of (context, name) among the processes sharing the store, so that one of
     * them runs a given subscriber: takes the lease if free, confirms it if held, and notices
     * a lease lost with its connection. *out says whether this process holds it now. Call it
     * again every few seconds; after a crash the lease frees itself and another caller gets it.
     * Fails (with *out false) only when the store cannot be reached. */
    int (*lead)(void *self, const char *context, const char *name, bool *out, app_error *err);
    /* Gives the lease up if held (e.g. at shutdown), so another process takes over now. */
    void (*resign)(void *self, const char *context, const char *name);
    /* The latest snapshot of a stream; out->version 0 and out->state NULL when it has none.
     * *out owned by the caller (es_snapshot_free). Optional: NULL in stores without them. */
    int (*load_snapshot)(void *self, const char *context, const char *stream_id, es_snapshot *out,
                         app_error *err);
    /* Keeps snap as the stream's snapshot unless a newer one is kept already. Refused
     * (APP_EINVAL) when the stream has no committed event at snap->version, so a state that
     * was never committed cannot become a snapshot. Optional, like load_snapshot. */
    int (*save_snapshot)(void *self, const char *context, const char *stream_id,
                         const es_snapshot *snap, app_error *err);
    /* The live record of (actor, key) in context: *found false when there is none or it is
     * older than ttl_seconds. *out owned by the caller (es_idem_record_free). */
    int (*idempotency_lookup)(void *self, const char *context, const char *actor, const char *key,
                              int ttl_seconds, es_idem_record *out, bool *found, app_error *err);
    /* Records rec on its own, for a command that appended nothing (there is nothing to be
     * atomic with). APP_EIDEMPOTENT when a live record of (actor, key) exists already. */
    int (*idempotency_save)(void *self, const char *context, const es_idempotency *rec,
                            app_error *err);
    /* Deletes the records of context older than ttl_seconds; *deleted says how many. */
    int (*idempotency_purge)(void *self, const char *context, int ttl_seconds, int64_t *deleted,
                             app_error *err);
} es_store_ops;

typedef struct es_store {
    const es_store_ops *ops;
    void *self;
} es_store;

#endif
