/* The user domain without any I/O: the email and name value objects, and the aggregate's
 * decide and apply functions and event codec. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "contexts/user/domain/email.h"
#include "contexts/user/domain/name.h"
#include "contexts/user/domain/user.h"
#include "core/text.h"

static const char *const id1 = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9";

/* ---- email ------------------------------------------------------------------------ */

static void assert_email_ok(const char *input, const char *value, const char *key)
{
    user_email e;
    app_error err = APP_ERROR_INIT;
    if (user_email_parse(&e, input, &err) != 0)
        fail_msg("email \"%s\" refused: %s", input, err.n_fields ? err.fields[0].message : "");
    assert_string_equal(e.value, value);
    assert_string_equal(e.key, key);
}

static void assert_email_bad(const char *input)
{
    user_email e;
    app_error err = APP_ERROR_INIT;
    if (user_email_parse(&e, input, &err) != APP_EINVAL)
        fail_msg("email \"%s\" accepted", input);
    assert_int_equal(err.code, APP_EINVAL);
    assert_string_equal(err.message, "validation failed");
    assert_int_equal(err.n_fields, 1);
    assert_string_equal(err.fields[0].field, "email");
    assert_true(strlen(err.fields[0].message) > 0);
}

static void test_email_valid(void **state)
{
    (void)state;
    assert_email_ok("a@b.co", "a@b.co", "a@b.co");
    assert_email_ok("  Ada.Lovelace+tag@Example.COM \r\n", "Ada.Lovelace+tag@Example.COM",
                    "ada.lovelace+tag@example.com");
    assert_email_ok("o'brien@example.ie", "o'brien@example.ie", "o'brien@example.ie");
    assert_email_ok("x@xn--bcher-kva.example", "x@xn--bcher-kva.example",
                    "x@xn--bcher-kva.example");
    assert_email_ok("a_b-c@sub-domain.example.com", "a_b-c@sub-domain.example.com",
                    "a_b-c@sub-domain.example.com");
    assert_email_ok("\tz@9x.io", "z@9x.io", "z@9x.io");
}

static void test_email_lengths(void **state)
{
    (void)state;
    char buf[400], local[80];
    /* 64 + 1 + 189 = 254, the longest allowed. */
    memset(local, 'l', 64);
    local[64] = '\0';
    char d1[64], d2[64], d3[62];
    memset(d1, 'a', 63), d1[63] = '\0';
    memset(d2, 'b', 63), d2[63] = '\0';
    memset(d3, 'c', 61), d3[61] = '\0';
    snprintf(buf, sizeof buf, "%s@%s.%s.%s", local, d1, d2, d3);
    assert_int_equal(strlen(buf), 254);
    user_email e;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(user_email_parse(&e, buf, &err), 0);
    assert_string_equal(e.value, buf);
    /* 255 is one too many, surrounding spaces do not count. */
    snprintf(buf, sizeof buf, "%s@%s.%s.%sc", local, d1, d2, d3);
    assert_email_bad(buf);
    snprintf(buf, sizeof buf, "   %s@%s.%s.%s   ", local, d1, d2, d3);
    assert_int_equal(user_email_parse(&e, buf, &err), 0);
    /* A 65-character local part, a 64-character label. */
    snprintf(buf, sizeof buf, "%sl@example.com", local);
    assert_email_bad(buf);
    snprintf(buf, sizeof buf, "a@%sa.com", d1);
    assert_email_bad(buf);
}

static void test_email_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",           "   ",         "ab",        "a@b",           "not-an-email",   "a@@b.co",
        "a@b@c.co",   "@b.co",       "a@",        "a@.co",         "a b@c.co",       "\"a\"@b.co",
        ".a@b.co",    "a.@b.co",     "a..b@c.co", "a@-b.co",       "a@b-.co",        "a@b..co",
        "a@b.co.",    "a@b_c.co",    "a@1.2.3.4", "\xc3\xbc@b.co", "a@b\xc3\xbc.co", "a\x01@b.co",
        "a@b.co\x7f", "a(b)@c.co",   "a<b>@c.co", "a,b@c.co",      "a:b@c.co",       "a\\b@c.co",
        "a@b .co",    "a@[1.2.3.4]", "a@b.c o",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_email_bad(bad[i]);
}

