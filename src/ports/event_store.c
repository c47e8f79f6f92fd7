/* The event-store port's only code: freeing the lists and snapshots adapters hand out. */
#include "ports/event_store.h"

#include <stdlib.h>

void es_event_list_free(es_event_list *list)
{
    if (!list)
        return;
    for (size_t i = 0; i < list->len; i++) {
        es_event *ev = &list->items[i];
        free(ev->stream_id);
        free(ev->type);
        free(ev->data);
        free(ev->metadata);
    }
    free(list->items);
    list->items = NULL;
    list->len = 0;
}

void es_due_list_free(es_due_list *list)
{
    if (!list)
        return;
    for (size_t i = 0; i < list->len; i++) {
        free(list->items[i].id);
        free(list->items[i].state);
    }
    free(list->items);
    list->items = NULL;
    list->len = 0;
}

void es_dead_letter_list_free(es_dead_letter_list *list)
{
    if (!list)
        return;
    for (size_t i = 0; i < list->len; i++) {
        free(list->items[i].subscriber);
        free(list->items[i].error);
    }
    free(list->items);
    list->items = NULL;
    list->len = 0;
}

void es_snapshot_free(es_snapshot *snap)
{
    if (!snap)
        return;
    free(snap->state);
    snap->state = NULL;
    snap->version = 0;
}

void es_idem_record_free(es_idem_record *rec)
{
    if (!rec)
        return;
    free(rec->command);
    free(rec->request_hash);
    free(rec->response);
    rec->command = rec->request_hash = rec->response = NULL;
}
