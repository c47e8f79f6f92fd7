/* Process and environment helpers for integration and end-to-end tests. Everything the
 * child needs is built before fork, so forking from a test with threads stays safe. */
#include "test/support/services.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <postgresql/libpq-fe.h>

#include "test/support/http_client.h"
#include "test/support/str_map.h"

#define TS_SERVICES_SCRIPT  "deploy/local/services.sh"
#define TS_START_TIMEOUT_MS 20000
#define TS_STOP_TIMEOUT_MS  20000
/* http.shutdown_timeout_ms when neither the environment nor config/app.yaml sets it. */
#define TS_DEFAULT_GRACE_MS 10000

extern char **environ;

const char *ts_env(const char *name)
{
    const char *v = getenv(name);
    if (!v || !v[0]) {
        fail_msg("environment variable %s is not set: run this test through test/run.sh "
                 "(make test), which starts PostgreSQL and Redis and sets it",
                 name);
        return NULL;
    }
    return v;
}

long long ts_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

int ts_wait_until(bool (*pred)(void *), void *arg, int timeout_ms)
{
    long long deadline = ts_now_ms() + timeout_ms;
    for (;;) {
        if (pred(arg))
            return 0;
        if (ts_now_ms() >= deadline)
            return -1;
        sleep_ms(20);
    }
}

/* The first port of the kernel's ephemeral range (outgoing connections' local ports). */
static int ephemeral_low(void)
{
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    int low = 32768;
    if (f) {
        if (fscanf(f, "%d", &low) != 1)
            low = 32768;
        fclose(f);
    }
    return low;
}

/* True when port can be bound on loopback now. */
static bool port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail_msg("socket: %s", strerror(errno));
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = htons((uint16_t)port);
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

/* A free loopback port below the ephemeral range: an app a test kills and restarts on the
 * same port must find it free again, and an outgoing connection's local port, drawn from
 * that range, could be holding it by then. */
int ts_free_port(void)
{
    static unsigned seed;
    if (!seed)
        seed = (unsigned)getpid() ^ (unsigned)time(NULL);
    int low = ephemeral_low(), top = low > 21000 ? low - 1 : 60000;
    for (int i = 0; i < 1000; i++) {
        int port = 20000 + (int)(rand_r(&seed) % (unsigned)(top - 20000 + 1));
        if (port_free(port))
            return port;
    }
    fail_msg("cannot find a free port in 20000-%d", top);
    return -1;
}

/* Runs argv (argv[0] looked up in PATH) and returns its exit status, -1 if it could not
 * run or died of a signal. */
static int run_command(char *const argv[])
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        execvp(argv[0], argv);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* sh deploy/local/services.sh COMMAND $APP_TEST_RUN_DIR [$port_env]: one service of the
 * harness stopped or started. */
static int services_script(const char *command, const char *port_env)
{
    char *argv[] = {"sh",
                    TS_SERVICES_SCRIPT,
                    (char *)(uintptr_t)command,
                    (char *)(uintptr_t)ts_env("APP_TEST_RUN_DIR"),
                    port_env ? (char *)(uintptr_t)ts_env(port_env) : NULL,
                    NULL};
    return run_command(argv);
}

int ts_redis_stop(void)
{
    return services_script("stop-redis", NULL);
}

int ts_redis_start(void)
{
    return services_script("start-redis", "APP_TEST_REDIS_PORT");
}

int ts_pg_stop(void)
{
    return services_script("stop-postgres", NULL);
}

int ts_pg_start(void)
{
    return services_script("start-postgres", "APP_TEST_PG_PORT");
}

bool ts_read_model_has(const char *projection, const char *key)
{
    const char *prefix = getenv("APP_REDIS_KEY_PREFIX");
    char cmd[768], out[128];
    snprintf(cmd, sizeof cmd,
             "redis-cli -u '%s' --raw EVAL \"return #redis.call('KEYS', ARGV[1])\" 0 "
             "'%s%s@*:%s'",
             ts_env("APP_REDIS_URL"), prefix ? prefix : "app:", projection, key);
    return ts_run(cmd, out, sizeof out) == 0 && atoi(out) > 0;
}

