/* The aggregate cache (src/kernel/agg_cache.c): copies in and out, the newer entry kept, one
 * slot per stream, owned memory released, and a load's start checked against the store. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernel/agg_cache.h"
#include "test/support/fake_stores.h"

/* A state that owns memory, as a product does: a heap copy of its name. */
typedef struct counter {
    char *name;
    int64_t count;
} counter;

static bool fail_copies;

static bool counter_copy(void *dst, const void *src)
{
    counter *to = dst;
    const counter *from = src;
    if (fail_copies)
        return false;
    to->count = from->count;
    to->name = from->name ? strdup(from->name) : NULL;
    return !from->name || to->name;
}

static void counter_release(void *state)
{
    counter *c = state;
    free(c->name);
    c->name = NULL;
}

static const agg_cache_kind counter_kind = {sizeof(counter), counter_copy, counter_release};

static const char *const id_a = "11111111-1111-4111-8111-111111111111";
static const char *const id_b = "22222222-2222-4222-8222-222222222222";

static void test_get_and_put(void **state)
{
    (void)state;
    agg_cache *c = agg_cache_new(&counter_kind, 16);
    assert_non_null(c);
    counter in = {"first", 3}, out = {0};
    int64_t version = 0;
    char event_id[UUID_STR_LEN];
    assert_false(agg_cache_get(c, "s-1", &out, &version, event_id));

    agg_cache_put(c, "s-1", &in, 3, id_a);
    in.count = 99; /* the cache holds its own copy */
    assert_true(agg_cache_get(c, "s-1", &out, &version, event_id));
    assert_int_equal(version, 3);
    assert_int_equal(out.count, 3);
    assert_string_equal(out.name, "first");
    assert_string_equal(event_id, id_a);
    out.name[0] = 'F'; /* and gives a copy away */
    counter_release(&out);
    assert_true(agg_cache_get(c, "s-1", &out, &version, event_id));
    assert_string_equal(out.name, "first");
    counter_release(&out);

    /* An older version of the same stream never replaces a newer one. */
    counter older = {"older", 2};
    agg_cache_put(c, "s-1", &older, 2, id_b);
    assert_true(agg_cache_get(c, "s-1", &out, &version, event_id));
    assert_int_equal(version, 3);
    assert_string_equal(out.name, "first");
    counter_release(&out);
    counter newer = {"newer", 4};
    agg_cache_put(c, "s-1", &newer, 4, id_b);
    assert_true(agg_cache_get(c, "s-1", &out, &version, event_id));
    assert_int_equal(version, 4);
    assert_string_equal(out.name, "newer");
    assert_string_equal(event_id, id_b);
    counter_release(&out);

    agg_cache_drop(c, "s-1");
    assert_false(agg_cache_get(c, "s-1", &out, &version, event_id));
    agg_cache_drop(c, "s-1"); /* twice is nothing */
    /* Nothing is kept without a version, an event id, or for a stream id past the bound. */
    agg_cache_put(c, "s-2", &in, 0, id_a);
    agg_cache_put(c, "s-2", &in, 1, NULL);
    char long_id[400];
    memset(long_id, 'x', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    agg_cache_put(c, long_id, &in, 1, id_a);
    assert_false(agg_cache_get(c, "s-2", &out, &version, event_id));
    assert_false(agg_cache_get(c, long_id, &out, &version, event_id));
    agg_cache_free(c);
    agg_cache_free(NULL);
}

/* One slot: the next stream replaces the first (whose owned memory is released, or the
 * leak checker says so); a copy that fails keeps nothing and gives nothing. */
static void test_one_slot(void **state)
{
    (void)state;
    agg_cache *c = agg_cache_new(&counter_kind, 1);
    assert_non_null(c);
    counter a = {"a", 1}, b = {"b", 2}, out = {0};
    int64_t version = 0;
    char event_id[UUID_STR_LEN];
    agg_cache_put(c, "s-a", &a, 1, id_a);
    agg_cache_put(c, "s-b", &b, 7, id_b);
    assert_false(agg_cache_get(c, "s-a", &out, &version, event_id));
    assert_true(agg_cache_get(c, "s-b", &out, &version, event_id));
    assert_int_equal(version, 7);
    counter_release(&out);

    fail_copies = true;
    assert_false(agg_cache_get(c, "s-b", &out, &version, event_id));
    agg_cache_put(c, "s-a", &a, 1, id_a);
    fail_copies = false;
    assert_false(agg_cache_get(c, "s-a", &out, &version, event_id));
    assert_false(agg_cache_get(c, "s-b", &out, &version, event_id));
    agg_cache_free(c);
}

/* A state with no memory of its own: copied with memcpy. */
static void test_flat_state(void **state)
{
    (void)state;
    typedef struct flat {
        char text[32];
        int n;
    } flat;
    const agg_cache_kind kind = {sizeof(flat), NULL, NULL};
    agg_cache *c = agg_cache_new(&kind, 4);
    flat in = {"flat", 5}, out = {"", 0};
    int64_t version = 0;
    char event_id[UUID_STR_LEN];
    agg_cache_put(c, "f-1", &in, 1, id_a);
    assert_true(agg_cache_get(c, "f-1", &out, &version, event_id));
    assert_string_equal(out.text, "flat");
    assert_int_equal(out.n, 5);
    agg_cache_free(c);
}

/* Threads putting and getting the same streams: every state read is one that was put
 * whole, at the version it was put with. */
typedef struct race {
    agg_cache *c;
    int seed;
    int bad;
} race;

static void *racer(void *arg)
{
    race *r = arg;
    for (int i = 0; i < 20000; i++) {
        char stream[16], name[32];
        int s = (i * 7 + r->seed) % 5;
        snprintf(stream, sizeof stream, "r-%d", s);
        int64_t v = (i % 50) + 1;
        snprintf(name, sizeof name, "%s@%lld", stream, (long long)v);
        counter in = {name, v}, out = {0};
        agg_cache_put(r->c, stream, &in, v, id_a);
        int64_t got = 0;
        char event_id[UUID_STR_LEN];
        if (agg_cache_get(r->c, stream, &out, &got, event_id)) {
            char want[32];
            snprintf(want, sizeof want, "%s@%lld", stream, (long long)got);
            r->bad += out.count != got || strcmp(out.name, want) != 0;
            counter_release(&out);
        }
        if (i % 97 == 0)
            agg_cache_drop(r->c, stream);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    agg_cache *c = agg_cache_new(&counter_kind, 3);
    race r[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (race){c, i, 0};
        assert_int_equal(pthread_create(&t[i], NULL, racer, &r[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(r[i].bad, 0);
    }
    agg_cache_free(c);
}

/* agg_cache_begin: a hit only when the store still has the cached event, at its version,
 * with its id; otherwise the entry is dropped and the state comes back zeroed. */
static void append_one(es_store *es, const char *stream, int64_t expected, char id[UUID_STR_LEN])
{
    uuid_v4(id);
    es_new_event row = {id, "test.counter.counted", 1, "{}", "{}"};
    es_append_req req = {.context = "test",
                         .stream_id = stream,
                         .expected_version = expected,
                         .events = &row,
                         .n_events = 1};
    app_error err = APP_ERROR_INIT;
    assert_int_equal(es->ops->append(es->self, &req, NULL, &err), 0);
}

static void test_begin(void **state)
{
    (void)state;
    fake_es *f = calloc(1, sizeof *f), *g = calloc(1, sizeof *g);
    assert_non_null(f);
    assert_non_null(g);
    fake_es_init(f, "test");
    fake_es_init(g, "test");
    es_store es = fake_es_port(f), other = fake_es_port(g);
    agg_cache *c = agg_cache_new(&counter_kind, 8);
    char ids[4][UUID_STR_LEN];
    for (int i = 0; i < 3; i++)
        append_one(&es, "c-1", i, ids[i]);
    counter st = {"at two", 2}, out = {0};
    agg_cache_put(c, "c-1", &st, 2, ids[1]);

    /* Confirmed: the state at 2, and the events from 2 on, the new one after the first. */
    es_event_list since;
    int64_t version = 0;
    size_t first = 9;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(agg_cache_begin(c, &es, "test", "c-1", &out, &version, &since, &first, &err),
                     0);
    assert_int_equal(version, 2);
    assert_string_equal(out.name, "at two");
    assert_int_equal(first, 1);
    assert_int_equal(since.len, 2);
    assert_int_equal(since.items[1].version, 3);
    assert_string_equal(since.items[1].event_id, ids[2]);
    assert_int_equal(f->last_after_version, 1);
    es_event_list_free(&since);
    counter_release(&out);

    /* Not cached: nothing read. */
    size_t loaded = f->loaded;
    assert_int_equal(agg_cache_begin(c, &es, "test", "c-2", &out, &version, &since, &first, &err),
                     0);
    assert_int_equal(version, 0);
    assert_int_equal(since.len, 0);
    assert_int_equal(f->loaded, loaded);

    /* Another store with the stream at the same version but other events: a miss, zeroed,
     * and the entry is gone. */
    for (int i = 0; i < 3; i++)
        append_one(&other, "c-1", i, ids[3]);
    assert_int_equal(
        agg_cache_begin(c, &other, "test", "c-1", &out, &version, &since, &first, &err), 0);
    assert_int_equal(version, 0);
    assert_null(out.name);
    assert_int_equal(out.count, 0);
    assert_int_equal(since.len, 0);
    int64_t v = 0;
    char event_id[UUID_STR_LEN];
    assert_false(agg_cache_get(c, "c-1", &out, &v, event_id));

    /* A store that lost the event (emptied, restored from before it): a miss too. */
    agg_cache_put(c, "c-1", &st, 5, ids[1]);
    assert_int_equal(agg_cache_begin(c, &es, "test", "c-1", &out, &version, &since, &first, &err),
                     0);
    assert_int_equal(version, 0);
    assert_false(agg_cache_get(c, "c-1", &out, &v, event_id));

    agg_cache_free(c);
    fake_es_free(f);
    fake_es_free(g);
    free(f);
    free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_and_put), cmocka_unit_test(test_one_slot),
        cmocka_unit_test(test_flat_state),  cmocka_unit_test(test_threads),
        cmocka_unit_test(test_begin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
