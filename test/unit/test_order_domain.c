/* The order aggregate without I/O: what a customer may ask for, pricing, the status
 * transitions (confirm once, cancel idempotently), and the event round trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "contexts/order/domain/order.h"

static const char *const customer = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";

static void draft_of(ord_order *d, size_t n)
{
    memset(d, 0, sizeof *d);
    strcpy(d->id, "1f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9");
    strcpy(d->customer_id, customer);
    strcpy(d->created_at, "2026-11-28T12:00:00.000Z");
    d->n_lines = n; /* past ORD_MAX_LINES only the count says so */
    for (size_t i = 0; i < n && i < ORD_MAX_LINES; i++) {
        snprintf(d->lines[i].sku, sizeof d->lines[i].sku, "SKU-%zu", i);
        d->lines[i].quantity = 2;
        d->lines[i].priced = true;
        d->lines[i].unit_price = (money){250, "EUR"};
    }
}

static void test_validation(void **state)
{
    (void)state;
    ord_order *d = malloc(sizeof *d);
    app_error err = APP_ERROR_INIT;
    draft_of(d, 3);
    assert_int_equal(ord_validate_place(d, &err), 0);

    draft_of(d, 0);
    assert_int_equal(ord_validate_place(d, &err), APP_EINVAL);
    assert_string_equal(err.fields[0].field, "lines");

    memset(&err, 0, sizeof err);
    draft_of(d, 3);
    strcpy(d->lines[2].sku, "SKU-0");
    d->lines[1].quantity = 1001;
    strcpy(d->customer_id, "nope");
    assert_int_equal(ord_validate_place(d, &err), APP_EINVAL);
    assert_int_equal(err.n_fields, 3);
    assert_string_equal(err.fields[0].field, "customerId");
    assert_string_equal(err.fields[1].field, "lines[1].quantity");
    assert_string_equal(err.fields[2].field, "lines[2].sku");

    memset(&err, 0, sizeof err);
    draft_of(d, 101);
    assert_int_equal(ord_validate_place(d, &err), APP_EINVAL);
    free(d);
}

static void test_pricing(void **state)
{
    (void)state;
    ord_order *d = malloc(sizeof *d);
    app_error err = APP_ERROR_INIT;
    draft_of(d, 2);
    assert_int_equal(ord_price(d, &err), 0);
    assert_true(d->has_total);
    assert_int_equal(d->total.amount, 1000);
    d->lines[1].priced = false;
    assert_int_equal(ord_price(d, &err), 0);
    assert_false(d->has_total);
    d->lines[1].priced = true;
    d->lines[1].unit_price = (money){1, "USD"};
    assert_int_equal(ord_price(d, &err), APP_ECONFLICT);
    assert_non_null(strstr(err.message, "USD"));
    free(d);
}

