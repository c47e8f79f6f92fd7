/* Prometheus metrics in process memory: families kept in declaration order, series in first-use
 * order. One mutex guards everything; there are a few hundred series at most. */
#include "core/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double metric_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                       0.1,    0.25,  0.5,    1,     2.5,  5,     10};
static const char *const metric_bound_text[] = {"0.0005", "0.001", "0.0025", "0.005", "0.01",
                                                "0.025",  "0.05",  "0.1",    "0.25",  "0.5",
                                                "1",      "2.5",   "5",      "10"};
#define METRIC_N_BOUNDS (sizeof metric_bounds / sizeof metric_bounds[0])

typedef struct metric_series {
    char *labels;
    double value;                               /* counter, gauge */
    double sum;                                 /* histogram */
    unsigned long long count;                   /* histogram: every observation (+Inf) */
    unsigned long long bucket[METRIC_N_BOUNDS]; /* not cumulative; summed when rendered */
} metric_series;

typedef struct metric_family {
    char *name;
    char *help;
    metric_type type;
    metric_series *series;
    size_t n_series, cap_series;
} metric_family;

static pthread_mutex_t metrics_lock = PTHREAD_MUTEX_INITIALIZER;
static metric_family *families;
static size_t n_families, cap_families;

static metric_family *metric_find(const char *name)
{
    for (size_t i = 0; i < n_families; i++)
        if (strcmp(families[i].name, name) == 0)
            return &families[i];
    return NULL;
}

/* Under the lock. NULL on allocation failure: the sample is dropped, the process goes on. */
static metric_family *metric_declare_locked(const char *name, metric_type type, const char *help)
{
    metric_family *f = metric_find(name);
    if (f)
        return f;
    if (n_families == cap_families) {
        size_t cap = cap_families ? cap_families * 2 : 16;
        metric_family *grown = realloc(families, cap * sizeof *grown);
        if (!grown)
            return NULL;
        families = grown;
        cap_families = cap;
    }
    char *name_copy = strdup(name);
    char *help_copy = strdup(help ? help : "");
    if (!name_copy || !help_copy) {
        free(name_copy);
        free(help_copy);
        return NULL;
    }
    f = &families[n_families++];
    memset(f, 0, sizeof *f);
    f->name = name_copy;
    f->help = help_copy;
    f->type = type;
    return f;
}

static metric_series *metric_series_get(metric_family *f, const char *labels)
{
    if (!labels)
        labels = "";
    for (size_t i = 0; i < f->n_series; i++)
        if (strcmp(f->series[i].labels, labels) == 0)
            return &f->series[i];
    if (f->n_series == f->cap_series) {
        size_t cap = f->cap_series ? f->cap_series * 2 : 8;
        metric_series *grown = realloc(f->series, cap * sizeof *grown);
        if (!grown)
            return NULL;
        f->series = grown;
        f->cap_series = cap;
    }
    char *copy = strdup(labels);
    if (!copy)
        return NULL;
    metric_series *s = &f->series[f->n_series++];
    memset(s, 0, sizeof *s);
    s->labels = copy;
    return s;
}

/* A sample for a family of another type is a programmer error; it is dropped, not guessed. */
static metric_series *metric_lookup(const char *name, metric_type type, const char *labels)
{
    metric_family *f = metric_declare_locked(name, type, "");
    if (!f || f->type != type)
        return NULL;
    return metric_series_get(f, labels);
}

void metrics_declare(const char *name, metric_type type, const char *help)
{
    pthread_mutex_lock(&metrics_lock);
    metric_declare_locked(name, type, help);
    pthread_mutex_unlock(&metrics_lock);
}

void metrics_counter_add(const char *name, const char *labels, double value)
{
    if (!(value >= 0)) /* counters never go down; NaN is refused too */
        return;
    pthread_mutex_lock(&metrics_lock);
    metric_series *s = metric_lookup(name, METRIC_COUNTER, labels);
    if (s)
        s->value += value;
    pthread_mutex_unlock(&metrics_lock);
}

void metrics_gauge_set(const char *name, const char *labels, double value)
{
    pthread_mutex_lock(&metrics_lock);
    metric_series *s = metric_lookup(name, METRIC_GAUGE, labels);
    if (s)
        s->value = value;
    pthread_mutex_unlock(&metrics_lock);
}

void metrics_histogram_observe(const char *name, const char *labels, double value)
{
    if (isnan(value))
        return;
    pthread_mutex_lock(&metrics_lock);
    metric_series *s = metric_lookup(name, METRIC_HISTOGRAM, labels);
    if (s) {
        for (size_t i = 0; i < METRIC_N_BOUNDS; i++)
            if (value <= metric_bounds[i]) {
                s->bucket[i]++;
                break;
            }
        s->count++;
        s->sum += value;
    }
    pthread_mutex_unlock(&metrics_lock);
}

