/* redis:// URL parsing: accepted forms, defaults, and clear APP_ECONFIG rejections. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <string.h>

#include "adapters/redis/rds_url.h"

static rds_url parse_ok(const char *url)
{
    rds_url u;
    app_error err = APP_ERROR_INIT;
    int rc = rds_url_parse(url, &u, &err);
    if (rc != 0)
        fail_msg("%s: %s", url, err.message);
    return u;
}

static void expect_reject(const char *url, const char *why)
{
    rds_url u;
    app_error err = APP_ERROR_INIT;
    int rc = rds_url_parse(url, &u, &err);
    if (rc != APP_ECONFIG)
        fail_msg("%s was accepted (rc %d)", url ? url : "(null)", rc);
    assert_int_equal(err.code, APP_ECONFIG);
    assert_non_null(strstr(err.message, "invalid redis url"));
    if (why && !strstr(err.message, why))
        fail_msg("%s: message \"%s\" does not mention \"%s\"", url, err.message, why);
    assert_string_equal(u.host, "");
}

static void test_defaults(void **state)
{
    (void)state;
    rds_url u = parse_ok("redis://localhost");
    assert_string_equal(u.host, "localhost");
    assert_int_equal(u.port, 6379);
    assert_int_equal(u.db, 0);
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "");
    u = parse_ok("redis://cache.internal/");
    assert_string_equal(u.host, "cache.internal");
    assert_int_equal(u.db, 0);
}

static void test_ipv4_port_db(void **state)
{
    (void)state;
    rds_url u = parse_ok("redis://127.0.0.1:56999/15");
    assert_string_equal(u.host, "127.0.0.1");
    assert_int_equal(u.port, 56999);
    assert_int_equal(u.db, 15);
    u = parse_ok("REDIS://h:1/0");
    assert_int_equal(u.port, 1);
}

static void test_ipv6(void **state)
{
    (void)state;
    rds_url u = parse_ok("redis://[::1]:7000/2");
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 7000);
    assert_int_equal(u.db, 2);
    u = parse_ok("redis://[fe80::1:2]");
    assert_string_equal(u.host, "fe80::1:2");
    assert_int_equal(u.port, 6379);
}

static void test_credentials(void **state)
{
    (void)state;
    rds_url u = parse_ok("redis://:s3cret@h:6380/1");
    assert_string_equal(u.user, "");
    assert_string_equal(u.password, "s3cret");
    assert_int_equal(u.port, 6380);
    u = parse_ok("redis://alice:pa%40ss%2Fw@h");
    assert_string_equal(u.user, "alice");
    assert_string_equal(u.password, "pa@ss/w");
    u = parse_ok("redis://:p@ss@h"); /* the last '@' ends the credentials */
    assert_string_equal(u.password, "p@ss");
    assert_string_equal(u.host, "h");
    u = parse_ok("redis://:@h"); /* empty password: no AUTH */
    assert_string_equal(u.password, "");
}

static void test_rejects(void **state)
{
    (void)state;
    expect_reject(NULL, "empty");
    expect_reject("", "empty");
    expect_reject("http://h", "scheme");
    expect_reject("rediss://h", "scheme");
    expect_reject("unix:///tmp/r.sock", "scheme");
    expect_reject("redis://", "host");
    expect_reject("redis://:6379", "host");
    expect_reject("redis://h:0", "port");
    expect_reject("redis://h:65536", "port");
    expect_reject("redis://h:", "port");
    expect_reject("redis://h:12a", "port");
    expect_reject("redis://h:-1", "port");
    expect_reject("redis://h/16", "database");
    expect_reject("redis://h/-1", "database");
    expect_reject("redis://h/abc", "database");
    expect_reject("redis://h/1/2", "database");
    expect_reject("redis://h?db=1", "query");
    expect_reject("redis://h#x", "query");
    expect_reject("redis://[::1", "']'");
    expect_reject("redis://[]:1", "IPv6");
    expect_reject("redis://[zz::1]", "IPv6");
    expect_reject("redis://[::1]x", "IPv6");
    expect_reject("redis://bad host", "host");
    expect_reject("redis://secret@h", "credentials");
    expect_reject("redis://alice:@h", "password");
    expect_reject("redis://:%zz@h", "percent");
    expect_reject("redis://:%0@h", "percent");
    expect_reject("redis://:a%00b@h", "percent");
}

static void test_password_not_echoed(void **state)
{
    (void)state;
    rds_url u;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(rds_url_parse("redis://:hunter2@h:99999", &u, &err), APP_ECONFIG);
    assert_null(strstr(err.message, "hunter2"));
    assert_null(strstr(err.detail, "hunter2"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults), cmocka_unit_test(test_ipv4_port_db),
        cmocka_unit_test(test_ipv6),     cmocka_unit_test(test_credentials),
        cmocka_unit_test(test_rejects),  cmocka_unit_test(test_password_not_echoed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
