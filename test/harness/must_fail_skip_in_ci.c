/* Must fail in CI: a skipped test is a check that did not run. test/run.sh runs the
 * must-fail programs with CI=true. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static void test_skips(void **state)
{
    (void)state;
    skip();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_skips),
    };
    return cmocka_run_group_tests_name("must fail: a skip in CI", tests, NULL, NULL);
}
