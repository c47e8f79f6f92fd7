/* Structured logging: one JSON object per line on stderr, thread-safe.
 *
 * By default a line is written to stderr by the thread that logs it. A serving process calls
 * log_async_start: lines then go into a ring buffer in memory and one writer thread writes
 * them out, many lines to a write(2), so that no loop thread waits on the terminal, a pipe
 * or journald. Nothing is dropped: a thread that finds the ring full waits for room, and
 * log_async_stop (also run at exit) writes out everything before it returns. Lines keep
 * the order in which they were logged. */
#ifndef CORE_LOG_H
#define CORE_LOG_H

#include <stddef.h>

typedef enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

void log_set_level(log_level level);
/* "debug", "info", "warn", "error"; returns -1 for anything else. */
int log_level_parse(const char *name);
void log_write(log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_write(LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  log_write(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)

/* Starts the writer thread with a ring of ring_bytes (0: 1 MiB; at least 4 KiB). Returns 0,
 * or -1 when the thread cannot be started (lines are then written directly, as before).
 * Starting twice does nothing. */
int log_async_start(size_t ring_bytes);
/* Writes out every line logged so far and stops the writer; later lines are written
 * directly. Safe to call when not started, and more than once. */
void log_async_stop(void);

#endif
