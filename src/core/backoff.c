/* Exponential backoff with "equal jitter": half the ceiling is certain, half is random. */
#include "core/backoff.h"

#include <time.h>

void backoff_init(backoff *b, int base_ms, int max_ms, uint64_t seed)
{
    if (base_ms < 1)
        base_ms = 1;
    if (max_ms < base_ms)
        max_ms = base_ms;
    b->base_ms = base_ms;
    b->max_ms = max_ms;
    b->attempt = 0;
    if (seed == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        seed = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec;
    }
    b->rng = seed ? seed : 0x2545f4914f6cdd1dull;
}

static uint64_t backoff_rand(backoff *b)
{
    uint64_t x = b->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b->rng = x;
    return x;
}

int backoff_next(backoff *b)
{
    int64_t ceiling = b->base_ms;
    for (unsigned i = 0; i < b->attempt && ceiling < b->max_ms; i++)
        ceiling *= 2;
    if (ceiling > b->max_ms)
        ceiling = b->max_ms;
    if (b->attempt < 64)
        b->attempt++;
    int64_t low = ceiling / 2 < b->base_ms ? b->base_ms : ceiling / 2;
    uint64_t span = (uint64_t)(ceiling - low) + 1;
    return (int)(low + (int64_t)(backoff_rand(b) % span));
}

void backoff_reset(backoff *b)
{
    b->attempt = 0;
}
