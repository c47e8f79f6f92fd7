/* Read-model generations: key mapping, control records, and the writers projections write
 * through (see read_models.h). */
#include "kernel/read_models.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "core/deadline.h"
#include "core/json.h"
#include "core/log.h"

#define RM_MAX_PROJECTIONS 32
#define RM_CONTROL_PREFIX  "read-model:"
/* Keys (with their values) a buffered writer remembers before it forgets them; past that it
 * still knows which keys it wrote, by hash, 8 bytes each (rm_writer.seen). */
#define RM_BUFFER_MAX 20000

typedef struct rm_projection {
    const mod_subscription *sub;
    /* The reader's view of the control record, refreshed at most every RM_CACHE_MS. */
    bool loaded;
    bool found;
    rm_control control;
    int64_t loaded_ms;
} rm_projection;

struct rm_models {
    rs_store *store;
    pthread_mutex_t mu;
    rm_projection projections[RM_MAX_PROJECTIONS];
    size_t n;
};

int rm_models_new(rm_models **out, rs_store *store, app_error *err)
{
    *out = calloc(1, sizeof **out);
    if (!*out)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    (*out)->store = store;
    pthread_mutex_init(&(*out)->mu, NULL);
    return 0;
}

void rm_models_free(rm_models *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static size_t rm_index(const rm_models *m, const char *name)
{
    size_t i = 0;
    while (i < m->n && strcmp(m->projections[i].sub->name, name) != 0)
        i++;
    return i; /* m->n when there is none */
}

static rm_projection *rm_find(rm_models *m, const char *name)
{
    size_t i = rm_index(m, name);
    return i < m->n ? &m->projections[i] : NULL;
}

bool rm_models_has(const rm_models *m, const char *projection)
{
    return rm_index(m, projection) < m->n;
}

int rm_models_add(rm_models *m, const mod_subscription *projection, app_error *err)
{
    if (!projection->keys || !projection->keys[0])
        return app_error_set(err, APP_EINTERNAL, "projection %s declares no read-model keys",
                             projection->name);
    if (rm_find(m, projection->name))
        return app_error_set(err, APP_EINTERNAL, "projection %s registered twice",
                             projection->name);
    if (m->n == RM_MAX_PROJECTIONS)
        return app_error_set(err, APP_EINTERNAL, "more than %d projections", RM_MAX_PROJECTIONS);
    for (size_t i = 0; i < m->n; i++)
        for (const char *const *a = m->projections[i].sub->keys; *a; a++)
            for (const char *const *b = projection->keys; *b; b++)
                if (strcmp(*a, *b) == 0)
                    return app_error_set(err, APP_EINTERNAL,
                                         "read-model keys \"%s\" claimed by %s and %s", *a,
                                         m->projections[i].sub->name, projection->name);
    m->projections[m->n++] = (rm_projection){.sub = projection};
    return 0;
}

/* The projection whose key prefix is the longest one key starts with, or NULL. */
static rm_projection *rm_owner(rm_models *m, const char *key)
{
    rm_projection *best = NULL;
    size_t best_len = 0;
    for (size_t i = 0; i < m->n; i++)
        for (const char *const *p = m->projections[i].sub->keys; *p; p++) {
            size_t len = strlen(*p);
            if (len > best_len && strncmp(key, *p, len) == 0) {
                best = &m->projections[i];
                best_len = len;
            }
        }
    return best;
}

/* "<projection>@<generation>:<key>", owned by the caller. */
static char *rm_physical(const char *projection, int64_t generation, const char *key,
                         app_error *err)
{
    size_t size = strlen(projection) + strlen(key) + 24;
    char *out = malloc(size);
    if (!out) {
        app_error_set(err, APP_ENOMEM, "out of memory");
        return NULL;
    }
    snprintf(out, size, "%s@%lld:%s", projection, (long long)generation, key);
    return out;
}

void rm_checkpoint_name(char *out, size_t size, const char *projection, int64_t generation)
{
    snprintf(out, size, "%s@%lld", projection, (long long)generation);
}

void rm_forget_checkpoint(es_store *es, const char *context, const char *projection,
                          int64_t generation)
{
    char name[192];
    if (generation > 0)
        rm_checkpoint_name(name, sizeof name, projection, generation);
    else
        snprintf(name, sizeof name, "%s", projection);
    app_error err = APP_ERROR_INIT;
    if (es && es->ops->remove_checkpoint &&
        es->ops->remove_checkpoint(es->self, context, name, &err) != 0)
        log_warn("read model %s: could not delete checkpoint %s: %s", projection, name,
                 err.message);
}

void rm_forget_checkpoints(es_store *es, const char *context, const char *projection)
{
    app_error err = APP_ERROR_INIT;
    if (es && es->ops->remove_checkpoints &&
        es->ops->remove_checkpoints(es->self, context, projection, &err) != 0)
        log_warn("read model %s: could not delete the checkpoints of its lost generations: %s",
                 projection, err.message);
}

int64_t rm_new_generation(int64_t after)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    return now > after ? now : after + 1;
}

