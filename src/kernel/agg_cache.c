/* The aggregate cache: a table of slots, one lock. A slot's state is allocated at its first
 * put and reused after; a put of another stream into it releases what the old state owned. */
#include "kernel/agg_cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/text.h"

#define AGG_STREAM_MAX 160 /* longest stream id kept; longer ones are never cached */

typedef struct agg_slot {
    char stream_id[AGG_STREAM_MAX];
    int64_t version; /* 0: empty */
    char event_id[UUID_STR_LEN];
    void *state; /* kind->size bytes once allocated */
} agg_slot;

struct agg_cache {
    agg_cache_kind kind;
    pthread_mutex_t lock;
    size_t n_slots;
    agg_slot *slots;
};

agg_cache *agg_cache_new(const agg_cache_kind *kind, size_t slots)
{
    agg_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->kind = *kind;
    c->n_slots = slots ? slots : 1;
    c->slots = calloc(c->n_slots, sizeof *c->slots);
    if (!c->slots || pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c->slots);
        free(c);
        return NULL;
    }
    return c;
}

static void agg_release(agg_cache *c, agg_slot *s)
{
    if (s->version > 0 && c->kind.release)
        c->kind.release(s->state);
    s->version = 0;
}

void agg_cache_free(agg_cache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_slots; i++) {
        agg_release(c, &c->slots[i]);
        free(c->slots[i].state);
    }
    free(c->slots);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

static bool agg_copy(const agg_cache *c, void *dst, const void *src)
{
    if (c->kind.copy)
        return c->kind.copy(dst, src);
    memcpy(dst, src, c->kind.size);
    return true;
}

static agg_slot *agg_slot_of(agg_cache *c, const char *stream_id)
{
    return &c->slots[text_fnv1a(stream_id) % c->n_slots];
}

bool agg_cache_get(agg_cache *c, const char *stream_id, void *out, int64_t *version,
                   char event_id[UUID_STR_LEN])
{
    if (!c || !stream_id)
        return false;
    pthread_mutex_lock(&c->lock);
    agg_slot *s = agg_slot_of(c, stream_id);
    bool hit = s->version > 0 && strcmp(s->stream_id, stream_id) == 0 && agg_copy(c, out, s->state);
    if (hit) {
        *version = s->version;
        memcpy(event_id, s->event_id, UUID_STR_LEN);
    }
    pthread_mutex_unlock(&c->lock);
    return hit;
}

void agg_cache_put(agg_cache *c, const char *stream_id, const void *state, int64_t version,
                   const char *event_id)
{
    if (!c || !stream_id || version <= 0 || !event_id || strlen(stream_id) >= AGG_STREAM_MAX ||
        strlen(event_id) >= UUID_STR_LEN)
        return;
    pthread_mutex_lock(&c->lock);
    agg_slot *s = agg_slot_of(c, stream_id);
    bool same = s->version > 0 && strcmp(s->stream_id, stream_id) == 0;
    if (!(same && s->version >= version)) {
        agg_release(c, s);
        if (!s->state)
            s->state = malloc(c->kind.size);
        if (s->state && agg_copy(c, s->state, state)) {
            memcpy(s->stream_id, stream_id, strlen(stream_id) + 1);
            memcpy(s->event_id, event_id, strlen(event_id) + 1);
            s->version = version;
        }
    }
    pthread_mutex_unlock(&c->lock);
}

void agg_cache_drop(agg_cache *c, const char *stream_id)
{
    if (!c || !stream_id)
        return;
    pthread_mutex_lock(&c->lock);
    agg_slot *s = agg_slot_of(c, stream_id);
    if (s->version > 0 && strcmp(s->stream_id, stream_id) == 0)
        agg_release(c, s);
    pthread_mutex_unlock(&c->lock);
}

int agg_cache_begin(agg_cache *c, es_store *events, const char *context, const char *stream_id,
                    void *state, int64_t *version, es_event_list *since, size_t *first,
                    app_error *err)
{
    *version = 0;
    *first = 0;
    memset(since, 0, sizeof *since);
    char event_id[UUID_STR_LEN];
    int64_t cached = 0;
    if (!agg_cache_get(c, stream_id, state, &cached, event_id))
        return 0;
    /* From the cached event on: the store must still have it, or the entry is not its. */
    int rc = events->ops->load_stream(events->self, context, stream_id, cached - 1, since, err);
    if (rc == 0 && since->len > 0 && since->items[0].version == cached &&
        strcmp(since->items[0].event_id, event_id) == 0) {
        *version = cached;
        *first = 1;
        return 0;
    }
    if (rc == 0)
        agg_cache_drop(c, stream_id);
    es_event_list_free(since);
    if (c->kind.release)
        c->kind.release(state);
    memset(state, 0, c->kind.size);
    return rc;
}
