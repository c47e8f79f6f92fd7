/* Absolute deadlines for pthread_cond_timedwait: now on a given clock plus some ms; and now in
 * ms on the monotonic clock, for deadlines and ages kept as numbers. */
#ifndef CORE_DEADLINE_H
#define CORE_DEADLINE_H

#include <stdint.h>
#include <time.h>

/* Milliseconds on CLOCK_MONOTONIC (bus_meta.deadline_ms is on it too). */
static inline int64_t deadline_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* *out = now on clock + ms (ms >= 0), normalized. */
static inline void deadline_in_ms(clockid_t clock, int ms, struct timespec *out)
{
    clock_gettime(clock, out);
    out->tv_sec += ms / 1000;
    out->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (out->tv_nsec >= 1000000000L) {
        out->tv_sec++;
        out->tv_nsec -= 1000000000L;
    }
}

#endif
