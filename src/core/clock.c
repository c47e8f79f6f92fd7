/* The system clock behind the clock port. */
#include <time.h>

#include "ports/clock.h"

static int64_t system_now_ms(void *self)
{
    (void)self;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const app_clock app_system_clock = {system_now_ms, NULL};
