/* Configuration loading, validation messages, environment overrides, and the command line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/cli.h"
#include "core/config.h"
#include "core/log.h"

extern char **environ;

/* Writes text to a fresh temporary file; the caller unlinks and frees the path. */
static char *write_temp(const char *text)
{
    char *path = strdup("/tmp/test_config_XXXXXX.yaml");
    assert_non_null(path);
    int fd = mkstemps(path, 5);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    return path;
}

/* Loads text as a config file; returns the status and leaves the message in err. */
static int load_text(const char *text, app_config *cfg, app_error *err)
{
    char *path = write_temp(text);
    int rc = config_load(path, cfg, err);
    unlink(path);
    free(path);
    return rc;
}

static void expect_error(const char *text, const char *message)
{
    app_config cfg;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(load_text(text, &cfg, &err), APP_ECONFIG);
    assert_int_equal(err.code, APP_ECONFIG);
    assert_string_equal(err.message, message);
}

static void expect_error_part(const char *text, const char *part)
{
    app_config cfg;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(load_text(text, &cfg, &err), APP_ECONFIG);
    if (!strstr(err.message, part))
        fail_msg("message \"%s\" lacks \"%s\"", err.message, part);
}

/* The process environment must not leak into these tests (CI may set APP_*). */
static int clear_app_env(void **state)
{
    (void)state;
    for (;;) {
        char name[256] = "";
        for (char **e = environ; *e; e++)
            if (strncmp(*e, "APP_", 4) == 0) {
                size_t n = strcspn(*e, "=");
                snprintf(name, sizeof name, "%.*s", (int)n, *e);
                break;
            }
        if (!name[0])
            return 0;
        unsetenv(name);
    }
}

static void assert_defaults(const app_config *cfg)
{
    assert_string_equal(cfg->http.listen_host, "127.0.0.1");
    assert_int_equal(cfg->http.listen_port, 8080);
    assert_int_equal(cfg->http.threads, 2);
    assert_int_equal(cfg->http.max_body_bytes, 1048576);
    assert_int_equal(cfg->http.request_timeout_ms, 30000);
    assert_int_equal(cfg->http.shutdown_timeout_ms, 10000);
    assert_int_equal(cfg->workers.threads, 32);
    assert_int_equal(cfg->workers.queue_size, 4096);
    assert_string_equal(cfg->postgres.dsn, "host=127.0.0.1 port=55432 dbname=app user=app");
    assert_int_equal(cfg->postgres.pool_size, 8);
    assert_int_equal(cfg->postgres.connect_timeout_s, 5);
    assert_int_equal(cfg->postgres.max_batch, 256);
    assert_false(cfg->postgres.context_roles);
    assert_string_equal(cfg->redis.url, "redis://127.0.0.1:56379/0");
    assert_string_equal(cfg->redis.key_prefix, "app:");
    assert_int_equal(cfg->redis.pool_size, 8);
    assert_int_equal(cfg->redis.timeout_ms, 1000);
    assert_int_equal(cfg->log.level, LOG_INFO);
    assert_int_equal(cfg->subscriptions.batch_size, 500);
    assert_int_equal(cfg->subscriptions.poll_interval_ms, 500);
    assert_int_equal(cfg->snapshots.user, 0);
    assert_int_equal(cfg->snapshots.order, 0);
    assert_int_equal(cfg->snapshots.product, 100);
    assert_false(cfg->auth.enabled);
    assert_false(cfg->kafka.enabled);
    assert_false(cfg->kafka.inbox);
    assert_int_equal(cfg->auth.n_api_keys, 0);
    assert_int_equal(cfg->auth.n_trusted_gateways, 0);
    assert_int_equal(cfg->rate_limit.requests_per_minute, 0);
    assert_int_equal(cfg->rate_limit.burst, 100);
    assert_int_equal(cfg->n_contexts, 3);
    assert_string_equal(cfg->contexts[0], "user");
    assert_string_equal(cfg->contexts[1], "order");
    assert_string_equal(cfg->contexts[2], "inventory");
}

static void test_defaults(void **state)
{
    (void)state;
    app_config cfg;
    config_defaults(&cfg);
    assert_defaults(&cfg);
}

static void test_empty_file_and_no_file_give_defaults(void **state)
{
    (void)state;
    app_config cfg;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(load_text("", &cfg, &err), 0);
    assert_defaults(&cfg);
    assert_int_equal(load_text("# only a comment\n", &cfg, &err), 0);
    assert_defaults(&cfg);
    assert_int_equal(load_text("http:\nlog:\n", &cfg, &err), 0);
    assert_defaults(&cfg);
    assert_int_equal(config_load(NULL, &cfg, &err), 0);
    assert_defaults(&cfg);
}

static void test_checked_in_file_loads(void **state)
{
    (void)state;
    /* From the repository root (make) or from elsewhere via this file's path. */
    char path[4096] = "config/app.yaml";
    if (access(path, R_OK) != 0) {
        const char *slash = strrchr(__FILE__, '/');
        int dir = slash ? (int)(slash - __FILE__) : 0;
        snprintf(path, sizeof path, "%.*s%s../../config/app.yaml", dir, __FILE__, slash ? "/" : "");
    }
    app_config cfg, defaults;
    app_error err = APP_ERROR_INIT;
    int rc = config_load(path, &cfg, &err);
    if (rc)
        fail_msg("%s: %s", path, err.message);
    assert_defaults(&cfg);
    config_defaults(&defaults);
    assert_memory_equal(&cfg, &defaults, sizeof cfg);
}

