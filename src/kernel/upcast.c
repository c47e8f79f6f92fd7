/* The upcasting event store (see upcast.h): a registry of upcasters and a pass-through port
 * whose two reading operations upcast what the inner store returns. */
#include "kernel/upcast.h"

#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"

struct upcast_store {
    es_store *inner;
    es_store_ops ops; /* the pass-throughs below, NULL where inner has none */
    const mod_upcaster **rows;
    size_t n_rows;
};

static const mod_upcaster *ups_find(const upcast_store *u, const char *type, int version)
{
    for (size_t i = 0; type && i < u->n_rows; i++)
        if (u->rows[i]->from_version == version && strcmp(u->rows[i]->event_type, type) == 0)
            return u->rows[i];
    return NULL;
}

int upcast_event(const upcast_store *u, es_event *ev, app_error *err)
{
    const mod_upcaster *row = ups_find(u, ev->type, ev->schema_version);
    if (!row)
        return 0;
    cJSON *data = json_parse_n(ev->data, ev->data ? strlen(ev->data) : 0);
    if (!cJSON_IsObject(data)) {
        cJSON_Delete(data);
        return app_error_set(err, APP_EINTERNAL, "stored %s event is not a JSON object", ev->type);
    }
    int version = ev->schema_version, rc = 0;
    for (; row && rc == 0; row = ups_find(u, ev->type, version)) {
        rc = row->upcast(data, err);
        if (rc == 0)
            version++;
        else if (err && err->detail[0] == '\0')
            app_error_detail(err, "upcasting %s from schema version %d", ev->type, version);
    }
    char *text = rc == 0 ? cJSON_PrintUnformatted(data) : NULL;
    cJSON_Delete(data);
    if (rc != 0)
        return rc;
    if (!text)
        return app_error_set(err, APP_ENOMEM, "out of memory upcasting an event");
    free(ev->data);
    ev->data = text;
    ev->schema_version = version;
    return 0;
}

/* An event that cannot be upcast is handed on as stored: its schema version still says what
 * its data is, so a reader that needs the current shape refuses it instead of misreading it. */
static void ups_list(const upcast_store *u, const char *context, es_event_list *list)
{
    for (size_t i = 0; i < list->len; i++) {
        app_error err = APP_ERROR_INIT;
        if (upcast_event(u, &list->items[i], &err) != 0)
            log_warn("%s: event %s (%s, schema version %d) left as stored: %s: %s", context,
                     list->items[i].event_id, list->items[i].type, list->items[i].schema_version,
                     err.message, err.detail);
    }
}

/* ---- the port --------------------------------------------------------------------------- */

#define INNER(self) (((upcast_store *)(self))->inner)

static int ups_load_stream(void *self, const char *context, const char *stream_id,
                           int64_t after_version, es_event_list *out, app_error *err)
{
    es_store *in = INNER(self);
    int rc = in->ops->load_stream(in->self, context, stream_id, after_version, out, err);
    if (rc == 0)
        ups_list(self, context, out);
    return rc;
}

static int ups_read_stream(void *self, const char *context, const char *stream_id,
                           int64_t after_version, size_t limit, es_event_list *out, app_error *err)
{
    es_store *in = INNER(self);
    int rc = in->ops->read_stream(in->self, context, stream_id, after_version, limit, out, err);
    if (rc == 0)
        ups_list(self, context, out);
    return rc;
}

static int ups_read_log(void *self, const char *context, int64_t after_position, size_t limit,
                        es_event_list *out, app_error *err)
{
    es_store *in = INNER(self);
    int rc = in->ops->read_log(in->self, context, after_position, limit, out, err);
    if (rc == 0)
        ups_list(self, context, out);
    return rc;
}

static int ups_append(void *self, const es_append_req *req, es_append_result *out, app_error *err)
{
    es_store *in = INNER(self);
    return in->ops->append(in->self, req, out, err);
}

static int ups_head_position(void *self, const char *context, int64_t *out, app_error *err)
{
    es_store *in = INNER(self);
    return in->ops->head_position(in->self, context, out, err);
}

static int ups_load_checkpoint(void *self, const char *context, const char *subscriber,
                               int64_t *out, app_error *err)
{
    es_store *in = INNER(self);
    return in->ops->load_checkpoint(in->self, context, subscriber, out, err);
}

static int ups_save_checkpoint(void *self, const char *context, const char *subscriber,
                               int64_t position, app_error *err)
{
    es_store *in = INNER(self);
    return in->ops->save_checkpoint(in->self, context, subscriber, position, err);
}

static int ups_wait_for_append(void *self, const char *context, int64_t after_position,
                               int timeout_ms)
{
    es_store *in = INNER(self);
    return in->ops->wait_for_append(in->self, context, after_position, timeout_ms);
}

static int ups_ping(void *self, app_error *err)
{
    es_store *in = INNER(self);
    return in->ops->ping(in->self, err);
}

static int ups_due_processes(void *self, const char *context, const char *name, int64_t now_ms,
                             size_t limit, es_due_list *out, app_error *err)
{
    es_store *in = INNER(self);
    return in->ops->due_processes(in->self, context, name, now_ms, limit, out, err);
}

static int ups_add_dead_letter(void *self, const char *context, const char *subscriber,
                               int64_t position, const char *event_id, const char *error,
                               app_error *err)
{
    es_store *in = INNER(self);
    return in->ops->add_dead_letter(in->self, context, subscriber, position, event_id, error, err);
}

