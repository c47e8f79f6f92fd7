/* The Redis read store against real Redis: operations, key prefixes, concurrency through the
 * pool, and behaviour when Redis is down, hung, restarted or password-protected (those use a
 * redis-server this test starts itself); then the same for GETs an event loop answers
 * (rds_store_attach_loop, the port's get_async). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "adapters/redis/rds_store.h"
#include "adapters/redis/rds_url.h"
#include "test/support/services.h"

/* ---- helpers ------------------------------------------------------------------------- */

static char run_prefix[64];

/* clock NULL: the system clock. */
static rds_store *open_store_clocked(const char *url, const char *prefix, int pool, int timeout_ms,
                                     const app_clock *clock)
{
    rds_store_options opts = RDS_STORE_OPTIONS_INIT;
    opts.url = url;
    opts.key_prefix = prefix;
    opts.pool_size = pool;
    opts.timeout_ms = timeout_ms;
    opts.clock = clock;
    rds_store *s = NULL;
    app_error err = APP_ERROR_INIT;
    if (rds_store_new(&s, &opts, &err) != 0)
        fail_msg("rds_store_new(%s): %s: %s", url, err.message, err.detail);
    return s;
}

static rds_store *open_store(const char *url, const char *prefix, int pool, int timeout_ms)
{
    return open_store_clocked(url, prefix, pool, timeout_ms, NULL);
}

/* A clock that moves only when the test moves it: self points at its milliseconds. */
static int64_t test_clock_now(void *self)
{
    return *(const int64_t *)self;
}

static rds_store *open_harness_store(const char *suffix)
{
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s%s", run_prefix, suffix);
    return open_store(ts_env("APP_REDIS_URL"), prefix, 3, 2000);
}

/* A raw hiredis connection for checking what the adapter really wrote. */
static redisContext *raw_connect(const char *url)
{
    rds_url u;
    app_error err = APP_ERROR_INIT;
    if (rds_url_parse(url, &u, &err) != 0)
        fail_msg("bad url %s: %s", url, err.message);
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout(u.host, u.port, tv);
    if (!c || c->err)
        fail_msg("raw connect to %s failed: %s", url, c ? c->errstr : "oom");
    redisSetTimeout(c, tv);
    if (u.password[0]) {
        redisReply *r = u.user[0] ? redisCommand(c, "AUTH %s %s", u.user, u.password)
                                  : redisCommand(c, "AUTH %s", u.password);
        freeReplyObject(r);
    }
    if (u.db != 0)
        freeReplyObject(redisCommand(c, "SELECT %d", u.db));
    return c;
}

/* The reply to a raw command as a string ("(nil)", "(int) N", "(error) ..."). */
static void raw_command(redisContext *c, char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (!r)
        fail_msg("raw command failed: %s", c->errstr);
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        snprintf(out, cap, "%s", r->str);
        break;
    case REDIS_REPLY_ERROR:
        snprintf(out, cap, "(error) %s", r->str);
        break;
    case REDIS_REPLY_INTEGER:
        snprintf(out, cap, "(int) %lld", r->integer);
        break;
    case REDIS_REPLY_NIL:
        snprintf(out, cap, "(nil)");
        break;
    default:
        snprintf(out, cap, "(type %d)", r->type);
    }
    freeReplyObject(r);
}

static void expect_ok(int rc, const app_error *err, const char *what)
{
    if (rc != 0)
        fail_msg("%s: rc %d: %s: %s", what, rc, err->message, err->detail);
}

/* ---- operations against the harness's Redis ------------------------------------------ */