static void test_every_key_from_file(void **state)
{
    (void)state;
    app_config cfg;
    app_error err = APP_ERROR_INIT;
    int rc = load_text("http:\n"
                       "  listen: 0.0.0.0:9090\n"
                       "  threads: 4\n"
                       "  max_body_bytes: 67108864\n"
                       "  request_timeout_ms: 100\n"
                       "  shutdown_timeout_ms: 0\n"
                       "workers: {threads: 256, queue_size: 1}\n"
                       "postgres:\n"
                       "  dsn: postgresql://u@db/app\n"
                       "  pool_size: 1\n"
                       "  connect_timeout_s: 600\n"
                       "  max_batch: 10000\n"
                       "  context_roles: true\n"
                       "redis:\n"
                       "  url: redis://cache:6379/2\n"
                       "  key_prefix: ''\n"
                       "  pool_size: 256\n"
                       "  timeout_ms: 10\n"
                       "log:\n"
                       "  level: debug\n"
                       "subscriptions:\n"
                       "  batch_size: 100000\n"
                       "  poll_interval_ms: 60000\n"
                       "snapshots: {user: 1, order: 1000000, product: 0}\n"
                       "contexts:\n"
                       "  - order\n",
                       &cfg, &err);
    if (rc)
        fail_msg("%s", err.message);
    assert_string_equal(cfg.http.listen_host, "0.0.0.0");
    assert_int_equal(cfg.http.listen_port, 9090);
    assert_int_equal(cfg.http.threads, 4);
    assert_int_equal(cfg.http.max_body_bytes, 67108864);
    assert_int_equal(cfg.http.request_timeout_ms, 100);
    assert_int_equal(cfg.http.shutdown_timeout_ms, 0);
    assert_int_equal(cfg.workers.threads, 256);
    assert_int_equal(cfg.workers.queue_size, 1);
    assert_string_equal(cfg.postgres.dsn, "postgresql://u@db/app");
    assert_int_equal(cfg.postgres.pool_size, 1);
    assert_int_equal(cfg.postgres.connect_timeout_s, 600);
    assert_int_equal(cfg.postgres.max_batch, 10000);
    assert_true(cfg.postgres.context_roles);
    assert_string_equal(cfg.redis.url, "redis://cache:6379/2");
    assert_string_equal(cfg.redis.key_prefix, "");
    assert_int_equal(cfg.redis.pool_size, 256);
    assert_int_equal(cfg.redis.timeout_ms, 10);
    assert_int_equal(cfg.log.level, LOG_DEBUG);
    assert_int_equal(cfg.subscriptions.batch_size, 100000);
    assert_int_equal(cfg.subscriptions.poll_interval_ms, 60000);
    assert_int_equal(cfg.snapshots.user, 1);
    assert_int_equal(cfg.snapshots.order, 1000000);
    assert_int_equal(cfg.snapshots.product, 0);
    assert_int_equal(cfg.n_contexts, 1);
    assert_string_equal(cfg.contexts[0], "order");
}

/* Where the contexts not loaded here are served, and who may call this process's internal
 * endpoints: from the file, from the environment, and refused when malformed, naming the key
 * and the line. */
static void test_remote_and_internal(void **state)
{
    (void)state;
    app_config cfg;
    app_error err = APP_ERROR_INIT;
    int rc = load_text("contexts: [order]\n"
                       "remote:\n"
                       "  user: http://user.mesh:80\n"
                       "  inventory: \"http://127.0.0.1:8082\"\n"
                       "  timeout_ms: 2500\n"
                       "  pool_size: 4\n"
                       "  breaker_failure_threshold: 7\n"
                       "internal:\n"
                       "  trusted_peers: [10.0.0.0/8, \"fd00::/8\"]\n"
                       "  token_sha256: "
                       "\"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"\n",
                       &cfg, &err);
    if (rc)
        fail_msg("%s", err.message);
    assert_string_equal(config_remote_url(&cfg, "user"), "http://user.mesh:80");
    assert_string_equal(config_remote_url(&cfg, "inventory"), "http://127.0.0.1:8082");
    assert_null(config_remote_url(&cfg, "order"));   /* "": nowhere */
    assert_null(config_remote_url(&cfg, "billing")); /* no such context */
    assert_int_equal(cfg.remote.timeout_ms, 2500);
    assert_int_equal(cfg.remote.pool_size, 4);
    assert_int_equal(cfg.remote.breaker_failure_threshold, 7);
    assert_int_equal(cfg.internal.n_trusted_peers, 2);
    assert_int_equal(cfg.internal.trusted_peers[1].prefix, 8);
    assert_true(cfg.internal.has_token);
    assert_int_equal(cfg.internal.token_sha256[0], 0x9f);
    assert_int_equal(cfg.internal.token_sha256[31], 0x08);

    /* Defaults: no remote, loopback peers only, no token. */
    assert_int_equal(load_text("", &cfg, &err), 0);
    assert_null(config_remote_url(&cfg, "user"));
    assert_int_equal(cfg.internal.n_trusted_peers, 2);
    assert_false(cfg.internal.has_token);

    expect_error("remote:\n  user: https://user:443\n",
                 "remote.user: must start with http:// at line 2");
    expect_error_part("internal:\n  token_sha256: abc\n",
                      "internal.token_sha256: expected the token's SHA-256 as 64 hex digits");
    expect_error_part("internal:\n  trusted_peers: [everyone]\n",
                      "internal.trusted_peers: expected an IP address or network");
    expect_error("remote:\n  pool_size: 0\n",
                 "remote.pool_size: 0 is out of range 1..256 at line 2");
}

/* API keys with scopes: in YAML separated by ',', in the environment by '+'. */
static void test_api_key_scopes(void **state)
{
    (void)state;
    const char *hex = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    char text[512];
    snprintf(text, sizeof text,
             "auth:\n  api_keys:\n    - \"a:%s\"\n    - \"b:%s:read\"\n"
             "    - \"c:%s:read,write\"\n    - \"d:%s:admin+read\"\n",
             hex, hex, hex, hex);
    app_config cfg;
    app_error err = APP_ERROR_INIT;
    /* The same hash four times is refused; make them differ in the last digit. */
    text[strstr(text, "b:") - text + 2 + 63] = '0';
    text[strstr(text, "c:") - text + 2 + 63] = '1';
    text[strstr(text, "d:") - text + 2 + 63] = '2';
    if (load_text(text, &cfg, &err) != 0)
        fail_msg("%s", err.message);
    assert_int_equal(cfg.auth.n_api_keys, 4);
    assert_int_equal(cfg.auth.api_keys[0].scopes, 0); /* every right */
    assert_int_equal(cfg.auth.api_keys[1].scopes, CONFIG_SCOPE_READ);
    assert_int_equal(cfg.auth.api_keys[2].scopes, CONFIG_SCOPE_READ | CONFIG_SCOPE_WRITE);
    assert_int_equal(cfg.auth.api_keys[3].scopes, CONFIG_SCOPE_READ | CONFIG_SCOPE_ADMIN);
    snprintf(text, sizeof text, "auth:\n  api_keys: [\"a:%s:root\"]\n", hex);
    expect_error_part(text,
                      "auth.api_keys: scopes after the key's SHA-256 must be read, write or admin");
    snprintf(text, sizeof text, "auth:\n  api_keys: [\"a:%s:\"]\n", hex);
    expect_error_part(text, "must be read, write or admin");
}