static void test_email_compare(void **state)
{
    (void)state;
    assert_true(user_email_same("Ada@Example.com", "ada@example.COM"));
    assert_false(user_email_same("ada@example.com", "ada@example.co"));
    assert_false(user_email_same("ada@example.co", "ada@example.com"));
    char key[USER_EMAIL_MAX + 1];
    user_email_key(key, "MiXeD@CaSe.Org");
    assert_string_equal(key, "mixed@case.org");
}

/* ---- name ------------------------------------------------------------------------- */

static void fill_repeat(char *out, const char *unit, int times)
{
    out[0] = '\0';
    for (int i = 0; i < times; i++)
        strcat(out, unit);
}

static void assert_name_bad(const char *input, const char *why)
{
    user_name n;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(user_name_parse(&n, input, &err), APP_EINVAL);
    assert_int_equal(err.code, APP_EINVAL);
    assert_int_equal(err.n_fields, 1);
    assert_string_equal(err.fields[0].field, "name");
    if (why && !strstr(err.fields[0].message, why))
        fail_msg("name error \"%s\" lacks \"%s\"", err.fields[0].message, why);
}

static void test_name(void **state)
{
    (void)state;
    user_name n;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(user_name_parse(&n, "  Ada Lovelace \n", &err), 0);
    assert_string_equal(n.value, "Ada Lovelace");
    assert_int_equal(n.chars, 12);
    assert_int_equal(user_name_parse(&n, "x", &err), 0);

    static char buf[1024];
    /* 200 characters of 1, 2, 3 and 4 bytes are fine; 201 are not. */
    static const char *const units[] = {"n", "\xc3\xa9", "\xe6\x97\xa5", "\xf0\x9f\x98\x80"};
    for (size_t u = 0; u < 4; u++) {
        fill_repeat(buf, units[u], 200);
        assert_int_equal(user_name_parse(&n, buf, &err), 0);
        assert_int_equal(n.chars, 200);
        assert_int_equal(strlen(n.value), 200 * (u + 1));
        fill_repeat(buf, units[u], 201);
        assert_name_bad(buf, "at most 200");
    }
    /* Spaces around do not count towards the limit. */
    buf[0] = ' ';
    fill_repeat(buf + 1, "n", 200);
    strcat(buf, "  ");
    assert_int_equal(user_name_parse(&n, buf, &err), 0);
    assert_int_equal(n.chars, 200);

    assert_name_bad("", "empty");
    assert_name_bad(" \t\r\n ", "empty");
    assert_name_bad("a\tb", "control");
    assert_name_bad("a\x7f", "control");
    assert_name_bad("a\xc2\x85z", "control"); /* U+0085, a C1 control */
    assert_name_bad("\xff", "UTF-8");
    assert_name_bad("a\xc3", "UTF-8");
    assert_name_bad("\xed\xa0\x80", "UTF-8"); /* a surrogate */
}

static void test_utf8_count(void **state)
{
    (void)state;
    assert_int_equal(text_utf8_count("", 0), 0);
    assert_int_equal(text_utf8_count("abc", 3), 3);
    assert_int_equal(text_utf8_count("\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80", 9), 3);
    assert_int_equal(text_utf8_count("\xc0\xaf", 2), -1);         /* overlong */
    assert_int_equal(text_utf8_count("\xf4\x90\x80\x80", 4), -1); /* past U+10FFFF */
    assert_int_equal(text_utf8_count("\xe6\x97", 2), -1);
}

