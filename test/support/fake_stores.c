/* In-memory event store and read store for unit tests (see fake_stores.h). Out of memory
 * aborts: these fakes serve tests, where it cannot be handled usefully. */
#include "test/support/fake_stores.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *fk_alloc(void *p)
{
    if (!p) {
        fputs("fake_stores: out of memory\n", stderr);
        abort();
    }
    return p;
}

static char *fk_strdup(const char *s)
{
    return fk_alloc(strdup(s ? s : ""));
}

static void fk_copy_event(es_event *dst, const es_event *src)
{
    *dst = *src;
    dst->stream_id = fk_strdup(src->stream_id);
    dst->type = fk_strdup(src->type);
    dst->data = fk_strdup(src->data);
    dst->metadata = fk_strdup(src->metadata);
}

/* ---- event store ------------------------------------------------------------------- */

void fake_es_init(fake_es *f, const char *context)
{
    memset(f, 0, sizeof *f);
    f->context = context;
    pthread_mutex_init(&f->lock, NULL);
}

void fake_es_free(fake_es *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n_streams; i++) {
        es_event_list l = {f->streams[i].events, f->streams[i].len};
        es_event_list_free(&l);
        es_snapshot_free(&f->streams[i].snapshot);
        free(f->streams[i].id);
    }
    for (size_t i = 0; i < f->n_claims; i++)
        free(f->claims[i].scope), free(f->claims[i].key), free(f->claims[i].owner);
    for (size_t i = 0; i < f->n_checkpoints; i++)
        free(f->checkpoints[i].subscriber);
    for (size_t i = 0; i < f->n_processes; i++)
        free(f->processes[i].name), free(f->processes[i].id), free(f->processes[i].state);
    for (size_t i = 0; i < f->n_keys; i++)
        free(f->keys[i].actor), free(f->keys[i].key), free(f->keys[i].command),
            free(f->keys[i].request_hash), free(f->keys[i].response);
    for (size_t i = 0; i < f->n_dead; i++)
        free(f->dead[i].subscriber), free(f->dead[i].error);
    pthread_mutex_destroy(&f->lock);
    memset(f, 0, sizeof *f);
}

static fake_stream *fk_stream(fake_es *f, const char *id)
{
    for (size_t i = 0; i < f->n_streams; i++)
        if (strcmp(f->streams[i].id, id) == 0)
            return &f->streams[i];
    return NULL;
}

fake_stream *fake_es_stream(fake_es *f, const char *id)
{
    pthread_mutex_lock(&f->lock);
    fake_stream *s = fk_stream(f, id);
    pthread_mutex_unlock(&f->lock);
    return s;
}

static fake_claim *fk_claim(fake_es *f, const char *scope, const char *key)
{
    for (size_t i = 0; i < f->n_claims; i++)
        if (strcmp(f->claims[i].scope, scope) == 0 && strcmp(f->claims[i].key, key) == 0)
            return &f->claims[i];
    return NULL;
}

const char *fake_es_claim_owner(fake_es *f, const char *scope, const char *key)
{
    pthread_mutex_lock(&f->lock);
    const fake_claim *c = fk_claim(f, scope, key);
    pthread_mutex_unlock(&f->lock);
    return c ? c->owner : NULL;
}

static int fk_context(const fake_es *f, const char *context, app_error *err)
{
    if (f->context && (!context || strcmp(f->context, context) != 0))
        return app_error_set(err, APP_EINTERNAL, "fake event store of %s asked about %s",
                             f->context, context ? context : "(null)");
    return 0;
}

