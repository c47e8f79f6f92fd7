/* Must fail in CI: a test that needs a tool the machine lacks (as test_metrics needs
 * promtool) fails there instead of skipping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test/support/services.h"

static void test_needs_a_missing_tool(void **state)
{
    (void)state;
    ts_require_tool("app-harness-no-such-tool", "no-such-package");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_needs_a_missing_tool),
    };
    return cmocka_run_group_tests_name("must fail: a missing tool in CI", tests, NULL, NULL);
}
