/* Span ids from a per-thread xorshift generator seeded by getrandom; sampling by the trace
 * id, as OpenTelemetry's TraceIdRatioBased sampler does, so that every service makes the
 * same decision for one trace. */
#include "core/trace.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static _Atomic(trace_sink_fn) trace_sink;
static void *_Atomic trace_sink_arg;
static _Atomic uint64_t trace_threshold; /* a trace is sampled when its id is below */
static atomic_bool trace_parent_based;

static _Thread_local uint64_t trace_rng;
static _Thread_local trace_ctx trace_here;

void trace_configure(trace_sink_fn sink, void *arg, double ratio, bool parent_based)
{
    atomic_store(&trace_parent_based, parent_based);
    if (ratio < 0)
        ratio = 0;
    uint64_t threshold = ratio >= 1 ? UINT64_MAX : (uint64_t)(ratio * 18446744073709551615.0);
    atomic_store(&trace_threshold, threshold);
    atomic_store(&trace_sink_arg, arg);
    atomic_store(&trace_sink, sink);
}

bool trace_enabled(void)
{
    return atomic_load(&trace_sink) != NULL;
}

static uint64_t trace_random(void)
{
    if (trace_rng == 0) {
        if (getrandom(&trace_rng, sizeof trace_rng, 0) != (ssize_t)sizeof trace_rng)
            trace_rng = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)&trace_rng;
        trace_rng |= 1;
    }
    /* xorshift64* */
    trace_rng ^= trace_rng >> 12;
    trace_rng ^= trace_rng << 25;
    trace_rng ^= trace_rng >> 27;
    return trace_rng * UINT64_C(2685821657736338717);
}

static void trace_fill(uint8_t *id, size_t n)
{
    do {
        for (size_t i = 0; i < n; i += 8) {
            uint64_t r = trace_random();
            memcpy(id + i, &r, n - i < 8 ? n - i : 8);
        }
    } while (id[0] == 0 && memcmp(id, id + 1, n - 1) == 0); /* never all zero */
}