/* Checks and applies the claims of req; the caller holds the lock. */
static int fk_claims(fake_es *f, const es_append_req *req, app_error *err)
{
    for (size_t i = 0; i < req->n_claims; i++) {
        const fake_claim *c = fk_claim(f, req->claims[i].scope, req->claims[i].key);
        if (c && strcmp(c->owner, req->stream_id) != 0) {
            app_error_set(err, APP_ECONFLICT, "key already claimed");
            app_error_field(err, req->claims[i].scope, "is taken");
            return APP_ECONFLICT;
        }
    }
    if (f->n_claims + req->n_claims > FAKE_STORE_MAX)
        return app_error_set(err, APP_EINTERNAL, "fake event store: too many claims");
    for (size_t i = 0; i < req->n_releases; i++) {
        fake_claim *c = fk_claim(f, req->releases[i].scope, req->releases[i].key);
        if (c && strcmp(c->owner, req->stream_id) == 0) {
            free(c->scope), free(c->key), free(c->owner);
            *c = f->claims[--f->n_claims];
        }
    }
    for (size_t i = 0; i < req->n_claims; i++)
        if (!fk_claim(f, req->claims[i].scope, req->claims[i].key))
            f->claims[f->n_claims++] =
                (fake_claim){fk_strdup(req->claims[i].scope), fk_strdup(req->claims[i].key),
                             fk_strdup(req->stream_id)};
    return 0;
}

static fake_process *fk_process(fake_es *f, const char *name, const char *id)
{
    for (size_t i = 0; i < f->n_processes; i++)
        if (strcmp(f->processes[i].name, name) == 0 && strcmp(f->processes[i].id, id) == 0)
            return &f->processes[i];
    return NULL;
}

const fake_process *fake_es_process(fake_es *f, const char *name, const char *id)
{
    pthread_mutex_lock(&f->lock);
    const fake_process *p = fk_process(f, name, id);
    pthread_mutex_unlock(&f->lock);
    return p;
}

/* Upserts the process an append carries; the caller holds the lock and has checked room. */
static void fk_save_process(fake_es *f, const es_process *proc)
{
    fake_process *p = fk_process(f, proc->name, proc->id);
    if (!p) {
        p = &f->processes[f->n_processes++];
        p->name = fk_strdup(proc->name);
        p->id = fk_strdup(proc->id);
    } else {
        free(p->state);
    }
    p->state = fk_strdup(proc->state ? proc->state : "{}");
    p->deadline_ms = proc->deadline_ms;
    p->done = proc->done;
}

/* The live record of (actor, key), or NULL; an expired one is dropped on the way. */
static fake_idem *fk_idem(fake_es *f, const char *actor, const char *key, int ttl_seconds)
{
    for (size_t i = 0; i < f->n_keys; i++) {
        fake_idem *k = &f->keys[i];
        if (strcmp(k->actor, actor) != 0 || strcmp(k->key, key) != 0)
            continue;
        if (k->created_s + ttl_seconds > f->now_s)
            return k;
        free(k->actor), free(k->key), free(k->command), free(k->request_hash), free(k->response);
        f->keys[i] = f->keys[--f->n_keys];
        return NULL;
    }
    return NULL;
}

static int fk_idem_record(fake_es *f, const es_idempotency *rec, app_error *err)
{
    if (fk_idem(f, rec->actor, rec->key, rec->ttl_seconds))
        return app_error_set(err, APP_EIDEMPOTENT, "idempotency key is recorded already");
    if (f->n_keys == FAKE_STORE_MAX)
        return app_error_set(err, APP_EINTERNAL, "fake event store: too many idempotency keys");
    f->keys[f->n_keys++] =
        (fake_idem){fk_strdup(rec->actor),        fk_strdup(rec->key),      fk_strdup(rec->command),
                    fk_strdup(rec->request_hash), fk_strdup(rec->response), f->now_s};
    return 0;
}

