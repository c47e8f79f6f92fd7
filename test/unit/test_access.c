/* Who a request comes from and whether it may go on: API keys against their SHA-256
 * digests, consumers named by trusted gateways only, and a token bucket per caller driven
 * by an explicit clock, so refills are exact and nothing depends on how fast the test runs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <sys/socket.h>

#include "core/sha256.h"
#include "http/access.h"

static config_api_key key_of(const char *consumer, const char *key)
{
    config_api_key k = {0};
    snprintf(k.consumer, sizeof k.consumer, "%s", consumer);
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, key, strlen(key));
    sha256_final(&c, k.sha256);
    return k;
}

static config_network net_of(const char *addr, int prefix)
{
    config_network n = {0};
    if (inet_pton(AF_INET, addr, n.addr) == 1) {
        n.family = AF_INET;
    } else {
        assert_int_equal(inet_pton(AF_INET6, addr, n.addr), 1);
        n.family = AF_INET6;
    }
    n.prefix = prefix;
    return n;
}

static http_access *make(const http_access_options *o)
{
    http_access *a = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(http_access_new(&a, o, &err), 0);
    return a;
}

/* The actor identify gives, or "!<code>" when it refuses. */
static const char *who(const http_access *a, const http_caller *c)
{
    static char out[160];
    char actor[129];
    app_error err = APP_ERROR_INIT;
    int rc = http_access_identify(a, c, actor, sizeof actor, NULL, &err);
    if (rc)
        snprintf(out, sizeof out, "!%d", rc);
    else
        snprintf(out, sizeof out, "%s", actor);
    return out;
}

#define REFUSED_401 "!-2"
#define REFUSED_400 "!-1"

static void test_keys_required(void **state)
{
    (void)state;
    config_api_key keys[] = {key_of("alice", "secret-a"), key_of("bob", "secret-b")};
    http_access_options o = {.required = true, .keys = keys, .n_keys = 2};
    http_access *a = make(&o);

    assert_string_equal(who(a, &(http_caller){.peer = "127.0.0.1", .apikey = "secret-a"}), "alice");
    assert_string_equal(who(a, &(http_caller){.peer = "127.0.0.1", .apikey = "secret-b"}), "bob");
    assert_string_equal(who(a, &(http_caller){.peer = "127.0.0.1"}), REFUSED_401);
    assert_string_equal(who(a, &(http_caller){.peer = "127.0.0.1", .apikey = "secret-c"}),
                        REFUSED_401);
    assert_string_equal(who(a, &(http_caller){.peer = "127.0.0.1", .apikey = ""}), REFUSED_401);
    /* A key differing in its last byte, and a prefix of a key, are not the key. */
    assert_string_equal(who(a, &(http_caller){.peer = "127.0.0.1", .apikey = "secret-A"}),
                        REFUSED_401);
    assert_string_equal(who(a, &(http_caller){.peer = "127.0.0.1", .apikey = "secret-"}),
                        REFUSED_401);
    /* Gateway headers from anyone else are ignored: still no consumer. */
    assert_string_equal(who(a, &(http_caller){.peer = "127.0.0.1", .consumer_username = "mallory"}),
                        REFUSED_401);

    app_error err = APP_ERROR_INIT;
    char actor[129];
    assert_int_equal(
        http_access_identify(a, &(http_caller){.peer = "::1"}, actor, sizeof actor, NULL, &err),
        APP_EUNAUTH);
    assert_non_null(strstr(err.message, "apikey"));
    http_access_free(a);
}

/* Guessing keys costs: ten refused keys from an address, then it is refused before its key is
 * looked at, even a good one, until its bucket refills; other addresses are not affected. */
static void test_failed_keys_are_rate_limited(void **state)
{
    (void)state;
    config_api_key keys[] = {key_of("alice", "secret-a")};
    http_access_options o = {.required = true, .keys = keys, .n_keys = 1}; /* no rate limit */
    http_access *a = make(&o);
    app_error err = APP_ERROR_INIT;
    double t = 1000;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(http_access_blocked(a, "192.0.2.7", t, &err), 0);
        http_access_failed(a, "192.0.2.7", t);
    }
    assert_int_equal(http_access_blocked(a, "192.0.2.7", t, &err), APP_ERATELIMIT);
    assert_non_null(strstr(err.message, "refused credentials"));
    /* The same /64 is the same address; another address is not blocked. */
    assert_int_equal(http_access_blocked(a, "2001:db8::1", t, &err), 0);
    for (int i = 0; i < 10; i++)
        http_access_failed(a, "2001:db8::1", t);
    assert_int_equal(http_access_blocked(a, "2001:db8::ffff", t, &err), APP_ERATELIMIT);
    assert_int_equal(http_access_blocked(a, "198.51.100.1", t, &err), 0);
    /* Looking does not take a token; two seconds give one back. */
    assert_int_equal(http_access_blocked(a, "192.0.2.7", t + 1, &err), APP_ERATELIMIT);
    assert_int_equal(http_access_blocked(a, "192.0.2.7", t + 2.1, &err), 0);
    assert_int_equal(http_access_blocked(a, "192.0.2.7", t + 2.1, &err), 0);
    http_access_free(a);
}