static void test_set_get_del(void **state)
{
    (void)state;
    rds_store *s = open_harness_store("ops:");
    rs_store rs = rds_store_port(s);
    app_error err = APP_ERROR_INIT;
    char *missing = (char *)"sentinel";
    char *v = NULL;

    expect_ok(rs.ops->get(rs.self, "user:1", &missing, &err), &err, "get missing");
    assert_null(missing);
    expect_ok(rs.ops->set(rs.self, "user:1", "{\"name\":\"Zoë\"}", &err), &err, "set");
    expect_ok(rs.ops->get(rs.self, "user:1", &v, &err), &err, "get");
    assert_string_equal(v, "{\"name\":\"Zoë\"}");
    free(v);
    expect_ok(rs.ops->set(rs.self, "user:1", "", &err), &err, "set empty");
    expect_ok(rs.ops->get(rs.self, "user:1", &v, &err), &err, "get empty");
    assert_string_equal(v, "");
    free(v);
    expect_ok(rs.ops->set(rs.self, "key with spaces\r\n", "v a l", &err), &err, "set odd key");
    expect_ok(rs.ops->get(rs.self, "key with spaces\r\n", &v, &err), &err, "get odd key");
    assert_string_equal(v, "v a l");
    free(v);

    expect_ok(rs.ops->del(rs.self, "user:1", &err), &err, "del");
    expect_ok(rs.ops->del(rs.self, "user:1", &err), &err, "del missing");
    expect_ok(rs.ops->del(rs.self, "key with spaces\r\n", &err), &err, "del odd key");
    expect_ok(rs.ops->get(rs.self, "user:1", &v, &err), &err, "get deleted");
    assert_null(v);
    expect_ok(rs.ops->ping(rs.self, &err), &err, "ping");
    rds_store_free(s);
}

/* Many keys in few round trips, across more than one MGET (512 keys each), under the
 * store's prefix: each value as stored, NULL for each missing key. */
static void test_get_many(void **state)
{
    (void)state;
    rds_store *s = open_harness_store("many:");
    rs_store rs = rds_store_port(s);
    app_error err = APP_ERROR_INIT;
    enum { N = 1100 };
    char *keys[N], *values[N];
    for (int i = 0; i < N; i++) {
        char key[32], value[32];
        snprintf(key, sizeof key, "k:%d", i);
        keys[i] = strdup(key);
        assert_non_null(keys[i]);
        snprintf(value, sizeof value, i % 7 == 0 ? "" : "v%d", i);
        if (i % 3 != 0)
            expect_ok(rs.ops->set(rs.self, key, value, &err), &err, "set");
    }
    expect_ok(rs.ops->get_many(rs.self, (const char *const *)keys, N, values, &err), &err,
              "get_many");
    for (int i = 0; i < N; i++) {
        char want[32];
        snprintf(want, sizeof want, i % 7 == 0 ? "" : "v%d", i);
        if (i % 3 == 0)
            assert_null(values[i]);
        else
            assert_string_equal(values[i], want);
        free(values[i]);
    }
    for (int i = 0; i < N; i++) {
        if (i % 3 != 0)
            expect_ok(rs.ops->del(rs.self, keys[i], &err), &err, "del");
        free(keys[i]);
    }
    rds_store_free(s);
}

static void test_prefix_isolation(void **state)
{
    (void)state;
    rds_store *a = open_harness_store("a:");
    rds_store *b = open_harness_store("b:");
    rs_store ra = rds_store_port(a), rb = rds_store_port(b);
    app_error err = APP_ERROR_INIT;
    expect_ok(ra.ops->set(ra.self, "k", "from a", &err), &err, "set a");
    expect_ok(rb.ops->set(rb.self, "k", "from b", &err), &err, "set b");
    char *v;
    expect_ok(ra.ops->get(ra.self, "k", &v, &err), &err, "get a");
    assert_string_equal(v, "from a");
    free(v);
    expect_ok(rb.ops->get(rb.self, "k", &v, &err), &err, "get b");
    assert_string_equal(v, "from b");
    free(v);

    redisContext *c = raw_connect(ts_env("APP_REDIS_URL"));
    char key[160], got[256];
    snprintf(key, sizeof key, "%sa:k", run_prefix);
    raw_command(c, got, sizeof got, "GET %s", key);
    assert_string_equal(got, "from a");
    raw_command(c, got, sizeof got, "GET k");
    assert_string_equal(got, "(nil)");

    expect_ok(ra.ops->del(ra.self, "k", &err), &err, "del a");
    expect_ok(rb.ops->get(rb.self, "k", &v, &err), &err, "get b after del a");
    assert_string_equal(v, "from b");
    free(v);
    expect_ok(rb.ops->del(rb.self, "k", &err), &err, "del b");
    redisFree(c);
    rds_store_free(a);
    rds_store_free(b);
}

