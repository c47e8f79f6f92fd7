/* Dead letters listed and sent again, for the command line; one producer, one message at a
 * time, each waited for, so the answer per dead letter is known before the next. */
#include "adapters/kafka/kfk_dlq.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adapters/kafka/kfk_producer.h"
#include "adapters/kafka/kfk_relay.h"
#include "ports/inbox_store.h"

#define DLQ_PAGE 500

int kfk_dlq_list(es_store *events, const char *const *contexts, size_t n_contexts, FILE *out,
                 size_t *n_out, app_error *err)
{
    size_t total = 0;
    for (size_t c = 0; c < n_contexts; c++) {
        int64_t after = 0;
        for (;;) {
            es_dead_letter_list list = {0};
            int rc = events->ops->list_dead_letters(events->self, contexts[c], NULL, after,
                                                    DLQ_PAGE, &list, err);
            if (rc < 0)
                return rc;
            for (size_t i = 0; i < list.len; i++) {
                const es_dead_letter *d = &list.items[i];
                fprintf(out,
                        "%s:%" PRId64 "  position=%" PRId64 "  event=%s  subscriber=%s  "
                        "attempts=%d  at=%s  %s\n",
                        contexts[c], d->id, d->position, d->event_id[0] ? d->event_id : "-",
                        d->subscriber, d->attempts, d->created_at, d->error);
                after = d->id;
            }
            total += list.len;
            size_t got = list.len;
            es_dead_letter_list_free(&list);
            if (got < DLQ_PAGE)
                break;
        }
    }
    fprintf(out, "%zu dead letter%s\n", total, total == 1 ? "" : "s");
    if (n_out)
        *n_out = total;
    return 0;
}

/* "user:12" or "12" into context (NULL for a bare number) and id. */
static int parse_id(const char *text, char *context, size_t size, int64_t *id, app_error *err)
{
    const char *colon = strchr(text, ':');
    const char *num = colon ? colon + 1 : text;
    context[0] = '\0';
    if (colon) {
        size_t n = (size_t)(colon - text);
        if (n == 0 || n >= size)
            return app_error_set(err, APP_EINVAL, "dead letter id \"%.60s\" is malformed", text);
        memcpy(context, text, n);
        context[n] = '\0';
    }
    char *end = NULL;
    long long v = *num ? strtoll(num, &end, 10) : 0;
    if (!*num || *end || v <= 0)
        return app_error_set(err, APP_EINVAL,
                             "dead letter id \"%.60s\" is malformed (expected CONTEXT:N or N)",
                             text);
    *id = v;
    return 0;
}

typedef struct dlq_report {
    bool done;
    rd_kafka_resp_err_t err;
} dlq_report;

static void dlq_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    (void)opaque;
    dlq_report *r = msg->_private;
    if (r) {
        r->done = true;
        r->err = msg->err;
    }
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sends one dead letter; 0 when acknowledged, else reason says why. */
static int redrive_one(rd_kafka_t *rk, es_store *events, const kfk_options *o, const char *context,
                       const char *topic, const es_dead_letter *d, char *reason, size_t size)
{
    es_event_list one = {0};
    app_error err = APP_ERROR_INIT;
    if (events->ops->read_log(events->self, context, d->position - 1, 1, &one, &err) < 0) {
        snprintf(reason, size, "could not read the event: %.80s: %.140s", err.message, err.detail);
        return -1;
    }
    if (one.len == 0 || one.items[0].position != d->position ||
        (d->event_id[0] && strcmp(one.items[0].event_id, d->event_id) != 0)) {
        es_event_list_free(&one);
        snprintf(reason, size, "the event at position %" PRId64 " is not in the log", d->position);
        return -1;
    }
    dlq_report rep = {false, RD_KAFKA_RESP_ERR_NO_ERROR};
    rd_kafka_resp_err_t e = kfk_produce_event(rk, topic, &one.items[0], NULL, 0, &rep, NULL);
    es_event_list_free(&one);
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(reason, size, "%s: %s", rd_kafka_err2name(e), rd_kafka_err2str(e));
        return -1;
    }
    int64_t until = now_ms() + o->message_timeout_ms;
    while (!rep.done && now_ms() < until)
        rd_kafka_poll(rk, 50);
    if (!rep.done) {
        rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        while (!rep.done)
            rd_kafka_poll(rk, 50);
        snprintf(reason, size, "no acknowledgement within %d ms", o->message_timeout_ms);
        return -1;
    }
    if (rep.err) {
        snprintf(reason, size, "%s: %s", rd_kafka_err2name(rep.err), rd_kafka_err2str(rep.err));
        return -1;
    }
    return 0;
}