static void test_wrong_type(void **state)
{
    (void)state;
    expect_error("# comment\n"
                 "http:\n"
                 "  listen: 127.0.0.1:8080\n"
                 "  threads: abc\n",
                 "http.threads: expected an integer at line 4");
    expect_error("http:\n  threads: 2.5\n", "http.threads: expected an integer at line 2");
    expect_error("http:\n  threads: \"4\"\n", "http.threads: expected an integer at line 2");
    expect_error("http:\n  threads: [1, 2]\n", "http.threads: expected an integer at line 2");
    expect_error("postgres:\n  dsn:\n    a: b\n", "postgres.dsn: expected a string at line 3");
    expect_error("postgres:\n  context_roles: \"true\"\n",
                 "postgres.context_roles: expected true or false at line 2");
    expect_error("http: 5\n", "http: expected a mapping at line 1");
    expect_error("http:\n  - threads\n", "http: expected a mapping at line 2");
    expect_error("contexts: user\n", "contexts: expected a list at line 1");
}

static void test_unknown_key(void **state)
{
    (void)state;
    expect_error("http:\n"
                 "  threads: 2\n"
                 "\n"
                 "workers:\n"
                 "  threads: 2\n"
                 "http2:\n"
                 "  x: 1\n",
                 "http2: unknown key at line 6");
    expect_error("http:\n"
                 "  threads: 2\n"
                 "  listen: 127.0.0.1:1\n"
                 "  request_timeout_ms: 100\n"
                 "  shutdown_timeout_ms: 100\n"
                 "  max_body_bytes: 10\n"
                 "  bogus: 1\n",
                 "http.bogus: unknown key at line 7");
    expect_error("http.threads: 3\n", "http.threads: unknown key at line 1");
    expect_error("log:\n  level:\n    deep: 1\n", "log.level: expected a string at line 3");
}

static void test_out_of_range(void **state)
{
    (void)state;
    expect_error("\n\nhttp:\n  threads: 0\n", "http.threads: 0 is out of range 1..64 at line 4");
    expect_error("http:\n  threads: 65\n", "http.threads: 65 is out of range 1..64 at line 2");
    expect_error("http:\n  threads: -3\n", "http.threads: -3 is out of range 1..64 at line 2");
    expect_error("http:\n  max_body_bytes: 67108865\n",
                 "http.max_body_bytes: 67108865 is out of range 1..67108864 at line 2");
    expect_error("workers:\n  queue_size: 99999999999999999999999\n",
                 "workers.queue_size: 99999999999999999999999 is out of range 1..1000000 at "
                 "line 2");
    expect_error("redis:\n  timeout_ms: 9\n",
                 "redis.timeout_ms: 9 is out of range 10..60000 at line 2");
    expect_error("subscriptions:\n  poll_interval_ms: 60001\n",
                 "subscriptions.poll_interval_ms: 60001 is out of range 10..60000 at line 2");
    expect_error("snapshots:\n  user: 0\n  product: -1\n",
                 "snapshots.product: -1 is out of range 0..1000000 at line 3");
    expect_error("snapshots:\n  product: 1000001\n",
                 "snapshots.product: 1000001 is out of range 0..1000000 at line 2");
    expect_error("snapshots:\n  product: every\n",
                 "snapshots.product: expected an integer at line 2");
    expect_error("snapshots:\n  invoice: 10\n", "snapshots.invoice: unknown key at line 2");
}

static void test_missing_required(void **state)
{
    (void)state;
    expect_error("postgres:\n  pool_size: 2\n  dsn:\n",
                 "postgres.dsn: missing required value at line 3");
    expect_error("postgres:\n  dsn: ~\n", "postgres.dsn: missing required value at line 2");
    expect_error("postgres:\n  dsn: \"\"\n", "postgres.dsn: missing required value at line 2");
    expect_error("redis:\n  url: null\n", "redis.url: missing required value at line 2");
    expect_error("http:\n  threads:\n", "http.threads: missing required value at line 2");
    expect_error("http:\n  listen: ''\n", "http.listen: missing required value at line 2");
    expect_error("contexts: []\n", "contexts: at least one context is required at line 1");
    expect_error("contexts:\n", "contexts: expected a list at line 1");

    /* key_prefix may be empty, and null means empty. */
    app_config cfg;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(load_text("redis:\n  key_prefix:\n", &cfg, &err), 0);
    assert_string_equal(cfg.redis.key_prefix, "");
}

static void test_duplicate_key(void **state)
{
    (void)state;
    expect_error("http:\n  threads: 2\n  threads: 3\n",
                 "http.threads: duplicate key at line 3 (first at line 2)");
    expect_error("log:\n  level: info\nhttp:\n  threads: 2\nlog:\n  level: warn\n",
                 "log: duplicate key at line 5 (first at line 1)");
}

static void test_syntax_errors(void **state)
{
    (void)state;
    expect_error_part("http:\n  threads: 2\n listen: x\n", "YAML syntax error at line 3 column");
    expect_error_part("http: [1, 2\n", "YAML syntax error at line");
    expect_error_part("http:\n  listen: \"unterminated\n", "YAML syntax error at line");
    expect_error_part("http: {threads: 2}\n---\nlog: {}\n", "second YAML document at line 2");
}

static void test_top_level_not_mapping(void **state)
{
    (void)state;
    expect_error("- http\n- log\n", "the top level must be a mapping of sections at line 1");
    expect_error("just a string\n", "the top level must be a mapping of sections at line 1");
}