static int fk_append_locked(fake_es *f, const es_append_req *req, es_append_result *out,
                            app_error *err)
{
    if (f->fail_next) {
        int code = f->fail_next;
        f->fail_next = 0;
        return app_error_set(err, code, "injected failure");
    }
    fake_stream *s = fk_stream(f, req->stream_id);
    int64_t current = s ? (int64_t)s->len : 0;
    if (req->expected_version != ES_ANY_VERSION && req->expected_version != current) {
        f->conflicts++;
        app_error_set(err, APP_EVERSION, "stream version conflict");
        return app_error_detail(err, "current version %lld", (long long)current);
    }
    if (!s && f->n_streams == FAKE_STORE_MAX)
        return app_error_set(err, APP_EINTERNAL, "fake event store: too many streams");
    if (req->process && !fk_process(f, req->process->name, req->process->id) &&
        f->n_processes == FAKE_STORE_MAX)
        return app_error_set(err, APP_EINTERNAL, "fake event store: too many processes");
    const es_idempotency *idem = req->idempotency;
    if (idem && fk_idem(f, idem->actor, idem->key, idem->ttl_seconds))
        return app_error_set(err, APP_EIDEMPOTENT, "idempotency key is recorded already");
    if (idem && f->n_keys == FAKE_STORE_MAX)
        return app_error_set(err, APP_EINTERNAL, "fake event store: too many idempotency keys");
    int rc = fk_claims(f, req, err);
    if (rc != 0)
        return rc;
    if (idem)
        fk_idem_record(f, idem, err);
    if (req->process)
        fk_save_process(f, req->process);
    if (!s) {
        s = &f->streams[f->n_streams++];
        s->id = fk_strdup(req->stream_id);
    }
    s->events = fk_alloc(realloc(s->events, (s->len + req->n_events + 1) * sizeof *s->events));
    for (size_t i = 0; i < req->n_events; i++) {
        const es_new_event *n = &req->events[i];
        es_event ev = {
            .position = ++f->position,
            .stream_id = (char *)(uintptr_t)req->stream_id,
            .version = (int64_t)s->len + 1,
            .type = (char *)(uintptr_t)n->type,
            .schema_version = n->schema_version,
            .data = (char *)(uintptr_t)n->data,
            .metadata = (char *)(uintptr_t)n->metadata,
            .recorded_at = "2026-11-28T15:00:00.123456Z",
        };
        snprintf(ev.event_id, sizeof ev.event_id, "%s", n->event_id ? n->event_id : "");
        fk_copy_event(&s->events[s->len++], &ev);
    }
    f->appends++;
    if (out) {
        out->version = (int64_t)s->len;
        out->first_position = f->position - (int64_t)req->n_events + 1;
        out->last_position = f->position;
    }
    return 0;
}

static int fk_append(void *self, const es_append_req *req, es_append_result *out, app_error *err)
{
    fake_es *f = self;
    int rc = fk_context(f, req->context, err);
    if (rc != 0)
        return rc;
    if (f->before_append && !f->in_hook) {
        f->in_hook = true;
        f->before_append(f, req, f->hook_arg);
        f->in_hook = false;
    }
    pthread_mutex_lock(&f->lock);
    rc = fk_append_locked(f, req, out, err);
    pthread_mutex_unlock(&f->lock);
    return rc;
}

/* At most limit events of a stream after a version; loaded counts what it returns. */
static int fk_stream_events(void *self, const char *context, const char *stream_id,
                            int64_t after_version, size_t limit, es_event_list *out, app_error *err)
{
    fake_es *f = self;
    out->items = NULL;
    out->len = 0;
    int rc = fk_context(f, context, err);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&f->lock);
    fake_stream *s = fk_stream(f, stream_id);
    if (after_version < 0)
        after_version = 0;
    if (s && (int64_t)s->len > after_version && limit > 0) {
        size_t n = s->len - (size_t)after_version;
        if (n > limit)
            n = limit;
        out->items = fk_alloc(calloc(n, sizeof *out->items));
        for (size_t i = 0; i < n; i++)
            fk_copy_event(&out->items[i], &s->events[(size_t)after_version + i]);
        out->len = n;
    }
    f->loaded += out->len;
    f->last_after_version = after_version;
    pthread_mutex_unlock(&f->lock);
    return 0;
}

static int fk_read_stream(void *self, const char *context, const char *stream_id,
                          int64_t after_version, size_t limit, es_event_list *out, app_error *err)
{
    return fk_stream_events(self, context, stream_id, after_version, limit, out, err);
}

static int fk_load_stream(void *self, const char *context, const char *stream_id,
                          int64_t after_version, es_event_list *out, app_error *err)
{
    return fk_stream_events(self, context, stream_id, after_version, SIZE_MAX, out, err);
}

static int fk_position_cmp(const void *a, const void *b)
{
    const es_event *x = *(const es_event *const *)a, *y = *(const es_event *const *)b;
    return x->position < y->position ? -1 : x->position > y->position;
}