static void test_sorted_set(void **state)
{
    (void)state;
    rds_store *s = open_harness_store("z:");
    rs_store rs = rds_store_port(s);
    app_error err = APP_ERROR_INIT;
    char **items = (char **)&err;
    size_t n = 99;

    expect_ok(rs.ops->zrevrange(rs.self, "orders", 0, SIZE_MAX, &items, &n, &err), &err,
              "zrevrange empty");
    assert_int_equal(n, 0);
    assert_null(items);

    expect_ok(rs.ops->zadd(rs.self, "orders", 1.5, "o1", &err), &err, "zadd o1");
    expect_ok(rs.ops->zadd(rs.self, "orders", 3, "o3", &err), &err, "zadd o3");
    expect_ok(rs.ops->zadd(rs.self, "orders", 2, "o2", &err), &err, "zadd o2");
    expect_ok(rs.ops->zadd(rs.self, "orders", 1e15 + 0.25, "big", &err), &err, "zadd big");
    expect_ok(rs.ops->zadd(rs.self, "orders", -INFINITY, "bottom", &err), &err, "zadd -inf");
    expect_ok(rs.ops->zadd(rs.self, "orders", 0.5, "big", &err), &err, "zadd replaces score");

    expect_ok(rs.ops->zrevrange(rs.self, "orders", 0, SIZE_MAX, &items, &n, &err), &err,
              "zrevrange all");
    assert_int_equal(n, 5);
    assert_string_equal(items[0], "o3");
    assert_string_equal(items[1], "o2");
    assert_string_equal(items[2], "o1");
    assert_string_equal(items[3], "big");
    assert_string_equal(items[4], "bottom");
    rs_strings_free(items, n);

    expect_ok(rs.ops->zrevrange(rs.self, "orders", 1, 2, &items, &n, &err), &err, "zrevrange page");
    assert_int_equal(n, 2);
    assert_string_equal(items[0], "o2");
    assert_string_equal(items[1], "o1");
    rs_strings_free(items, n);

    expect_ok(rs.ops->zrevrange(rs.self, "orders", 10, 20, &items, &n, &err), &err,
              "zrevrange past the end");
    assert_int_equal(n, 0);
    rs_strings_free(items, n);

    assert_int_equal(rs.ops->zadd(rs.self, "orders", NAN, "x", &err), APP_EINVAL);
    assert_int_equal(err.code, APP_EINVAL);

    /* A type clash is a bug, not an outage. */
    expect_ok(rs.ops->set(rs.self, "plain", "v", &err), &err, "set plain");
    assert_int_equal(rs.ops->zadd(rs.self, "plain", 1, "m", &err), APP_EINTERNAL);
    assert_non_null(strstr(err.detail, "WRONGTYPE"));
    /* The connection stays usable after an error reply. */
    expect_ok(rs.ops->ping(rs.self, &err), &err, "ping after error reply");

    expect_ok(rs.ops->del(rs.self, "orders", &err), &err, "del orders");
    expect_ok(rs.ops->del(rs.self, "plain", &err), &err, "del plain");
    rds_store_free(s);
    rs_strings_free(NULL, 0);
}

typedef struct worker_arg {
    rs_store rs;
    int id;
    int failures;
} worker_arg;

static void *worker_main(void *p)
{
    worker_arg *w = p;
    app_error err = APP_ERROR_INIT;
    char key[32], val[32];
    for (int i = 0; i < 150; i++) {
        snprintf(key, sizeof key, "w%d", w->id);
        snprintf(val, sizeof val, "%d-%d", w->id, i);
        char *got = NULL;
        if (w->rs.ops->set(w->rs.self, key, val, &err) != 0 ||
            w->rs.ops->get(w->rs.self, key, &got, &err) != 0 || !got || strcmp(got, val) != 0)
            w->failures++;
        free(got);
        if (w->rs.ops->zadd(w->rs.self, "board", i, key, &err) != 0)
            w->failures++;
    }
    w->rs.ops->del(w->rs.self, key, &err);
    return NULL;
}