/* ---- control records ----------------------------------------------------------------- */

static void rm_control_key(char *out, size_t size, const char *projection, const char *suffix)
{
    snprintf(out, size, RM_CONTROL_PREFIX "%s%s", projection, suffix);
}

/* Reads a control record's JSON; *o is NULL when the key is missing. */
static int rm_record_load(rm_models *m, const char *key, cJSON **o, app_error *err)
{
    *o = NULL;
    char *text = NULL;
    int rc = m->store->ops->get(m->store->self, key, &text, err);
    if (rc != 0 || !text)
        return rc;
    *o = json_parse_n(text, strlen(text));
    free(text);
    if (!cJSON_IsObject(*o)) {
        cJSON_Delete(*o);
        *o = NULL;
        return app_error_set(err, APP_EINTERNAL, "read-model control record %s is not JSON", key);
    }
    return 0;
}

static int rm_generation_of(const cJSON *o, const char *key, int64_t *out, app_error *err)
{
    if (!json_exact_int(cJSON_GetObjectItemCaseSensitive(o, "generation"), out) || *out < 0)
        return app_error_set(err, APP_EINTERNAL,
                             "read-model control record %s has no valid generation", key);
    return 0;
}

int rm_control_load(rm_models *m, const char *projection, rm_control *out, bool *found,
                    app_error *err)
{
    memset(out, 0, sizeof *out);
    *found = false;
    char key[160];
    rm_control_key(key, sizeof key, projection, "");
    cJSON *o;
    int rc = rm_record_load(m, key, &o, err);
    if (rc == 0 && o) {
        rc = rm_generation_of(o, key, &out->generation, err);
        const cJSON *state = cJSON_GetObjectItemCaseSensitive(o, "state");
        out->building = cJSON_IsString(state) && strcmp(state->valuestring, "building") == 0;
        *found = rc == 0;
    }
    cJSON_Delete(o);
    return rc;
}

int rm_control_save(rm_models *m, const char *projection, const rm_control *c, app_error *err)
{
    char key[160], value[96];
    rm_control_key(key, sizeof key, projection, "");
    snprintf(value, sizeof value, "{\"generation\":%lld,\"state\":\"%s\"}",
             (long long)c->generation, c->building ? "building" : "active");
    int rc = m->store->ops->set(m->store->self, key, value, err);
    if (rc == 0)
        rm_models_invalidate(m);
    return rc;
}

int rm_next_load(rm_models *m, const char *projection, rm_next *out, bool *found, app_error *err)
{
    memset(out, 0, sizeof *out);
    *found = false;
    char key[160];
    rm_control_key(key, sizeof key, projection, ":next");
    cJSON *o;
    int rc = rm_record_load(m, key, &o, err);
    if (rc == 0 && o) {
        rc = rm_generation_of(o, key, &out->generation, err);
        out->ready = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "ready"));
        *found = rc == 0;
    }
    cJSON_Delete(o);
    return rc;
}