static void test_unopenable_file(void **state)
{
    (void)state;
    app_config cfg;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(config_load("/nonexistent/dir/app.yaml", &cfg, &err), APP_ECONFIG);
    assert_string_equal(err.message,
                        "cannot open config file /nonexistent/dir/app.yaml: No such file or "
                        "directory");
    assert_int_equal(config_load("/tmp", &cfg, &err), APP_ECONFIG);
    assert_non_null(strstr(err.message, "/tmp: Is a directory"));
}

static void test_strings_too_long(void **state)
{
    (void)state;
    char text[2048];
    char big[1100];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    snprintf(text, sizeof text, "postgres:\n  dsn: \"%.1024s\"\n", big);
    expect_error(text, "postgres.dsn: value is too long (at most 1023 characters) at line 2");
    snprintf(text, sizeof text, "postgres:\n  dsn: \"%.1023s\"\n", big);
    app_config cfg;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(load_text(text, &cfg, &err), 0);
    assert_int_equal(strlen(cfg.postgres.dsn), 1023);

    snprintf(text, sizeof text, "redis:\n  key_prefix: %.64s\n", big);
    expect_error(text, "redis.key_prefix: value is too long (at most 63 characters) at line 2");
    snprintf(text, sizeof text, "redis:\n  key_prefix: %.63s\n", big);
    assert_int_equal(load_text(text, &cfg, &err), 0);
    assert_int_equal(strlen(cfg.redis.key_prefix), 63);

    snprintf(text, sizeof text, "http:\n  listen: \"%.256s:80\"\n", big);
    expect_error(text, "http.listen: host is too long at line 2");
    expect_error("postgres:\n  dsn: \"a\\0b\"\n",
                 "postgres.dsn: must not contain a NUL byte at line 2");
}

static void test_listen(void **state)
{
    (void)state;
    app_config cfg;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(load_text("http:\n  listen: \"[::1]:8081\"\n", &cfg, &err), 0);
    assert_string_equal(cfg.http.listen_host, "::1");
    assert_int_equal(cfg.http.listen_port, 8081);
    assert_int_equal(load_text("http:\n  listen: localhost:65535\n", &cfg, &err), 0);
    assert_string_equal(cfg.http.listen_host, "localhost");
    assert_int_equal(cfg.http.listen_port, 65535);

    expect_error("http:\n  listen: localhost\n",
                 "http.listen: expected \"host:port\" or \"[ipv6]:port\" at line 2");
    expect_error("http:\n  listen: \"::1:80\"\n",
                 "http.listen: expected \"host:port\" or \"[ipv6]:port\" at line 2");
    expect_error("http:\n  listen: \"[::1]80\"\n",
                 "http.listen: expected \"host:port\" or \"[ipv6]:port\" at line 2");
    expect_error("http:\n  listen: \":80\"\n", "http.listen: host must not be empty at line 2");
    expect_error("http:\n  listen: \"[]:80\"\n", "http.listen: host must not be empty at line 2");
    expect_error("http:\n  listen: \"a:0\"\n",
                 "http.listen: port 0 is out of range 1..65535 at line 2");
    expect_error("http:\n  listen: \"a:65536\"\n",
                 "http.listen: port 65536 is out of range 1..65535 at line 2");
    expect_error("http:\n  listen: \"a:http\"\n", "http.listen: port must be a number at line 2");
    expect_error("http:\n  listen: \"a:\"\n", "http.listen: port must be a number at line 2");
    expect_error("http:\n  listen: \"a:+80\"\n", "http.listen: port must be a number at line 2");
}

static void test_redis_url_and_log_level(void **state)
{
    (void)state;
    expect_error("redis:\n  url: http://x\n", "redis.url: must start with redis:// at line 2");
    expect_error("log:\n  level: verbose\n",
                 "log.level: unknown level \"verbose\" (expected debug, info, warn or error) at "
                 "line 2");
    app_config cfg;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(load_text("log: {level: error}\n", &cfg, &err), 0);
    assert_int_equal(cfg.log.level, LOG_ERROR);
}

static void test_contexts(void **state)
{
    (void)state;
    app_config cfg;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(load_text("contexts:\n  - inventory\n  - user\n", &cfg, &err), 0);
    assert_int_equal(cfg.n_contexts, 2);
    assert_string_equal(cfg.contexts[0], "inventory");
    assert_string_equal(cfg.contexts[1], "user");

    expect_error("contexts:\n  - user\n  - billing\n",
                 "contexts: unknown context \"billing\" (expected user, order or inventory) at "
                 "line 3");
    expect_error("contexts:\n  - user\n  - order\n  - user\n",
                 "contexts: duplicate context \"user\" at line 4");
    expect_error("contexts:\n  - [user]\n", "contexts: expected a context name at line 2");
    expect_error("contexts:\n  -\n", "contexts: expected a context name at line 2");
}

/* ---- environment ---- */

typedef struct env_var {
    const char *name, *value;
} env_var;

static const env_var *fake_env;

static const char *fake_lookup(const char *name)
{
    for (const env_var *e = fake_env; e && e->name; e++)
        if (strcmp(e->name, name) == 0)
            return e->value;
    return NULL;
}

static int apply(const env_var *env, app_config *cfg, app_error *err)
{
    fake_env = env;
    config_defaults(cfg);
    return config_apply_env(cfg, fake_lookup, err);
}

#define SHA_A "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b" /* "secret" */
#define SHA_B "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855" /* "" */

