/* A process's cache of aggregates' folded state, by stream id, so that loading one reads
 * only the events appended since it was cached (usually none) instead of its snapshot and
 * every event after that, and decodes nothing it decoded before.
 *
 * The cache is never trusted on its own: a load reads the stream from the cached version on
 * (the cached event included), and uses the entry only when the store still has that event
 * at that version, with that id. So an append by another process, a store that was emptied
 * or restored, or a test's fresh fake store, each cost one full load, never a stale state.
 *
 * Direct-mapped: a stream has one slot (hashed), and a put replaces what the slot held.
 * Thread-safe; states are copied in and out, so a caller owns what it gets. */
#ifndef KERNEL_AGG_CACHE_H
#define KERNEL_AGG_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/uuid.h"
#include "ports/event_store.h"

typedef struct agg_cache_kind {
    size_t size; /* bytes of the state struct */
    /* Deep-copies src into dst (dst holds garbage); false when out of memory, with dst
     * holding nothing to release. NULL: the state owns nothing, memcpy is a copy. */
    bool (*copy)(void *dst, const void *src);
    /* Frees what state owns, not state. NULL: nothing. */
    void (*release)(void *state);
} agg_cache_kind;

typedef struct agg_cache agg_cache;

/* A cache of slots entries (at least 1); NULL when out of memory. */
agg_cache *agg_cache_new(const agg_cache_kind *kind, size_t slots);
void agg_cache_free(agg_cache *c);

/* The cached entry of stream_id: copies its state into out (which then is the caller's to
 * release), its version into *version and the id of its last event into event_id. False
 * (out untouched) when stream_id is not cached, or a copy cannot be made. */
bool agg_cache_get(agg_cache *c, const char *stream_id, void *out, int64_t *version,
                   char event_id[UUID_STR_LEN]);

/* Keeps a copy of state as stream_id's at version, whose last event is event_id: state
 * must be what the store holds at that version (just loaded, or just appended). A newer
 * entry of the same stream is kept instead. Best effort: out of memory, nothing is kept. */
void agg_cache_put(agg_cache *c, const char *stream_id, const void *state, int64_t version,
                   const char *event_id);

/* Forgets stream_id. */
void agg_cache_drop(agg_cache *c, const char *stream_id);

/* Starts a load of stream_id of context from the cache, checked against the store. state
 * must be zeroed. On a hit that the store confirms, *version > 0, state holds the cached
 * state at *version (the caller's to release), and since->items[*first..] are the events
 * appended after it, to fold. Otherwise *version is 0, state is zeroed and since is empty:
 * the caller loads the usual way. A failure to read the store is returned, state zeroed. */
int agg_cache_begin(agg_cache *c, es_store *events, const char *context, const char *stream_id,
                    void *state, int64_t *version, es_event_list *since, size_t *first,
                    app_error *err);

#endif