int rm_next_save(rm_models *m, const char *projection, const rm_next *n, app_error *err)
{
    char key[160], value[96];
    rm_control_key(key, sizeof key, projection, ":next");
    snprintf(value, sizeof value, "{\"generation\":%lld,\"ready\":%s}", (long long)n->generation,
             n->ready ? "true" : "false");
    return m->store->ops->set(m->store->self, key, value, err);
}

int rm_next_clear(rm_models *m, const char *projection, app_error *err)
{
    char key[160];
    rm_control_key(key, sizeof key, projection, ":next");
    return m->store->ops->del(m->store->self, key, err);
}

int rm_drop(rm_models *m, const char *projection, int64_t generation, size_t *deleted,
            app_error *err)
{
    *deleted = 0;
    if (!m->store->ops->del_prefix)
        return 0; /* a store that cannot list keys keeps them */
    char prefix[160];
    snprintf(prefix, sizeof prefix, "%s@%lld:", projection, (long long)generation);
    return m->store->ops->del_prefix(m->store->self, prefix, deleted, err);
}

int rm_drop_unversioned(rm_models *m, const char *projection, size_t *deleted, app_error *err)
{
    *deleted = 0;
    rm_projection *p = rm_find(m, projection);
    if (!p || !m->store->ops->del_prefix)
        return 0;
    for (const char *const *prefix = p->sub->keys; *prefix; prefix++) {
        size_t n = 0;
        int rc = m->store->ops->del_prefix(m->store->self, *prefix, &n, err);
        if (rc != 0)
            return rc;
        *deleted += n;
    }
    return 0;
}

void rm_models_invalidate(rm_models *m)
{
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->n; i++)
        m->projections[i].loaded = false;
    pthread_mutex_unlock(&m->mu);
}

/* ---- the reader ---------------------------------------------------------------------- */

/* Loads p's control record into the reader's cache. */
static int rm_refresh(rm_models *m, rm_projection *p, rm_control *c, bool *found, app_error *err)
{
    int rc = rm_control_load(m, p->sub->name, c, found, err);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&m->mu);
    p->loaded = true;
    p->found = *found;
    p->control = *c;
    p->loaded_ms = deadline_now_ms();
    pthread_mutex_unlock(&m->mu);
    return 0;
}

static int rm_unreadable(const rm_projection *p, app_error *err)
{
    app_error_set(err, APP_EUNAVAIL, "the %s read model is being rebuilt", p->sub->name);
    if (err)
        app_error_detail(err, "it is built again from the event log; retry in a moment");
    return APP_EUNAVAIL;
}

/* How a reader learns a projection's live generation. */
typedef enum rm_view {
    RM_CACHED,      /* from what it read less than RM_CACHE_MS ago, else from the store */
    RM_FRESH,       /* from the store */
    RM_CACHED_ONLY, /* from what it read less than RM_CACHE_MS ago, else APP_EUNAVAIL */
} rm_view;

/* The live generation of p, as view says. APP_EUNAVAIL while it is being built. */
static int rm_live_generation(rm_models *m, rm_projection *p, rm_view view, int64_t *out,
                              app_error *err)
{
    pthread_mutex_lock(&m->mu);
    bool cached = view != RM_FRESH && p->loaded && deadline_now_ms() - p->loaded_ms < RM_CACHE_MS;
    rm_control c = p->control;
    bool found = p->found;
    pthread_mutex_unlock(&m->mu);
    if (!cached && view == RM_CACHED_ONLY)
        return app_error_set(err, APP_EUNAVAIL, "the %s control record is not cached",
                             p->sub->name);
    if (!cached) {
        int rc = rm_refresh(m, p, &c, &found, err);
        if (rc != 0)
            return rc;
    }
    if (!found || c.building)
        return rm_unreadable(p, err);
    *out = c.generation;
    return 0;
}

/* The key to use in the store for a logical key: *phys is NULL when key is not a
 * projection's (use it as it is), else an owned string; *owner is the projection. */
