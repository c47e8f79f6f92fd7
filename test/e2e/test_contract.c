/* End to end: docs/openapi.yaml is what the server does, as an outside tester sees it.
 * Schemathesis (PyPI, installed by test/tools/pyvenv.sh) runs every check of its examples,
 * coverage, fuzzing and stateful phases against ./app with private PostgreSQL and Redis: answers
 * the contract does not declare, schema-valid requests refused, schema-violating ones accepted,
 * server errors, bodies that do not match their schema, methods that are not 405, and links
 * from each POST to the GETs that read what it made.
 *
 * APP_CONTRACT_SEED (default 1) and APP_CONTRACT_EXAMPLES (default 10 per operation) bound it
 * for `make test`; `make fuzz` runs it with more examples and a new seed. Its whole report is
 * in this program's log directory; a failure prints the end of it and how to replay it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "test/support/services.h"

#define CONTRACT_OUT_MAX (256 * 1024)

static ts_app app;
static char tester[512]; /* the schemathesis executable */

static int setup(void **state)
{
    /* Installs once per pinned version (about 10 s), then only prints the path. */
    if (ts_tool("sh test/tools/pyvenv.sh test/contract/requirements.txt schemathesis", tester,
                sizeof tester) != 0)
        return -1;
    return ts_app_group_start(state);
}

static int teardown(void **state)
{
    return ts_app_group_end(state);
}

static const char *env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

static void test_server_keeps_the_contract(void **state)
{
    (void)state;
    const ts_app *a = &app;
    const char *seed = env_or("APP_CONTRACT_SEED", "1");
    const char *examples = env_or("APP_CONTRACT_EXAMPLES", "10");
    const char *logs = env_or("APP_TEST_LOG_DIR", "/tmp");
    char root[512];
    assert_non_null(getcwd(root, sizeof root));
    char report[640];
    snprintf(report, sizeof report, "%s/schemathesis.txt", logs);
    /* A fresh working directory each run: schemathesis keeps a cache (.schemathesis) there,
     * and what an earlier run learned must not change this one. */
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "dir=$(mktemp -d) && cd \"$dir\" && "
             "SCHEMATHESIS_HOOKS=contract_hooks PYTHONPATH='%s/test/contract' NO_COLOR=1 "
             "'%s' --config-file '%s/test/contract/schemathesis.toml' run "
             "'%s/docs/openapi.yaml' --url http://127.0.0.1:%d --checks all --seed %s "
             "--max-examples %s > '%s' 2>&1; s=$?; cd / && rm -rf \"$dir\"; exit $s",
             root, tester, root, root, a->port, seed, examples, report);
    char *out = malloc(CONTRACT_OUT_MAX);
    assert_non_null(out);
    int status = ts_run(cmd, out, CONTRACT_OUT_MAX);
    free(out);
    char tail[16384];
    snprintf(cmd, sizeof cmd, "tail -c 12000 '%s'", report);
    ts_run(cmd, tail, sizeof tail);
    /* Every operation of the contract was tried, each phase ran, and nothing failed. */
    snprintf(cmd, sizeof cmd,
             "grep -q 'Tested: *18' '%s' && grep -q 'Stateful' '%s' && "
             "! grep -q 'unique failure' '%s'",
             report, report, report);
    char none[64];
    int complete = ts_run(cmd, none, sizeof none);
    if (status != 0 || complete != 0)
        fail_msg("schemathesis (seed %s, %s examples) found the server and docs/openapi.yaml "
                 "apart (status %d); the whole report is %s; its end:\n%s\n"
                 "Replay one case with: st replay <Test Case ID>, from a run of the same seed",
                 seed, examples, status, report, tail);
    print_message("schemathesis, seed %s, %s examples per operation:\n%s\n", seed, examples,
                  strstr(tail, "Test cases:") ? strstr(tail, "Test cases:") : tail);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_keeps_the_contract),
        cmocka_unit_test(ts_test_app_stops_cleanly),
    };
    ts_app_share(&app);
    return cmocka_run_group_tests_name("e2e contract", tests, setup, teardown);
}