static void test_errors_accumulate(void **state)
{
    (void)state;
    user_email e;
    user_name n;
    app_error err = APP_ERROR_INIT;
    user_email_parse(&e, "nope", &err);
    user_name_parse(&n, "", &err);
    assert_int_equal(err.code, APP_EINVAL);
    assert_int_equal(err.n_fields, 2);
    assert_string_equal(err.fields[0].field, "email");
    assert_string_equal(err.fields[1].field, "name");
    /* A wrong type reported earlier (400) stays the code. */
    app_error_clear(&err);
    app_error_set(&err, APP_EBADREQ, "request has fields of the wrong type");
    user_name_parse(&n, "", &err);
    assert_int_equal(err.code, APP_EBADREQ);
    assert_int_equal(err.n_fields, 1);
}

/* ---- aggregate -------------------------------------------------------------------- */

static void registered(user_state *s, const char *email_in)
{
    user_email e;
    user_name n;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(user_email_parse(&e, email_in, &err), 0);
    assert_int_equal(user_name_parse(&n, "Ada", &err), 0);
    user_event ev;
    user_decide_register(id1, &e, &n, &ev);
    assert_int_equal(ev.kind, USER_EV_REGISTERED);
    assert_string_equal(ev.user_id, id1);
    assert_string_equal(ev.email, e.value);
    assert_string_equal(ev.name, "Ada");
    memset(s, 0, sizeof *s);
    user_apply(s, &ev);
}

static void test_register_and_apply(void **state)
{
    (void)state;
    user_state s;
    registered(&s, "Ada@Example.com");
    assert_string_equal(s.id, id1);
    assert_string_equal(s.email, "Ada@Example.com");
    assert_string_equal(s.name, "Ada");
    assert_int_equal(s.status, USER_STATUS_ACTIVE);
    assert_string_equal(user_status_name(s.status), "active");
    assert_int_equal(s.version, 1);
}