static int rm_map(rm_models *m, const char *key, rm_view view, rm_projection **owner, char **phys,
                  app_error *err)
{
    *phys = NULL;
    *owner = NULL;
    if (!key)
        return app_error_set(err, APP_EINTERNAL, "read store key is NULL");
    rm_projection *p = rm_owner(m, key);
    if (!p)
        return 0;
    int64_t generation = 0;
    int rc = rm_live_generation(m, p, view, &generation, err);
    if (rc != 0)
        return rc;
    *owner = p;
    *phys = rm_physical(p->sub->name, generation, key, err);
    return *phys ? 0 : APP_ENOMEM;
}

/* A projection's key that is missing may be missing because the read store lost its data
 * a moment ago (or a switch happened): such a read asks again with the control record read
 * afresh, so that it answers 503 rather than a wrong "not found". */
static int rd_get(void *self, const char *key, char **out, app_error *err)
{
    rm_models *m = self;
    *out = NULL;
    int rc = 0;
    for (int attempt = 0; rc == 0 && attempt < 2 && !*out; attempt++) {
        rm_projection *owner;
        char *phys;
        rc = rm_map(m, key, attempt > 0 ? RM_FRESH : RM_CACHED, &owner, &phys, err);
        if (rc == 0)
            rc = m->store->ops->get(m->store->self, phys ? phys : key, out, err);
        free(phys);
        if (!owner)
            break;
    }
    return rc;
}

static int rd_set(void *self, const char *key, const char *value, app_error *err)
{
    rm_models *m = self;
    rm_projection *owner;
    char *phys;
    int rc = rm_map(m, key, RM_CACHED, &owner, &phys, err);
    if (rc == 0)
        rc = m->store->ops->set(m->store->self, phys ? phys : key, value, err);
    free(phys);
    return rc;
}

static int rd_del(void *self, const char *key, app_error *err)
{
    rm_models *m = self;
    rm_projection *owner;
    char *phys;
    int rc = rm_map(m, key, RM_CACHED, &owner, &phys, err);
    if (rc == 0)
        rc = m->store->ops->del(m->store->self, phys ? phys : key, err);
    free(phys);
    return rc;
}

static int rd_zadd(void *self, const char *key, double score, const char *member, app_error *err)
{
    rm_models *m = self;
    rm_projection *owner;
    char *phys;
    int rc = rm_map(m, key, RM_CACHED, &owner, &phys, err);
    if (rc == 0)
        rc = m->store->ops->zadd(m->store->self, phys ? phys : key, score, member, err);
    free(phys);
    return rc;
}

static int rd_zrevrange(void *self, const char *key, size_t start, size_t stop, char ***out,
                        size_t *n, app_error *err)
{
    rm_models *m = self;
    *out = NULL;
    *n = 0;
    int rc = 0;
    for (int attempt = 0; rc == 0 && attempt < 2 && *n == 0; attempt++) {
        rm_projection *owner;
        char *phys;
        rc = rm_map(m, key, attempt > 0 ? RM_FRESH : RM_CACHED, &owner, &phys, err);
        if (rc == 0)
            rc = m->store->ops->zrevrange(m->store->self, phys ? phys : key, start, stop, out, n,
                                          err);
        free(phys);
        if (!owner)
            break;
    }
    return rc;
}

static int rd_ping(void *self, app_error *err)
{
    rm_models *m = self;
    return m->store->ops->ping(m->store->self, err);
}

/* Never blocks: a control record older than RM_CACHE_MS is not read here but declined, and
 * the caller's blocking get reads it. A missing key is answered as missing; the caller's get
 * is the one that asks again afresh. */
static int rd_get_async(void *self, const char *key, rs_get_done done, void *arg, app_error *err)
{
    rm_models *m = self;
    if (!m->store->ops->get_async)
        return app_error_set(err, APP_EUNAVAIL, "the read store has no get_async");
    rm_projection *owner;
    char *phys;
    int rc = rm_map(m, key, RM_CACHED_ONLY, &owner, &phys, err);
    if (rc == 0)
        rc = m->store->ops->get_async(m->store->self, phys ? phys : key, done, arg, err);
    free(phys);
    return rc;
}

