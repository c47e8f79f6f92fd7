/* Idempotency keys. A command sent with an Idempotency-Key runs once: its first successful
 * reply is recorded in the owning context's schema in the same transaction as its events,
 * and the same key with the same request answers that reply again without running the
 * command; the same key with another request is refused (APP_EINVAL, 422). Keys belong to
 * the caller (the bus actor) and expire after the bus's idempotency_ttl_s.
 *
 * Handlers take part through bus_append: they build their reply before appending and pass
 * it along, so that the key, the reply and the events commit together. A command that
 * appends nothing has its reply recorded on its own afterwards. Only successes are
 * recorded: a refused request changed nothing and runs again when retried. */
#ifndef KERNEL_IDEMPOTENCY_H
#define KERNEL_IDEMPOTENCY_H

#include <cjson/cJSON.h>

#include "kernel/bus.h"
#include "kernel/module.h"

/* The middleware: honours meta->idempotency_key on commands from outside the bus (a command
 * a handler sends is part of its caller's request). Add it after logging and metrics. */
int bus_mw_idempotency(bus_call *call);

/* Appends req through ctx->events; when ctx runs under an Idempotency-Key, reply (the answer
 * the handler will give when the append succeeds) is recorded with it. reply may be NULL
 * for commands that no request sends with a key. */
int bus_append(const bus_ctx *ctx, const es_append_req *req, const cJSON *reply,
               es_append_result *out, app_error *err);

/* A periodic task that deletes a context's expired keys (ctx->context names it). */
extern const mod_task idempotency_purge_task;

#endif
