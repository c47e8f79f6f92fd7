/* Distributed tracing, W3C Trace Context: span ids, the traceparent header, sampling, and
 * spans recorded into a sink (the OTLP exporter, http/otlp.h) when tracing is on. A span is a
 * value the caller keeps (on its stack, or in the request it belongs to) from trace_start to
 * trace_end; nothing is allocated. With no sink, spans only carry the incoming context on, so
 * that traceparent still propagates and tracing costs nothing. */
#ifndef CORE_TRACE_H
#define CORE_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TRACEPARENT_LEN 56 /* "00-<32 hex>-<16 hex>-<2 hex>" and the NUL */
#define TRACE_MAX_ATTRS 8

typedef struct trace_ctx {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    bool sampled;
    bool valid; /* false: no trace (ids all zero) */
} trace_ctx;

typedef enum trace_kind {
    TRACE_INTERNAL = 1, /* the values of OTLP's SpanKind */
    TRACE_SERVER = 2,
    TRACE_CLIENT = 3,
    TRACE_PRODUCER = 4,
    TRACE_CONSUMER = 5,
} trace_kind;

typedef struct trace_attr {
    char key[40];
    bool is_int;
    int64_t i;
    char s[120];
} trace_attr;

typedef struct trace_span {
    trace_ctx ctx; /* its own: the trace, its span id, sampled */
    uint8_t parent_id[8];
    bool has_parent;
    bool recording; /* sampled, with a sink: it is exported at trace_end */
    trace_kind kind;
    char name[80];
    int64_t start_ns, end_ns; /* Unix epoch */
    trace_attr attrs[TRACE_MAX_ATTRS];
    size_t n_attrs;
    bool error;
    char status[120]; /* why, when error */
} trace_span;

/* Takes a finished, recording span (a copy is the sink's to keep). Any thread. */
typedef void (*trace_sink_fn)(const trace_span *s, void *arg);

/* Turns recording on (sink set) or off (NULL). ratio, 0..1: the share of traces sampled, by
 * their id; parent_based: a span with a parent follows the parent's sampled flag instead
 * (OpenTelemetry's parentbased_* samplers). Call it before any span starts or after the last
 * ends. */
void trace_configure(trace_sink_fn sink, void *arg, double ratio, bool parent_based);
bool trace_enabled(void);

/* Parses a W3C traceparent (lower-case hex, ids not all zero; a version after 00 is read as
 * 00 reads, and formatted back as 00). */
bool trace_ctx_parse(const char *traceparent, trace_ctx *out);
/* Formats c as a traceparent into out; "" when c is not valid. */
void trace_ctx_format(const trace_ctx *c, char out[TRACEPARENT_LEN]);
/* Lower-case hex of the ids into out (33 and 17 bytes). */
void trace_hex(const uint8_t *id, size_t n, char *out);

/* Starts s, a child of parent (NULL or not valid: a new trace). Without a sink, s keeps the
 * parent's context as its own and does not record. */
void trace_start(trace_span *s, const char *name, trace_kind kind, const trace_ctx *parent);
/* The same, the parent given as a traceparent string (NULL, "" or unparsable: a new trace). */
void trace_start_tp(trace_span *s, const char *name, trace_kind kind, const char *traceparent);
/* The same, for work that only continues a trace (a subscriber's handling of an event, the
 * copy of an event to Kafka): without a parent, s records nothing and starts no trace, so
 * that catching up on events older than tracing floods nobody. */
void trace_continue_tp(trace_span *s, const char *name, trace_kind kind, const char *traceparent);
/* Names s, printf-style; only a recording span is named, so that a name built from the
 * message or event costs nothing while tracing is off or the trace not sampled. */
void trace_name(trace_span *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void trace_attr_str(trace_span *s, const char *key, const char *value);
void trace_attr_int(trace_span *s, const char *key, int64_t value);
/* Marks s failed, saying why. */
void trace_fail(trace_span *s, const char *why);
/* Ends s: a recording span goes to the sink. */
void trace_end(trace_span *s);

/* The context the calling thread works in (for log lines), or NULL. trace_enter makes s's
 * context the thread's and returns the one before, which trace_leave puts back. */
const trace_ctx *trace_current(void);
trace_ctx trace_enter(const trace_span *s);
void trace_leave(const trace_ctx *before);

#endif
