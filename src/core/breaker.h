/* A circuit breaker: after failure_threshold failures in a row it opens and refuses work for
 * open_ms, then lets one probe through (half-open); the probe's outcome closes it or opens it
 * again. Not thread-safe: one owner thread calls it. The clock is injected for tests. */
#ifndef CORE_BREAKER_H
#define CORE_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

#include "ports/clock.h"

typedef enum breaker_state {
    BREAKER_CLOSED = 0,    /* work flows */
    BREAKER_HALF_OPEN = 1, /* one probe may go */
    BREAKER_OPEN = 2,      /* work is refused until open_ms have passed */
} breaker_state;

typedef struct breaker {
    const app_clock *clock; /* borrowed */
    int failure_threshold;
    int64_t open_ms;
    breaker_state state;
    int failures;      /* in a row, while closed */
    int64_t opened_at; /* clock ms when it last opened */
    bool probing;      /* half-open and the probe is out */
} breaker;

/* clock NULL means the system clock. threshold and open_ms below 1 become 1. */
void breaker_init(breaker *b, const app_clock *clock, int failure_threshold, int64_t open_ms);

/* Whether work may go now. Moves open to half-open once open_ms have passed; in half-open it
 * says yes once (the probe) until the probe's outcome is recorded. */
bool breaker_allow(breaker *b);

void breaker_success(breaker *b);
void breaker_failure(breaker *b);
/* The work breaker_allow let by did not happen after all (e.g. refused before it was sent):
 * in half-open, the next breaker_allow may send another probe. */
void breaker_release(breaker *b);

/* The state, moving open to half-open when due (without taking the probe). */
breaker_state breaker_current(breaker *b);

/* ms until an open breaker lets a probe through (0 when not open). */
int64_t breaker_wait_ms(breaker *b);

const char *breaker_state_name(breaker_state s);

#endif
