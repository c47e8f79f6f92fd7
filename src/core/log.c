/* Structured logging to stderr; the message is escaped into a JSON string. */
#include "core/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/trace.h"

static atomic_int current_level = LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(log_level level)
{
    atomic_store(&current_level, (int)level);
}

int log_level_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

void log_write(log_level level, const char *fmt, ...)
{
    if ((int)level < atomic_load(&current_level))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    char esc[2200];
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)msg; *p && o + 7 < sizeof esc; p++) {
        if (*p == '"' || *p == '\\') {
            esc[o++] = '\\';
            esc[o++] = (char)*p;
        } else if (*p < 0x20) {
            o += (size_t)snprintf(esc + o, sizeof esc - o, "\\u%04x", *p);
        } else {
            esc[o++] = (char)*p;
        }
    }
    esc[o] = '\0';

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    /* The trace the thread works in, so that a line leads to its trace and back. */
    char ids[96] = "";
    const trace_ctx *t = trace_current();
    if (t) {
        char trace_id[33], span_id[17];
        trace_hex(t->trace_id, 16, trace_id);
        trace_hex(t->span_id, 8, span_id);
        snprintf(ids, sizeof ids, ",\"trace_id\":\"%s\",\"span_id\":\"%s\"", trace_id, span_id);
    }
    fprintf(stderr, "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"msg\":\"%s\"%s}\n", when,
            ts.tv_nsec / 1000000, level_names[level], esc, ids);
}
