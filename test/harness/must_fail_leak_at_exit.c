/* Must fail: an app that exits 0 on SIGTERM but leaks at exit. ts_app_stop_clean must fail
 * the test on its own: the app's log is removed after the test, so test/run.sh's scan of
 * the logs cannot be what catches it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <unistd.h>

#include "test/harness/harness.h"
#include "test/support/services.h"

static ts_app app;

static void test_leaky_app_stops(void **state)
{
    (void)state;
    harness_use_leaky_app();
    ts_app_start(&app, NULL);
    ts_app_stop_clean(&app);
}

static int remove_log(void **state)
{
    (void)state;
    ts_app_end(&app);
    unlink(app.log_path);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_leaky_app_stops, remove_log),
    };
    return cmocka_run_group_tests_name("must fail: leak at exit", tests, NULL, NULL);
}
