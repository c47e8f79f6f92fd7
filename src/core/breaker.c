/* The circuit breaker's state machine: closed -> open -> half-open -> closed or open. */
#include "core/breaker.h"

#include <stddef.h>

void breaker_init(breaker *b, const app_clock *clock, int failure_threshold, int64_t open_ms)
{
    b->clock = clock ? clock : &app_system_clock;
    b->failure_threshold = failure_threshold < 1 ? 1 : failure_threshold;
    b->open_ms = open_ms < 1 ? 1 : open_ms;
    b->state = BREAKER_CLOSED;
    b->failures = 0;
    b->opened_at = 0;
    b->probing = false;
}

static int64_t breaker_now(const breaker *b)
{
    return b->clock->now_ms(b->clock->self);
}

breaker_state breaker_current(breaker *b)
{
    if (b->state == BREAKER_OPEN && breaker_now(b) - b->opened_at >= b->open_ms) {
        b->state = BREAKER_HALF_OPEN;
        b->probing = false;
    }
    return b->state;
}

bool breaker_allow(breaker *b)
{
    switch (breaker_current(b)) {
    case BREAKER_CLOSED:
        return true;
    case BREAKER_HALF_OPEN:
        if (b->probing)
            return false;
        b->probing = true;
        return true;
    case BREAKER_OPEN:
        break;
    }
    return false;
}

void breaker_success(breaker *b)
{
    b->state = BREAKER_CLOSED;
    b->failures = 0;
    b->probing = false;
}

static void breaker_open(breaker *b)
{
    b->state = BREAKER_OPEN;
    b->opened_at = breaker_now(b);
    b->probing = false;
}

void breaker_failure(breaker *b)
{
    switch (breaker_current(b)) {
    case BREAKER_CLOSED:
        if (++b->failures >= b->failure_threshold)
            breaker_open(b);
        break;
    case BREAKER_HALF_OPEN: /* the probe failed */
        breaker_open(b);
        break;
    case BREAKER_OPEN: /* late news of work sent before it opened: already counted */
        break;
    }
}

void breaker_release(breaker *b)
{
    if (b->state == BREAKER_HALF_OPEN)
        b->probing = false;
}

int64_t breaker_wait_ms(breaker *b)
{
    if (breaker_current(b) != BREAKER_OPEN)
        return 0;
    int64_t left = b->open_ms - (breaker_now(b) - b->opened_at);
    return left > 0 ? left : 0;
}

const char *breaker_state_name(breaker_state s)
{
    switch (s) {
    case BREAKER_CLOSED:
        return "closed";
    case BREAKER_HALF_OPEN:
        return "half-open";
    case BREAKER_OPEN:
        return "open";
    }
    return "unknown";
}