static void test_pool_under_concurrency(void **state)
{
    (void)state;
    rds_store *s = open_harness_store("conc:");
    enum { N = 8 };
    pthread_t threads[N];
    worker_arg args[N];
    for (int i = 0; i < N; i++) {
        args[i] = (worker_arg){rds_store_port(s), i, 0};
        assert_int_equal(pthread_create(&threads[i], NULL, worker_main, &args[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(args[i].failures, 0);
    }
    rs_store rs = rds_store_port(s);
    app_error err = APP_ERROR_INIT;
    char **items;
    size_t n;
    expect_ok(rs.ops->zrevrange(rs.self, "board", 0, SIZE_MAX, &items, &n, &err), &err, "board");
    assert_int_equal(n, N);
    rs_strings_free(items, n);
    expect_ok(rs.ops->del(rs.self, "board", &err), &err, "del board");
    rds_store_free(s);
}

static void test_bad_url_is_config_error(void **state)
{
    (void)state;
    rds_store_options opts = RDS_STORE_OPTIONS_INIT;
    opts.url = "redis://localhost:70000";
    rds_store *s = (rds_store *)&opts;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(rds_store_new(&s, &opts, &err), APP_ECONFIG);
    assert_null(s);
    assert_non_null(strstr(err.message, "port"));
    rds_store_free(NULL);
}

/* ---- a private redis-server for outage tests ----------------------------------------- */

typedef struct own_redis {
    pid_t pid;
    int port;
    char url[128];
} own_redis;

static own_redis own;

static bool raw_ping_ok(void *arg)
{
    const own_redis *r = arg;
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    bool ok = false;
    if (c && !c->err) {
        redisReply *reply = redisCommand(c, "PING");
        /* NOAUTH also proves the server is up. */
        ok = reply != NULL;
        freeReplyObject(reply);
    }
    redisFree(c);
    return ok;
}

static void own_redis_start(own_redis *r, const char *password)
{
    char port[16];
    snprintf(port, sizeof port, "%d", r->port);
    const char *argv[16] = {"redis-server", "--port",      port, "--bind",
                            "127.0.0.1",    "--save",      "",   "--appendonly",
                            "no",           "--daemonize", "no"};
    int argc = 11;
    if (password) {
        argv[argc++] = "--requirepass";
        argv[argc++] = password;
    }
    argv[argc] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        fail_msg("fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, STDIN_FILENO);
            dup2(null, STDOUT_FILENO);
        }
        execvp(argv[0], (char *const *)(uintptr_t)argv);
        fprintf(stderr, "cannot run redis-server: %s\n", strerror(errno));
        _exit(127);
    }
    r->pid = pid;
    if (ts_wait_until(raw_ping_ok, r, TS_HANG_GUARD_MS) != 0)
        fail_msg("redis-server on port %d did not start (is redis-server installed?)", r->port);
}

static void own_redis_stop(own_redis *r)
{
    if (r->pid <= 0)
        return;
    kill(r->pid, SIGCONT);
    kill(r->pid, SIGKILL);
    waitpid(r->pid, NULL, 0);
    r->pid = 0;
}

static int own_setup(void **state)
{
    (void)state;
    own.port = ts_free_port();
    snprintf(own.url, sizeof own.url, "redis://127.0.0.1:%d/0", own.port);
    return 0;
}

static int own_teardown(void **state)
{
    (void)state;
    own_redis_stop(&own);
    return 0;
}

static void test_down_up_down_up(void **state)
{
    (void)state;
    rds_store *s = open_store(own.url, "t:", 2, 500);
    rs_store rs = rds_store_port(s);
    app_error err = APP_ERROR_INIT;

    /* Down from the start: the store was made anyway, and calls fail fast: refused, not
     * waited out (the detail would say "no answer within"). */
    assert_int_equal(rs.ops->ping(rs.self, &err), APP_EUNAVAIL);
    assert_non_null(strstr(err.message, "could not connect"));
    assert_non_null(strstr(err.detail, "refused"));
    char *missing = (char *)"x";
    assert_int_equal(rs.ops->get(rs.self, "k", &missing, &err), APP_EUNAVAIL);
    assert_null(missing);
    assert_null(strstr(err.detail, "no answer within"));
    char *v = NULL;

    own_redis_start(&own, NULL);
    expect_ok(rs.ops->set(rs.self, "k", "v1", &err), &err, "set after start");
    expect_ok(rs.ops->get(rs.self, "k", &v, &err), &err, "get after start");
    assert_string_equal(v, "v1");
    free(v);

    own_redis_stop(&own);
    assert_int_equal(rs.ops->ping(rs.self, &err), APP_EUNAVAIL);
    assert_null(strstr(err.detail, "no answer within"));
    assert_int_equal(rs.ops->ping(rs.self, &err), APP_EUNAVAIL);
    assert_null(strstr(err.detail, "no answer within"));

    /* Back again: the very first call succeeds. */
    own_redis_start(&own, NULL);
    expect_ok(rs.ops->ping(rs.self, &err), &err, "ping after restart");
    expect_ok(rs.ops->set(rs.self, "k", "v2", &err), &err, "set after restart");
    rds_store_free(s);
}

/* Five calls in a row that cannot reach Redis open the breaker: the next callers get their
 * 503 at once, without trying; a second later on the store's clock (which the test moves)
 * one probe goes through and, Redis being back, closes it. */
static void test_breaker_opens_and_closes(void **state)
{
    (void)state;
    if (own.pid > 0)
        own_redis_stop(&own);
    int64_t now_ms = 1000000;
    app_clock clock = {test_clock_now, &now_ms};
    rds_store *s = open_store_clocked(own.url, "t:", 2, 500, &clock);
    rs_store rs = rds_store_port(s);
    app_error err = APP_ERROR_INIT;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(rs.ops->ping(rs.self, &err), APP_EUNAVAIL);
        assert_null(strstr(err.detail, "circuit breaker"));
    }
    assert_int_equal(rs.ops->ping(rs.self, &err), APP_EUNAVAIL);
    assert_string_equal(err.message, "redis is unavailable");
    assert_non_null(strstr(err.detail, "circuit breaker open"));
    assert_non_null(strstr(err.detail, "next attempt in 1000 ms"));

    /* However long Redis takes to start, no time passes for the breaker: still open. */
    own_redis_start(&own, NULL);
    assert_int_equal(rs.ops->ping(rs.self, &err), APP_EUNAVAIL);
    assert_non_null(strstr(err.detail, "circuit breaker open"));
    now_ms += 999;
    assert_int_equal(rs.ops->ping(rs.self, &err), APP_EUNAVAIL);
    assert_non_null(strstr(err.detail, "next attempt in 1 ms"));
    now_ms += 1;
    expect_ok(rs.ops->ping(rs.self, &err), &err, "the probe after the open time");
    expect_ok(rs.ops->set(rs.self, "k", "closed", &err), &err, "set once closed");
    rds_store_free(s);
}

static void test_restart_with_open_connections_costs_no_call(void **state)
{
    (void)state;
    if (own.pid <= 0)
        own_redis_start(&own, NULL);
    rds_store *s = open_store(own.url, "t:", 2, 500);
    rs_store rs = rds_store_port(s);
    app_error err = APP_ERROR_INIT;
    expect_ok(rs.ops->set(rs.self, "k", "before", &err), &err, "set");
    own_redis_stop(&own);
    own_redis_start(&own, NULL);
    char *v = NULL;
    expect_ok(rs.ops->get(rs.self, "k", &v, &err), &err, "get on a stale pooled connection");
    assert_null(v); /* --save '' : the restart lost the data */
    rds_store_free(s);
}

static void test_hung_redis_times_out(void **state)
{
    (void)state;
    if (own.pid <= 0)
        own_redis_start(&own, NULL);
    rds_store *s = open_store(own.url, "t:", 2, 300);
    rs_store rs = rds_store_port(s);
    app_error err = APP_ERROR_INIT;
    expect_ok(rs.ops->ping(rs.self, &err), &err, "ping");

    kill(own.pid, SIGSTOP);
    long long t0 = ts_now_ms();
    assert_int_equal(rs.ops->set(rs.self, "k", "v", &err), APP_EUNAVAIL);
    long long took = ts_now_ms() - t0;
    assert_non_null(strstr(err.detail, "no answer within 300 ms")); /* waited, then gave up */
    print_message("a hung redis answered APP_EUNAVAIL after %lld ms (timeout 300 ms)\n", took);
    kill(own.pid, SIGCONT);

    expect_ok(rs.ops->ping(rs.self, &err), &err, "ping after SIGCONT");
    rds_store_free(s);
}

static void test_auth_and_database(void **state)
{
    (void)state;
    own_redis_stop(&own);
    own_redis_start(&own, "s3cret");
    char url[192];
    app_error err = APP_ERROR_INIT;

    snprintf(url, sizeof url, "redis://127.0.0.1:%d", own.port);
    rds_store *s = open_store(url, "t:", 1, 500);
    rs_store rs = rds_store_port(s);
    assert_int_equal(rs.ops->set(rs.self, "k", "v", &err), APP_EUNAVAIL);
    assert_non_null(strstr(err.detail, "NOAUTH"));
    rds_store_free(s);

    snprintf(url, sizeof url, "redis://:wrong@127.0.0.1:%d", own.port);
    s = open_store(url, "t:", 1, 500);
    rs = rds_store_port(s);
    assert_int_equal(rs.ops->ping(rs.self, &err), APP_EUNAVAIL);
    assert_non_null(strstr(err.message, "authenticate"));
    rds_store_free(s);

    snprintf(url, sizeof url, "redis://:s3cret@127.0.0.1:%d/3", own.port);
    s = open_store(url, "t:", 1, 500);
    rs = rds_store_port(s);
    expect_ok(rs.ops->set(rs.self, "k", "in db 3", &err), &err, "set with password");
    rds_store_free(s);

    redisContext *c = raw_connect(url);
    char got[128];
    raw_command(c, got, sizeof got, "GET t:k");
    assert_string_equal(got, "in db 3");
    raw_command(c, got, sizeof got, "SELECT 0");
    raw_command(c, got, sizeof got, "GET t:k");
    assert_string_equal(got, "(nil)");
    raw_command(c, got, sizeof got, "SELECT 3");
    raw_command(c, got, sizeof got, "GET t:k");
    assert_string_equal(got, "in db 3");
    raw_command(c, got, sizeof got, "ACL SETUSER alice on >apw ~* +@all");
    assert_string_equal(got, "OK");
    redisFree(c);

    snprintf(url, sizeof url, "redis://alice:apw@127.0.0.1:%d/3", own.port);
    s = open_store(url, "t:", 1, 500);
    rs = rds_store_port(s);
    char *v;
    expect_ok(rs.ops->get(rs.self, "k", &v, &err), &err, "get as an ACL user");
    assert_string_equal(v, "in db 3");
    free(v);
    rds_store_free(s);
    own_redis_stop(&own);
}

/* ---- GETs answered on an event loop ---------------------------------------------------- */

typedef struct loop_read {
    bool returned; /* get_async had returned when done ran */
    bool done;
    int rc;
    bool missing;
    char value[128];
    app_error err;
    const bool *started; /* set by the caller once get_async returned */
} loop_read;

static void loop_read_done(void *arg, int rc, const char *value, size_t len, const app_error *err)
{
    loop_read *r = arg;
    assert_false(r->done); /* exactly once */
    r->done = true;
    r->returned = *r->started;
    r->rc = rc;
    r->missing = value == NULL;
    if (value)
        snprintf(r->value, sizeof r->value, "%.*s", (int)len, value);
    if (rc != 0)
        r->err = *err;
}

/* Starts a GET of key on this thread's loop: its rc (done runs only when it is 0). */
static int loop_get(rs_store *rs, const char *key, loop_read *r)
{
    static bool started;
    *r = (loop_read){.started = &started};
    started = false;
    app_error err = APP_ERROR_INIT;
    int rc = rs->ops->get_async(rs->self, key, loop_read_done, r, &err);
    started = true;
    if (rc != 0)
        r->err = err;
    return rc;
}

/* Runs base until every one of the n reads is done. */
static void loop_wait(struct event_base *base, loop_read *reads, size_t n)
{
    long long give_up = ts_now_ms() + TS_HANG_GUARD_MS;
    for (;;) {
        size_t left = 0;
        for (size_t i = 0; i < n; i++)
            left += !reads[i].done;
        if (left == 0)
            return;
        if (ts_now_ms() > give_up)
            fail_msg("%zu loop reads never ended", left);
        event_base_loop(base, EVLOOP_ONCE);
    }
}

static struct event_base *loop_attach(rds_store *s)
{
    struct event_base *base = event_base_new();
    assert_non_null(base);
    app_error err = APP_ERROR_INIT;
    expect_ok(rds_store_attach_loop(s, base, &err), &err, "attach a loop");
    return base;
}

static void loop_detach(rds_store *s, struct event_base *base)
{
    rds_store_detach_loop(s);
    event_base_free(base);
}

static void test_loop_reads(void **state)
{
    (void)state;
    rds_store *s = open_harness_store("loop:");
    rs_store rs = rds_store_port(s);
    app_error err = APP_ERROR_INIT;
    expect_ok(rs.ops->set(rs.self, "user:1", "{\"name\":\"Zoë\"}", &err), &err, "set");
    expect_ok(rs.ops->set(rs.self, "key with spaces\r\n", "odd", &err), &err, "set odd key");

    /* No loop on this thread yet: nothing starts, and done is never called. */
    loop_read none;
    assert_int_equal(loop_get(&rs, "user:1", &none), APP_EUNAVAIL);
    assert_non_null(strstr(none.err.message, "no redis loop connection"));
    assert_false(none.done);

    struct event_base *base = loop_attach(s);
    assert_int_equal(rds_store_attach_loop(s, base, &err), APP_EINTERNAL); /* one a thread */
    loop_read r[3];
    assert_int_equal(loop_get(&rs, "user:1", &r[0]), 0);
    assert_int_equal(loop_get(&rs, "user:2", &r[1]), 0);
    assert_int_equal(loop_get(&rs, "key with spaces\r\n", &r[2]), 0);
    assert_false(r[0].done); /* the loop answers, not the call */
    loop_wait(base, r, 3);
    for (int i = 0; i < 3; i++) {
        assert_true(r[i].returned);
        assert_int_equal(r[i].rc, 0);
    }
    assert_string_equal(r[0].value, "{\"name\":\"Zoë\"}"); /* under the store's prefix */
    assert_true(r[1].missing);
    assert_string_equal(r[2].value, "odd");

    /* A key of another type is an error, not a value. */
    expect_ok(rs.ops->zadd(rs.self, "board", 1, "a", &err), &err, "zadd");
    assert_int_equal(loop_get(&rs, "board", &r[0]), 0);
    loop_wait(base, r, 1);
    assert_int_equal(r[0].rc, APP_EINTERNAL);
    assert_non_null(strstr(r[0].err.detail, "WRONGTYPE"));
    /* ... which leaves the connection as it was. */
    assert_int_equal(loop_get(&rs, "user:1", &r[0]), 0);
    loop_wait(base, r, 1);
    assert_string_equal(r[0].value, "{\"name\":\"Zoë\"}");

    loop_detach(s, base);
    assert_int_equal(loop_get(&rs, "user:1", &none), APP_EUNAVAIL); /* detached */
    expect_ok(rs.ops->del(rs.self, "user:1", &err), &err, "del");
    expect_ok(rs.ops->del(rs.self, "key with spaces\r\n", &err), &err, "del");
    expect_ok(rs.ops->del(rs.self, "board", &err), &err, "del");
    rds_store_free(s);
}

/* Down: the first GET fails, and for a second after it the loop does not try again (one
 * attempt a second costs the loop little); then a Redis that came back answers. */
static void test_loop_down_and_back(void **state)
{
    (void)state;
    own_redis_stop(&own);
    rds_store *s = open_store(own.url, "t:", 1, 500);
    rs_store rs = rds_store_port(s);
    struct event_base *base = loop_attach(s);
    loop_read r;
    int rc = loop_get(&rs, "k", &r);
    if (rc == 0) { /* the refusal came from the loop rather than connect(2) itself */
        loop_wait(base, &r, 1);
        rc = r.rc;
    }
    assert_int_equal(rc, APP_EUNAVAIL);
    assert_int_equal(loop_get(&rs, "k", &r), APP_EUNAVAIL);
    assert_non_null(strstr(r.err.detail, "failed less than 1000 ms ago"));

    own_redis_start(&own, NULL);
    usleep(1000 * 1000);
    assert_int_equal(loop_get(&rs, "k", &r), 0);
    loop_wait(base, &r, 1);
    assert_int_equal(r.rc, 0);
    assert_true(r.missing);

    /* Lost while connected: the pending GET ends, and so does the wait after it. */
    own_redis_stop(&own);
    assert_int_equal(loop_get(&rs, "k", &r), 0);
    loop_wait(base, &r, 1);
    assert_int_equal(r.rc, APP_EUNAVAIL);
    own_redis_start(&own, NULL);
    usleep(1000 * 1000);
    assert_int_equal(loop_get(&rs, "k", &r), 0);
    loop_wait(base, &r, 1);
    assert_int_equal(r.rc, 0);
    loop_detach(s, base);
    rds_store_free(s);
}

/* A hung Redis: the oldest GET waits out the timeout, then every pending one ends with it;
 * detaching ends those still pending, before it returns. */
static void test_loop_hung_redis(void **state)
{
    (void)state;
    if (own.pid <= 0)
        own_redis_start(&own, NULL);
    rds_store *s = open_store(own.url, "t:", 1, 300);
    rs_store rs = rds_store_port(s);
    struct event_base *base = loop_attach(s);
    loop_read r[2];
    assert_int_equal(loop_get(&rs, "k", &r[0]), 0);
    loop_wait(base, r, 1); /* connected */

    kill(own.pid, SIGSTOP);
    long long t0 = ts_now_ms();
    assert_int_equal(loop_get(&rs, "k", &r[0]), 0);
    assert_int_equal(loop_get(&rs, "j", &r[1]), 0);
    loop_wait(base, r, 2);
    long long took = ts_now_ms() - t0;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(r[i].rc, APP_EUNAVAIL);
        assert_non_null(strstr(r[i].err.detail, "no answer within 300 ms"));
    }
    assert_true(took >= 290);
    print_message("a hung redis ended both loop reads after %lld ms (timeout 300 ms)\n", took);
    kill(own.pid, SIGCONT);

    usleep(1000 * 1000);
    assert_int_equal(loop_get(&rs, "k", &r[0]), 0);
    loop_wait(base, r, 1);
    assert_int_equal(r[0].rc, 0);

    kill(own.pid, SIGSTOP);
    assert_int_equal(loop_get(&rs, "k", &r[0]), 0);
    rds_store_detach_loop(s);
    assert_true(r[0].done);
    assert_int_equal(r[0].rc, APP_EUNAVAIL);
    assert_non_null(strstr(r[0].err.detail, "stopping"));
    kill(own.pid, SIGCONT);
    event_base_free(base);
    rds_store_free(s);
}