static const rs_store_ops rm_reader_ops = {
    .get = rd_get,
    .set = rd_set,
    .del = rd_del,
    .zadd = rd_zadd,
    .zrevrange = rd_zrevrange,
    .ping = rd_ping,
    .get_async = rd_get_async,
};

rs_store rm_models_port(rm_models *m)
{
    rs_store port = {&rm_reader_ops, m};
    return port;
}

/* ---- writers ------------------------------------------------------------------------- */

/* What a buffered writer knows of its own keys: value NULL means known to be absent. */
typedef struct rm_entry {
    char *key;
    char *value;
} rm_entry;

typedef struct rm_pending {
    rs_write_kind kind;
    char *key;
    char *value;
    double score;
} rm_pending;

struct rm_writer {
    rm_models *models;
    rm_projection *projection;
    int64_t generation;
    rs_store port;
    bool buffered;
    bool per_batch;    /* buffered in a live generation: entries last until the flush */
    bool complete;     /* every key of the generation is in entries (absent ones as NULL) */
    rm_entry *entries; /* open addressing, size a power of two */
    size_t n_entries, cap_entries;
    /* While seen_all: the hash of every key the generation has (0 marks a free slot, so a
     * key hashing to 0 is kept as 1). A key not in it is absent; one in it may be (a hash
     * collision), and is asked for. Open addressing, size a power of two. */
    bool seen_all;
    uint64_t *seen;
    size_t n_seen, cap_seen;
    rm_pending *pending;
    size_t n_pending, cap_pending;
};

static uint64_t rm_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void rm_entries_clear(rm_writer *w)
{
    bool large = w->cap_entries >= 16384;
    for (size_t i = 0; i < w->cap_entries; i++) {
        free(w->entries[i].key);
        free(w->entries[i].value);
    }
    free(w->entries);
    w->entries = NULL;
    w->n_entries = w->cap_entries = 0;
#ifdef __GLIBC__
    if (large)
        malloc_trim(0); /* tens of thousands of small blocks: give the pages back */
#else
    (void)large;
#endif
}

static void rm_seen_clear(rm_writer *w)
{
    free(w->seen);
    w->seen = NULL;
    w->n_seen = w->cap_seen = 0;
    w->seen_all = false;
}

static uint64_t rm_seen_hash(const char *key)
{
    uint64_t h = rm_hash(key);
    return h ? h : 1;
}

static uint64_t *rm_seen_slot(uint64_t *table, size_t cap, uint64_t h)
{
    for (size_t i = h & (cap - 1);; i = (i + 1) & (cap - 1))
        if (!table[i] || table[i] == h)
            return &table[i];
}

static bool rm_seen_has(const rm_writer *w, const char *key)
{
    uint64_t h = rm_seen_hash(key);
    return w->cap_seen && *rm_seen_slot(w->seen, w->cap_seen, h) == h;
}

/* Adds key's hash; out of memory, the writer stops knowing its keys (and asks the store). */
static void rm_seen_add(rm_writer *w, const char *key)
{
    if ((w->n_seen + 1) * 4 > w->cap_seen * 3) {
        size_t cap = w->cap_seen ? w->cap_seen * 2 : 4096;
        uint64_t *table = calloc(cap, sizeof *table);
        if (!table) {
            rm_seen_clear(w);
            return;
        }
        for (size_t i = 0; i < w->cap_seen; i++)
            if (w->seen[i])
                *rm_seen_slot(table, cap, w->seen[i]) = w->seen[i];
        free(w->seen);
        w->seen = table;
        w->cap_seen = cap;
    }
    uint64_t h = rm_seen_hash(key);
    uint64_t *slot = rm_seen_slot(w->seen, w->cap_seen, h);
    if (!*slot) {
        *slot = h;
        w->n_seen++;
    }
}

static rm_entry *rm_slot(rm_entry *table, size_t cap, const char *key)
{
    for (size_t i = rm_hash(key) & (cap - 1);; i = (i + 1) & (cap - 1))
        if (!table[i].key || strcmp(table[i].key, key) == 0)
            return &table[i];
}