static void test_keys_optional(void **state)
{
    (void)state;
    config_api_key keys[] = {key_of("alice", "secret-a")};
    http_access_options o = {.keys = keys, .n_keys = 1};
    http_access *a = make(&o);
    assert_string_equal(who(a, &(http_caller){.peer = "127.0.0.1", .apikey = "secret-a"}), "alice");
    assert_string_equal(who(a, &(http_caller){.peer = "127.0.0.1"}), "");
    assert_string_equal(who(a, &(http_caller){.peer = "127.0.0.1", .apikey = "wrong"}), "");
    http_access_free(a);
}

static void test_trusted_gateways(void **state)
{
    (void)state;
    config_api_key keys[] = {key_of("alice", "secret-a")};
    config_network gws[] = {net_of("10.1.0.0", 16), net_of("192.168.7.9", 32), net_of("fd00::", 8),
                            net_of("172.16.0.0", 12)};
    http_access_options o = {
        .required = true, .keys = keys, .n_keys = 1, .gateways = gws, .n_gateways = 4};
    http_access *a = make(&o);

    assert_string_equal(who(a, &(http_caller){.peer = "10.1.200.3", .consumer_username = "kong-u"}),
                        "kong-u");
    assert_string_equal(who(a, &(http_caller){.peer = "10.1.0.1", .consumer_id = "c0ffee"}),
                        "c0ffee");
    /* The username wins over the id, and over an API key Kong passed on. */
    assert_string_equal(who(a, &(http_caller){.peer = "192.168.7.9",
                                              .consumer_username = "u",
                                              .consumer_id = "i",
                                              .apikey = "secret-a"}),
                        "u");
    assert_string_equal(who(a, &(http_caller){.peer = "fd12:3456::1", .consumer_username = "v6"}),
                        "v6");
    assert_string_equal(who(a, &(http_caller){.peer = "172.31.255.255", .consumer_id = "edge"}),
                        "edge");
    /* An IPv4 peer seen through a dual-stack socket. */
    assert_string_equal(
        who(a, &(http_caller){.peer = "::ffff:10.1.2.3", .consumer_username = "mapped"}), "mapped");

    /* Just outside each network. */
    assert_string_equal(who(a, &(http_caller){.peer = "10.2.0.1", .consumer_username = "x"}),
                        REFUSED_401);
    assert_string_equal(who(a, &(http_caller){.peer = "192.168.7.8", .consumer_username = "x"}),
                        REFUSED_401);
    assert_string_equal(who(a, &(http_caller){.peer = "fe00::1", .consumer_username = "x"}),
                        REFUSED_401);
    assert_string_equal(who(a, &(http_caller){.peer = "172.32.0.1", .consumer_username = "x"}),
                        REFUSED_401);
    assert_string_equal(who(a, &(http_caller){.peer = "not-an-address", .consumer_id = "x"}),
                        REFUSED_401);

    /* Kong's anonymous consumer is no consumer; a key of ours still counts. */
    assert_string_equal(
        who(a,
            &(http_caller){.peer = "10.1.0.1", .consumer_username = "anon", .anonymous = "true"}),
        REFUSED_401);
    assert_string_equal(who(a, &(http_caller){.peer = "10.1.0.1",
                                              .consumer_username = "anon",
                                              .anonymous = "true",
                                              .apikey = "secret-a"}),
                        "alice");

    char long_name[200];
    memset(long_name, 'n', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    assert_string_equal(who(a, &(http_caller){.peer = "10.1.0.1", .consumer_username = long_name}),
                        REFUSED_400);
    assert_string_equal(who(a, &(http_caller){.peer = "10.1.0.1", .consumer_username = "a\tb"}),
                        REFUSED_400);
    http_access_free(a);
}

static void test_rate_limit_buckets(void **state)
{
    (void)state;
    http_access_options o = {.requests_per_minute = 60, .burst = 3}; /* one a second */
    http_access *a = make(&o);
    app_error err = APP_ERROR_INIT;
    http_quota q;

    for (int i = 0; i < 3; i++) {
        assert_int_equal(http_access_admit(a, "c:alice", 100.0, &q, &err), 0);
        assert_true(q.limited);
        assert_int_equal(q.limit, 3);
        assert_int_equal(q.remaining, 2 - i);
    }
    assert_int_equal(http_access_admit(a, "c:alice", 100.0, &q, &err), APP_ERATELIMIT);
    assert_int_equal(q.retry_after_s, 1);
    assert_int_equal(q.remaining, 0);
    assert_non_null(strstr(err.message, "60 requests a minute"));
    /* Another caller has a bucket of its own. */
    assert_int_equal(http_access_admit(a, "c:bob", 100.0, &q, &err), 0);
    assert_int_equal(q.remaining, 2);
    /* Half a token is not enough; a whole one is. */
    assert_int_equal(http_access_admit(a, "c:alice", 100.5, &q, &err), APP_ERATELIMIT);
    assert_int_equal(http_access_admit(a, "c:alice", 101.0, &q, &err), 0);
    assert_int_equal(http_access_admit(a, "c:alice", 101.0, &q, &err), APP_ERATELIMIT);
    /* A long pause fills the bucket, never past its size. */
    assert_int_equal(http_access_admit(a, "c:alice", 1000.0, &q, &err), 0);
    assert_int_equal(q.remaining, 2);
    /* A clock that goes back adds nothing. */
    assert_int_equal(http_access_admit(a, "c:alice", 10.0, &q, &err), 0);
    assert_int_equal(http_access_admit(a, "c:alice", 10.0, &q, &err), 0);
    assert_int_equal(http_access_admit(a, "c:alice", 10.0, &q, &err), APP_ERATELIMIT);
    http_access_free(a);

    /* Slow rates: the wait is whole seconds, rounded up. */
    o = (http_access_options){.requests_per_minute = 1, .burst = 1};
    a = make(&o);
    assert_int_equal(http_access_admit(a, "a:127.0.0.1", 0.0, &q, &err), 0);
    assert_int_equal(http_access_admit(a, "a:127.0.0.1", 0.0, &q, &err), APP_ERATELIMIT);
    assert_int_equal(q.retry_after_s, 60);
    assert_int_equal(http_access_admit(a, "a:127.0.0.1", 59.5, &q, &err), APP_ERATELIMIT);
    assert_int_equal(q.retry_after_s, 1);
    assert_int_equal(http_access_admit(a, "a:127.0.0.1", 60.0, &q, &err), 0);
    http_access_free(a);

    /* No limit configured: nothing tracked, nothing refused. */
    o = (http_access_options){.requests_per_minute = 0, .burst = 1};
    a = make(&o);
    for (int i = 0; i < 100; i++)
        assert_int_equal(http_access_admit(a, "c:x", 0.0, &q, &err), 0);
    assert_false(q.limited);
    assert_int_equal(http_access_callers(a), 0);
    http_access_free(a);
}

static void test_rate_limit_memory_is_bounded(void **state)
{
    (void)state;
    http_access_options o = {.requests_per_minute = 60, .burst = 2, .max_callers = 160};
    http_access *a = make(&o);
    app_error err = APP_ERROR_INIT;
    http_quota q;
    char name[32];
    /* Many callers at once: the table stops growing and the extra ones go untracked. */
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "a:10.0.%d.%d", i / 256, i % 256);
        assert_int_equal(http_access_admit(a, name, 0.0, &q, &err), 0);
    }
    size_t held = http_access_callers(a);
    assert_true(held <= 160);
    assert_true(held >= 100);
    /* Later their buckets are full again, so they make room for new callers. */
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "c:later-%d", i);
        assert_int_equal(http_access_admit(a, name, 10.0, &q, &err), 0);
    }
    assert_true(http_access_callers(a) <= 160);
    assert_int_equal(http_access_admit(a, "c:new", 20.0, &q, &err), 0);
    assert_int_equal(http_access_admit(a, "c:new", 20.0, &q, &err), 0);
    assert_int_equal(http_access_admit(a, "c:new", 20.0, &q, &err), APP_ERATELIMIT);
    http_access_free(a);
}