static void test_loop_auth_and_database(void **state)
{
    (void)state;
    own_redis_stop(&own);
    own_redis_start(&own, "s3cret");
    char url[192];
    app_error err = APP_ERROR_INIT;
    snprintf(url, sizeof url, "redis://:s3cret@127.0.0.1:%d/3", own.port);
    rds_store *s = open_store(url, "t:", 1, 500);
    rs_store rs = rds_store_port(s);
    expect_ok(rs.ops->set(rs.self, "k", "in db 3", &err), &err, "set with password");
    struct event_base *base = loop_attach(s);
    loop_read r;
    assert_int_equal(loop_get(&rs, "k", &r), 0);
    loop_wait(base, &r, 1);
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.value, "in db 3");
    loop_detach(s, base);
    rds_store_free(s);

    snprintf(url, sizeof url, "redis://:wrong@127.0.0.1:%d/3", own.port);
    s = open_store(url, "t:", 1, 500);
    rs = rds_store_port(s);
    base = loop_attach(s);
    assert_int_equal(loop_get(&rs, "k", &r), 0);
    loop_wait(base, &r, 1);
    assert_int_equal(r.rc, APP_EUNAVAIL); /* never the value of another database */
    loop_detach(s, base);
    rds_store_free(s);
    own_redis_stop(&own);
}