int kfk_dlq_redrive(es_store *events, const kfk_options *o, const char *const *contexts,
                    size_t n_contexts, const char *id, kfk_dlq_subscriber_fn to_subscriber,
                    void *arg, FILE *out, size_t *sent, size_t *failed, app_error *err)
{
    *sent = *failed = 0;
    char only_ctx[64] = "";
    int64_t only_id = 0;
    int rc = id ? parse_id(id, only_ctx, sizeof only_ctx, &only_id, err) : 0;
    if (rc < 0)
        return rc;

    /* Find what to send first, so a wrong id fails before anything is sent. */
    es_dead_letter_list *todo = calloc(n_contexts, sizeof *todo);
    if (!todo)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    size_t matches = 0;
    for (size_t c = 0; c < n_contexts && rc == 0; c++) {
        if (only_ctx[0] && strcmp(only_ctx, contexts[c]) != 0)
            continue;
        rc = events->ops->list_dead_letters(events->self, contexts[c], NULL,
                                            only_id ? only_id - 1 : 0, only_id ? 1 : 100000,
                                            &todo[c], err);
        if (rc == 0 && only_id && todo[c].len == 1 && todo[c].items[0].id != only_id)
            es_dead_letter_list_free(&todo[c]);
        matches += todo[c].len;
    }
    if (rc == 0 && id && matches == 0)
        rc = app_error_set(err, APP_ENOTFOUND, "no dead letter %s", id);
    if (rc == 0 && id && matches > 1)
        rc = app_error_set(err, APP_EINVAL, "dead letter id %s is in several contexts; name one",
                           id);
    rd_kafka_t *rk = NULL; /* made for the first of the relay's */

    for (size_t c = 0; c < n_contexts && rc == 0; c++) {
        char topic[256];
        if (todo[c].len == 0)
            continue;
        if ((rc = kfk_topic_name(topic, sizeof topic, o->topic_prefix, contexts[c], ".events",
                                 err)) < 0)
            break;
        for (size_t i = 0; i < todo[c].len; i++) {
            const es_dead_letter *d = &todo[c].items[i];
            char reason[256];
            app_error derr = APP_ERROR_INIT;
            if (strncmp(d->subscriber, INBOX_DEAD_LETTER_PREFIX,
                        strlen(INBOX_DEAD_LETTER_PREFIX)) == 0) {
                /* Received from the topic, not produced from this log: there is nothing to
                 * send, and the source's topic is its own service's to write. */
                fprintf(out,
                        "%s:%" PRId64 "  cannot be sent again: it came from kafka and is not an "
                        "event (%s)\n",
                        contexts[c], d->id, d->error);
                (*failed)++;
                continue;
            }
            if (strcmp(d->subscriber, KFK_RELAY_SUBSCRIBER) != 0) {
                /* A projection's, a local copy's or a saga's: to that subscriber only. */
                if (to_subscriber(arg, events, contexts[c], d, reason, sizeof reason) == 0) {
                    fprintf(out, "%s:%" PRId64 "  handled again by %s\n", contexts[c], d->id,
                            d->subscriber);
                    (*sent)++;
                } else {
                    fprintf(out, "%s:%" PRId64 "  %s: %s\n", contexts[c], d->id, d->subscriber,
                            reason);
                    (*failed)++;
                }
                continue;
            }
            if (!rk && (rc = kfk_producer_new(&rk, o, dlq_on_delivery, NULL, NULL, err)) < 0)
                break;
            if (redrive_one(rk, events, o, contexts[c], topic, d, reason, sizeof reason) == 0) {
                if (events->ops->remove_dead_letter(events->self, contexts[c], d->id, &derr) < 0)
                    fprintf(out, "%s:%" PRId64 "  sent, but could not be removed: %s\n",
                            contexts[c], d->id, derr.message);
                else
                    fprintf(out, "%s:%" PRId64 "  sent to %s\n", contexts[c], d->id, topic);
                (*sent)++;
            } else {
                events->ops->add_dead_letter(events->self, contexts[c], d->subscriber, d->position,
                                             d->event_id, reason, &derr);
                fprintf(out, "%s:%" PRId64 "  failed: %s\n", contexts[c], d->id, reason);
                (*failed)++;
            }
        }
    }
    if (rk)
        rd_kafka_destroy(rk);
    for (size_t c = 0; c < n_contexts; c++)
        es_dead_letter_list_free(&todo[c]);
    free(todo);
    return rc;
}