static int fk_read_log(void *self, const char *context, int64_t after_position, size_t limit,
                       es_event_list *out, app_error *err)
{
    fake_es *f = self;
    out->items = NULL;
    out->len = 0;
    int rc = fk_context(f, context, err);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&f->lock);
    size_t total = 0;
    for (size_t i = 0; i < f->n_streams; i++)
        total += f->streams[i].len;
    const es_event **all = fk_alloc(calloc(total + 1, sizeof *all));
    size_t n = 0;
    for (size_t i = 0; i < f->n_streams; i++)
        for (size_t j = 0; j < f->streams[i].len; j++)
            if (f->streams[i].events[j].position > after_position)
                all[n++] = &f->streams[i].events[j];
    qsort(all, n, sizeof *all, fk_position_cmp);
    if (n > limit)
        n = limit;
    if (n > 0) {
        out->items = fk_alloc(calloc(n, sizeof *out->items));
        for (size_t i = 0; i < n; i++)
            fk_copy_event(&out->items[i], all[i]);
        out->len = n;
    }
    pthread_mutex_unlock(&f->lock);
    free(all);
    return 0;
}

static int fk_head_position(void *self, const char *context, int64_t *out, app_error *err)
{
    fake_es *f = self;
    int rc = fk_context(f, context, err);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&f->lock);
    *out = f->position;
    pthread_mutex_unlock(&f->lock);
    return 0;
}

static fake_checkpoint *fk_checkpoint(fake_es *f, const char *subscriber)
{
    for (size_t i = 0; i < f->n_checkpoints; i++)
        if (strcmp(f->checkpoints[i].subscriber, subscriber) == 0)
            return &f->checkpoints[i];
    return NULL;
}

static int fk_load_checkpoint(void *self, const char *context, const char *subscriber, int64_t *out,
                              app_error *err)
{
    fake_es *f = self;
    int rc = fk_context(f, context, err);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&f->lock);
    const fake_checkpoint *c = fk_checkpoint(f, subscriber);
    *out = c ? c->position : 0;
    pthread_mutex_unlock(&f->lock);
    return 0;
}

static int fk_save_checkpoint(void *self, const char *context, const char *subscriber,
                              int64_t position, app_error *err)
{
    fake_es *f = self;
    int rc = fk_context(f, context, err);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&f->lock);
    fake_checkpoint *c = fk_checkpoint(f, subscriber);
    if (!c && f->n_checkpoints < FAKE_STORE_MAX) {
        c = &f->checkpoints[f->n_checkpoints++];
        c->subscriber = fk_strdup(subscriber);
    }
    if (c) {
        c->position = position;
        f->checkpoints_saved++;
    } else {
        rc = app_error_set(err, APP_EINTERNAL, "fake event store: too many checkpoints");
    }
    pthread_mutex_unlock(&f->lock);
    return rc;
}

/* Deletes subscriber's checkpoint, and with generations those of "<subscriber>@<n>" too. */
static int fk_delete_checkpoints(fake_es *f, const char *context, const char *subscriber,
                                 bool generations, app_error *err)
{
    int rc = fk_context(f, context, err);
    if (rc != 0)
        return rc;
    size_t n = strlen(subscriber);
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; i < f->n_checkpoints;) {
        const char *name = f->checkpoints[i].subscriber;
        if (strncmp(name, subscriber, n) == 0 &&
            (name[n] == '\0' || (generations && name[n] == '@'))) {
            free(f->checkpoints[i].subscriber);
            f->checkpoints[i] = f->checkpoints[--f->n_checkpoints];
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&f->lock);
    return 0;
}

static int fk_remove_checkpoints(void *self, const char *context, const char *subscriber,
                                 app_error *err)
{
    return fk_delete_checkpoints(self, context, subscriber, true, err);
}

static int fk_remove_checkpoint(void *self, const char *context, const char *subscriber,
                                app_error *err)
{
    return fk_delete_checkpoints(self, context, subscriber, false, err);
}

/* ---- dead letters, as the PostgreSQL store keeps them ------------------------------------- */

