/* Idempotency keys: a lookup before the handler, the record travelling with its append, and
 * an answer from the record when another request with the same key got there first. */
#include "kernel/idempotency.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/sha256.h"

/* The owner of keys sent with neither a consumer nor a known address (not from HTTP). */
#define IDEM_ANONYMOUS "anonymous"

/* The command name and the payload as the bus got them: the same body (and path, which
 * handlers receive in the payload) gives the same hash. */
static int idem_hash(const char *command, const cJSON *payload, char out[SHA256_HEX_LEN],
                     app_error *err)
{
    char *text = payload ? cJSON_PrintUnformatted(payload) : NULL;
    if (payload && !text)
        return app_error_set(err, APP_ENOMEM, "out of memory hashing a request");
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, command, strlen(command) + 1); /* the NUL separates name and payload */
    if (text)
        sha256_update(&c, text, strlen(text));
    sha256_final_hex(&c, out);
    free(text);
    return 0;
}

/* The context owning a command: its name up to the first dot ("user.register_user"). */
static int idem_context(const char *command, char *out, size_t size, app_error *err)
{
    const char *dot = strchr(command, '.');
    size_t n = dot ? (size_t)(dot - command) : 0;
    if (n == 0 || n >= size)
        return app_error_set(err, APP_EINTERNAL, "command %s names no context", command);
    memcpy(out, command, n);
    out[n] = '\0';
    return 0;
}

/* Answers from a record: its reply when it was made by the same request, else 422. */
static int idem_answer(bus_call *call, const es_idem_record *rec, const es_idempotency *req)
{
    if (strcmp(rec->request_hash, req->request_hash) != 0 ||
        strcmp(rec->command, req->command) != 0) {
        app_error_set(call->err, APP_EINVAL, "Idempotency-Key was used for another request");
        app_error_detail(call->err,
                         "key %s answered a request with a different body or target; "
                         "send a new key with a new request",
                         req->key);
        app_error_field(call->err, "Idempotency-Key", "was used for another request");
        return APP_EINVAL;
    }
    cJSON *reply = cJSON_Parse(rec->response);
    if (!reply)
        return app_error_set(call->err, APP_EINTERNAL, "the recorded reply of key %s is not JSON",
                             req->key);
    *call->out = reply;
    if (call->ctx->meta->replayed)
        *call->ctx->meta->replayed = true;
    char name[160], labels[192];
    metrics_escape_label(req->command, name, sizeof name);
    snprintf(labels, sizeof labels, "command=\"%s\"", name);
    metrics_counter_add("idempotent_replays_total", labels, 1);
    log_info("command %s answered from its Idempotency-Key record (correlation %s)", req->command,
             call->ctx->meta->correlation_id);
    return 0;
}

/* Looks the key up; *answered says whether the call is answered (rc then is its outcome). */
static int idem_lookup(bus_call *call, const char *context, const es_idempotency *req,
                       bool *answered)
{
    es_store *es = call->ctx->events;
    es_idem_record rec = {0};
    bool found = false;
    *answered = false;
    int rc = es->ops->idempotency_lookup(es->self, context, req->actor, req->key, req->ttl_seconds,
                                         &rec, &found, call->err);
    if (rc == 0 && found) {
        *answered = true;
        rc = idem_answer(call, &rec, req);
    } else if (rc != 0) {
        *answered = true;
    }
    es_idem_record_free(&rec);
    return rc;
}

/* After the handler: records a reply that no append carried (a command that changed
 * nothing), or answers from the record of a request with the same key that won the race. */
