/* In-memory fakes of the event-store and read-store ports for application-layer unit tests:
 * optimistic concurrency, claims, the log in position order, checkpoints, dead letters,
 * injected failures and a hook that plays a concurrent writer. Both are thread-safe (one mutex
 * each). */
#ifndef TEST_SUPPORT_FAKE_STORES_H
#define TEST_SUPPORT_FAKE_STORES_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ports/event_store.h"
#include "ports/read_store.h"

#define FAKE_STORE_MAX 256 /* streams, claims, checkpoints, keys: fail past it */

typedef struct fake_stream {
    char *id;
    es_event *events; /* version i + 1 at index i; strings owned */
    size_t len;
    es_snapshot snapshot; /* version 0 when none; state owned */
} fake_stream;

typedef struct fake_claim {
    char *scope, *key, *owner;
} fake_claim;

typedef struct fake_checkpoint {
    char *subscriber;
    int64_t position;
} fake_checkpoint;

/* The saga state an append carried (es_process), one row per (name, id). */
typedef struct fake_process {
    char *name, *id, *state;
    int64_t deadline_ms;
    bool done;
} fake_process;

/* An idempotency record; created_s on the fake's own clock (fake_es.now_s). */
typedef struct fake_idem {
    char *actor, *key, *command, *request_hash, *response;
    int64_t created_s;
} fake_idem;

typedef struct fake_es fake_es;

/* Runs at the start of an append, before the version check, outside the lock: it may append
 * through the port itself (the hook does not run for its own appends), which makes the
 * append it precedes see a concurrent writer. For single-threaded tests. */
typedef void (*fake_es_hook)(fake_es *f, const es_append_req *req, void *arg);

struct fake_es {
    const char *context; /* every request must name it; NULL accepts any */
    fake_stream streams[FAKE_STORE_MAX];
    size_t n_streams;
    fake_claim claims[FAKE_STORE_MAX];
    size_t n_claims;
    fake_checkpoint checkpoints[FAKE_STORE_MAX];
    size_t n_checkpoints;
    fake_process processes[FAKE_STORE_MAX]; /* what due_processes answers from */
    size_t n_processes;
    int64_t position;               /* of the last event appended */
    int fail_next;                  /* when non-zero, the next append fails with it (once) */
    size_t appends;                 /* successful appends */
    size_t conflicts;               /* appends refused with APP_EVERSION */
    size_t loaded;                  /* events load_stream has returned, in all */
    int64_t last_after_version;     /* the after_version of the last load_stream */
    size_t snapshots_saved;         /* successful save_snapshot calls */
    size_t checkpoints_saved;       /* successful save_checkpoint calls */
    int fail_snapshot;              /* when non-zero, every save_snapshot fails with it */
    fake_idem keys[FAKE_STORE_MAX]; /* idempotency records */
    size_t n_keys;
    int64_t now_s;                       /* the clock idempotency records age by; tests move it */
    es_dead_letter dead[FAKE_STORE_MAX]; /* dead letters, oldest first; strings owned */
    size_t n_dead;
    int64_t dead_ids; /* the last id given */
    fake_es_hook before_append;
    void *hook_arg;
    bool in_hook;
    pthread_mutex_t lock;
};

/* f is caller-owned (e.g. calloc'd or static); fake_es_free releases what it holds. */
void fake_es_init(fake_es *f, const char *context);
void fake_es_free(fake_es *f); /* accepts NULL */
es_store fake_es_port(fake_es *f);

/* Puts a snapshot on stream id as it is, unchecked (for corrupt or foreign ones); false when
 * there is no such stream. */
bool fake_es_put_snapshot(fake_es *f, const char *id, int64_t version, int schema_version,
                          const char *state);

/* Borrowed from f; NULL when no such stream. */
fake_stream *fake_es_stream(fake_es *f, const char *id);
/* The process (name, id) as the last append saved it, borrowed; NULL when none. */
const fake_process *fake_es_process(fake_es *f, const char *name, const char *id);
/* The stream owning the claim (scope, key), borrowed; NULL when unclaimed. */
const char *fake_es_claim_owner(fake_es *f, const char *scope, const char *key);

typedef struct fake_rs {
    char *keys[FAKE_STORE_MAX];
    char *values[FAKE_STORE_MAX];
    size_t n;
    /* Sorted sets: one row per (key, member). */
    char *zkeys[FAKE_STORE_MAX];
    char *zmembers[FAKE_STORE_MAX];
    double zscores[FAKE_STORE_MAX];
    size_t zn;
    bool down;   /* every call answers APP_EUNAVAIL */
    size_t sets; /* successful set calls */
    /* Successful get calls, of keys that contain gets_of when it is set; and get_many calls,
     * with the keys they asked for. */
    size_t gets;
    const char *gets_of;
    size_t get_manys, keys_asked;
    pthread_mutex_t lock;
} fake_rs;

void fake_rs_init(fake_rs *r);
void fake_rs_free(fake_rs *r); /* accepts NULL */
rs_store fake_rs_port(fake_rs *r);
/* The stored value of key, borrowed; NULL when missing. Not locked: call it between calls. */
const char *fake_rs_value(const fake_rs *r, const char *key);

#endif