int ts_pg_restart(const char *mode)
{
    char *argv[] = {"sh",
                    TS_SERVICES_SCRIPT,
                    "restart-postgres",
                    (char *)(uintptr_t)ts_env("APP_TEST_RUN_DIR"),
                    (char *)(uintptr_t)mode,
                    NULL};
    return run_command(argv);
}

ts_map *ts_sql_map(const char *sql)
{
    PGconn *conn = PQconnectdb(ts_env("APP_POSTGRES_DSN"));
    if (PQstatus(conn) != CONNECTION_OK) {
        char why[256];
        snprintf(why, sizeof why, "%s", PQerrorMessage(conn));
        PQfinish(conn);
        fail_msg("cannot connect to PostgreSQL: %s", why);
    }
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQnfields(res) != 2) {
        char why[256];
        snprintf(why, sizeof why, "%s", PQerrorMessage(conn));
        PQclear(res);
        PQfinish(conn);
        fail_msg("%s: %s", sql, why[0] ? why : "not two columns");
    }
    ts_map *m = ts_map_new();
    for (int i = 0; i < PQntuples(res); i++) {
        char *end = NULL;
        long long n = strtoll(PQgetvalue(res, i, 1), &end, 10);
        if (PQgetisnull(res, i, 0) || !end || *end) {
            PQclear(res);
            PQfinish(conn);
            ts_map_free(m);
            fail_msg("%s: row %d is not (text, integer)", sql, i);
        }
        ts_map_put(m, PQgetvalue(res, i, 0), n);
    }
    PQclear(res);
    PQfinish(conn);
    return m;
}

long long ts_sql_int(const char *sql)
{
    int out[2];
    if (pipe2(out, O_CLOEXEC) < 0)
        fail_msg("pipe: %s", strerror(errno));
    char *const argv[] = {"psql",
                          (char *)(uintptr_t)ts_env("APP_POSTGRES_DSN"),
                          "-qtAX",
                          "-v",
                          "ON_ERROR_STOP=1",
                          "-c",
                          (char *)(uintptr_t)sql,
                          NULL};
    pid_t pid = fork();
    if (pid < 0)
        fail_msg("fork: %s", strerror(errno));
    if (pid == 0) {
        if (dup2(out[1], STDOUT_FILENO) < 0 || dup2(out[1], STDERR_FILENO) < 0)
            _exit(126);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(out[1]);
    char text[1024];
    size_t got = 0;
    ssize_t n;
    while (got < sizeof text - 1) {
        n = read(out[0], text + got, sizeof text - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(out[0]);
    text[got] = '\0';
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    char *end = NULL;
    long long v = strtoll(text, &end, 10);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || end == text)
        fail_msg("psql %s: %s", sql, text);
    return v;
}

/* Appends "key='value'" to out at *n, escaping as libpq wants; *n counts what did not fit. */
static void dsn_put(char *out, size_t size, size_t *n, const char *key, const char *value)
{
    /* Past the end, snprintf only counts (NULL, 0): no pointer beyond out is formed. */
#define DSN_AT out + (*n < size ? *n : 0), *n < size ? size - *n : 0
    *n += (size_t)snprintf(DSN_AT, "%s%s='", *n ? " " : "", key);
    for (const char *p = value; *p; p++)
        *n += (size_t)snprintf(DSN_AT, "%s%c", *p == '\'' || *p == '\\' ? "\\" : "", *p);
    *n += (size_t)snprintf(DSN_AT, "'");
#undef DSN_AT
}

void ts_dsn_with(const char *dsn, const char *dbname, const char *user, char *out, size_t size)
{
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn, &msg);
    if (!opts) {
        char why[256];
        snprintf(why, sizeof why, "%s", msg ? msg : "out of memory");
        PQfreemem(msg);
        fail_msg("cannot parse the connection string %s: %s", dsn, why);
    }
    size_t n = 0;
    bool user_done = false;
    out[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        const char *v = o->val;
        if (strcmp(o->keyword, "dbname") == 0) {
            continue; /* written last, below */
        } else if (user && strcmp(o->keyword, "user") == 0) {
            v = user;
            user_done = true;
        }
        if (v)
            dsn_put(out, size, &n, o->keyword, v);
    }
    PQconninfoFree(opts);
    if (user && !user_done)
        dsn_put(out, size, &n, "user", user);
    dsn_put(out, size, &n, "dbname", dbname);
    if (n >= size)
        fail_msg("the connection string for database %s is too long", dbname);
}

const char *ts_need_kafka(void)
{
    const char *brokers = getenv("APP_TEST_KAFKA_BROKERS");
    if (!brokers || !*brokers) {
        print_message("skipped: APP_TEST_KAFKA_BROKERS is not set (test/run.sh sets it when it "
                      "can start a Kafka broker)\n");
        skip();
    }
    return brokers;
}

int ts_kafka_ctl(const char *what)
{
    char cmd[1024], out[4096];
    snprintf(cmd, sizeof cmd, "sh deploy/local/kafka.sh %s '%s'", what,
             ts_env("APP_TEST_KAFKA_RUN_DIR"));
    int rc = ts_run(cmd, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "%s: %s\n", cmd, out);
    return rc;
}

bool ts_in_ci(void)
{
    const char *ci = getenv("CI");
    return ci && (strcmp(ci, "true") == 0 || strcmp(ci, "1") == 0 || strcmp(ci, "yes") == 0);
}

void ts_require_tool(const char *tool, const char *debian_package)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "command -v '%s' >/dev/null 2>&1", tool);
    if (system(cmd) == 0)
        return;
    if (ts_in_ci())
        fail_msg("%s is missing, and CI skips nothing: install the Debian package %s "
                 "(deploy/local/deps.sh test does)",
                 tool, debian_package);
    print_message("skipped: %s is missing; install it with: apt-get install -y %s\n", tool,
                  debian_package);
    skip();
}

