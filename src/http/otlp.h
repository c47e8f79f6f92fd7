/* The OTLP/HTTP trace exporter: finished spans (core/trace.h) go into a bounded queue, and a
 * thread of its own sends them in batches as OTLP JSON to <endpoint>/v1/traces. A full queue
 * drops spans, counted in tracing_spans_total{outcome="dropped"}: a request never waits for
 * tracing. A batch the receiver refuses or does not answer is dropped too ("failed"). */
#ifndef HTTP_OTLP_H
#define HTTP_OTLP_H

#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"

typedef struct otlp_exporter otlp_exporter;

typedef struct otlp_options {
    const char *endpoint;     /* "http://host:port" (OTEL_EXPORTER_OTLP_ENDPOINT) */
    const char *service_name; /* the resource's service.name */
    const char *attributes;   /* more resource attributes: "k=v,k2=v2", or NULL */
    double ratio;             /* share of traces sampled, 0..1 */
    bool parent_based;        /* a child follows its parent's sampled flag */
    size_t queue_size;        /* spans waiting at most */
    size_t batch_size;        /* spans a request carries at most */
    int interval_ms;          /* the longest a span waits for its batch */
    int timeout_ms;           /* an export request in all */
} otlp_options;

/* Starts the exporter thread and turns tracing on (trace_configure). *out owned by the
 * caller: otlp_stop. APP_ECONFIG when the endpoint is not an http:// URL. */
int otlp_start(otlp_exporter **out, const otlp_options *o, app_error *err);

/* Turns tracing off, sends what is queued (within the timeout), stops the thread, frees.
 * Accepts NULL. */
void otlp_stop(otlp_exporter *e);

#endif
