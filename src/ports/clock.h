/* Clock and id-generator ports, so domain and application code stay testable. */
#ifndef PORTS_CLOCK_H
#define PORTS_CLOCK_H

#include <stdint.h>

typedef struct app_clock {
    /* Milliseconds since the Unix epoch. */
    int64_t (*now_ms)(void *self);
    void *self;
} app_clock;

/* The system clock. */
extern const app_clock app_system_clock;

#endif