static int ups_list_dead_letters(void *self, const char *context, const char *subscriber,
                                 int64_t after_id, size_t limit, es_dead_letter_list *out,
                                 app_error *err)
{
    es_store *in = INNER(self);
    return in->ops->list_dead_letters(in->self, context, subscriber, after_id, limit, out, err);
}

static int ups_remove_dead_letter(void *self, const char *context, int64_t id, app_error *err)
{
    es_store *in = INNER(self);
    return in->ops->remove_dead_letter(in->self, context, id, err);
}

static int ups_request_redrive(void *self, const char *context, int64_t id, app_error *err)
{
    es_store *in = INNER(self);
    return in->ops->request_redrive(in->self, context, id, err);
}

static int ups_remove_checkpoint(void *self, const char *context, const char *subscriber,
                                 app_error *err)
{
    es_store *in = INNER(self);
    return in->ops->remove_checkpoint(in->self, context, subscriber, err);
}

static int ups_remove_checkpoints(void *self, const char *context, const char *subscriber,
                                  app_error *err)
{
    es_store *in = INNER(self);
    return in->ops->remove_checkpoints(in->self, context, subscriber, err);
}

static int ups_lead(void *self, const char *context, const char *name, bool *out, app_error *err)
{
    es_store *in = INNER(self);
    return in->ops->lead(in->self, context, name, out, err);
}

static void ups_resign(void *self, const char *context, const char *name)
{
    es_store *in = INNER(self);
    in->ops->resign(in->self, context, name);
}

static int ups_load_snapshot(void *self, const char *context, const char *stream_id,
                             es_snapshot *out, app_error *err)
{
    es_store *in = INNER(self);
    return in->ops->load_snapshot(in->self, context, stream_id, out, err);
}

static int ups_save_snapshot(void *self, const char *context, const char *stream_id,
                             const es_snapshot *snap, app_error *err)
{
    es_store *in = INNER(self);
    return in->ops->save_snapshot(in->self, context, stream_id, snap, err);
}

static int ups_idempotency_lookup(void *self, const char *context, const char *actor,
                                  const char *key, int ttl_seconds, es_idem_record *out,
                                  bool *found, app_error *err)
{
    es_store *in = INNER(self);
    return in->ops->idempotency_lookup(in->self, context, actor, key, ttl_seconds, out, found, err);
}

static int ups_idempotency_save(void *self, const char *context, const es_idempotency *rec,
                                app_error *err)
{
    es_store *in = INNER(self);
    return in->ops->idempotency_save(in->self, context, rec, err);
}

static int ups_idempotency_purge(void *self, const char *context, int ttl_seconds, int64_t *deleted,
                                 app_error *err)
{
    es_store *in = INNER(self);
    return in->ops->idempotency_purge(in->self, context, ttl_seconds, deleted, err);
}

/* ---- life cycle ------------------------------------------------------------------------- */

#define UPS_OP(name) u->ops.name = in->name ? ups_##name : NULL

static void ups_fill_ops(upcast_store *u)
{
    const es_store_ops *in = u->inner->ops;
    UPS_OP(append);
    UPS_OP(load_stream);
    UPS_OP(read_stream);
    UPS_OP(read_log);
    UPS_OP(head_position);
    UPS_OP(load_checkpoint);
    UPS_OP(save_checkpoint);
    UPS_OP(remove_checkpoint);
    UPS_OP(remove_checkpoints);
    UPS_OP(wait_for_append);
    UPS_OP(ping);
    UPS_OP(due_processes);
    UPS_OP(add_dead_letter);
    UPS_OP(list_dead_letters);
    UPS_OP(remove_dead_letter);
    UPS_OP(request_redrive);
    UPS_OP(lead);
    UPS_OP(resign);
    UPS_OP(load_snapshot);
    UPS_OP(save_snapshot);
    UPS_OP(idempotency_lookup);
    UPS_OP(idempotency_save);
    UPS_OP(idempotency_purge);
}

static int ups_add(upcast_store *u, const app_module *m, const mod_upcaster *row, app_error *err)
{
    if (!row->upcast || row->from_version < 1)
        return app_error_set(err, APP_EINTERNAL,
                             "context %s: upcaster of %s needs a function and a version >= 1",
                             m->name, row->event_type);
    if (ups_find(u, row->event_type, row->from_version))
        return app_error_set(err, APP_EINTERNAL, "two upcasters of %s from schema version %d",
                             row->event_type, row->from_version);
    const mod_upcaster **grown = realloc(u->rows, (u->n_rows + 1) * sizeof *grown);
    if (!grown)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    u->rows = grown;
    u->rows[u->n_rows++] = row;
    return 0;
}

int upcast_store_new(upcast_store **out, es_store *inner, const app_module *const *modules,
                     app_error *err)
{
    *out = NULL;
    upcast_store *u = calloc(1, sizeof *u);
    if (!u)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    u->inner = inner;
    ups_fill_ops(u);
    int rc = 0;
    for (size_t i = 0; rc == 0 && modules && modules[i]; i++)
        for (const mod_upcaster *row = modules[i]->upcasters; rc == 0 && row && row->event_type;
             row++)
            rc = ups_add(u, modules[i], row, err);
    if (rc != 0) {
        upcast_store_free(u);
        return rc;
    }
    *out = u;
    return 0;
}

void upcast_store_free(upcast_store *u)
{
    if (!u)
        return;
    free(u->rows);
    free(u);
}

es_store upcast_store_port(upcast_store *u)
{
    return (es_store){&u->ops, u};
}
