/* Test helpers for integration and end-to-end tests: environment, the private Redis that
 * test/run.sh started, and the application process under test. Use inside cmocka tests:
 * failures call fail_msg. */
#ifndef TEST_SUPPORT_SERVICES_H
#define TEST_SUPPORT_SERVICES_H

#include <stdbool.h>
#include <sys/types.h>

/* The value of an environment variable; fails the test, naming the variable and saying
 * to run through test/run.sh, when it is unset or empty. */
const char *ts_env(const char *name);

/* Stop / start the harness's Redis (sh deploy/local/services.sh stop-redis|start-redis,
 * from the repository root). Return the script's exit status (0 on success). */
int ts_redis_stop(void);
int ts_redis_start(void);

typedef struct ts_app {
    pid_t pid;          /* 0 when not running */
    int port;           /* 127.0.0.1:<port> serves HTTP */
    char log_path[512]; /* the app's stdout and stderr */
} ts_app;

/* Starts the app (build/test/app --config config/app.yaml, or $APP_TEST_APP_BINARY) on a
 * free loopback port with APP_HTTP_LISTEN set, the environment inherited, and extra_env
 * ("K=V" sets or replaces, a bare "K" removes; NULL-terminated, or NULL) on top. Waits
 * until GET /health/live answers 200; after 20 s, or if the app exits, kills it and fails
 * the test showing the end of its log. Returns 0. */
int ts_app_start(ts_app *app, const char *const *extra_env);

/* Sends sig and waits for the app to exit (SIGKILL after 20 s, failing the test). Returns
 * the exit code, or 128 + signal number when it died of a signal. */
int ts_app_stop(ts_app *app, int sig);

/* Writes the last max_bytes of the app's log to stderr (for failure messages). */
void ts_app_dump_log(const ts_app *app, size_t max_bytes);

/* The app binary under test: $APP_TEST_APP_BINARY, else build/test/app. */
const char *ts_app_binary(void);

/* Runs cmd with sh, its stdout and stderr together into out (size bytes, NUL-terminated,
 * cut when longer). Returns the exit status (128 + signal number when it died of one), or
 * -1 when it could not be started. Safe from any thread: it never fails the test itself. */
int ts_run(const char *cmd, char *out, size_t size);

/* A loopback TCP port that was free a moment ago. */
int ts_free_port(void);

/* The longest a test waits for something that is bound to happen (a thread to start, a
 * backend to exit, a relay to catch up): a guard against hangs, generous enough for a loaded
 * machine. Tests order events by waiting for them, so on a working system this never decides
 * the verdict; it only turns a hang into a failure. */
#define TS_HANG_GUARD_MS 60000

/* Polls pred(arg) every 20 ms until it returns true (0) or timeout_ms passes (-1). */
int ts_wait_until(bool (*pred)(void *), void *arg, int timeout_ms);

/* Milliseconds on a monotonic clock, for measuring how long something took. */
long long ts_now_ms(void);

#endif