static bool rm_entries_grow(rm_writer *w)
{
    size_t cap = w->cap_entries ? w->cap_entries * 2 : 1024;
    rm_entry *table = calloc(cap, sizeof *table);
    if (!table)
        return false;
    for (size_t i = 0; i < w->cap_entries; i++)
        if (w->entries[i].key)
            *rm_slot(table, cap, w->entries[i].key) = w->entries[i];
    free(w->entries);
    w->entries = table;
    w->cap_entries = cap;
    return true;
}

/* Remembers key = value (copied; NULL for absent). */
static int rm_remember(rm_writer *w, const char *key, const char *value, app_error *err)
{
    if ((w->n_entries + 1) * 10 > w->cap_entries * 7 && !rm_entries_grow(w))
        return app_error_set(err, APP_ENOMEM, "out of memory");
    rm_entry *e = rm_slot(w->entries, w->cap_entries, key);
    char *copy = value ? strdup(value) : NULL;
    if (value && !copy)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    if (!e->key) {
        e->key = strdup(key);
        if (!e->key) {
            free(copy);
            return app_error_set(err, APP_ENOMEM, "out of memory");
        }
        w->n_entries++;
    }
    if (w->seen_all)
        rm_seen_add(w, key);
    free(e->value);
    e->value = copy;
    return 0;
}

