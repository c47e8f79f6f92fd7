/* Must fail: every test passes, but the group teardown fails. cmocka 1.1.5 prints
 * "[  FAILED  ] GROUP TEARDOWN" and exits 0; test/run.sh must count it as a failure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static void test_passes(void **state)
{
    (void)state;
}

static int teardown_fails(void **state)
{
    (void)state;
    return -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_passes),
    };
    return cmocka_run_group_tests_name("must fail: group teardown", tests, NULL, teardown_fails);
}
