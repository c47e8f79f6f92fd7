/* Snapshot policy and best-effort snapshot I/O (see snapshots.h). */
#include "kernel/snapshots.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/log.h"

bool snap_due(int every, int64_t before, int64_t after)
{
    return every > 0 && after > before && before >= 0 && after / every != before / every;
}

void snap_load(const bus_ctx *ctx, const char *context, const char *stream_id, int schema_version,
               es_snapshot *out)
{
    out->version = 0;
    out->schema_version = 0;
    out->state = NULL;
    if (!ctx->events || !ctx->events->ops || !ctx->events->ops->load_snapshot)
        return;
    app_error err = APP_ERROR_INIT;
    if (ctx->events->ops->load_snapshot(ctx->events->self, context, stream_id, out, &err) != 0) {
        log_warn("%s: could not read the snapshot of %s, folding the whole stream: %s: %s", context,
                 stream_id, err.message, err.detail);
        es_snapshot_free(out);
        return;
    }
    if (out->state && out->schema_version != schema_version) {
        char why[96];
        snprintf(why, sizeof why, "written in schema version %d, this build reads %d",
                 out->schema_version, schema_version);
        snap_ignored(context, stream_id, out->version, why);
        es_snapshot_free(out);
    }
    if (!out->state)
        out->version = 0;
}

void snap_ignored(const char *context, const char *stream_id, int64_t version, const char *why)
{
    log_info("%s: snapshot of %s at version %lld ignored (%s); folding the whole stream", context,
             stream_id, (long long)version, why);
}

void snap_save(const bus_ctx *ctx, const char *context, const char *stream_id, int64_t version,
               int schema_version, const char *state)
{
    if (!ctx->events || !ctx->events->ops || !ctx->events->ops->save_snapshot)
        return;
    es_snapshot snap = {version, schema_version, (char *)(uintptr_t)state};
    app_error err = APP_ERROR_INIT;
    if (ctx->events->ops->save_snapshot(ctx->events->self, context, stream_id, &snap, &err) != 0)
        log_warn("%s: could not save the snapshot of %s at version %lld: %s: %s", context,
                 stream_id, (long long)version, err.message, err.detail);
}
