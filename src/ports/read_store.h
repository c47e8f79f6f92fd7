/* Read-store port: where projections keep read models and queries read them.
 * Keys are logical ("user:<id>"); the adapter adds the configured prefix. */
#ifndef PORTS_READ_STORE_H
#define PORTS_READ_STORE_H

#include <stddef.h>

#include "core/error.h"

/* One write of a batch (rs_store_ops.write_batch). Borrowed strings. */
typedef enum rs_write_kind { RS_WRITE_SET, RS_WRITE_DEL, RS_WRITE_ZADD } rs_write_kind;

typedef struct rs_write {
    rs_write_kind kind;
    const char *key;
    const char *value; /* SET: the value; ZADD: the member; DEL: unused */
    double score;      /* ZADD */
} rs_write;

/* The end of a get_async: rc 0 with value (len bytes, borrowed for the call; NULL when the
 * key is missing), or an error code with err. */
typedef void (*rs_get_done)(void *arg, int rc, const char *value, size_t len, const app_error *err);

typedef struct rs_store_ops {
    /* *out is a NUL-terminated copy owned by the caller (free), or NULL when the key is
     * missing. APP_EUNAVAIL when the store cannot be reached. */
    int (*get)(void *self, const char *key, char **out, app_error *err);
    int (*set)(void *self, const char *key, const char *value, app_error *err);
    int (*del)(void *self, const char *key, app_error *err);
    /* Sorted set: add member with score (replacing its score), read members by descending
     * score. *out is an array of n owned strings; free with rs_strings_free. */
    int (*zadd)(void *self, const char *key, double score, const char *member, app_error *err);
    int (*zrevrange)(void *self, const char *key, size_t start, size_t stop, char ***out, size_t *n,
                     app_error *err);
    int (*ping)(void *self, app_error *err);
    /* Optional (NULL when the store has none). Applies writes in order in few round trips;
     * not atomic: after a failure some of them may have been applied. */
    int (*write_batch)(void *self, const rs_write *writes, size_t n, app_error *err);
    /* Optional. Deletes every key that starts with prefix, incrementally (not atomic: keys
     * written meanwhile may survive); *deleted counts what it removed. */
    int (*del_prefix)(void *self, const char *prefix, size_t *deleted, app_error *err);
    /* Optional. A get that never blocks, for an event loop's own thread: started here, it
     * ends with exactly one call of done on this thread, from its loop and never before
     * get_async returns (key need not outlive the call). Nonzero when it could not start
     * without blocking (no loop connection on this thread, the store is down, ...): done is
     * not called, and the caller uses get from a thread that may block. */
    int (*get_async)(void *self, const char *key, rs_get_done done, void *arg, app_error *err);
    /* Optional. n gets in few round trips: values[i] is an owned copy of keys[i]'s value, or
     * NULL when it is missing. On failure every values[i] is NULL. */
    int (*get_many)(void *self, const char *const *keys, size_t n, char **values, app_error *err);
} rs_store_ops;

typedef struct rs_store {
    const rs_store_ops *ops;
    void *self;
} rs_store;

void rs_strings_free(char **items, size_t n);

#endif
