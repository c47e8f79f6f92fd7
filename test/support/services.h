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

/* The same for the harness's PostgreSQL (stop-postgres is a fast shutdown: sessions are
 * disconnected, the data is kept; start-postgres brings it back on the same port). */
int ts_pg_stop(void);
int ts_pg_start(void);
/* pg_ctl restart -m mode ("fast" or "immediate") of the tests' PostgreSQL. */
int ts_pg_restart(const char *mode);

/* Whether the read store holds key of projection in any generation (the key
 * "<redis.key_prefix><projection>@<generation>:<key>"), asked with redis-cli. */
bool ts_read_model_has(const char *projection, const char *key);

/* Runs one SQL statement with psql against $APP_POSTGRES_DSN and returns the integer it
 * answers (e.g. a count). Fails the test when psql fails or answers no number. */
long long ts_sql_int(const char *sql);

/* Runs one query against $APP_POSTGRES_DSN whose rows are (text, integer), e.g. a stream and
 * its count of events, and returns them as a map (test/support/str_map.h; ts_map_free it).
 * Fails the test when the query fails or a row is not that shape. */
struct ts_map *ts_sql_map(const char *sql);

/* dsn (a libpq connection string or URI, e.g. $APP_POSTGRES_DSN) with dbname, and user
 * unless NULL, replaced: the same server, another database or role. Written to out (size
 * bytes) as key='value' pairs. Fails the test when dsn does not parse or out is too small. */
void ts_dsn_with(const char *dsn, const char *dbname, const char *user, char *out, size_t size);

/* The brokers of the real Kafka broker test/run.sh started ($APP_TEST_KAFKA_BROKERS). When
 * there is none the test is skipped, saying why (test/run.sh fails a skip in CI). */
const char *ts_need_kafka(void);

/* Stops (what "stop-broker") or starts again ("start-broker") that broker, keeping its port
 * and data: sh deploy/local/kafka.sh WHAT $APP_TEST_KAFKA_RUN_DIR. Returns its exit status. */
int ts_kafka_ctl(const char *what);

/* True when the run is CI's (CI=true, 1 or yes), where nothing may be skipped. */
bool ts_in_ci(void);

/* Makes sure the command-line tool exists (looked up in PATH). When it is missing the test
 * is skipped, naming the Debian package to install, except in CI, where the test fails. */
void ts_require_tool(const char *tool, const char *debian_package);

typedef struct ts_app {
    pid_t pid;          /* 0 when not running */
    int port;           /* 127.0.0.1:<port> serves HTTP */
    int grace_ms;       /* http.shutdown_timeout_ms it runs with */
    char log_path[512]; /* the app's stdout and stderr */
} ts_app;

/* Starts the app (build/test/app --config config/app.yaml, or $APP_TEST_APP_BINARY) on a
 * free loopback port with APP_HTTP_LISTEN set, the environment inherited, and extra_env
 * ("K=V" sets or replaces, a bare "K" removes; NULL-terminated, or NULL) on top. Waits
 * until GET /health/live answers 200; after 20 s, or if the app exits, kills it and fails
 * the test showing the end of its log. Returns 0.
 * The log goes to $APP_TEST_LOG_DIR (test/run.sh gives each program its own, and scans
 * every log there for sanitizer reports), else $APP_TEST_RUN_DIR, else /tmp. */
int ts_app_start(ts_app *app, const char *const *extra_env);

/* ts_app_start again, after a stop, on the port the app had: for an app that other
 * processes call at its address. Fails the test when it still runs. */
int ts_app_restart(ts_app *app, const char *const *extra_env);

/* The start without the wait: forks the app binary with args after it (NULL: "--config
 * config/app.yaml", which serves; e.g. {"--config", "config/app.yaml", "replay", NULL}) and
 * the environment and log of ts_app_start, and returns at once. At most 14 args. */
void ts_app_spawn(ts_app *app, const char *const *args, const char *const *extra_env);

/* Waits for an app spawned with a command that ends by itself (e.g. "migrate") to exit,
 * and returns its status as ts_app_stop does. Past timeout_ms it is killed and the test
 * fails, showing the end of its log. */
int ts_app_wait(ts_app *app, int timeout_ms);

/* Sends sig and waits for the app to exit (SIGKILL after 20 s, failing the test). Returns
 * the exit code, or 128 + signal number when it died of a signal. Use it for a stop that
 * is meant to be abrupt (SIGKILL); a clean stop is ts_app_stop_clean's. */
int ts_app_stop(ts_app *app, int sig);

/* The clean shutdown every started app must end with: SIGTERM, then exit status 0 within
 * the app's grace (app->grace_ms), and no sanitizer report (a leak at exit included) in its
 * log. Fails the test, showing the end of the log, otherwise. Returns 0. */
int ts_app_stop_clean(ts_app *app);

/* Stops the app if it still runs, never failing: SIGTERM, then SIGKILL past its grace. The
 * clean-up of a group teardown (the stop itself is checked by a test, with
 * ts_app_stop_clean, because cmocka ignores a failing group teardown). What a sanitizer
 * reports at exit still lands in the app's log, which test/run.sh scans. */
void ts_app_end(ts_app *app);

/* One app shared by all the tests of a program. main names it with ts_app_share(&app) and
 * passes ts_app_group_start and ts_app_group_end as the group setup and teardown; the last
 * test is ts_test_app_stops_cleanly, so that the stop is checked in a test (the teardown
 * only ends what a failed test left running). */
void ts_app_share(ts_app *app);
int ts_app_group_start(void **state);         /* ts_app_start with no extra environment */
int ts_app_group_end(void **state);           /* ts_app_end; never fails */
void ts_test_app_stops_cleanly(void **state); /* ts_app_stop_clean */

/* True when the file holds a sanitizer report (AddressSanitizer, LeakSanitizer or
 * UndefinedBehaviorSanitizer); its first such line goes to line (size bytes). */
bool ts_log_has_sanitizer_report(const char *path, char *line, size_t size);

/* Writes the last max_bytes of the app's log to stderr (for failure messages). */
void ts_app_dump_log(const ts_app *app, size_t max_bytes);

/* The app binary under test: $APP_TEST_APP_BINARY, else build/test/app. */
const char *ts_app_binary(void);

/* Runs cmd with sh, its stdout and stderr together into out (size bytes, NUL-terminated,
 * cut when longer). Returns the exit status (128 + signal number when it died of one), or
 * -1 when it could not be started. Safe from any thread: it never fails the test itself. */
int ts_run(const char *cmd, char *out, size_t size);

/* A test tool: runs cmd, an installer or builder that prints the tool's path as its last line
 * (test/tools/pyvenv.sh, gotool.sh, otelcol/build.sh), and puts that path into path (size
 * bytes). Returns 0 when the tool is there and executable; otherwise prints why, with the
 * installer's output, and returns -1. */
int ts_tool(const char *cmd, char *path, size_t size);

/* A temporary copy of file (a repository path) with the first occurrence of from replaced by
 * to, named with file's extension; its path into path (size bytes; the caller unlinks it).
 * Fails the test when file does not hold from (the test needs updating) or cannot be copied. */
void ts_file_changed(const char *file, const char *from, const char *to, char *path, size_t size);

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