static int fk_add_dead_letter(void *self, const char *context, const char *subscriber,
                              int64_t position, const char *event_id, const char *error,
                              app_error *err)
{
    fake_es *f = self;
    int rc = fk_context(f, context, err);
    if (rc < 0)
        return rc;
    char *why = strdup(error), *name = strdup(subscriber);
    pthread_mutex_lock(&f->lock);
    es_dead_letter *d = NULL;
    for (size_t i = 0; i < f->n_dead && !d; i++)
        if (f->dead[i].position == position && strcmp(f->dead[i].subscriber, subscriber) == 0)
            d = &f->dead[i];
    if (d && why) { /* recorded again: one more attempt, the latest error */
        d->attempts++;
        free(d->error);
        d->error = why;
        d->redrive_requested = false;
        why = NULL;
    } else if (!d && why && name && f->n_dead < FAKE_STORE_MAX) {
        d = &f->dead[f->n_dead++];
        memset(d, 0, sizeof *d);
        d->id = ++f->dead_ids;
        d->subscriber = name;
        d->position = position;
        d->attempts = 1;
        d->error = why;
        snprintf(d->event_id, sizeof d->event_id, "%s", event_id ? event_id : "");
        snprintf(d->created_at, sizeof d->created_at, "2026-01-01T00:00:00.000000Z");
        why = name = NULL;
    } else {
        d = NULL;
    }
    pthread_mutex_unlock(&f->lock);
    free(why);
    free(name);
    return d ? 0 : app_error_set(err, APP_ENOMEM, "the fake holds no more dead letters");
}

static int fk_list_dead_letters(void *self, const char *context, const char *subscriber,
                                int64_t after_id, size_t limit, es_dead_letter_list *out,
                                app_error *err)
{
    fake_es *f = self;
    out->items = NULL;
    out->len = 0;
    int rc = fk_context(f, context, err);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&f->lock);
    out->items = calloc(f->n_dead + 1, sizeof *out->items);
    for (size_t i = 0; out->items && i < f->n_dead && out->len < limit; i++) {
        const es_dead_letter *d = &f->dead[i];
        if (d->id <= after_id || (subscriber && strcmp(d->subscriber, subscriber) != 0))
            continue;
        es_dead_letter *c = &out->items[out->len++];
        *c = *d;
        c->subscriber = strdup(d->subscriber);
        c->error = strdup(d->error);
    }
    pthread_mutex_unlock(&f->lock);
    if (!out->items)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    return 0;
}

/* The dead letter id of context, or NULL. With f locked. */
static es_dead_letter *fk_dead_letter(fake_es *f, int64_t id)
{
    for (size_t i = 0; i < f->n_dead; i++)
        if (f->dead[i].id == id)
            return &f->dead[i];
    return NULL;
}

static int fk_remove_dead_letter(void *self, const char *context, int64_t id, app_error *err)
{
    fake_es *f = self;
    int rc = fk_context(f, context, err);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&f->lock);
    es_dead_letter *d = fk_dead_letter(f, id);
    if (d) {
        free(d->subscriber);
        free(d->error);
        size_t i = (size_t)(d - f->dead);
        memmove(d, d + 1, (f->n_dead - i - 1) * sizeof *d);
        f->n_dead--;
    }
    pthread_mutex_unlock(&f->lock);
    return d ? 0 : app_error_set(err, APP_ENOTFOUND, "no dead letter %lld", (long long)id);
}

static int fk_request_redrive(void *self, const char *context, int64_t id, app_error *err)
{
    fake_es *f = self;
    int rc = fk_context(f, context, err);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&f->lock);
    es_dead_letter *d = fk_dead_letter(f, id);
    if (d)
        d->redrive_requested = true;
    pthread_mutex_unlock(&f->lock);
    return d ? 0 : app_error_set(err, APP_ENOTFOUND, "no dead letter %lld", (long long)id);
}

static int fk_ping(void *self, app_error *err)
{
    (void)self;
    (void)err;
    return 0;
}

static int fk_deadline_cmp(const void *a, const void *b)
{
    const es_due_process *x = a, *y = b;
    return x->deadline_ms < y->deadline_ms ? -1 : x->deadline_ms > y->deadline_ms;
}

