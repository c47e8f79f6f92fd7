/* Must fail: the group setup fails, so no test runs and cmocka counts no failed test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static void test_never_runs(void **state)
{
    (void)state;
}

static int setup_fails(void **state)
{
    (void)state;
    return -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_never_runs),
    };
    return cmocka_run_group_tests_name("must fail: group setup", tests, setup_fails, NULL);
}
