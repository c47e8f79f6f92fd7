/* Structured logging to stderr; the message is escaped into a JSON string. Lines go out
 * directly, or through a ring buffer and one writer thread (log_async_start). */
#include "core/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/deadline.h"
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

/* ---- the writer -------------------------------------------------------------------------- */

/* The ring: bytes [head, tail) of the stream of lines are waiting, at offsets modulo cap.
 * Producers append at tail under the lock; the writer writes from head without it (only it
 * moves head, and producers never touch bytes before tail), then moves head under it. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t work; /* the writer waits for lines, or for the stop */
    pthread_cond_t room; /* producers wait for room; log_async_stop for the ring to empty */
    pthread_t thread;
    char *buf;
    size_t cap;
    size_t head, tail;
    bool running, stopping;
    bool idle; /* the writer waits for a signal, not for its nap to end */
} ring = {.lock = PTHREAD_MUTEX_INITIALIZER,
          .work = PTHREAD_COND_INITIALIZER,
          .room = PTHREAD_COND_INITIALIZER};

/* All of text to fd 2, past EINTR and short writes; gives up on any other error (there is
 * nowhere to report it). */
static void write_all(const char *text, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, text, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        text += n;
        len -= (size_t)n;
    }
}

/* After a write the writer naps this long, unless the ring fills past half: the lines of a
 * busy process go out in few writes, and their producers wake nobody. */
#define LOG_NAP_MS 10

static void *writer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&ring.lock);
    for (;;) {
        while (ring.head == ring.tail && !ring.stopping) {
            ring.idle = true;
            pthread_cond_wait(&ring.work, &ring.lock);
            ring.idle = false;
        }
        if (ring.head == ring.tail)
            break; /* stopping, and everything is out */
        while (ring.head != ring.tail) {
            size_t at = ring.head % ring.cap, len = ring.tail - ring.head;
            if (len > ring.cap - at)
                len = ring.cap - at; /* up to the end of the buffer; the rest next round */
            pthread_mutex_unlock(&ring.lock);
            write_all(ring.buf + at, len);
            pthread_mutex_lock(&ring.lock);
            ring.head += len;
            pthread_cond_broadcast(&ring.room);
        }
        if (!ring.stopping) {
            struct timespec until;
            deadline_in_ms(CLOCK_REALTIME, LOG_NAP_MS, &until);
            pthread_cond_timedwait(&ring.work, &ring.lock, &until);
        }
    }
    pthread_mutex_unlock(&ring.lock);
    return NULL;
}

static void log_async_stop_at_exit(void)
{
    log_async_stop();
}

int log_async_start(size_t ring_bytes)
{
    static bool at_exit;
    if (ring_bytes == 0)
        ring_bytes = 1u << 20;
    if (ring_bytes < 4096)
        ring_bytes = 4096;
    pthread_mutex_lock(&ring.lock);
    if (ring.running) {
        pthread_mutex_unlock(&ring.lock);
        return 0;
    }
    ring.buf = malloc(ring_bytes);
    ring.cap = ring_bytes;
    ring.head = ring.tail = 0;
    ring.stopping = false;
    if (!ring.buf || pthread_create(&ring.thread, NULL, writer_main, NULL) != 0) {
        free(ring.buf);
        ring.buf = NULL;
        pthread_mutex_unlock(&ring.lock);
        return -1;
    }
    ring.running = true;
    pthread_mutex_unlock(&ring.lock);
    if (!at_exit)
        at_exit = atexit(log_async_stop_at_exit) == 0;
    return 0;
}

void log_async_stop(void)
{
    pthread_mutex_lock(&ring.lock);
    if (!ring.running || ring.stopping) {
        pthread_mutex_unlock(&ring.lock);
        return;
    }
    ring.stopping = true;
    pthread_cond_signal(&ring.work);
    pthread_mutex_unlock(&ring.lock);
    pthread_join(ring.thread, NULL);
    pthread_mutex_lock(&ring.lock);
    ring.running = false;
    ring.stopping = false;
    free(ring.buf);
    ring.buf = NULL;
    pthread_cond_broadcast(&ring.room); /* producers that waited for room write directly */
    pthread_mutex_unlock(&ring.lock);
}

/* One whole line, into the ring when the writer runs, else straight to stderr. */
static void emit(const char *line, size_t len)
{
    pthread_mutex_lock(&ring.lock);
    while (ring.running && !ring.stopping && ring.cap - (ring.tail - ring.head) < len &&
           len <= ring.cap)
        pthread_cond_wait(&ring.room, &ring.lock);
    if (!ring.running || ring.stopping || len > ring.cap) {
        /* Stopping: the writer may already have finished; keep the order with a wait for
         * it, then write directly. */
        bool wait_stop = ring.running && ring.stopping;
        while (wait_stop && ring.running)
            pthread_cond_wait(&ring.room, &ring.lock);
        pthread_mutex_unlock(&ring.lock);
        write_all(line, len);
        return;
    }
    size_t at = ring.tail % ring.cap, first = ring.cap - at;
    if (first > len)
        first = len;
    memcpy(ring.buf + at, line, first);
    memcpy(ring.buf, line + first, len - first);
    ring.tail += len;
    /* An idle writer needs the signal; a napping one only when the ring fills. */
    if (ring.idle || ring.tail - ring.head > ring.cap / 2)
        pthread_cond_signal(&ring.work);
    pthread_mutex_unlock(&ring.lock);
}

/* ---- lines --------------------------------------------------------------------------------- */

/* "2026-12-05T06:16:46", remade once a second per thread. */
static const char *utc_seconds(time_t sec)
{
    static _Thread_local time_t cached = -1;
    static _Thread_local char text[32];
    if (sec != cached) {
        struct tm tm;
        gmtime_r(&sec, &tm);
        strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
        cached = sec;
    }
    return text;
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
    /* The trace the thread works in, so that a line leads to its trace and back. */
    char ids[96] = "";
    const trace_ctx *t = trace_current();
    if (t) {
        char trace_id[33], span_id[17];
        trace_hex(t->trace_id, 16, trace_id);
        trace_hex(t->span_id, 8, span_id);
        snprintf(ids, sizeof ids, ",\"trace_id\":\"%s\",\"span_id\":\"%s\"", trace_id, span_id);
    }
    char line[sizeof esc + 256];
    int n =
        snprintf(line, sizeof line, "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"msg\":\"%s\"%s}\n",
                 utc_seconds(ts.tv_sec), ts.tv_nsec / 1000000, level_names[level], esc, ids);
    if (n > 0)
        emit(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}