static int fk_due_processes(void *self, const char *context, const char *name, int64_t now_ms,
                            size_t limit, es_due_list *out, app_error *err)
{
    fake_es *f = self;
    out->items = NULL;
    out->len = 0;
    int rc = fk_context(f, context, err);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&f->lock);
    es_due_process *due = fk_alloc(calloc(f->n_processes + 1, sizeof *due));
    size_t n = 0;
    for (size_t i = 0; i < f->n_processes; i++) {
        const fake_process *p = &f->processes[i];
        if (!p->done && p->deadline_ms > 0 && p->deadline_ms <= now_ms &&
            strcmp(p->name, name) == 0)
            due[n++] = (es_due_process){fk_strdup(p->id), fk_strdup(p->state), p->deadline_ms};
    }
    pthread_mutex_unlock(&f->lock);
    qsort(due, n, sizeof *due, fk_deadline_cmp);
    for (size_t i = limit; i < n; i++)
        free(due[i].id), free(due[i].state);
    out->items = due;
    out->len = n < limit ? n : limit;
    return 0;
}

static int fk_load_snapshot(void *self, const char *context, const char *stream_id,
                            es_snapshot *out, app_error *err)
{
    fake_es *f = self;
    memset(out, 0, sizeof *out);
    int rc = fk_context(f, context, err);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&f->lock);
    const fake_stream *s = fk_stream(f, stream_id);
    if (s && s->snapshot.state) {
        out->version = s->snapshot.version;
        out->schema_version = s->snapshot.schema_version;
        out->state = fk_strdup(s->snapshot.state);
    }
    pthread_mutex_unlock(&f->lock);
    return 0;
}

static void fk_keep_snapshot(fake_stream *s, int64_t version, int schema_version, const char *state)
{
    es_snapshot_free(&s->snapshot);
    s->snapshot.version = version;
    s->snapshot.schema_version = schema_version;
    s->snapshot.state = fk_strdup(state);
}

static int fk_save_snapshot(void *self, const char *context, const char *stream_id,
                            const es_snapshot *snap, app_error *err)
{
    fake_es *f = self;
    int rc = fk_context(f, context, err);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&f->lock);
    fake_stream *s = fk_stream(f, stream_id);
    if (f->fail_snapshot)
        rc = app_error_set(err, f->fail_snapshot, "injected snapshot failure");
    else if (!s || snap->version < 1 || snap->version > (int64_t)s->len || !snap->state)
        rc = app_error_set(err, APP_EINVAL, "stream %s has no committed version %lld", stream_id,
                           (long long)snap->version);
    else if (s->snapshot.version <= snap->version)
        fk_keep_snapshot(s, snap->version, snap->schema_version, snap->state);
    if (rc == 0)
        f->snapshots_saved++;
    pthread_mutex_unlock(&f->lock);
    return rc;
}

bool fake_es_put_snapshot(fake_es *f, const char *id, int64_t version, int schema_version,
                          const char *state)
{
    pthread_mutex_lock(&f->lock);
    fake_stream *s = fk_stream(f, id);
    if (s)
        fk_keep_snapshot(s, version, schema_version, state);
    pthread_mutex_unlock(&f->lock);
    return s != NULL;
}

static int fk_idempotency_lookup(void *self, const char *context, const char *actor,
                                 const char *key, int ttl_seconds, es_idem_record *out, bool *found,
                                 app_error *err)
{
    fake_es *f = self;
    memset(out, 0, sizeof *out);
    *found = false;
    int rc = fk_context(f, context, err);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&f->lock);
    const fake_idem *k = fk_idem(f, actor, key, ttl_seconds);
    if (k) {
        out->command = fk_strdup(k->command);
        out->request_hash = fk_strdup(k->request_hash);
        out->response = fk_strdup(k->response);
        *found = true;
    }
    pthread_mutex_unlock(&f->lock);
    return 0;
}

static int fk_idempotency_save(void *self, const char *context, const es_idempotency *rec,
                               app_error *err)
{
    fake_es *f = self;
    int rc = fk_context(f, context, err);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&f->lock);
    rc = fk_idem_record(f, rec, err);
    pthread_mutex_unlock(&f->lock);
    return rc;
}

static int fk_idempotency_purge(void *self, const char *context, int ttl_seconds, int64_t *deleted,
                                app_error *err)
{
    fake_es *f = self;
    *deleted = 0;
    int rc = fk_context(f, context, err);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&f->lock);
    for (size_t i = f->n_keys; i-- > 0;) {
        const fake_idem *k = &f->keys[i];
        size_t before = f->n_keys;
        fk_idem(f, k->actor, k->key, ttl_seconds);
        *deleted += (int64_t)(before - f->n_keys);
    }
    pthread_mutex_unlock(&f->lock);
    return 0;
}

