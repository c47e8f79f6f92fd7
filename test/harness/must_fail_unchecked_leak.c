/* Must fail: a test starts an app that leaks at exit and never looks at how it ended, as
 * a test with a forgotten or dropped shutdown check would. The test passes; test/run.sh's
 * scan of every app log of the program must find the report. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <signal.h>

#include "test/harness/harness.h"
#include "test/support/services.h"

static void test_exit_ignored(void **state)
{
    (void)state;
    ts_app app;
    harness_use_leaky_app();
    ts_app_start(&app, NULL);
    (void)ts_app_stop(&app, SIGTERM); /* the status is not checked, on purpose */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exit_ignored),
    };
    return cmocka_run_group_tests_name("must fail: unchecked leak", tests, NULL, NULL);
}
