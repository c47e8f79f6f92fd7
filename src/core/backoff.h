/* Exponential backoff with jitter for retrying transient failures: the n-th delay lies in
 * [max(base, c/2), c] with c = min(max, base * 2^n), so retries spread out and never exceed max. */
#ifndef CORE_BACKOFF_H
#define CORE_BACKOFF_H

#include <stdint.h>

typedef struct backoff {
    int base_ms;
    int max_ms;
    unsigned attempt; /* delays handed out since the last reset */
    uint64_t rng;     /* xorshift state; never 0 */
} backoff;

/* base_ms >= 1 and max_ms >= base_ms are enforced by clamping. seed 0 picks one from the
 * clock, so processes that restart together do not retry in step. */
void backoff_init(backoff *b, int base_ms, int max_ms, uint64_t seed);

/* The next delay in ms; each call doubles the ceiling until it reaches max_ms. */
int backoff_next(backoff *b);

/* After a success: the next delay starts from base_ms again. */
void backoff_reset(backoff *b);

#endif