static const es_store_ops fake_es_ops = {
    .append = fk_append,
    .load_stream = fk_load_stream,
    .read_stream = fk_read_stream,
    .read_log = fk_read_log,
    .head_position = fk_head_position,
    .load_checkpoint = fk_load_checkpoint,
    .save_checkpoint = fk_save_checkpoint,
    .remove_checkpoint = fk_remove_checkpoint,
    .remove_checkpoints = fk_remove_checkpoints,
    .ping = fk_ping,
    .due_processes = fk_due_processes,
    .load_snapshot = fk_load_snapshot,
    .save_snapshot = fk_save_snapshot,
    .idempotency_lookup = fk_idempotency_lookup,
    .idempotency_save = fk_idempotency_save,
    .idempotency_purge = fk_idempotency_purge,
    .add_dead_letter = fk_add_dead_letter,
    .list_dead_letters = fk_list_dead_letters,
    .remove_dead_letter = fk_remove_dead_letter,
    .request_redrive = fk_request_redrive,
};

es_store fake_es_port(fake_es *f)
{
    return (es_store){&fake_es_ops, f};
}

/* ---- read store -------------------------------------------------------------------- */

void fake_rs_init(fake_rs *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
}

void fake_rs_free(fake_rs *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        free(r->keys[i]), free(r->values[i]);
    for (size_t i = 0; i < r->zn; i++)
        free(r->zkeys[i]), free(r->zmembers[i]);
    pthread_mutex_destroy(&r->lock);
    memset(r, 0, sizeof *r);
}

static int fk_rs_find(const fake_rs *r, const char *key)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->keys[i], key) == 0)
            return (int)i;
    return -1;
}

const char *fake_rs_value(const fake_rs *r, const char *key)
{
    int i = fk_rs_find(r, key);
    return i < 0 ? NULL : r->values[i];
}

static int fk_down(const fake_rs *r, app_error *err)
{
    return r->down ? app_error_set(err, APP_EUNAVAIL, "read store is down") : 0;
}

static int fk_get(void *self, const char *key, char **out, app_error *err)
{
    fake_rs *r = self;
    *out = NULL;
    pthread_mutex_lock(&r->lock);
    int rc = fk_down(r, err), i = fk_rs_find(r, key);
    if (rc == 0 && i >= 0)
        *out = fk_strdup(r->values[i]);
    if (rc == 0 && (!r->gets_of || strstr(key, r->gets_of)))
        r->gets++;
    pthread_mutex_unlock(&r->lock);
    return rc;
}