/* ---- rendering ---- */

typedef struct metric_buf {
    char *data;
    size_t len, cap;
    bool failed;
} metric_buf;

__attribute__((format(printf, 2, 3))) static void metric_printf(metric_buf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n;
        char *grown = realloc(b->data, cap);
        if (!grown) {
            b->failed = true;
            return;
        }
        b->data = grown;
        b->cap = cap;
    }
}

/* Shortest text that reads back as the same double, in the exposition's spelling. */
static void metric_format(double v, char *out, size_t size)
{
    if (isnan(v)) {
        snprintf(out, size, "NaN");
    } else if (isinf(v)) {
        snprintf(out, size, "%s", v > 0 ? "+Inf" : "-Inf");
    } else {
        snprintf(out, size, "%.15g", v);
        if (strtod(out, NULL) != v)
            snprintf(out, size, "%.17g", v);
    }
}

static void metric_help(metric_buf *b, const char *name, const char *help)
{
    metric_printf(b, "# HELP %s ", name);
    for (const char *p = help; *p; p++) {
        if (*p == '\\')
            metric_printf(b, "\\\\");
        else if (*p == '\n')
            metric_printf(b, "\\n");
        else
            metric_printf(b, "%c", *p);
    }
    metric_printf(b, "\n");
}

static void metric_render_family(metric_buf *b, const metric_family *f)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    if (f->help[0])
        metric_help(b, f->name, f->help);
    metric_printf(b, "# TYPE %s %s\n", f->name, type_names[f->type]);
    for (size_t i = 0; i < f->n_series; i++) {
        const metric_series *s = &f->series[i];
        const char *l = s->labels;
        bool has = l[0] != '\0';
        char num[40];
        if (f->type != METRIC_HISTOGRAM) {
            metric_format(s->value, num, sizeof num);
            metric_printf(b, "%s%s%s%s %s\n", f->name, has ? "{" : "", l, has ? "}" : "", num);
            continue;
        }
        unsigned long long cumulative = 0;
        for (size_t k = 0; k < METRIC_N_BOUNDS; k++) {
            cumulative += s->bucket[k];
            metric_printf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", f->name, l, has ? "," : "",
                          metric_bound_text[k], cumulative);
        }
        metric_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", f->name, l, has ? "," : "", s->count);
        metric_format(s->sum, num, sizeof num);
        metric_printf(b, "%s_sum%s%s%s %s\n", f->name, has ? "{" : "", l, has ? "}" : "", num);
        metric_printf(b, "%s_count%s%s%s %llu\n", f->name, has ? "{" : "", l, has ? "}" : "",
                      s->count);
    }
}

char *metrics_render(void)
{
    metric_buf b = {malloc(4096), 0, 4096, false};
    if (!b.data)
        return NULL;
    b.data[0] = '\0';
    pthread_mutex_lock(&metrics_lock);
    for (size_t i = 0; i < n_families; i++)
        metric_render_family(&b, &families[i]);
    pthread_mutex_unlock(&metrics_lock);
    if (b.failed) {
        free(b.data);
        return NULL;
    }
    return b.data;
}

void metrics_escape_label(const char *value, char *out, size_t size)
{
    if (size == 0)
        return;
    size_t o = 0;
    for (const char *p = value ? value : ""; *p; p++) {
        const char *rep = NULL;
        if (*p == '\\')
            rep = "\\\\";
        else if (*p == '"')
            rep = "\\\"";
        else if (*p == '\n')
            rep = "\\n";
        size_t need = rep ? 2 : 1;
        if (o + need >= size)
            break;
        /* Never end inside a UTF-8 sequence: Prometheus wants valid UTF-8. */
        if (((unsigned char)*p & 0xC0) == 0xC0) {
            size_t seq = ((unsigned char)*p & 0xE0) == 0xC0   ? 2
                         : ((unsigned char)*p & 0xF0) == 0xE0 ? 3
                                                              : 4;
            if (o + seq >= size)
                break;
        }
        if (rep) {
            memcpy(out + o, rep, 2);
            o += 2;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

void metrics_reset(void)
{
    pthread_mutex_lock(&metrics_lock);
    for (size_t i = 0; i < n_families; i++) {
        for (size_t k = 0; k < families[i].n_series; k++)
            free(families[i].series[k].labels);
        free(families[i].series);
        free(families[i].name);
        free(families[i].help);
    }
    free(families);
    families = NULL;
    n_families = cap_families = 0;
    pthread_mutex_unlock(&metrics_lock);
}
