/* Absolute deadlines for pthread_cond_timedwait: now on a given clock plus some ms. */
#ifndef CORE_DEADLINE_H
#define CORE_DEADLINE_H

#include <time.h>

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