static void test_caller_buckets(void **state)
{
    (void)state;
    char who[160];
    http_access_caller("alice", "127.0.0.1", who, sizeof who);
    assert_string_equal(who, "c:alice");
    http_access_caller("", "192.0.2.7", who, sizeof who);
    assert_string_equal(who, "a:192.0.2.7");
    http_access_caller(NULL, "::ffff:192.0.2.7", who, sizeof who);
    assert_string_equal(who, "a:192.0.2.7");
    /* Every address of one /64 shares a bucket; the next /64 has its own. */
    http_access_caller("", "2001:db8:1:2:aaaa:bbbb:cccc:dddd", who, sizeof who);
    assert_string_equal(who, "a:2001:db8:1:2::/64");
    http_access_caller("", "2001:db8:1:2::1", who, sizeof who);
    assert_string_equal(who, "a:2001:db8:1:2::/64");
    http_access_caller("", "2001:db8:1:3::1", who, sizeof who);
    assert_string_equal(who, "a:2001:db8:1:3::/64");
    http_access_caller("", "::1", who, sizeof who);
    assert_string_equal(who, "a:::/64");
    http_access_caller("", NULL, who, sizeof who);
    assert_string_equal(who, "a:-");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys_required),
        cmocka_unit_test(test_keys_optional),
        cmocka_unit_test(test_failed_keys_are_rate_limited),
        cmocka_unit_test(test_trusted_gateways),
        cmocka_unit_test(test_rate_limit_buckets),
        cmocka_unit_test(test_rate_limit_memory_is_bounded),
        cmocka_unit_test(test_caller_buckets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