static void test_auth_and_rate_limit(void **state)
{
    (void)state;
    app_config cfg;
    app_error err = APP_ERROR_INIT;
    int rc = load_text("auth:\n"
                       "  enabled: true\n"
                       "  api_keys:\n"
                       "    - \"alice:" SHA_A "\"\n"
                       "    - ops.team-1@example:" SHA_B "\n"
                       "  trusted_gateways: [10.0.0.0/8, \"::1\", 192.168.1.7]\n"
                       "rate_limit:\n"
                       "  requests_per_minute: 600\n"
                       "  burst: 20\n",
                       &cfg, &err);
    if (rc)
        fail_msg("%s", err.message);
    assert_true(cfg.auth.enabled);
    assert_int_equal(cfg.auth.n_api_keys, 2);
    assert_string_equal(cfg.auth.api_keys[0].consumer, "alice");
    assert_int_equal(cfg.auth.api_keys[0].sha256[0], 0x2b);
    assert_int_equal(cfg.auth.api_keys[0].sha256[31], 0x5b);
    assert_string_equal(cfg.auth.api_keys[1].consumer, "ops.team-1@example");
    assert_int_equal(cfg.auth.api_keys[1].sha256[0], 0xe3);
    assert_int_equal(cfg.auth.n_trusted_gateways, 3);
    assert_int_equal(cfg.auth.trusted_gateways[0].family, AF_INET);
    assert_int_equal(cfg.auth.trusted_gateways[0].prefix, 8);
    assert_int_equal(cfg.auth.trusted_gateways[0].addr[0], 10);
    assert_int_equal(cfg.auth.trusted_gateways[1].family, AF_INET6);
    assert_int_equal(cfg.auth.trusted_gateways[1].prefix, 128);
    assert_int_equal(cfg.auth.trusted_gateways[1].addr[15], 1);
    assert_int_equal(cfg.auth.trusted_gateways[2].prefix, 32);
    assert_int_equal(cfg.rate_limit.requests_per_minute, 600);
    assert_int_equal(cfg.rate_limit.burst, 20);

    /* Empty lists are allowed, and so are gateways alone. */
    assert_int_equal(load_text("auth:\n  api_keys:\n  trusted_gateways: []\n", &cfg, &err), 0);
    assert_int_equal(cfg.auth.n_api_keys, 0);
    assert_int_equal(
        load_text("auth: {enabled: true, trusted_gateways: [127.0.0.1]}\n", &cfg, &err), 0);

    expect_error("auth:\n  enabled: true\n",
                 "auth.enabled: true, but neither auth.api_keys nor auth.trusted_gateways is "
                 "set, so every request would be refused");
    expect_error("auth:\n  api_keys:\n    - alice\n",
                 "auth.api_keys: expected \"consumer:sha256-of-the-key\" (64 hex digits after "
                 "the colon) at line 3");
    expect_error("auth:\n  api_keys:\n    - alice:abc\n",
                 "auth.api_keys: expected the key's SHA-256 as 64 hex digits after the colon "
                 "(printf %s KEY | sha256sum) at line 3");
    expect_error("auth:\n  api_keys:\n    - \"alice:" SHA_A "\"\n    - \"bob:" SHA_A "\"\n",
                 "auth.api_keys: the same key is listed twice at line 4");
    expect_error("auth:\n  api_keys:\n    - \"al ice:" SHA_A "\"\n",
                 "auth.api_keys: the consumer name may hold letters, digits and . _ - @ only at "
                 "line 3");
    expect_error("auth:\n  api_keys:\n    - \":" SHA_A "\"\n",
                 "auth.api_keys: the consumer name must be 1 to 64 characters at line 3");
    expect_error("auth:\n  api_keys: alice\n", "auth.api_keys: expected a list at line 2");
    expect_error("auth:\n  api_keys:\n    - {a: b}\n",
                 "auth.api_keys: expected \"consumer:sha256-of-the-key\" at line 3");
    expect_error("auth:\n  trusted_gateways: [kong.local]\n",
                 "auth.trusted_gateways: expected an IP address or network (\"10.0.0.7\", "
                 "\"10.0.0.0/8\", \"fd00::/8\") at line 2");
    expect_error("auth:\n  trusted_gateways: [10.0.0.0/33]\n",
                 "auth.trusted_gateways: the prefix length must be 0..32 at line 2");
    expect_error("auth:\n  trusted_gateways: [\"fd00::/129\"]\n",
                 "auth.trusted_gateways: the prefix length must be 0..128 at line 2");
    expect_error("auth:\n  trusted_gateways: [10.0.0.0/]\n",
                 "auth.trusted_gateways: the prefix length must be 0..32 at line 2");
    expect_error("rate_limit:\n  burst: 0\n",
                 "rate_limit.burst: 0 is out of range 1..1000000 at line 2");
    expect_error("rate_limit:\n  requests_per_minute: -1\n",
                 "rate_limit.requests_per_minute: -1 is out of range 0..60000000 at line 2");

    static const env_var env[] = {
        {"APP_AUTH_ENABLED", "true"},
        {"APP_AUTH_API_KEYS", "alice:" SHA_A ", bob:" SHA_B},
        {"APP_AUTH_TRUSTED_GATEWAYS", "fd00::/8"},
        {"APP_RATE_LIMIT_REQUESTS_PER_MINUTE", "60"},
        {"APP_RATE_LIMIT_BURST", "5"},
        {NULL, NULL},
    };
    rc = apply(env, &cfg, &err);
    if (rc)
        fail_msg("%s", err.message);
    assert_true(cfg.auth.enabled);
    assert_int_equal(cfg.auth.n_api_keys, 2);
    assert_string_equal(cfg.auth.api_keys[1].consumer, "bob");
    assert_int_equal(cfg.auth.n_trusted_gateways, 1);
    assert_int_equal(cfg.auth.trusted_gateways[0].prefix, 8);
    assert_int_equal(cfg.rate_limit.requests_per_minute, 60);
    assert_int_equal(cfg.rate_limit.burst, 5);
}

/* kafka.inbox: off unless asked for, from the file or APP_KAFKA_INBOX, checked as a boolean
 * naming the key. */
