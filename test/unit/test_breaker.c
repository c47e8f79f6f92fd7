/* The circuit breaker on an injected clock, and exponential backoff with jitter. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/backoff.h"
#include "core/breaker.h"

typedef struct fake_clock {
    int64_t now;
} fake_clock;

static int64_t fake_now(void *self)
{
    return ((fake_clock *)self)->now;
}

static void test_opens_after_threshold(void **state)
{
    (void)state;
    fake_clock fc = {1000};
    app_clock clock = {fake_now, &fc};
    breaker b;
    breaker_init(&b, &clock, 3, 500);
    assert_true(breaker_allow(&b));
    breaker_failure(&b);
    breaker_failure(&b);
    assert_int_equal(breaker_current(&b), BREAKER_CLOSED);
    assert_true(breaker_allow(&b));
    breaker_failure(&b);
    assert_int_equal(breaker_current(&b), BREAKER_OPEN);
    assert_false(breaker_allow(&b));
    assert_int_equal(breaker_wait_ms(&b), 500);
    fc.now += 499;
    assert_false(breaker_allow(&b));
    assert_int_equal(breaker_wait_ms(&b), 1);
    assert_string_equal(breaker_state_name(breaker_current(&b)), "open");
}

static void test_success_resets_the_count(void **state)
{
    (void)state;
    fake_clock fc = {0};
    app_clock clock = {fake_now, &fc};
    breaker b;
    breaker_init(&b, &clock, 2, 100);
    breaker_failure(&b);
    breaker_success(&b);
    breaker_failure(&b);
    assert_int_equal(breaker_current(&b), BREAKER_CLOSED); /* not two in a row */
    breaker_failure(&b);
    assert_int_equal(breaker_current(&b), BREAKER_OPEN);
}

static void test_half_open_probe_closes(void **state)
{
    (void)state;
    fake_clock fc = {0};
    app_clock clock = {fake_now, &fc};
    breaker b;
    breaker_init(&b, &clock, 1, 100);
    breaker_failure(&b);
    assert_int_equal(breaker_current(&b), BREAKER_OPEN);
    fc.now = 100;
    assert_int_equal(breaker_current(&b), BREAKER_HALF_OPEN);
    assert_int_equal(breaker_wait_ms(&b), 0);
    assert_true(breaker_allow(&b));  /* the probe */
    assert_false(breaker_allow(&b)); /* only one */
    breaker_release(&b);             /* it never went: another may */
    assert_true(breaker_allow(&b));
    breaker_failure(&b); /* the probe failed */
    assert_int_equal(breaker_current(&b), BREAKER_OPEN);
    fc.now = 250;
    assert_true(breaker_allow(&b));
    breaker_success(&b);
    assert_int_equal(breaker_current(&b), BREAKER_CLOSED);
    assert_true(breaker_allow(&b));
    assert_true(breaker_allow(&b));
}

static void test_half_open_probe_fails(void **state)
{
    (void)state;
    fake_clock fc = {0};
    app_clock clock = {fake_now, &fc};
    breaker b;
    breaker_init(&b, &clock, 2, 1000);
    breaker_failure(&b);
    breaker_failure(&b);
    fc.now = 1000;
    assert_true(breaker_allow(&b));
    breaker_failure(&b);
    assert_int_equal(breaker_current(&b), BREAKER_OPEN);
    assert_int_equal(breaker_wait_ms(&b), 1000); /* a full open period again */
    breaker_failure(&b);                         /* late news while open changes nothing */
    assert_int_equal(breaker_wait_ms(&b), 1000);
    fc.now = 1999;
    assert_false(breaker_allow(&b));
    fc.now = 2000;
    assert_true(breaker_allow(&b));
}

static void test_backoff_grows_within_bounds(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 200; seed++) {
        backoff bo;
        backoff_init(&bo, 100, 5000, seed);
        int64_t ceiling = 100;
        for (int i = 0; i < 12; i++) {
            int d = backoff_next(&bo);
            int64_t low = ceiling / 2 < 100 ? 100 : ceiling / 2;
            assert_in_range(d, low, ceiling);
            assert_in_range(d, 100, 5000);
            ceiling = ceiling * 2 > 5000 ? 5000 : ceiling * 2;
        }
        backoff_reset(&bo);
        assert_int_equal(backoff_next(&bo), 100); /* the first delay is the base */
    }
}

static void test_backoff_has_jitter(void **state)
{
    (void)state;
    /* The same attempt with different seeds lands on many different delays. */
    int seen[2001] = {0};
    int distinct = 0;
    for (uint64_t seed = 1; seed <= 100; seed++) {
        backoff bo;
        backoff_init(&bo, 100, 100000, seed * 7919);
        int d = 0;
        for (int i = 0; i < 5; i++)
            d = backoff_next(&bo); /* ceiling 1600: in [800, 1600] */
        assert_in_range(d, 800, 1600);
        if (!seen[d]++)
            distinct++;
    }
    assert_true(distinct > 50);
}

static void test_backoff_clamps(void **state)
{
    (void)state;
    backoff bo;
    backoff_init(&bo, 0, -5, 0); /* nonsense becomes base 1, max 1 */
    for (int i = 0; i < 100; i++)
        assert_int_equal(backoff_next(&bo), 1);
    backoff_init(&bo, 1000, 1500, 3);
    assert_int_equal(backoff_next(&bo), 1000);
    for (int i = 0; i < 100; i++)
        assert_in_range(backoff_next(&bo), 1000, 1500);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opens_after_threshold),
        cmocka_unit_test(test_success_resets_the_count),
        cmocka_unit_test(test_half_open_probe_closes),
        cmocka_unit_test(test_half_open_probe_fails),
        cmocka_unit_test(test_backoff_grows_within_bounds),
        cmocka_unit_test(test_backoff_has_jitter),
        cmocka_unit_test(test_backoff_clamps),
    };
    return cmocka_run_group_tests_name("breaker", tests, NULL, NULL);
}