static int fk_get_many(void *self, const char *const *keys, size_t n, char **values, app_error *err)
{
    fake_rs *r = self;
    pthread_mutex_lock(&r->lock);
    int rc = fk_down(r, err);
    for (size_t k = 0; k < n; k++) {
        int i = rc == 0 ? fk_rs_find(r, keys[k]) : -1;
        values[k] = i >= 0 ? fk_strdup(r->values[i]) : NULL;
    }
    if (rc == 0) {
        r->get_manys++;
        r->keys_asked += n;
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}

static int fk_set(void *self, const char *key, const char *value, app_error *err)
{
    fake_rs *r = self;
    pthread_mutex_lock(&r->lock);
    int rc = fk_down(r, err), i = fk_rs_find(r, key);
    if (rc == 0 && i < 0 && r->n == FAKE_STORE_MAX)
        rc = app_error_set(err, APP_EINTERNAL, "fake read store: too many keys");
    if (rc == 0) {
        if (i < 0) {
            i = (int)r->n++;
            r->keys[i] = fk_strdup(key);
        } else {
            free(r->values[i]);
        }
        r->values[i] = fk_strdup(value);
        r->sets++;
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}

static int fk_del(void *self, const char *key, app_error *err)
{
    fake_rs *r = self;
    pthread_mutex_lock(&r->lock);
    int rc = fk_down(r, err), i = fk_rs_find(r, key);
    if (rc == 0 && i >= 0) {
        free(r->keys[i]);
        free(r->values[i]);
        r->keys[i] = r->keys[r->n - 1];
        r->values[i] = r->values[r->n - 1];
        r->n--;
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}

static int fk_zadd(void *self, const char *key, double score, const char *member, app_error *err)
{
    fake_rs *r = self;
    pthread_mutex_lock(&r->lock);
    int rc = fk_down(r, err);
    size_t i = 0;
    while (i < r->zn && (strcmp(r->zkeys[i], key) != 0 || strcmp(r->zmembers[i], member) != 0))
        i++;
    if (rc == 0 && i == r->zn && r->zn == FAKE_STORE_MAX)
        rc = app_error_set(err, APP_EINTERNAL, "fake read store: too many members");
    if (rc == 0) {
        if (i == r->zn) {
            r->zkeys[i] = fk_strdup(key);
            r->zmembers[i] = fk_strdup(member);
            r->zn++;
        }
        r->zscores[i] = score;
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}

typedef struct fk_scored {
    const char *member;
    double score;
} fk_scored;

/* Descending score, then descending member, as Redis orders ZREVRANGE. */
static int fk_scored_cmp(const void *a, const void *b)
{
    const fk_scored *x = a, *y = b;
    if (x->score != y->score)
        return x->score < y->score ? 1 : -1;
    return -strcmp(x->member, y->member);
}

static int fk_zrevrange(void *self, const char *key, size_t start, size_t stop, char ***out,
                        size_t *n, app_error *err)
{
    fake_rs *r = self;
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&r->lock);
    int rc = fk_down(r, err);
    fk_scored *rows = fk_alloc(calloc(r->zn + 1, sizeof *rows));
    size_t m = 0;
    for (size_t i = 0; rc == 0 && i < r->zn; i++)
        if (strcmp(r->zkeys[i], key) == 0)
            rows[m++] = (fk_scored){r->zmembers[i], r->zscores[i]};
    qsort(rows, m, sizeof *rows, fk_scored_cmp);
    if (stop >= m)
        stop = m ? m - 1 : 0;
    if (rc == 0 && m > 0 && start <= stop) {
        *out = fk_alloc(calloc(stop - start + 1, sizeof **out));
        for (size_t i = start; i <= stop; i++)
            (*out)[(*n)++] = fk_strdup(rows[i].member);
    }
    pthread_mutex_unlock(&r->lock);
    free(rows);
    return rc;
}

static int fk_rs_ping(void *self, app_error *err)
{
    fake_rs *r = self;
    pthread_mutex_lock(&r->lock);
    int rc = fk_down(r, err);
    pthread_mutex_unlock(&r->lock);
    return rc;
}

/* Strings and sorted sets alike. */
static int fk_del_prefix(void *self, const char *prefix, size_t *deleted, app_error *err)
{
    fake_rs *r = self;
    size_t len = strlen(prefix);
    *deleted = 0;
    pthread_mutex_lock(&r->lock);
    int rc = fk_down(r, err);
    for (size_t i = 0; rc == 0 && i < r->n;) {
        if (strncmp(r->keys[i], prefix, len) != 0) {
            i++;
            continue;
        }
        free(r->keys[i]), free(r->values[i]);
        r->keys[i] = r->keys[r->n - 1];
        r->values[i] = r->values[r->n - 1];
        r->n--;
        (*deleted)++;
    }
    for (size_t i = 0; rc == 0 && i < r->zn;) {
        if (strncmp(r->zkeys[i], prefix, len) != 0) {
            i++;
            continue;
        }
        free(r->zkeys[i]), free(r->zmembers[i]);
        r->zkeys[i] = r->zkeys[r->zn - 1];
        r->zmembers[i] = r->zmembers[r->zn - 1];
        r->zscores[i] = r->zscores[r->zn - 1];
        r->zn--;
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}

static const rs_store_ops fake_rs_ops = {
    .del_prefix = fk_del_prefix,
    .get = fk_get,
    .get_many = fk_get_many,
    .set = fk_set,
    .del = fk_del,
    .zadd = fk_zadd,
    .zrevrange = fk_zrevrange,
    .ping = fk_rs_ping,
};

rs_store fake_rs_port(fake_rs *r)
{
    return (rs_store){&fake_rs_ops, r};
}