static void test_change_email(void **state)
{
    (void)state;
    user_state s;
    registered(&s, "Ada@Example.com");
    user_email e;
    user_event evs[USER_MAX_DECIDED];
    size_t n = 9;
    app_error err = APP_ERROR_INIT;

    /* The very same string: nothing to record. */
    assert_int_equal(user_email_parse(&e, " Ada@Example.com ", &err), 0);
    assert_int_equal(user_decide_change_email(&s, &e, evs, &n, &err), 0);
    assert_int_equal(n, 0);

    /* A case-only change is recorded: the address is shown as typed. */
    assert_int_equal(user_email_parse(&e, "ada@example.com", &err), 0);
    assert_int_equal(user_decide_change_email(&s, &e, evs, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(evs[0].kind, USER_EV_EMAIL_CHANGED);
    assert_string_equal(evs[0].email, "ada@example.com");
    assert_string_equal(evs[0].previous_email, "Ada@Example.com");
    assert_string_equal(evs[0].user_id, id1);
    user_apply(&s, &evs[0]);
    assert_string_equal(s.email, "ada@example.com");
    assert_int_equal(s.version, 2);

    /* No user: not found. */
    user_state none;
    memset(&none, 0, sizeof none);
    assert_int_equal(user_decide_change_email(&none, &e, evs, &n, &err), APP_ENOTFOUND);
}

static void test_deactivate(void **state)
{
    (void)state;
    user_state s;
    registered(&s, "grace@example.com");
    user_event evs[USER_MAX_DECIDED];
    size_t n = 0;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(user_decide_deactivate(&s, evs, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(evs[0].kind, USER_EV_DEACTIVATED);
    user_apply(&s, &evs[0]);
    assert_int_equal(s.status, USER_STATUS_DEACTIVATED);
    assert_string_equal(user_status_name(s.status), "deactivated");
    assert_int_equal(s.version, 2);

    /* Idempotent: a second deactivation decides nothing. */
    n = 7;
    assert_int_equal(user_decide_deactivate(&s, evs, &n, &err), 0);
    assert_int_equal(n, 0);

    /* A deactivated user keeps its email. */
    user_email e;
    assert_int_equal(user_email_parse(&e, "new@example.com", &err), 0);
    assert_int_equal(user_decide_change_email(&s, &e, evs, &n, &err), APP_ECONFLICT);
    assert_int_equal(err.code, APP_ECONFLICT);
    assert_string_equal(err.message, "user is deactivated");
    assert_int_equal(n, 0);

    user_state none;
    memset(&none, 0, sizeof none);
    assert_int_equal(user_decide_deactivate(&none, evs, &n, &err), APP_ENOTFOUND);
}

static void test_event_codec(void **state)
{
    (void)state;
    user_event ev, back;
    memset(&ev, 0, sizeof ev);
    ev.kind = USER_EV_EMAIL_CHANGED;
    strcpy(ev.user_id, id1);
    strcpy(ev.email, "new@example.com");
    strcpy(ev.previous_email, "old@example.com");
    char *data = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(user_event_encode(&ev, &data, &err), 0);
    assert_string_equal(data, "{\"userId\":\"0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9\","
                              "\"email\":\"new@example.com\","
                              "\"previousEmail\":\"old@example.com\"}");
    assert_string_equal(user_event_type(ev.kind), USER_EVENT_EMAIL_CHANGED);
    assert_int_equal(user_event_decode(USER_EVENT_EMAIL_CHANGED, 1, data, &back, &err), 0);
    assert_int_equal(back.kind, USER_EV_EMAIL_CHANGED);
    assert_string_equal(back.previous_email, "old@example.com");
    free(data);

    memset(&ev, 0, sizeof ev);
    ev.kind = USER_EV_REGISTERED;
    strcpy(ev.user_id, id1);
    strcpy(ev.email, "a@b.co");
    strcpy(ev.name, "Zo\xc3\xab \"Q\"");
    assert_int_equal(user_event_encode(&ev, &data, &err), 0);
    assert_int_equal(user_event_decode(USER_EVENT_REGISTERED, 1, data, &back, &err), 0);
    assert_string_equal(back.name, ev.name);
    free(data);

    ev.kind = USER_EV_DEACTIVATED;
    assert_int_equal(user_event_encode(&ev, &data, &err), 0);
    assert_string_equal(data, "{\"userId\":\"0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9\"}");
    assert_int_equal(user_event_decode(USER_EVENT_DEACTIVATED, 1, data, &back, &err), 0);
    assert_int_equal(back.kind, USER_EV_DEACTIVATED);
    free(data);

    /* Unknown types and newer schema versions are skipped, not errors. */
    assert_int_equal(user_event_decode("user.user.renamed", 1, "{}", &back, &err), 0);
    assert_int_equal(back.kind, USER_EV_UNKNOWN);
    assert_int_equal(user_event_decode(USER_EVENT_DEACTIVATED, 2, "{}", &back, &err), 0);
    assert_int_equal(back.kind, USER_EV_UNKNOWN);
    /* A known type without its fields is a bug worth stopping for. */
    assert_int_equal(user_event_decode(USER_EVENT_REGISTERED, 1, "{\"userId\":\"x\"}", &back, &err),
                     APP_EINTERNAL);
    assert_int_equal(user_event_decode(USER_EVENT_DEACTIVATED, 1, "not json", &back, &err),
                     APP_EINTERNAL);
    ev.kind = USER_EV_UNKNOWN;
    assert_int_equal(user_event_encode(&ev, &data, &err), APP_EINTERNAL);
    assert_null(data);

    /* Unknown events only advance the version. */
    user_state s;
    registered(&s, "a@b.co");
    memset(&back, 0, sizeof back);
    user_apply(&s, &back);
    assert_int_equal(s.version, 2);
    assert_string_equal(s.email, "a@b.co");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_email_valid),
        cmocka_unit_test(test_email_lengths),
        cmocka_unit_test(test_email_invalid),
        cmocka_unit_test(test_email_compare),
        cmocka_unit_test(test_name),
        cmocka_unit_test(test_utf8_count),
        cmocka_unit_test(test_errors_accumulate),
        cmocka_unit_test(test_register_and_apply),
        cmocka_unit_test(test_change_email),
        cmocka_unit_test(test_deactivate),
        cmocka_unit_test(test_event_codec),
    };
    return cmocka_run_group_tests_name("user domain", tests, NULL, NULL);
}
