/* Snapshot policy and best-effort snapshot I/O shared by the contexts' stream loaders: a
 * snapshot is an optimisation, so nothing here fails a load or a command. */
#ifndef KERNEL_SNAPSHOTS_H
#define KERNEL_SNAPSHOTS_H

#include <stdbool.h>
#include <stdint.h>

#include "kernel/bus.h"
#include "ports/event_store.h"

/* True when an append took a stream from version before to after across a multiple of
 * every (every 0: never). */
bool snap_due(int every, int64_t before, int64_t after);

/* The snapshot of stream_id if the store has one written in schema_version; otherwise (no
 * snapshot, a store without snapshots, an error, another schema version) out->state is NULL
 * and out->version 0. *out owned by the caller: es_snapshot_free. */
void snap_load(const bus_ctx *ctx, const char *context, const char *stream_id, int schema_version,
               es_snapshot *out);

/* Logs that the snapshot of stream_id at version was ignored and why (the caller folds the
 * whole stream instead). */
void snap_ignored(const char *context, const char *stream_id, int64_t version, const char *why);

/* Saves state (JSON object text) as the snapshot of stream_id at a committed version. A
 * failure is logged, never returned: the command it follows has succeeded. */
void snap_save(const bus_ctx *ctx, const char *context, const char *stream_id, int64_t version,
               int schema_version, const char *state);

#endif