static void test_kafka_inbox(void **state)
{
    (void)state;
    app_config cfg;
    app_error err = APP_ERROR_INIT;
    int rc = load_text("kafka:\n"
                       "  enabled: true\n"
                       "  inbox: true\n",
                       &cfg, &err);
    if (rc)
        fail_msg("%s", err.message);
    assert_true(cfg.kafka.enabled);
    assert_true(cfg.kafka.inbox);
    rc = load_text("kafka: {enabled: true}\n", &cfg, &err);
    assert_int_equal(rc, 0);
    assert_false(cfg.kafka.inbox);
    expect_error_part("kafka:\n  inbox: sometimes\n", "kafka.inbox");

    static const env_var on[] = {{"APP_KAFKA_INBOX", "true"}, {NULL, NULL}};
    rc = apply(on, &cfg, &err);
    if (rc)
        fail_msg("%s", err.message);
    assert_true(cfg.kafka.inbox);
    app_config before;
    config_defaults(&before);
    static const env_var bad[] = {{"APP_KAFKA_INBOX", "maybe"}, {NULL, NULL}};
    fake_env = bad;
    cfg = before;
    assert_int_equal(config_apply_env(&cfg, fake_lookup, &err), APP_ECONFIG);
    if (!strstr(err.message, "APP_KAFKA_INBOX"))
        fail_msg("message \"%s\" does not name APP_KAFKA_INBOX", err.message);
}

static void test_env_overrides_every_key(void **state)
{
    (void)state;
    static const env_var env[] = {
        {"APP_HTTP_LISTEN", "[::]:9000"},
        {"APP_HTTP_THREADS", "3"},
        {"APP_HTTP_MAX_BODY_BYTES", "2048"},
        {"APP_HTTP_REQUEST_TIMEOUT_MS", "1000"},
        {"APP_HTTP_SHUTDOWN_TIMEOUT_MS", "5"},
        {"APP_WORKERS_THREADS", "16"},
        {"APP_WORKERS_QUEUE_SIZE", "10"},
        {"APP_POSTGRES_DSN", "dbname=other"},
        {"APP_POSTGRES_POOL_SIZE", "2"},
        {"APP_POSTGRES_CONNECT_TIMEOUT_S", "7"},
        {"APP_POSTGRES_MAX_BATCH", "64"},
        {"APP_POSTGRES_CONTEXT_ROLES", "true"},
        {"APP_REDIS_URL", "redis://r:1/3"},
        {"APP_REDIS_KEY_PREFIX", ""},
        {"APP_REDIS_POOL_SIZE", "3"},
        {"APP_REDIS_TIMEOUT_MS", "250"},
        {"APP_LOG_LEVEL", "warn"},
        {"APP_SUBSCRIPTIONS_BATCH_SIZE", "50"},
        {"APP_SUBSCRIPTIONS_POLL_INTERVAL_MS", "20"},
        {"APP_SNAPSHOTS_USER", "7"},
        {"APP_SNAPSHOTS_ORDER", "8"},
        {"APP_SNAPSHOTS_PRODUCT", "0"},
        {"APP_CONTEXTS", " order , inventory "},
        {NULL, NULL},
    };
    app_config cfg;
    app_error err = APP_ERROR_INIT;
    int rc = apply(env, &cfg, &err);
    if (rc)
        fail_msg("%s", err.message);
    assert_string_equal(cfg.http.listen_host, "::");
    assert_int_equal(cfg.http.listen_port, 9000);
    assert_int_equal(cfg.http.threads, 3);
    assert_int_equal(cfg.http.max_body_bytes, 2048);
    assert_int_equal(cfg.http.request_timeout_ms, 1000);
    assert_int_equal(cfg.http.shutdown_timeout_ms, 5);
    assert_int_equal(cfg.workers.threads, 16);
    assert_int_equal(cfg.workers.queue_size, 10);
    assert_string_equal(cfg.postgres.dsn, "dbname=other");
    assert_int_equal(cfg.postgres.pool_size, 2);
    assert_int_equal(cfg.postgres.connect_timeout_s, 7);
    assert_int_equal(cfg.postgres.max_batch, 64);
    assert_true(cfg.postgres.context_roles);
    assert_string_equal(cfg.redis.url, "redis://r:1/3");
    assert_string_equal(cfg.redis.key_prefix, "");
    assert_int_equal(cfg.redis.pool_size, 3);
    assert_int_equal(cfg.redis.timeout_ms, 250);
    assert_int_equal(cfg.log.level, LOG_WARN);
    assert_int_equal(cfg.subscriptions.batch_size, 50);
    assert_int_equal(cfg.subscriptions.poll_interval_ms, 20);
    assert_int_equal(cfg.snapshots.user, 7);
    assert_int_equal(cfg.snapshots.order, 8);
    assert_int_equal(cfg.snapshots.product, 0);
    assert_int_equal(cfg.n_contexts, 2);
    assert_string_equal(cfg.contexts[0], "order");
    assert_string_equal(cfg.contexts[1], "inventory");
}

static void expect_env_error(const char *name, const char *value, const char *message)
{
    const env_var env[] = {{name, value}, {NULL, NULL}};
    app_config cfg, before;
    app_error err = APP_ERROR_INIT;
    fake_env = env;
    config_defaults(&cfg);
    before = cfg;
    assert_int_equal(config_apply_env(&cfg, fake_lookup, &err), APP_ECONFIG);
    assert_string_equal(err.message, message);
    /* A failed override leaves the configuration as it was. */
    assert_memory_equal(&cfg, &before, sizeof cfg);
}

