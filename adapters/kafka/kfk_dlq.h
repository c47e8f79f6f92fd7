/* The dead-letter commands: `app dlq list` shows the events the relay and the subscribers
 * gave up on, `app dlq redrive [ID]` sends the relay's to their topic again and hands the
 * subscribers' to them again, forgetting each one that went through. IDs are
 * "<context>:<n>" (a bare <n> works when only one context has it). */
#ifndef ADAPTERS_KAFKA_KFK_DLQ_H
#define ADAPTERS_KAFKA_KFK_DLQ_H

#include <stddef.h>
#include <stdio.h>

#include "adapters/kafka/kfk_config.h"
#include "core/error.h"
#include "ports/event_store.h"

/* Writes every dead letter of contexts to out, one line each:
 * "<context>:<id>  position=<p>  event=<uuid>  attempts=<n>  at=<time>  <reason>", then a
 * count line. *n_out (may be NULL) gets the count. */
int kfk_dlq_list(es_store *events, const char *const *contexts, size_t n_contexts, FILE *out,
                 size_t *n_out, app_error *err);

/* Delivers a dead letter of a subscriber other than the relay (a projection, a local copy, a
 * saga) to it again: 0 when handled, else -1 with reason set. */
typedef int (*kfk_dlq_subscriber_fn)(void *arg, es_store *events, const char *context,
                                     const es_dead_letter *d, char *reason, size_t size);

/* Sends the dead letters of contexts (only id when not NULL) again: the relay's to
 * <prefix><context>.events, each waited for up to o->message_timeout_ms; another subscriber's
 * to that subscriber, through to_subscriber. Delivered ones are removed; a refused one stays
 * with one more attempt and the new reason. Reports each on out. APP_ENOTFOUND when id names
 * no dead letter, APP_EINVAL when it is malformed or ambiguous; otherwise 0, even when some
 * failed (*failed says how many; the caller exits non-zero then). */
int kfk_dlq_redrive(es_store *events, const kfk_options *o, const char *const *contexts,
                    size_t n_contexts, const char *id, kfk_dlq_subscriber_fn to_subscriber,
                    void *arg, FILE *out, size_t *sent, size_t *failed, app_error *err);

#endif
