/* libFuzzer: a Kafka message value as the inbox decodes it, then, when it is an event, every
 * compiled-in upcaster on it and its rendering for the audit trail. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/kafka/kfk_inbox.h"
#include "kernel/event_json.h"
#include "kernel/module.h"
#include "kernel/upcast.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static upcast_store *upcasts;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const es_store_ops no_ops; /* upcast_event never reaches the store */
    static es_store none = {&no_ops, NULL};
    app_error err = APP_ERROR_INIT;
    if (!upcasts && upcast_store_new(&upcasts, &none, app_modules, &err) != 0)
        abort();
    kfk_inbox_event in;
    char reason[128];
    if (kfk_inbox_parse(data, size, &in, reason, sizeof reason) != 0) {
        if (!reason[0])
            abort(); /* a refusal always says why */
        return 0;
    }
    es_event ev = {.position = 1, .version = in.version, .schema_version = in.schema_version};
    memcpy(ev.event_id, in.event_id, sizeof ev.event_id);
    memcpy(ev.recorded_at, in.recorded_at, sizeof ev.recorded_at);
    ev.stream_id = strdup(in.stream_id);
    ev.type = strdup(in.type);
    ev.data = strdup(in.data);
    ev.metadata = strdup(in.metadata);
    kfk_inbox_event_free(&in);
    if (ev.stream_id && ev.type && ev.data && ev.metadata) {
        upcast_event(upcasts, &ev, &err);
        cJSON *j = event_to_json(&ev);
        cJSON_Delete(j);
    }
    free(ev.stream_id);
    free(ev.type);
    free(ev.data);
    free(ev.metadata);
    return 0;
}