void ts_app_dump_log(const ts_app *app, size_t max_bytes)
{
    int fd = open(app->log_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "(no app log at %s)\n", app->log_path);
        return;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && (size_t)st.st_size > max_bytes)
        lseek(fd, st.st_size - (off_t)max_bytes, SEEK_SET);
    fprintf(stderr, "---- end of %s ----\n", app->log_path);
    fflush(stderr);
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        if (write(STDERR_FILENO, buf, (size_t)n) < 0)
            break;
    fprintf(stderr, "\n---- (log ends) ----\n");
    close(fd);
}

static size_t key_len(const char *kv)
{
    const char *eq = strchr(kv, '=');
    return eq ? (size_t)(eq - kv) : strlen(kv);
}

/* True when extra (or the fixed APP_HTTP_LISTEN) overrides the variable in kv. */
static bool overridden(const char *kv, const char *const *extra)
{
    size_t n = key_len(kv);
    if (n == strlen("APP_HTTP_LISTEN") && strncmp(kv, "APP_HTTP_LISTEN", n) == 0)
        return true;
    for (size_t i = 0; extra && extra[i]; i++)
        if (key_len(extra[i]) == n && strncmp(extra[i], kv, n) == 0)
            return true;
    return false;
}

/* environ, less what is overridden, plus listen and the "K=V" entries of extra. The
 * array is malloc'd; its strings are borrowed except *listen_out. */
static char **build_env(const char *const *extra, int port, char **listen_out)
{
    size_t n_env = 0, n_extra = 0;
    while (environ[n_env])
        n_env++;
    while (extra && extra[n_extra])
        n_extra++;
    char **env = calloc(n_env + n_extra + 2, sizeof *env);
    char *listen = NULL;
    if (!env || asprintf(&listen, "APP_HTTP_LISTEN=127.0.0.1:%d", port) < 0) {
        free(env);
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++)
        if (!overridden(environ[i], extra))
            env[k++] = environ[i];
    env[k++] = listen;
    for (size_t i = 0; i < n_extra; i++)
        if (strchr(extra[i], '='))
            env[k++] = (char *)(uintptr_t)extra[i];
    env[k] = NULL;
    *listen_out = listen;
    return env;
}

