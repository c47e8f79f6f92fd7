/* The router alone: literal and {name} segments, 404 versus 405 with Allow, literal
 * precedence, trailing slashes, percent-decoding and malformed patterns. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "http/router.h"

static int rt_stub(bus *b, const http_req *req, http_res *res, app_error *err)
{
    (void)b;
    (void)req;
    (void)res;
    (void)err;
    return 0;
}

static const http_route_def users_routes[] = {
    {HTTP_M_POST, "/v1/users", rt_stub, HTTP_ROUTE_JSON_BODY, NULL, NULL},
    {HTTP_M_GET, "/v1/users/{id}", rt_stub, 0, "user", NULL},
    {HTTP_M_PUT, "/v1/users/{id}/email", rt_stub, 0, NULL, NULL},
    {HTTP_M_GET, "/v1/users/me", rt_stub, 0, "me", NULL},
    {HTTP_M_GET, "/v1/users/{id}/orders/{order}", rt_stub, 0, NULL, NULL},
    {0, NULL, NULL, 0, NULL, NULL},
};

static const http_route_def ops_routes_t[] = {
    {HTTP_M_GET, "/", rt_stub, 0, "root", NULL},
    {HTTP_M_DELETE, "/v1/users/{id}", rt_stub, 0, "user-delete", NULL},
    {0, NULL, NULL, 0, NULL, NULL},
};

static int setup(void **state)
{
    http_router *r = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(http_router_new(&r, &err), 0);
    assert_int_equal(http_router_add(r, users_routes, &err), 0);
    assert_int_equal(http_router_add(r, ops_routes_t, &err), 0);
    *state = r;
    return 0;
}

static int teardown(void **state)
{
    http_router_free(*state);
    return 0;
}

static int match(void **state, http_method m, const char *path, http_route_match *out)
{
    app_error err = APP_ERROR_INIT;
    int rc = http_router_match(*state, m, path, out, &err);
    if (rc)
        assert_int_equal(err.code, rc);
    return rc;
}

static void test_literal_and_params(void **state)
{
    http_route_match m;
    assert_int_equal(match(state, HTTP_M_POST, "/v1/users", &m), 0);
    assert_ptr_equal(m.route, &users_routes[0]);
    assert_int_equal(m.n_params, 0);
    http_route_match_clear(&m);

    assert_int_equal(match(state, HTTP_M_GET, "/v1/users/abc-123", &m), 0);
    assert_ptr_equal(m.route, &users_routes[1]);
    assert_int_equal(m.n_params, 1);
    assert_string_equal(m.param_names[0], "id");
    assert_string_equal(m.param_values[0], "abc-123");
    http_route_match_clear(&m);

    assert_int_equal(match(state, HTTP_M_GET, "/v1/users/u1/orders/o2", &m), 0);
    assert_int_equal(m.n_params, 2);
    assert_string_equal(m.param_names[1], "order");
    assert_string_equal(m.param_values[0], "u1");
    assert_string_equal(m.param_values[1], "o2");
    http_req req = {.n_params = m.n_params};
    memcpy(req.param_names, m.param_names, sizeof req.param_names);
    memcpy(req.param_values, m.param_values, sizeof req.param_values);
    assert_string_equal(http_req_param(&req, "order"), "o2");
    assert_null(http_req_param(&req, "nope"));
    http_route_match_clear(&m);

    assert_int_equal(match(state, HTTP_M_GET, "/", &m), 0);
    assert_ptr_equal(m.route, &ops_routes_t[0]);
    http_route_match_clear(&m);
}

static void test_literal_wins(void **state)
{
    http_route_match m;
    assert_int_equal(match(state, HTTP_M_GET, "/v1/users/me", &m), 0);
    assert_string_equal(m.route->name, "me");
    assert_int_equal(m.n_params, 0);
    http_route_match_clear(&m);
    /* The literal does not take DELETE, the parameter route from another table does. */
    assert_int_equal(match(state, HTTP_M_DELETE, "/v1/users/me", &m), 0);
    assert_string_equal(m.route->name, "user-delete");
    http_route_match_clear(&m);
}

static void test_not_found(void **state)
{
    http_route_match m;
    assert_int_equal(match(state, HTTP_M_GET, "/v1/nothing", &m), APP_ENOTFOUND);
    assert_null(m.route);
    assert_int_equal(match(state, HTTP_M_POST, "/v1/users/", &m), APP_ENOTFOUND);
    assert_int_equal(match(state, HTTP_M_GET, "/v1/users//orders/x", &m), APP_ENOTFOUND);
    assert_int_equal(match(state, HTTP_M_GET, "/v1//users", &m), APP_ENOTFOUND);
    assert_int_equal(match(state, HTTP_M_GET, "", &m), APP_ENOTFOUND);
    assert_int_equal(match(state, HTTP_M_GET, "v1/users", &m), APP_ENOTFOUND);
    assert_int_equal(match(state, HTTP_M_GET, "/v1/users/a/b/c/d/e/f", &m), APP_ENOTFOUND);
}