static void test_env_errors(void **state)
{
    (void)state;
    expect_env_error("APP_HTTP_THREADS", "abc",
                     "APP_HTTP_THREADS: expected an integer, got \"abc\"");
    expect_env_error("APP_HTTP_THREADS", "", "APP_HTTP_THREADS: expected an integer, got \"\"");
    expect_env_error("APP_HTTP_THREADS", " 4", "APP_HTTP_THREADS: expected an integer, got \" 4\"");
    expect_env_error("APP_HTTP_THREADS", "100", "APP_HTTP_THREADS: 100 is out of range 1..64");
    expect_env_error("APP_SNAPSHOTS_PRODUCT", "-5",
                     "APP_SNAPSHOTS_PRODUCT: -5 is out of range 0..1000000");
    expect_env_error("APP_SNAPSHOTS_ORDER", "often",
                     "APP_SNAPSHOTS_ORDER: expected an integer, got \"often\"");
    expect_env_error("APP_POSTGRES_DSN", "", "APP_POSTGRES_DSN: missing required value");
    expect_env_error("APP_POSTGRES_CONTEXT_ROLES", "yes",
                     "APP_POSTGRES_CONTEXT_ROLES: expected true or false, got \"yes\"");
    expect_env_error("APP_REDIS_URL", "tcp://x",
                     "APP_REDIS_URL: must start with redis://, got \"tcp://x\"");
    expect_env_error("APP_HTTP_LISTEN", "nope",
                     "APP_HTTP_LISTEN: expected \"host:port\" or \"[ipv6]:port\", got \"nope\"");
    expect_env_error("APP_LOG_LEVEL", "loud",
                     "APP_LOG_LEVEL: unknown level \"loud\" (expected debug, info, warn or "
                     "error)");
    expect_env_error("APP_CONTEXTS", "user,shipping",
                     "APP_CONTEXTS: unknown context \"shipping\" (expected user, order or "
                     "inventory)");
    expect_env_error("APP_CONTEXTS", "user,user", "APP_CONTEXTS: duplicate context \"user\"");
    expect_env_error("APP_CONTEXTS", " , ", "APP_CONTEXTS: at least one context is required");
    /* Secrets are named, never echoed. */
    expect_env_error("APP_REDIS_URL", "rediss://:hunter2@cache:6380/0",
                     "APP_REDIS_URL: must start with redis://, got \"rediss://:***@cache:6380/0\"");
    expect_env_error("APP_REMOTE_USER", "https://svc:hunter2@user.mesh",
                     "APP_REMOTE_USER: must start with http://, got \"https://svc:***@user.mesh\"");
    char dsn[1100], token[300];
    snprintf(dsn, sizeof dsn, "host=db password='hunter 2' dbname=%01030d", 0);
    memset(token, 'k', sizeof token - 1);
    memcpy(token, "sekrit", 6);
    token[sizeof token - 1] = '\0';
    const env_var long_dsn[] = {{"APP_POSTGRES_DSN", dsn}, {NULL, NULL}};
    const env_var long_token[] = {{"APP_REMOTE_TOKEN", token}, {NULL, NULL}};
    app_config cfg;
    app_error err = APP_ERROR_INIT;
    config_defaults(&cfg);
    fake_env = long_dsn;
    assert_int_equal(config_apply_env(&cfg, fake_lookup, &err), APP_ECONFIG);
    assert_null(strstr(err.message, "hunter"));
    assert_non_null(strstr(err.message, "password=***"));
    fake_env = long_token;
    assert_int_equal(config_apply_env(&cfg, fake_lookup, &err), APP_ECONFIG);
    assert_null(strstr(err.message, "sekrit"));
    assert_non_null(strstr(err.message, "***"));
}

static void test_env_applies_over_file(void **state)
{
    (void)state;
    app_config cfg;
    app_error err = APP_ERROR_INIT;
    setenv("APP_HTTP_THREADS", "9", 1);
    setenv("APP_CONTEXTS", "user", 1);
    int rc = load_text("http:\n  threads: 3\n  max_body_bytes: 77\n", &cfg, &err);
    unsetenv("APP_HTTP_THREADS");
    unsetenv("APP_CONTEXTS");
    if (rc)
        fail_msg("%s", err.message);
    assert_int_equal(cfg.http.threads, 9);
    assert_int_equal(cfg.http.max_body_bytes, 77);
    assert_int_equal(cfg.n_contexts, 1);

    setenv("APP_WORKERS_THREADS", "x", 1);
    rc = load_text("http:\n  threads: 3\n", &cfg, &err);
    unsetenv("APP_WORKERS_THREADS");
    assert_int_equal(rc, APP_ECONFIG);
    assert_string_equal(err.message, "APP_WORKERS_THREADS: expected an integer, got \"x\"");
}

/* ---- command line ---- */

static int parse(cli_args *args, app_error *err, ...)
{
    char *argv[16] = {"app"};
    int argc = 1;
    va_list ap;
    va_start(ap, err);
    for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 15;)
        argv[argc++] = a;
    va_end(ap);
    return cli_parse(argc, argv, args, err);
}

static void test_cli_commands(void **state)
{
    (void)state;
    cli_args a;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(parse(&a, &err, NULL), 0);
    assert_int_equal(a.command, CLI_SERVE);
    assert_string_equal(a.config_path, CLI_DEFAULT_CONFIG);
    assert_false(a.help);
    assert_false(a.version);

    assert_int_equal(parse(&a, &err, "--config", "x.yaml", "migrate", NULL), 0);
    assert_int_equal(a.command, CLI_MIGRATE);
    assert_string_equal(a.config_path, "x.yaml");
    assert_int_equal(parse(&a, &err, "check-config", "--config=y.yaml", NULL), 0);
    assert_int_equal(a.command, CLI_CHECK_CONFIG);
    assert_string_equal(a.config_path, "y.yaml");
    assert_int_equal(parse(&a, &err, "-c", "z.yaml", "serve", NULL), 0);
    assert_int_equal(a.command, CLI_SERVE);
    assert_string_equal(a.config_path, "z.yaml");

    assert_int_equal(parse(&a, &err, "replay", NULL), 0);
    assert_int_equal(a.command, CLI_REPLAY);
    assert_null(a.projection);
    assert_int_equal(parse(&a, &err, "replay", "--projection", "user_list", NULL), 0);
    assert_string_equal(a.projection, "user_list");
    assert_int_equal(parse(&a, &err, "--projection=orders", "replay", NULL), 0);
    assert_string_equal(a.projection, "orders");

    assert_int_equal(parse(&a, &err, "dlq", "list", NULL), 0);
    assert_int_equal(a.command, CLI_DLQ_LIST);
    assert_int_equal(parse(&a, &err, "dlq", "redrive", NULL), 0);
    assert_int_equal(a.command, CLI_DLQ_REDRIVE);
    assert_null(a.dlq_id);
    assert_int_equal(parse(&a, &err, "dlq", "redrive", "42", NULL), 0);
    assert_string_equal(a.dlq_id, "42");

    assert_int_equal(parse(&a, &err, "--help", "bogus", NULL), 0);
    assert_true(a.help);
    assert_int_equal(parse(&a, &err, "-h", NULL), 0);
    assert_true(a.help);
    assert_int_equal(parse(&a, &err, "--version", NULL), 0);
    assert_true(a.version);
    assert_int_equal(parse(&a, &err, "-V", NULL), 0);
    assert_true(a.version);
}

