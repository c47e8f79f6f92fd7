/* The upcasting event store: a decorator of the event-store port that main.c puts in front of
 * the adapter, so that every reader (stream loaders, subscribers, the Kafka relay) gets old
 * events in their current shape. load_stream and read_log run each event through the
 * upcasters the modules declare; every other operation passes through unchanged. */
#ifndef KERNEL_UPCAST_H
#define KERNEL_UPCAST_H

#include <stddef.h>

#include "core/error.h"
#include "kernel/module.h"
#include "ports/event_store.h"

typedef struct upcast_store upcast_store;

/* Wraps inner (borrowed; must outlive the store) with the upcasters of modules (a NULL
 * terminated array, e.g. app_modules: every compiled-in context, since a context may read
 * another's log). APP_EINTERNAL for an incomplete row or two rows for the same event type and
 * version. *out owned by the caller: upcast_store_free. */
int upcast_store_new(upcast_store **out, es_store *inner, const app_module *const *modules,
                     app_error *err);
void upcast_store_free(upcast_store *u); /* accepts NULL */

/* The decorated port; borrowed from u. Operations inner lacks (NULL) are NULL here too. */
es_store upcast_store_port(upcast_store *u);

/* Brings ev to the newest schema version the upcasters reach from its own, replacing its data
 * and schema_version. An event no upcaster applies to is left alone (the current version, or
 * one newer than this build knows). On failure (data that is not an object, an upcaster that
 * refuses it) ev is left as stored and err says why. */
int upcast_event(const upcast_store *u, es_event *ev, app_error *err);

#endif