static void test_method_not_allowed(void **state)
{
    http_route_match m;
    assert_int_equal(match(state, HTTP_M_GET, "/v1/users", &m), APP_EMETHOD);
    assert_string_equal(m.allow, "POST");
    assert_int_equal(match(state, HTTP_M_POST, "/v1/users/42", &m), APP_EMETHOD);
    assert_string_equal(m.allow, "GET, HEAD, DELETE");
    assert_int_equal(match(state, HTTP_M_OTHER, "/v1/users/42/email", &m), APP_EMETHOD);
    assert_string_equal(m.allow, "PUT");
    /* HEAD rides along with GET. */
    assert_int_equal(match(state, HTTP_M_HEAD, "/v1/users/42", &m), 0);
    assert_string_equal(m.route->name, "user");
    http_route_match_clear(&m);
}

static void test_percent_decoding(void **state)
{
    http_route_match m;
    assert_int_equal(match(state, HTTP_M_GET, "/v1/us%65rs/a%20b", &m), 0);
    assert_string_equal(m.param_values[0], "a b");
    http_route_match_clear(&m);
    /* An encoded slash stays inside its segment. */
    assert_int_equal(match(state, HTTP_M_GET, "/v1/users/a%2Fb", &m), 0);
    assert_string_equal(m.param_values[0], "a/b");
    http_route_match_clear(&m);
    assert_int_equal(match(state, HTTP_M_GET, "/v1/users/%C3%A9", &m), 0);
    assert_string_equal(m.param_values[0], "\xc3\xa9");
    http_route_match_clear(&m);

    assert_int_equal(match(state, HTTP_M_GET, "/v1/users/a%00b", &m), APP_EBADREQ);
    assert_int_equal(match(state, HTTP_M_GET, "/v1/users/a%zz", &m), APP_EBADREQ);
    assert_int_equal(match(state, HTTP_M_GET, "/v1/users/a%4", &m), APP_EBADREQ);
    assert_int_equal(match(state, HTTP_M_GET, "/v1/users/%", &m), APP_EBADREQ);
    assert_int_equal(match(state, HTTP_M_GET, "/v1/users/%FF", &m), APP_EBADREQ);

    char *out = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(http_path_decode("/a%2Fb/c", &out, &err), 0);
    assert_string_equal(out, "/a/b/c");
    free(out);
    assert_int_equal(http_path_decode("/a%00", &out, &err), APP_EBADREQ);
    assert_null(out);
}

static void test_bad_patterns(void **state)
{
    (void)state;
    static const http_route_def bad[][2] = {
        {{HTTP_M_GET, "nope", rt_stub, 0, NULL, NULL}, {0}},
        {{HTTP_M_GET, "/a//b", rt_stub, 0, NULL, NULL}, {0}},
        {{HTTP_M_GET, "/a/{}", rt_stub, 0, NULL, NULL}, {0}},
        {{HTTP_M_GET, "/a/{x", rt_stub, 0, NULL, NULL}, {0}},
        {{HTTP_M_GET, "/a/{a-b}", rt_stub, 0, NULL, NULL}, {0}},
        {{HTTP_M_GET, "/{a}/{b}/{c}/{d}/{e}", rt_stub, 0, NULL, NULL}, {0}},
        {{HTTP_M_GET, "/a/", rt_stub, 0, NULL, NULL}, {0}},
        {{0, "/a", rt_stub, 0, NULL, NULL}, {0}},
        {{HTTP_M_GET, "/a", NULL, 0, NULL, NULL}, {0}},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        http_router *r = NULL;
        app_error err = APP_ERROR_INIT;
        assert_int_equal(http_router_new(&r, &err), 0);
        if (http_router_add(r, bad[i], &err) != APP_EINTERNAL)
            fail_msg("pattern %zu accepted", i);
        http_route_match m;
        assert_int_equal(http_router_match(r, HTTP_M_GET, "/a", &m, &err), APP_ENOTFOUND);
        http_router_free(r);
    }
}

static void test_methods_format(void **state)
{
    (void)state;
    char buf[64];
    http_methods_format(HTTP_M_GET | HTTP_M_POST, buf, sizeof buf);
    assert_string_equal(buf, "GET, POST");
    http_methods_format(0, buf, sizeof buf);
    assert_string_equal(buf, "");
    char small[8];
    http_methods_format(HTTP_M_GET | HTTP_M_POST | HTTP_M_DELETE, small, sizeof small);
    assert_string_equal(small, "GET");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_literal_and_params, setup, teardown),
        cmocka_unit_test_setup_teardown(test_literal_wins, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_found, setup, teardown),
        cmocka_unit_test_setup_teardown(test_method_not_allowed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_percent_decoding, setup, teardown),
        cmocka_unit_test(test_bad_patterns),
        cmocka_unit_test(test_methods_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