static void expect_cli_error(const char *message, const char *a1, const char *a2, const char *a3)
{
    cli_args a;
    app_error err = APP_ERROR_INIT;
    char *argv[4] = {"app", (char *)(uintptr_t)a1, (char *)(uintptr_t)a2, (char *)(uintptr_t)a3};
    int argc = 1 + (a1 != NULL) + (a2 != NULL) + (a3 != NULL);
    assert_int_equal(cli_parse(argc, argv, &a, &err), APP_ECONFIG);
    assert_string_equal(err.message, message);
}

static void test_cli_errors(void **state)
{
    (void)state;
    expect_cli_error("unknown option \"--bogus\"", "--bogus", NULL, NULL);
    expect_cli_error("unknown option \"-x\"", "serve", "-x", NULL);
    expect_cli_error("unknown command \"frobnicate\"", "frobnicate", NULL, NULL);
    expect_cli_error("unexpected argument \"extra\"", "migrate", "extra", NULL);
    expect_cli_error("option --config needs a file name", "--config", NULL, NULL);
    expect_cli_error("option --config needs a file name", "--config=", NULL, NULL);
    expect_cli_error("option --projection needs a name", "replay", "--projection", NULL);
    expect_cli_error("option --projection is only valid with replay", "serve", "--projection", "x");
    expect_cli_error("dlq needs a command: list or redrive [ID]", "dlq", NULL, NULL);
    expect_cli_error("unknown dlq command \"purge\" (list or redrive)", "dlq", "purge", NULL);
    expect_cli_error("unexpected argument \"7\"", "dlq", "list", "7");
}

static void test_cli_usage(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    cli_usage(f, "./app");
    fclose(f);
    const char *expected[] = {
        "usage: ./app",  "migrate",      "check-config", "replay",           "--projection",
        "--config",      "--help",       "--version",    "APP_POSTGRES_DSN", "APP_HTTP_LISTEN",
        "APP_REDIS_URL", "APP_CONTEXTS", APP_VERSION};
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
        if (!strstr(text, expected[i]))
            fail_msg("usage lacks %s", expected[i]);
    free(text);
}

/* tracing.*: OpenTelemetry's variables set it, APP_TRACING_* wins over them, and the
 * sampler is checked when the configuration is loaded. */
static void test_tracing(void **state)
{
    (void)state;
    app_config cfg;
    app_error err = APP_ERROR_INIT;
    config_defaults(&cfg);
    assert_string_equal(cfg.tracing.endpoint, "");
    assert_true(cfg.tracing.parent_based);
    assert_true(cfg.tracing.ratio == 1.0);
    const env_var otel[] = {{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"},
                            {"OTEL_SERVICE_NAME", "orders"},
                            {"APP_TRACING_SERVICE_NAME", "order-service"},
                            {"OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod"},
                            {NULL, NULL}};
    assert_int_equal(apply(otel, &cfg, &err), 0);
    assert_string_equal(cfg.tracing.endpoint, "http://collector:4318");
    assert_string_equal(cfg.tracing.service_name, "order-service");
    assert_string_equal(cfg.tracing.resource_attributes, "deployment.environment=prod");
    const env_var https[] = {{"OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318"},
                             {NULL, NULL}};
    assert_int_equal(apply(https, &cfg, &err), APP_ECONFIG);
    assert_non_null(strstr(err.message, "OTEL_EXPORTER_OTLP_ENDPOINT"));

    /* Samplers are OpenTelemetry's names, their argument a ratio. */
    assert_int_equal(
        load_text("tracing:\n  sampler: traceidratio\n  sampler_arg: \"0.25\"\n", &cfg, &err), 0);
    assert_false(cfg.tracing.parent_based);
    assert_true(cfg.tracing.ratio == 0.25);
    assert_int_equal(load_text("tracing:\n  sampler: parentbased_always_off\n", &cfg, &err), 0);
    assert_true(cfg.tracing.parent_based && cfg.tracing.ratio == 0);
    assert_int_equal(load_text("tracing:\n  sampler: sometimes\n", &cfg, &err), APP_ECONFIG);
    assert_non_null(strstr(err.message, "tracing.sampler"));
    assert_int_equal(load_text("tracing:\n  sampler_arg: \"1.5\"\n", &cfg, &err), APP_ECONFIG);
    assert_non_null(strstr(err.message, "tracing.sampler_arg"));
    assert_int_equal(load_text("tracing:\n  sampler_arg: half\n", &cfg, &err), APP_ECONFIG);
}

int main(void)
{
    const struct CMUnitTest config_tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_empty_file_and_no_file_give_defaults),
        cmocka_unit_test(test_checked_in_file_loads),
        cmocka_unit_test(test_every_key_from_file),
        cmocka_unit_test(test_wrong_type),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_missing_required),
        cmocka_unit_test(test_duplicate_key),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_top_level_not_mapping),
        cmocka_unit_test(test_unopenable_file),
        cmocka_unit_test(test_strings_too_long),
        cmocka_unit_test(test_listen),
        cmocka_unit_test(test_auth_and_rate_limit),
        cmocka_unit_test(test_tracing),
        cmocka_unit_test(test_redis_url_and_log_level),
        cmocka_unit_test(test_contexts),
        cmocka_unit_test(test_kafka_inbox),
        cmocka_unit_test(test_env_overrides_every_key),
        cmocka_unit_test(test_remote_and_internal),
        cmocka_unit_test(test_api_key_scopes),
        cmocka_unit_test(test_env_errors),
        cmocka_unit_test(test_env_applies_over_file),
    };
    const struct CMUnitTest cli_tests[] = {
        cmocka_unit_test(test_cli_commands),
        cmocka_unit_test(test_cli_errors),
        cmocka_unit_test(test_cli_usage),
    };
    int failed = cmocka_run_group_tests_name("config", config_tests, clear_app_env, NULL);
    failed += cmocka_run_group_tests_name("cli", cli_tests, NULL, NULL);
    return failed ? 1 : 0;
}