static int trace_unhex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static bool trace_parse_hex(const char *p, uint8_t *out, size_t n)
{
    bool nonzero = false;
    for (size_t i = 0; i < n; i++) {
        int hi = trace_unhex(p[2 * i]), lo = trace_unhex(p[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (uint8_t)(hi << 4 | lo);
        nonzero = nonzero || out[i] != 0;
    }
    return nonzero;
}

bool trace_ctx_parse(const char *tp, trace_ctx *out)
{
    memset(out, 0, sizeof *out);
    uint8_t flags;
    /* Version 00 exactly; a later version as far as 00 goes (it may add fields), never ff. */
    size_t n = tp ? strlen(tp) : 0;
    bool v00 = n > 2 && strncmp(tp, "00", 2) == 0;
    if (!tp || n < TRACEPARENT_LEN - 1 || (v00 && n != TRACEPARENT_LEN - 1) ||
        (n > TRACEPARENT_LEN - 1 && tp[TRACEPARENT_LEN - 1] != '-') || trace_unhex(tp[0]) < 0 ||
        trace_unhex(tp[1]) < 0 || strncmp(tp, "ff", 2) == 0 || tp[2] != '-' || tp[35] != '-' ||
        tp[52] != '-' || !trace_parse_hex(tp + 3, out->trace_id, 16) ||
        !trace_parse_hex(tp + 36, out->span_id, 8)) {
        memset(out, 0, sizeof *out);
        return false;
    }
    int hi = trace_unhex(tp[53]), lo = trace_unhex(tp[54]);
    if (hi < 0 || lo < 0) {
        memset(out, 0, sizeof *out);
        return false;
    }
    flags = (uint8_t)(hi << 4 | lo);
    out->sampled = flags & 1;
    out->valid = true;
    return true;
}

void trace_hex(const uint8_t *id, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[id[i] >> 4];
        out[2 * i + 1] = digits[id[i] & 15];
    }
    out[2 * n] = '\0';
}

void trace_ctx_format(const trace_ctx *c, char out[TRACEPARENT_LEN])
{
    if (!c || !c->valid) {
        out[0] = '\0';
        return;
    }
    char t[33], s[17];
    trace_hex(c->trace_id, 16, t);
    trace_hex(c->span_id, 8, s);
    snprintf(out, TRACEPARENT_LEN, "00-%s-%s-%s", t, s, c->sampled ? "01" : "00");
}

static int64_t trace_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void trace_start(trace_span *s, const char *name, trace_kind kind, const trace_ctx *parent)
{
    s->n_attrs = 0;
    s->error = false;
    s->status[0] = '\0';
    s->kind = kind;
    bool has_parent = parent && parent->valid;
    if (!trace_enabled()) {
        /* Only carries the incoming context on. */
        if (has_parent)
            s->ctx = *parent;
        else
            memset(&s->ctx, 0, sizeof s->ctx);
        s->has_parent = false;
        s->recording = false;
        return;
    }
    if (has_parent) {
        memcpy(s->ctx.trace_id, parent->trace_id, sizeof s->ctx.trace_id);
        memcpy(s->parent_id, parent->span_id, sizeof s->parent_id);
    } else {
        trace_fill(s->ctx.trace_id, sizeof s->ctx.trace_id);
    }
    if (has_parent && atomic_load(&trace_parent_based)) {
        s->ctx.sampled = parent->sampled;
    } else {
        /* TraceIdRatioBased: the low 8 bytes of the id against the ratio, so that every
         * service decides the same for one trace. */
        uint64_t low = 0;
        for (size_t i = 8; i < 16; i++)
            low = low << 8 | s->ctx.trace_id[i];
        uint64_t threshold = atomic_load(&trace_threshold);
        s->ctx.sampled = threshold == UINT64_MAX || (threshold > 0 && low < threshold);
    }
    s->has_parent = has_parent;
    trace_fill(s->ctx.span_id, sizeof s->ctx.span_id);
    s->ctx.valid = true;
    s->recording = s->ctx.sampled;
    trace_name(s, "%s", name);
    s->start_ns = trace_now_ns();
}

void trace_start_tp(trace_span *s, const char *name, trace_kind kind, const char *traceparent)
{
    trace_ctx parent;
    trace_start(s, name, kind, trace_ctx_parse(traceparent, &parent) ? &parent : NULL);
}

void trace_continue_tp(trace_span *s, const char *name, trace_kind kind, const char *traceparent)
{
    trace_ctx parent;
    if (trace_ctx_parse(traceparent, &parent)) {
        trace_start(s, name, kind, &parent);
        return;
    }
    memset(s, 0, sizeof *s);
    s->kind = kind;
    (void)name;
}

void trace_name(trace_span *s, const char *fmt, ...)
{
    if (!s->recording)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->name, sizeof s->name, fmt, ap);
    va_end(ap);
}

static trace_attr *trace_attr_next(trace_span *s, const char *key)
{
    if (!s->recording || s->n_attrs == TRACE_MAX_ATTRS)
        return NULL;
    trace_attr *a = &s->attrs[s->n_attrs++];
    snprintf(a->key, sizeof a->key, "%s", key);
    return a;
}

void trace_attr_str(trace_span *s, const char *key, const char *value)
{
    trace_attr *a = trace_attr_next(s, key);
    if (a) {
        a->is_int = false;
        snprintf(a->s, sizeof a->s, "%s", value ? value : "");
    }
}

void trace_attr_int(trace_span *s, const char *key, int64_t value)
{
    trace_attr *a = trace_attr_next(s, key);
    if (a) {
        a->is_int = true;
        a->i = value;
    }
}

void trace_fail(trace_span *s, const char *why)
{
    s->error = true;
    snprintf(s->status, sizeof s->status, "%s", why ? why : "");
}

void trace_end(trace_span *s)
{
    if (!s->recording)
        return;
    s->end_ns = trace_now_ns();
    s->recording = false;
    trace_sink_fn sink = atomic_load(&trace_sink);
    if (sink)
        sink(s, atomic_load(&trace_sink_arg));
}

const trace_ctx *trace_current(void)
{
    return trace_here.valid ? &trace_here : NULL;
}

trace_ctx trace_enter(const trace_span *s)
{
    trace_ctx before = trace_here;
    if (s->ctx.valid)
        trace_here = s->ctx;
    return before;
}

void trace_leave(const trace_ctx *before)
{
    trace_here = *before;
}