static void test_transitions(void **state)
{
    (void)state;
    ord_order *d = malloc(sizeof *d), *o = calloc(1, sizeof *o);
    ord_event *ev = malloc(sizeof *ev);
    app_error err = APP_ERROR_INIT;
    size_t n;
    assert_int_equal(ord_decide_confirm(o, ev, &n, &err), APP_ENOTFOUND);
    draft_of(d, 1);
    ord_decide_place(d, ev);
    ord_apply(o, ev);
    assert_int_equal(o->status, ORD_STATUS_PENDING);
    assert_int_equal(o->version, 1);

    assert_int_equal(ord_decide_confirm(o, ev, &n, &err), 0);
    assert_int_equal(n, 1);
    ord_apply(o, ev);
    assert_int_equal(o->status, ORD_STATUS_CONFIRMED);
    assert_int_equal(ord_decide_confirm(o, ev, &n, &err), 0);
    assert_int_equal(n, 0);
    /* A deadline that lost the race to the confirmation changes nothing. */
    assert_int_equal(ord_decide_cancel(o, ORD_REASON_TIMEOUT, ev, &n, &err), 0);
    assert_int_equal(n, 0);

    assert_int_equal(ord_decide_cancel(o, ORD_REASON_CANCELLED_BY_CUSTOMER, ev, &n, &err), 0);
    assert_int_equal(n, 1);
    ord_apply(o, ev);
    assert_int_equal(o->status, ORD_STATUS_CANCELLED);
    assert_int_equal(o->reason, ORD_REASON_CANCELLED_BY_CUSTOMER);
    assert_int_equal(ord_decide_cancel(o, ORD_REASON_TIMEOUT, ev, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_int_equal(ord_decide_confirm(o, ev, &n, &err), APP_ECONFLICT);
    assert_int_equal(o->version, 3);
    free(d);
    free(o);
    free(ev);
}

/* Shipping: only a confirmed order ships; shipping twice is nothing; a shipped order is not
 * cancelled (a timeout that lost the race is nothing), and survives a snapshot. */
static void test_shipping(void **state)
{
    (void)state;
    ord_order *d = malloc(sizeof *d), *o = calloc(1, sizeof *o), *back = malloc(sizeof *back);
    ord_event *ev = malloc(sizeof *ev);
    app_error err = APP_ERROR_INIT;
    size_t n;
    assert_int_equal(ord_decide_ship(o, ev, &n, &err), APP_ENOTFOUND);
    draft_of(d, 2);
    ord_decide_place(d, ev);
    ord_apply(o, ev);
    app_error_clear(&err);
    assert_int_equal(ord_decide_ship(o, ev, &n, &err), APP_ECONFLICT);
    assert_string_equal(err.message, "order is pending: it ships once confirmed");
    assert_int_equal(n, 0);

    assert_int_equal(ord_decide_confirm(o, ev, &n, &err), 0);
    ord_apply(o, ev);
    assert_int_equal(ord_decide_ship(o, ev, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(ev->kind, ORD_EV_SHIPPED);
    ord_apply(o, ev);
    assert_int_equal(o->status, ORD_STATUS_SHIPPED);
    assert_string_equal(ord_status_name(o->status), "shipped");
    assert_int_equal(o->version, 3);
    assert_int_equal(ord_decide_ship(o, ev, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_int_equal(ord_decide_confirm(o, ev, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_int_equal(ord_decide_cancel(o, ORD_REASON_TIMEOUT, ev, &n, &err), 0);
    assert_int_equal(n, 0);
    app_error_clear(&err);
    assert_int_equal(ord_decide_cancel(o, ORD_REASON_CANCELLED_BY_CUSTOMER, ev, &n, &err),
                     APP_ECONFLICT);
    assert_string_equal(err.message, "order has shipped: it cannot be cancelled");
    assert_int_equal(n, 0);

    char *text = NULL;
    assert_int_equal(ord_snapshot_encode(o, &text, &err), 0);
    assert_int_equal(ord_snapshot_decode(text, o->version, back, &err), 0);
    free(text);
    assert_int_equal(back->status, ORD_STATUS_SHIPPED);
    assert_int_equal(back->n_lines, 2);

    /* A cancelled order never ships. */
    memset(o, 0, sizeof *o);
    ord_decide_place(d, ev);
    ord_apply(o, ev);
    assert_int_equal(ord_decide_cancel(o, ORD_REASON_CANCELLED_BY_CUSTOMER, ev, &n, &err), 0);
    ord_apply(o, ev);
    app_error_clear(&err);
    assert_int_equal(ord_decide_ship(o, ev, &n, &err), APP_ECONFLICT);
    assert_string_equal(err.message, "order is cancelled");
    free(d);
    free(o);
    free(back);
    free(ev);
}

static void test_reasons(void **state)
{
    (void)state;
    const char *names[] = {"out_of_stock",         "unknown_product",       "unknown_customer",
                           "customer_deactivated", "cancelled_by_customer", "timeout"};
    for (size_t i = 0; i < 6; i++)
        assert_string_equal(ord_reason_name(ord_reason_parse(names[i])), names[i]);
    assert_int_equal(ord_reason_parse("bored"), ORD_REASON_NONE);
    assert_null(ord_reason_name(ORD_REASON_NONE));
}

static void test_event_round_trip(void **state)
{
    (void)state;
    ord_order *d = malloc(sizeof *d);
    ord_event *in = malloc(sizeof *in), *out = malloc(sizeof *out);
    app_error err = APP_ERROR_INIT;
    draft_of(d, 3);
    d->lines[2].priced = false;
    assert_int_equal(ord_price(d, &err), 0);
    ord_decide_place(d, in);
    char *data = NULL;
    assert_int_equal(ord_event_encode(in, &data, &err), 0);
    assert_non_null(strstr(data, "\"unitPrice\":null"));
    assert_non_null(strstr(data, "\"total\":null"));
    assert_int_equal(ord_event_decode(ORD_EVENT_PLACED, 1, data, out, &err), 0);
    free(data);
    assert_int_equal(out->kind, ORD_EV_PLACED);
    assert_int_equal(out->order.n_lines, 3);
    assert_false(out->order.lines[2].priced);
    assert_true(out->order.lines[1].priced);
    assert_int_equal(out->order.lines[1].unit_price.amount, 250);
    assert_string_equal(out->order.customer_id, customer);

    memset(in, 0, sizeof *in);
    in->kind = ORD_EV_CANCELLED;
    strcpy(in->order.id, d->id);
    in->reason = ORD_REASON_TIMEOUT;
    assert_int_equal(ord_event_encode(in, &data, &err), 0);
    assert_int_equal(ord_event_decode(ORD_EVENT_CANCELLED, 1, data, out, &err), 0);
    free(data);
    assert_int_equal(out->reason, ORD_REASON_TIMEOUT);
    assert_int_equal(ord_event_decode(ORD_EVENT_CANCELLED, 1, "{\"orderId\":\"x\"}", out, &err),
                     APP_EINTERNAL);
    memset(in, 0, sizeof *in);
    in->kind = ORD_EV_SHIPPED;
    strcpy(in->order.id, d->id);
    assert_int_equal(ord_event_encode(in, &data, &err), 0);
    assert_string_equal(ord_event_type(in->kind), "order.order.shipped");
    assert_int_equal(ord_event_decode(ORD_EVENT_SHIPPED, 1, data, out, &err), 0);
    free(data);
    assert_int_equal(out->kind, ORD_EV_SHIPPED);
    assert_string_equal(out->order.id, d->id);
    assert_int_equal(ord_event_decode("order.order.returned", 1, "{}", out, &err), 0);
    assert_int_equal(out->kind, ORD_EV_UNKNOWN);
    free(d);
    free(in);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validation),  cmocka_unit_test(test_pricing),
        cmocka_unit_test(test_transitions), cmocka_unit_test(test_shipping),
        cmocka_unit_test(test_reasons),     cmocka_unit_test(test_event_round_trip),
    };
    return cmocka_run_group_tests_name("order domain", tests, NULL, NULL);
}