static int loop_setup(void **state)
{
    signal(SIGPIPE, SIG_IGN); /* what rds_store_attach_loop asks of the process */
    return own_setup(state);
}

static int loop_teardown(void **state)
{
    signal(SIGPIPE, SIG_DFL);
    return own_teardown(state);
}

int main(void)
{
    signal(SIGPIPE, SIG_DFL); /* the adapter must not need SIGPIPE ignored */
    snprintf(run_prefix, sizeof run_prefix, "test_redis_store:%d:%ld:", (int)getpid(),
             (long)ts_now_ms());
    const struct CMUnitTest outage[] = {
        cmocka_unit_test(test_get_many),
        cmocka_unit_test(test_bad_url_is_config_error),
        cmocka_unit_test(test_down_up_down_up),
        cmocka_unit_test(test_breaker_opens_and_closes),
        cmocka_unit_test(test_restart_with_open_connections_costs_no_call),
        cmocka_unit_test(test_hung_redis_times_out),
        cmocka_unit_test(test_auth_and_database),
    };
    const struct CMUnitTest harness[] = {
        cmocka_unit_test(test_set_get_del),
        cmocka_unit_test(test_prefix_isolation),
        cmocka_unit_test(test_sorted_set),
        cmocka_unit_test(test_pool_under_concurrency),
    };
    const struct CMUnitTest loop[] = {
        cmocka_unit_test(test_loop_reads),
        cmocka_unit_test(test_loop_down_and_back),
        cmocka_unit_test(test_loop_hung_redis),
        cmocka_unit_test(test_loop_auth_and_database),
    };
    int failed =
        cmocka_run_group_tests_name("redis_store_outages", outage, own_setup, own_teardown);
    failed += cmocka_run_group_tests_name("redis_store_ops", harness, NULL, NULL);
    failed +=
        cmocka_run_group_tests_name("redis_store_loop_reads", loop, loop_setup, loop_teardown);
    return failed ? 1 : 0;
}