static int rm_queue(rm_writer *w, rs_write_kind kind, const char *key, const char *value,
                    double score, app_error *err)
{
    if (w->n_pending == w->cap_pending) {
        size_t cap = w->cap_pending ? w->cap_pending * 2 : 256;
        rm_pending *grown = realloc(w->pending, cap * sizeof *grown);
        if (!grown)
            return app_error_set(err, APP_ENOMEM, "out of memory");
        w->pending = grown;
        w->cap_pending = cap;
    }
    rm_pending *p = &w->pending[w->n_pending];
    p->kind = kind;
    p->score = score;
    p->key = strdup(key);
    p->value = value ? strdup(value) : NULL;
    if (!p->key || (value && !p->value)) {
        free(p->key);
        free(p->value);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    w->n_pending++;
    return 0;
}

static void rm_pending_clear(rm_writer *w)
{
    for (size_t i = 0; i < w->n_pending; i++) {
        free(w->pending[i].key);
        free(w->pending[i].value);
    }
    w->n_pending = 0;
}

/* After a flush: a batched writer forgets what it read and wrote (only the batch's own reads
 * may use it); any writer forgets past RM_BUFFER_MAX. From then on a miss asks the store,
 * unless the key was never written (seen_all), which the hashes tell. */
static void rm_forget(rm_writer *w)
{
    if (w->per_batch || w->n_entries > RM_BUFFER_MAX) {
        rm_entries_clear(w);
        w->complete = false;
    }
}

int rm_writer_flush(rm_writer *w, app_error *err)
{
    if (w->n_pending == 0) {
        rm_forget(w);
        return 0;
    }
    rs_store *store = w->models->store;
    int rc = 0;
    if (store->ops->write_batch) {
        rs_write *writes = calloc(w->n_pending, sizeof *writes);
        if (!writes)
            return app_error_set(err, APP_ENOMEM, "out of memory");
        for (size_t i = 0; i < w->n_pending; i++)
            writes[i] = (rs_write){w->pending[i].kind, w->pending[i].key, w->pending[i].value,
                                   w->pending[i].score};
        rc = store->ops->write_batch(store->self, writes, w->n_pending, err);
        free(writes);
    } else {
        for (size_t i = 0; rc == 0 && i < w->n_pending; i++) {
            const rm_pending *p = &w->pending[i];
            rc = p->kind == RS_WRITE_SET ? store->ops->set(store->self, p->key, p->value, err)
                 : p->kind == RS_WRITE_DEL
                     ? store->ops->del(store->self, p->key, err)
                     : store->ops->zadd(store->self, p->key, p->score, p->value, err);
        }
    }
    if (rc != 0)
        return rc; /* kept: the next flush sends them again (every write is idempotent) */
    rm_pending_clear(w);
    rm_forget(w);
    return 0;
}

/* *phys is the physical key (owned) when key belongs to the writer's projection, else NULL. */
static int rm_own(rm_writer *w, const char *key, char **phys, app_error *err)
{
    *phys = NULL;
    if (!key || rm_owner(w->models, key) != w->projection)
        return 0;
    *phys = rm_physical(w->projection->sub->name, w->generation, key, err);
    return *phys ? 0 : APP_ENOMEM;
}

/* The entry the writer holds for a physical key, NULL when it holds none. */
static rm_entry *rm_known(const rm_writer *w, const char *phys)
{
    rm_entry *e = w->buffered && w->entries ? rm_slot(w->entries, w->cap_entries, phys) : NULL;
    return e && e->key ? e : NULL;
}

/* True when the store must be asked for a physical key the writer holds no entry for. */
static bool rm_must_ask(const rm_writer *w, const char *phys)
{
    return !(w->buffered && (w->complete || (w->seen_all && !rm_seen_has(w, phys))));
}

static int wr_get(void *self, const char *key, char **out, app_error *err)
{
    rm_writer *w = self;
    *out = NULL;
    char *phys;
    int rc = rm_own(w, key, &phys, err);
    if (rc != 0 || !phys)
        return rc != 0 ? rc : rd_get(w->models, key, out, err);
    rm_entry *e = rm_known(w, phys);
    if (e) {
        if (e->value && !(*out = strdup(e->value)))
            rc = app_error_set(err, APP_ENOMEM, "out of memory");
    } else if (rm_must_ask(w, phys)) {
        rc = w->models->store->ops->get(w->models->store->self, phys, out, err);
    }
    free(phys);
    return rc;
}

static int rm_cmp_keys(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int rm_writer_prefetch(rm_writer *w, const char *const *keys, size_t n, app_error *err)
{
    rs_store *store = w->models->store;
    if (!w->buffered || n == 0 || !store->ops->get_many)
        return 0;
    char **phys = calloc(n, sizeof *phys), **values = calloc(n, sizeof *values);
    int rc = phys && values ? 0 : app_error_set(err, APP_ENOMEM, "out of memory");
    size_t asked = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char *p;
        rc = rm_own(w, keys[i], &p, err);
        if (rc != 0 || !p)
            continue; /* not the projection's own key: read as the handler asks */
        if (rm_known(w, p) || !rm_must_ask(w, p))
            free(p);
        else
            phys[asked++] = p;
    }
    if (rc == 0 && asked > 1) { /* a key asked once, however many of the batch's events touch it */
        qsort(phys, asked, sizeof *phys, rm_cmp_keys);
        size_t kept = 1;
        for (size_t i = 1; i < asked; i++) {
            if (strcmp(phys[i], phys[kept - 1]) == 0)
                free(phys[i]);
            else
                phys[kept++] = phys[i];
        }
        asked = kept;
    }
    if (rc == 0 && asked > 0)
        rc = store->ops->get_many(store->self, (const char *const *)phys, asked, values, err);
    for (size_t i = 0; rc == 0 && i < asked; i++)
        rc = rm_remember(w, phys[i], values[i], err);
    for (size_t i = 0; phys && i < asked; i++) {
        free(phys[i]);
        free(values[i]);
    }
    free(phys);
    free(values);
    return rc;
}

static int wr_put(rm_writer *w, rs_write_kind kind, const char *key, const char *value,
                  double score, app_error *err)
{
    char *phys;
    int rc = rm_own(w, key, &phys, err);
    if (rc != 0)
        return rc;
    if (!phys) {
        return kind == RS_WRITE_SET   ? rd_set(w->models, key, value, err)
               : kind == RS_WRITE_DEL ? rd_del(w->models, key, err)
                                      : rd_zadd(w->models, key, score, value, err);
    }
    rs_store *store = w->models->store;
    if (w->buffered) {
        rc = kind == RS_WRITE_ZADD ? 0 : rm_remember(w, phys, value, err);
        if (rc == 0)
            rc = rm_queue(w, kind, phys, value, score, err);
    } else {
        rc = kind == RS_WRITE_SET   ? store->ops->set(store->self, phys, value, err)
             : kind == RS_WRITE_DEL ? store->ops->del(store->self, phys, err)
                                    : store->ops->zadd(store->self, phys, score, value, err);
    }
    free(phys);
    return rc;
}

static int wr_set(void *self, const char *key, const char *value, app_error *err)
{
    if (!value)
        return app_error_set(err, APP_EINTERNAL, "read store value is NULL");
    return wr_put(self, RS_WRITE_SET, key, value, 0, err);
}

static int wr_del(void *self, const char *key, app_error *err)
{
    return wr_put(self, RS_WRITE_DEL, key, NULL, 0, err);
}

static int wr_zadd(void *self, const char *key, double score, const char *member, app_error *err)
{
    if (!member)
        return app_error_set(err, APP_EINTERNAL, "sorted set member is NULL");
    return wr_put(self, RS_WRITE_ZADD, key, member, score, err);
}

static int wr_zrevrange(void *self, const char *key, size_t start, size_t stop, char ***out,
                        size_t *n, app_error *err)
{
    rm_writer *w = self;
    *out = NULL;
    *n = 0;
    char *phys;
    int rc = rm_own(w, key, &phys, err);
    if (rc != 0 || !phys)
        return rc != 0 ? rc : rd_zrevrange(w->models, key, start, stop, out, n, err);
    rc = rm_writer_flush(w, err); /* sorted sets are not buffered: read what was sent */
    if (rc == 0)
        rc = w->models->store->ops->zrevrange(w->models->store->self, phys, start, stop, out, n,
                                              err);
    free(phys);
    return rc;
}

static int wr_ping(void *self, app_error *err)
{
    rm_writer *w = self;
    return w->models->store->ops->ping(w->models->store->self, err);
}

static const rs_store_ops rm_writer_ops = {
    .get = wr_get,
    .set = wr_set,
    .del = wr_del,
    .zadd = wr_zadd,
    .zrevrange = wr_zrevrange,
    .ping = wr_ping,
};

int rm_writer_new(rm_writer **out, rm_models *m, const char *projection, int64_t generation,
                  bool buffered, app_error *err)
{
    *out = NULL;
    rm_projection *p = rm_find(m, projection);
    if (!p)
        return app_error_set(err, APP_EINVAL, "no projection named %s", projection);
    rm_writer *w = calloc(1, sizeof *w);
    if (!w)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    w->models = m;
    w->projection = p;
    w->generation = generation;
    w->buffered = buffered;
    w->complete = buffered;
    w->seen_all = buffered;
    w->port = (rs_store){&rm_writer_ops, w};
    *out = w;
    return 0;
}

void rm_writer_set_generation(rm_writer *w, int64_t generation)
{
    w->generation = generation;
}

int rm_writer_set_buffered(rm_writer *w, bool buffered, bool complete, app_error *err)
{
    int rc = rm_writer_flush(w, err);
    if (rc != 0)
        return rc;
    rm_entries_clear(w);
    rm_seen_clear(w);
    w->buffered = buffered;
    w->per_batch = false;
    w->complete = buffered && complete;
    w->seen_all = w->complete;
    return 0;
}

int rm_writer_set_batched(rm_writer *w, app_error *err)
{
    int rc = rm_writer_set_buffered(w, true, false, err);
    if (rc == 0)
        w->per_batch = true;
    return rc;
}

int64_t rm_writer_generation(const rm_writer *w)
{
    return w->generation;
}

rs_store rm_writer_port(rm_writer *w)
{
    return w->port;
}

void rm_writer_free(rm_writer *w)
{
    if (!w)
        return;
    rm_pending_clear(w);
    free(w->pending);
    rm_entries_clear(w);
    rm_seen_clear(w);
    free(w);
}
