/* The contexts' contracts with each other, checked at start-up: every message a context sends
 * is handled by the context its name belongs to, which runs here or has a remote, and every
 * log a subscription reads is a context's. A misspelt name stops the start (exit status 2) instead
 * of leaving orders pending until their deadline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "kernel/module.h"

static size_t count(const app_module *const *all)
{
    size_t n = 0;
    while (all[n])
        n++;
    return n;
}

static const char *const every_remote[] = {"user", "order", "inventory"};

/* Every context of this build, all loaded or one at a time with the others remote. */
static void test_shipped_contracts_hold(void **state)
{
    (void)state;
    app_error err = APP_ERROR_INIT;
    if (mod_check_contracts(app_modules, count(app_modules), app_modules, NULL, 0, &err) != 0)
        fail_msg("%s", err.message);
    for (size_t i = 0; app_modules[i]; i++)
        if (mod_check_contracts(&app_modules[i], 1, app_modules, every_remote, 3, &err) != 0)
            fail_msg("%s alone: %s", app_modules[i]->name, err.message);
    /* The order context declares what it asks of the others. */
    const app_module *order = app_module_find("order");
    assert_non_null(order);
    assert_non_null(order->sends);
    bool reserves = false;
    for (size_t k = 0; order->sends[k]; k++)
        reserves = reserves || strcmp(order->sends[k], "inventory.reserve_stock") == 0;
    assert_true(reserves);
}

/* The order context alone, with no remote for inventory: its reservations would wait for an
 * owner that runs nowhere, so the start is refused, naming the message and the key. */
static void test_owner_nowhere_is_refused(void **state)
{
    (void)state;
    const app_module *loaded[] = {app_module_find("order")};
    const char *const only_user[] = {"user"};
    app_error err = APP_ERROR_INIT;
    assert_int_equal(mod_check_contracts(loaded, 1, app_modules, only_user, 1, &err), APP_ECONFIG);
    assert_non_null(strstr(err.message, "context order sends \"inventory."));
    assert_non_null(strstr(err.message, "context inventory is not loaded here and has no "
                                        "remote.inventory"));
    const char *const both[] = {"user", "inventory"};
    assert_int_equal(mod_check_contracts(loaded, 1, app_modules, both, 2, &err), 0);
    /* A loaded owner needs no remote. */
    const app_module *with_owners[] = {loaded[0], app_module_find("inventory"),
                                       app_module_find("user")};
    assert_int_equal(mod_check_contracts(with_owners, 3, app_modules, NULL, 0, &err), 0);
}

static const char *const misspelt[] = {"inventory.reserve_stok", NULL};
static const char *const unknown_owner[] = {"billing.charge_card", NULL};
static const char *const no_owner[] = {"describe_customer", NULL};
static const char *const fine[] = {"user.describe_customer", "inventory.reserve_stock", NULL};

static int no_event(const bus_ctx *ctx, const es_event *ev, app_error *err)
{
    (void)ctx;
    (void)ev;
    (void)err;
    return 0;
}

static const mod_subscription reads_nobody[] = {
    {.name = "fake.copy", .source_context = "usr", .handle = no_event},
    {.name = NULL},
};

static void expect_refused(const app_module *m, const char *message)
{
    const app_module *loaded[] = {m};
    app_error err = APP_ERROR_INIT;
    assert_int_equal(mod_check_contracts(loaded, 1, app_modules, every_remote, 3, &err),
                     APP_ECONFIG);
    assert_string_equal(err.message, message);
}

static void test_bad_contracts_are_refused(void **state)
{
    (void)state;
    app_module m = {.abi = APP_MODULE_ABI, .name = "fake", .schema = "fake_ctx"};
    m.sends = fine;
    app_error err = APP_ERROR_INIT;
    const app_module *loaded[] = {&m};
    assert_int_equal(mod_check_contracts(loaded, 1, app_modules, every_remote, 3, &err), 0);

    m.sends = misspelt;
    expect_refused(&m, "context fake sends \"inventory.reserve_stok\", which context inventory "
                       "does not handle");
    m.sends = unknown_owner;
    expect_refused(&m, "context fake sends \"billing.charge_card\", which names no context of "
                       "this build");
    m.sends = no_owner;
    expect_refused(&m, "context fake sends \"describe_customer\", which names no context of this "
                       "build");
    m.sends = NULL;
    m.subscriptions = reads_nobody;
    expect_refused(&m, "subscription fake.copy of context fake reads the log of \"usr\", which "
                       "is no context of this build");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_contracts_hold),
        cmocka_unit_test(test_owner_nowhere_is_refused),
        cmocka_unit_test(test_bad_contracts_are_refused),
    };
    return cmocka_run_group_tests_name("contracts", tests, NULL, NULL);
}
