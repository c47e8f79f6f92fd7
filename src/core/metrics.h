/* Process-wide Prometheus metrics: counters, gauges and histograms keyed by name and a
 * label string, rendered in the text exposition format. Thread-safe. */
#ifndef CORE_METRICS_H
#define CORE_METRICS_H

#include <stddef.h>

typedef enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM } metric_type;

/* Declares a family once at start-up (HELP and TYPE lines). Re-declaring is a no-op.
 * Histograms use the default latency buckets (seconds, 0.0005 .. 10). */
void metrics_declare(const char *name, metric_type type, const char *help);

/* labels is the inside of the braces, already escaped, e.g.
 * "route=\"/v1/users\",method=\"POST\",status=\"201\"", or "" for none. Using a name that
 * was not declared declares it with an empty help text. */
void metrics_counter_add(const char *name, const char *labels, double value);
void metrics_gauge_set(const char *name, const char *labels, double value);
void metrics_histogram_observe(const char *name, const char *labels, double value);

/* The whole exposition; the caller frees it. NULL on allocation failure. */
char *metrics_render(void);

/* Escapes a label value (backslash, quote, newline) into out; truncates to fit. */
void metrics_escape_label(const char *value, char *out, size_t size);

/* Drops every series and family (tests only). */
void metrics_reset(void);

#endif