static bool app_exited(ts_app *app, int *status)
{
    pid_t r = waitpid(app->pid, status, WNOHANG);
    return r == app->pid || (r < 0 && errno == ECHILD);
}

static int decode_status(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

const char *ts_app_binary(void)
{
    const char *binary = getenv("APP_TEST_APP_BINARY");
    return binary && binary[0] ? binary : "build/test/app";
}

void ts_file_changed(const char *file, const char *from, const char *to, char *path, size_t size)
{
    static char text[1 << 20];
    FILE *f = fopen(file, "r");
    if (!f)
        fail_msg("cannot open %s", file);
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    char *at = strstr(text, from);
    if (!at)
        fail_msg("%s no longer holds \"%s\"; update this test", file, from);
    const char *ext = strrchr(file, '.') ? strrchr(file, '.') : "";
    snprintf(path, size, "/tmp/app-changed-XXXXXX%s", ext);
    int fd = mkstemps(path, (int)strlen(ext));
    if (fd < 0)
        fail_msg("cannot make a temporary copy of %s", file);
    f = fdopen(fd, "w");
    if (!f || fwrite(text, 1, (size_t)(at - text), f) != (size_t)(at - text) || fputs(to, f) < 0 ||
        fputs(at + strlen(from), f) < 0 || fclose(f) != 0)
        fail_msg("cannot write %s", path);
}

int ts_tool(const char *cmd, char *path, size_t size)
{
    static char out[16384];
    int status = ts_run(cmd, out, sizeof out);
    size_t n = strlen(out);
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
        out[--n] = '\0';
    const char *line = strrchr(out, '\n') ? strrchr(out, '\n') + 1 : out;
    if (status != 0 || strlen(line) >= size || access(line, X_OK) != 0) {
        fprintf(stderr, "%s gave no tool (status %d):\n%s\n", cmd, status, out);
        return -1;
    }
    memcpy(path, line, strlen(line) + 1);
    return 0;
}

int ts_run(const char *cmd, char *out, size_t size)
{
    char line[4096];
    out[0] = '\0';
    if (snprintf(line, sizeof line, "%s 2>&1", cmd) >= (int)sizeof line)
        return -1;
    FILE *p = popen(line, "r");
    if (!p)
        return -1;
    size_t got = fread(out, 1, size - 1, p);
    out[got] = '\0';
    char rest[512];
    while (fread(rest, 1, sizeof rest, p) > 0) /* the whole output, so it never blocks */
        ;
    return decode_status(pclose(p));
}

/* The value of "K=V" for key K in the list, or NULL. */
static const char *env_lookup(const char *const *list, const char *key)
{
    size_t n = strlen(key);
    for (size_t i = 0; list && list[i]; i++)
        if (strncmp(list[i], key, n) == 0 && list[i][n] == '=')
            return list[i] + n + 1;
    return NULL;
}

/* http.shutdown_timeout_ms as the app will see it: the environment (extra_env first), else
 * config/app.yaml, else the built-in default. */
static int app_grace_ms(const char *const *extra_env)
{
    const char *key = "APP_HTTP_SHUTDOWN_TIMEOUT_MS";
    const char *v = env_lookup(extra_env, key);
    if (!v)
        v = env_lookup((const char *const *)environ, key);
    if (v)
        return atoi(v);
    int grace = TS_DEFAULT_GRACE_MS;
    FILE *f = fopen("config/app.yaml", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        const char *at = strstr(line, "shutdown_timeout_ms:");
        const char *hash = strchr(line, '#');
        if (at && (!hash || hash > at)) { /* not in a comment */
            grace = atoi(at + strlen("shutdown_timeout_ms:"));
            break;
        }
    }
    if (f)
        fclose(f);
    return grace;
}

/* ts_app_spawn on port (0: a free one). */
static void app_spawn_on(ts_app *app, int port, const char *const *args,
                         const char *const *extra_env)
{
    static int started; /* each start logs to a file of its own, also on the same port */
    memset(app, 0, sizeof *app);
    const char *binary = ts_app_binary();
    if (access(binary, X_OK) != 0)
        fail_msg("app binary %s is not executable: build it first (make build/test/app)", binary);
    app->port = port > 0 ? port : ts_free_port();
    app->grace_ms = app_grace_ms(extra_env);
    const char *dir = getenv("APP_TEST_LOG_DIR");
    if (!dir || !dir[0])
        dir = getenv("APP_TEST_RUN_DIR");
    if (!dir || !dir[0])
        dir = "/tmp";
    snprintf(app->log_path, sizeof app->log_path, "%s/app-%d-%d-%d.log", dir, (int)getpid(),
             app->port, ++started);

    char *listen = NULL;
    char **env = build_env(extra_env, app->port, &listen);
    if (!env)
        fail_msg("out of memory");
    static const char *const serve[] = {"--config", "config/app.yaml", NULL};
    if (!args)
        args = serve;
    const char *argv[16] = {binary};
    size_t argc = 1;
    for (size_t i = 0; args[i] && argc + 1 < sizeof argv / sizeof *argv; i++)
        argv[argc++] = args[i];
    argv[argc] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        free(listen);
        free(env);
        fail_msg("fork: %s", strerror(e));
    }
    if (pid == 0) {
        /* A crashed test must not leave the app running. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int log = open(app->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (log < 0 || null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(log, STDOUT_FILENO) < 0 ||
            dup2(log, STDERR_FILENO) < 0)
            _exit(126);
        execve(binary, (char *const *)(uintptr_t)argv, env);
        static const char msg[] = "ts_app_spawn: execve failed\n";
        if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0)
            _exit(127);
        _exit(127);
    }
    free(listen);
    free(env);
    app->pid = pid;
}

void ts_app_spawn(ts_app *app, const char *const *args, const char *const *extra_env)
{
    app_spawn_on(app, 0, args, extra_env);
}

static int app_start_on(ts_app *app, int port, const char *const *extra_env)
{
    app_spawn_on(app, port, NULL, extra_env);
    long long deadline = ts_now_ms() + TS_START_TIMEOUT_MS;
    for (;;) {
        int status = 0;
        if (app_exited(app, &status)) {
            app->pid = 0;
            ts_app_dump_log(app, 4000);
            fail_msg("app exited during start-up with status %d (log: %s)", decode_status(status),
                     app->log_path);
        }
        tc_response r;
        int rc = tc_http("127.0.0.1", app->port, "GET", "/health/live", NULL, NULL, 0, &r);
        int http_status = r.status;
        tc_response_free(&r);
        if (rc == 0 && http_status == 200)
            return 0;
        if (ts_now_ms() >= deadline) {
            kill(app->pid, SIGKILL);
            waitpid(app->pid, &status, 0);
            app->pid = 0;
            ts_app_dump_log(app, 4000);
            fail_msg("app did not answer 200 on GET /health/live within %d ms (log: %s)",
                     TS_START_TIMEOUT_MS, app->log_path);
        }
        sleep_ms(50);
    }
}

int ts_app_start(ts_app *app, const char *const *extra_env)
{
    return app_start_on(app, 0, extra_env);
}

int ts_app_restart(ts_app *app, const char *const *extra_env)
{
    if (app->pid != 0)
        fail_msg("ts_app_restart: the app on port %d still runs", app->port);
    if (app->port <= 0)
        fail_msg("ts_app_restart: the app never had a port");
    return app_start_on(app, app->port, extra_env);
}

/* Sends sig to the running app and reaps it, SIGKILLing it past timeout_ms. Fills *status
 * (waitpid's) and *took_ms; false when it had to be killed. app->pid is 0 afterwards. */
static bool signal_and_reap(ts_app *app, int sig, int timeout_ms, int *status, long long *took_ms)
{
    kill(app->pid, sig);
    long long start = ts_now_ms();
    bool in_time = true;
    while (!app_exited(app, status)) {
        if (ts_now_ms() - start > timeout_ms) {
            kill(app->pid, SIGKILL);
            while (waitpid(app->pid, status, 0) < 0 && errno == EINTR)
                ;
            in_time = false;
            break;
        }
        sleep_ms(10);
    }
    *took_ms = ts_now_ms() - start;
    app->pid = 0;
    return in_time;
}

int ts_app_stop(ts_app *app, int sig)
{
    if (app->pid <= 0)
        return -1;
    int status = 0;
    long long took;
    if (!signal_and_reap(app, sig, TS_STOP_TIMEOUT_MS, &status, &took)) {
        ts_app_dump_log(app, 4000);
        fail_msg("app did not exit within %d ms of signal %d", TS_STOP_TIMEOUT_MS, sig);
    }
    return decode_status(status);
}

int ts_app_wait(ts_app *app, int timeout_ms)
{
    if (app->pid <= 0)
        return -1;
    int status = 0;
    long long took;
    /* Signal 0 sends nothing: this only reaps, and kills only past the timeout. */
    if (!signal_and_reap(app, 0, timeout_ms, &status, &took)) {
        ts_app_dump_log(app, 4000);
        fail_msg("app did not exit by itself within %d ms", timeout_ms);
    }
    return decode_status(status);
}

void ts_app_end(ts_app *app)
{
    int status;
    long long took;
    if (app->pid > 0)
        signal_and_reap(app, SIGTERM, app->grace_ms, &status, &took);
}

static ts_app *shared_app;

void ts_app_share(ts_app *app)
{
    shared_app = app;
}

int ts_app_group_start(void **state)
{
    (void)state;
    return ts_app_start(shared_app, NULL);
}

int ts_app_group_end(void **state)
{
    (void)state;
    ts_app_end(shared_app);
    return 0;
}

void ts_test_app_stops_cleanly(void **state)
{
    (void)state;
    ts_app_stop_clean(shared_app);
}

/* What a sanitizer writes first: "==PID==ERROR: AddressSanitizer: ...", "==PID==ERROR:
 * LeakSanitizer: detected memory leaks", "file.c:L:C: runtime error: ..." (UBSan). */
static const char *const sanitizer_marks[] = {
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "WARNING: AddressSanitizer",
    ": runtime error: ",
    "SUMMARY: UndefinedBehaviorSanitizer",
};

bool ts_log_has_sanitizer_report(const char *path, char *line, size_t size)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char buf[4096];
    bool found = false;
    while (!found && fgets(buf, sizeof buf, f))
        for (size_t i = 0; i < sizeof sanitizer_marks / sizeof *sanitizer_marks; i++)
            if (strstr(buf, sanitizer_marks[i])) {
                buf[strcspn(buf, "\n")] = '\0';
                snprintf(line, size, "%s", buf);
                found = true;
                break;
            }
    fclose(f);
    return found;
}

int ts_app_stop_clean(ts_app *app)
{
    if (app->pid <= 0)
        fail_msg("the app is not running, so it cannot stop cleanly (log: %s)", app->log_path);
    int status = 0;
    long long took;
    if (!signal_and_reap(app, SIGTERM, app->grace_ms, &status, &took)) {
        ts_app_dump_log(app, 4000);
        fail_msg("the app did not stop within its grace of %d ms after SIGTERM (log: %s)",
                 app->grace_ms, app->log_path);
    }
    int code = decode_status(status);
    char report[512];
    if (ts_log_has_sanitizer_report(app->log_path, report, sizeof report)) {
        ts_app_dump_log(app, 8000);
        fail_msg("the app's log has a sanitizer report (exit status %d): %s (log: %s)", code,
                 report, app->log_path);
    }
    if (code != 0) {
        ts_app_dump_log(app, 4000);
        fail_msg("the app exited with status %d after SIGTERM, not 0 (log: %s)", code,
                 app->log_path);
    }
    print_message("the app stopped cleanly in %lld ms (grace %d ms)\n", took, app->grace_ms);
    return 0;
}