static int idem_after(bus_call *call, const char *context, bus_idem *idem, int rc)
{
    es_store *es = call->ctx->events;
    bool answered = false;
    if (rc == 0 && !idem->recorded && *call->out) {
        idem->response = cJSON_PrintUnformatted(*call->out);
        if (!idem->response)
            return rc; /* the answer stands; only a retry will run it again */
        idem->rec.response = idem->response;
        app_error serr = APP_ERROR_INIT;
        int src = es->ops->idempotency_save(es->self, context, &idem->rec, &serr);
        if (src == 0 || src != APP_EIDEMPOTENT) {
            if (src != 0)
                log_warn("could not record Idempotency-Key of %s: %s", idem->rec.command,
                         serr.message);
            return rc;
        }
        /* Another request with this key recorded first: both answer alike. */
        cJSON_Delete(*call->out);
        *call->out = NULL;
        rc = APP_EIDEMPOTENT;
    }
    if (rc != APP_EIDEMPOTENT)
        return rc;
    app_error_clear(call->err);
    rc = idem_lookup(call, context, &idem->rec, &answered);
    if (!answered) {
        app_error_set(call->err, APP_ECONFLICT, "a request with this Idempotency-Key just ended");
        rc = app_error_detail(call->err, "its record expired meanwhile; send the request again");
    }
    return rc;
}

int bus_mw_idempotency(bus_call *call)
{
    const bus_ctx *ctx = call->ctx;
    const bus_meta *meta = ctx->meta;
    es_store *es = ctx->events;
    /* A command whose owner runs elsewhere takes its key along; the owner records it. */
    if (call->kind != BUS_COMMAND || call->via || !meta || !meta->idempotency_key[0] ||
        ctx->depth > 1 || !es || !es->ops->idempotency_lookup || !es->ops->idempotency_save)
        return bus_call_next(call);

    char context[64], hash[SHA256_HEX_LEN];
    int rc = idem_context(call->def->name, context, sizeof context, call->err);
    if (rc == 0)
        rc = idem_hash(call->def->name, call->payload, hash, call->err);
    if (rc != 0)
        return rc;
    bus_idem idem = {
        .rec =
            {
                /* Without a consumer, keys belong to the caller's address: one anonymous
                 * client cannot take another's key first. */
                .actor = meta->actor[0]    ? meta->actor
                         : meta->client[0] ? meta->client
                                           : IDEM_ANONYMOUS,
                .key = meta->idempotency_key,
                .command = call->def->name,
                .request_hash = hash,
                .ttl_seconds = bus_get_options(ctx->bus)->idempotency_ttl_s,
            },
    };
    bool answered = false;
    rc = idem_lookup(call, context, &idem.rec, &answered);
    if (answered)
        return rc;

    bus_ctx keyed = *ctx;
    keyed.idem = &idem;
    call->ctx = &keyed;
    rc = bus_call_next(call);
    call->ctx = ctx;
    rc = idem_after(call, context, &idem, rc);
    free(idem.response);
    return rc;
}

int bus_append(const bus_ctx *ctx, const es_append_req *req, const cJSON *reply,
               es_append_result *out, app_error *err)
{
    es_append_req keyed = *req;
    bus_idem *idem = ctx->idem;
    if (idem && reply && !idem->recorded) {
        char *text = cJSON_PrintUnformatted(reply);
        if (!text)
            return app_error_set(err, APP_ENOMEM, "out of memory recording a reply");
        free(idem->response);
        idem->response = text;
        idem->rec.response = text;
        keyed.idempotency = &idem->rec;
    }
    int rc = ctx->events->ops->append(ctx->events->self, &keyed, out, err);
    if (rc == 0 && keyed.idempotency)
        idem->recorded = true;
    return rc;
}

static int idempotency_purge(const bus_ctx *ctx, app_error *err)
{
    es_store *es = ctx->events;
    if (!ctx->context || !es || !es->ops->idempotency_purge || !ctx->bus)
        return 0;
    int64_t deleted = 0;
    int rc = es->ops->idempotency_purge(
        es->self, ctx->context, bus_get_options(ctx->bus)->idempotency_ttl_s, &deleted, err);
    if (rc == 0 && deleted > 0)
        log_info("context %s: %lld expired idempotency key%s deleted", ctx->context,
                 (long long)deleted, deleted == 1 ? "" : "s");
    return rc;
}

const mod_task idempotency_purge_task = {"idempotency.purge", 60000, idempotency_purge};
