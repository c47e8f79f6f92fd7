/* Money: parsing from JSON (types vs values), ISO 4217 codes, arithmetic bounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "core/json.h"
#include "core/money.h"

static int parse(const char *text, money *m, app_error *err)
{
    cJSON *o = json_parse_n(text, strlen(text));
    assert_non_null(o);
    memset(err, 0, sizeof *err);
    int rc = money_from_json(o, "price", m, err);
    cJSON_Delete(o);
    return rc;
}

static void test_parse(void **state)
{
    (void)state;
    money m;
    app_error err;
    assert_int_equal(parse("{\"price\":{\"amount\":1250,\"currency\":\"EUR\"}}", &m, &err), 0);
    assert_int_equal(m.amount, 1250);
    assert_string_equal(m.currency, "EUR");
    assert_int_equal(parse("{\"price\":{\"amount\":0,\"currency\":\"JPY\"}}", &m, &err), 0);
    assert_int_equal(parse("{\"price\":{\"amount\":-1,\"currency\":\"EUR\"}}", &m, &err),
                     APP_EINVAL);
    assert_string_equal(err.fields[0].field, "price.amount");
    assert_int_equal(parse("{\"price\":{\"amount\":1.5,\"currency\":\"EUR\"}}", &m, &err),
                     APP_EINVAL);
    assert_int_equal(parse("{\"price\":{\"amount\":1000000000001,\"currency\":\"EUR\"}}", &m, &err),
                     APP_EINVAL);
    assert_int_equal(parse("{\"price\":{\"amount\":1,\"currency\":\"eur\"}}", &m, &err),
                     APP_EINVAL);
    assert_string_equal(err.fields[0].field, "price.currency");
    assert_int_equal(parse("{\"price\":{\"amount\":1,\"currency\":\"XYZ\"}}", &m, &err),
                     APP_EINVAL);
    assert_int_equal(parse("{\"price\":{\"amount\":\"1\",\"currency\":\"EUR\"}}", &m, &err),
                     APP_EBADREQ);
    assert_int_equal(parse("{\"price\":\"12 EUR\"}", &m, &err), APP_EBADREQ);
    assert_int_equal(parse("{}", &m, &err), APP_EINVAL);
    assert_string_equal(err.fields[0].field, "price");
    assert_int_equal(parse("{\"price\":{}}", &m, &err), APP_EINVAL);
    assert_int_equal(err.n_fields, 2);
}

static void test_codes(void **state)
{
    (void)state;
    assert_true(money_currency_valid("EUR"));
    assert_true(money_currency_valid("USD"));
    assert_true(money_currency_valid("AED"));
    assert_true(money_currency_valid("ZWG"));
    assert_false(money_currency_valid("EU"));
    assert_false(money_currency_valid("EURO"));
    assert_false(money_currency_valid(""));
    assert_false(money_currency_valid(NULL));
}

static void test_arithmetic(void **state)
{
    (void)state;
    app_error err = APP_ERROR_INIT;
    money a = {0, ""}, p = {1250, "EUR"}, usd = {1, "USD"}, line;
    assert_int_equal(money_mul(&p, 3, &line, &err), 0);
    assert_int_equal(line.amount, 3750);
    assert_int_equal(money_add(&a, &line, &err), 0);
    assert_int_equal(money_add(&a, &p, &err), 0);
    assert_int_equal(a.amount, 5000);
    assert_string_equal(a.currency, "EUR");
    assert_int_equal(money_add(&a, &usd, &err), APP_EINVAL);
    money big = {MONEY_MAX_AMOUNT, "EUR"};
    assert_int_equal(money_mul(&big, 1000, &line, &err), 0);
    assert_int_equal(money_mul(&big, 1001, &line, &err), APP_EINVAL);
    assert_int_equal(money_mul(&p, -1, &line, &err), APP_EINVAL);
    cJSON *j = money_to_json(&p);
    char *text = cJSON_PrintUnformatted(j);
    assert_string_equal(text, "{\"amount\":1250,\"currency\":\"EUR\"}");
    cJSON_free(text);
    cJSON_Delete(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_codes),
        cmocka_unit_test(test_arithmetic),
    };
    return cmocka_run_group_tests_name("money", tests, NULL, NULL);
}
