/* Read-model generations on the in-memory read store: key mapping by longest prefix, 503
 * while a model is missing or being built, writers into a generation, the buffered writer
 * of a replay, switching and dropping a generation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernel/read_models.h"
#include "test/support/fake_stores.h"

static int noop(const bus_ctx *ctx, const es_event *ev, app_error *err)
{
    (void)ctx, (void)ev, (void)err;
    return 0;
}

static const char *const order_keys[] = {"order:", NULL};
static const char *const copy_keys[] = {"order:product:", NULL};
static const mod_subscription orders = {.name = "order.projection",
                                        .source_context = "order",
                                        .handle = noop,
                                        .flags = MOD_SUB_PROJECTION,
                                        .keys = order_keys};
static const mod_subscription copies = {.name = "order.product_catalog",
                                        .source_context = "inventory",
                                        .handle = noop,
                                        .flags = MOD_SUB_PROJECTION,
                                        .keys = copy_keys};

typedef struct fixture {
    fake_rs fake;
    rs_store store;
    rm_models *m;
    rs_store reader;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    fake_rs_init(&f->fake);
    f->store = fake_rs_port(&f->fake);
    app_error err = APP_ERROR_INIT;
    if (rm_models_new(&f->m, &f->store, &err) || rm_models_add(f->m, &orders, &err) ||
        rm_models_add(f->m, &copies, &err))
        return -1;
    f->reader = rm_models_port(f->m);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    rm_models_free(f->m);
    fake_rs_free(&f->fake);
    free(f);
    return 0;
}

static void go_live(fixture *f, const char *projection, int64_t generation)
{
    app_error err = APP_ERROR_INIT;
    rm_control c = {generation, false};
    assert_int_equal(rm_control_save(f->m, projection, &c, &err), 0);
}

/* A writer of order.projection batching in generation 4, which is live. */
static rm_writer *live_batched_writer(fixture *f)
{
    go_live(f, "order.projection", 4);
    app_error err = APP_ERROR_INIT;
    rm_writer *w = NULL;
    assert_int_equal(rm_writer_new(&w, f->m, "order.projection", 4, false, &err), 0);
    assert_int_equal(rm_writer_set_batched(w, &err), 0);
    return w;
}

static int get(fixture *f, const char *key, char **out)
{
    app_error err = APP_ERROR_INIT;
    return f->reader.ops->get(f->reader.self, key, out, &err);
}

static void test_missing_or_building_model_is_unavailable(void **state)
{
    fixture *f = *state;
    char *out = NULL;
    assert_int_equal(get(f, "order:1", &out), APP_EUNAVAIL);
    app_error err = APP_ERROR_INIT;
    rm_control building = {7, true};
    assert_int_equal(rm_control_save(f->m, "order.projection", &building, &err), 0);
    assert_int_equal(get(f, "order:1", &out), APP_EUNAVAIL);
    go_live(f, "order.projection", 7);
    assert_int_equal(get(f, "order:1", &out), 0);
    assert_null(out);
    /* A key no projection owns passes through as it is. */
    assert_int_equal(f->store.ops->set(f->store.self, "other:1", "x", &err), 0);
    assert_int_equal(get(f, "other:1", &out), 0);
    assert_string_equal(out, "x");
    free(out);
}

static void test_keys_map_to_the_live_generation_by_longest_prefix(void **state)
{
    fixture *f = *state;
    go_live(f, "order.projection", 3);
    go_live(f, "order.product_catalog", 5);
    app_error err = APP_ERROR_INIT;
    rm_writer *w = NULL, *c = NULL;
    assert_int_equal(rm_writer_new(&w, f->m, "order.projection", 3, false, &err), 0);
    assert_int_equal(rm_writer_new(&c, f->m, "order.product_catalog", 5, false, &err), 0);
    rs_store wp = rm_writer_port(w), cp = rm_writer_port(c);
    assert_int_equal(wp.ops->set(wp.self, "order:42", "{\"v\":1}", &err), 0);
    assert_int_equal(cp.ops->set(cp.self, "order:product:SKU", "{\"p\":2}", &err), 0);
    assert_string_equal(fake_rs_value(&f->fake, "order.projection@3:order:42"), "{\"v\":1}");
    assert_string_equal(fake_rs_value(&f->fake, "order.product_catalog@5:order:product:SKU"),
                        "{\"p\":2}");
    char *out = NULL;
    assert_int_equal(get(f, "order:product:SKU", &out), 0);
    assert_string_equal(out, "{\"p\":2}");
    free(out);
    /* A writer reads another projection's keys as a query does. */
    assert_int_equal(wp.ops->get(wp.self, "order:product:SKU", &out, &err), 0);
    assert_string_equal(out, "{\"p\":2}");
    free(out);
    rm_writer_free(w);
    rm_writer_free(c);

    /* Two projections cannot claim the same keys. */
    static const mod_subscription again = {.name = "order.other",
                                           .source_context = "order",
                                           .handle = noop,
                                           .flags = MOD_SUB_PROJECTION,
                                           .keys = order_keys};
    assert_int_equal(rm_models_add(f->m, &again, &err), APP_EINTERNAL);
}

/* A live projection's batch: its writes reach the store together on the flush, its own reads
 * see them before that, and after it nothing is remembered (a later batch asks the store,
 * which readers may have seen change meanwhile in no other way than through this writer). */
static void test_batched_writer_in_the_live_generation(void **state)
{
    fixture *f = *state;
    app_error err = APP_ERROR_INIT;
    rm_writer *w = live_batched_writer(f);
    rs_store wp = rm_writer_port(w);
    assert_int_equal(f->store.ops->set(f->store.self, "order.projection@4:order:0", "before", &err),
                     0);
    size_t sets = f->fake.sets;
    assert_int_equal(wp.ops->set(wp.self, "order:1", "one", &err), 0);
    assert_int_equal(wp.ops->set(wp.self, "order:1", "two", &err), 0);
    char *out = NULL;
    assert_int_equal(wp.ops->get(wp.self, "order:1", &out, &err), 0);
    assert_string_equal(out, "two"); /* the batch reads its own write */
    free(out);
    assert_int_equal(wp.ops->get(wp.self, "order:0", &out, &err), 0);
    assert_string_equal(out, "before"); /* not written by the batch: from the store */
    free(out);
    assert_int_equal(get(f, "order:1", &out), 0);
    assert_null(out); /* readers see the batch once it is sent */
    assert_int_equal(f->fake.sets, sets);

    assert_int_equal(rm_writer_flush(w, &err), 0);
    assert_int_equal(get(f, "order:1", &out), 0);
    assert_string_equal(out, "two");
    free(out);
    /* Forgotten: a change in the store shows through the writer. */
    assert_int_equal(f->store.ops->set(f->store.self, "order.projection@4:order:1", "three", &err),
                     0);
    assert_int_equal(wp.ops->get(wp.self, "order:1", &out, &err), 0);
    assert_string_equal(out, "three");
    free(out);
    rm_writer_free(w);
}

/* A batch's models read ahead in one round trip: the handlers' reads then ask the store
 * nothing, the batch's own writes still win, and all of it is forgotten at the flush, even
 * one that sends nothing. */
static void test_a_batch_reads_its_models_ahead(void **state)
{
    fixture *f = *state;
    app_error err = APP_ERROR_INIT;
    rm_writer *w = live_batched_writer(f);
    rs_store wp = rm_writer_port(w);
    assert_int_equal(f->store.ops->set(f->store.self, "order.projection@4:order:0", "zero", &err),
                     0);
    assert_int_equal(f->store.ops->set(f->store.self, "order.projection@4:order:1", "one", &err),
                     0);
    f->fake.gets_of = "order.projection@4:";
    /* Twice order:0, and a key of another projection, which is left to its own read. */
    const char *keys[] = {"order:0", "order:1", "order:2", "order:0", "order:product:X"};
    assert_int_equal(rm_writer_prefetch(w, keys, 5, &err), 0);
    assert_int_equal(f->fake.get_manys, 1);
    assert_int_equal(f->fake.keys_asked, 3);

    char *out = NULL;
    assert_int_equal(wp.ops->get(wp.self, "order:0", &out, &err), 0);
    assert_string_equal(out, "zero");
    free(out);
    assert_int_equal(wp.ops->get(wp.self, "order:2", &out, &err), 0);
    assert_null(out); /* known to be missing */
    assert_int_equal(wp.ops->set(wp.self, "order:1", "uno", &err), 0);
    assert_int_equal(wp.ops->get(wp.self, "order:1", &out, &err), 0);
    assert_string_equal(out, "uno"); /* the batch's own write over what it read */
    free(out);
    assert_int_equal(f->fake.gets, 0);
    /* Read ahead again: what the writer holds is not asked for twice. */
    assert_int_equal(rm_writer_prefetch(w, keys, 3, &err), 0);
    assert_int_equal(f->fake.get_manys, 1);

    assert_int_equal(rm_writer_flush(w, &err), 0);
    assert_string_equal(fake_rs_value(&f->fake, "order.projection@4:order:1"), "uno");
    assert_int_equal(rm_writer_prefetch(w, keys, 1, &err), 0);
    assert_int_equal(f->fake.get_manys, 2);
    assert_int_equal(f->store.ops->set(f->store.self, "order.projection@4:order:0", "cero", &err),
                     0);
    assert_int_equal(rm_writer_flush(w, &err), 0); /* nothing to send; still forgets */
    assert_int_equal(wp.ops->get(wp.self, "order:0", &out, &err), 0);
    assert_string_equal(out, "cero");
    free(out);
    assert_int_equal(f->fake.gets, 1);
    rm_writer_free(w);
}

static void test_buffered_writer_builds_beside_the_live_generation(void **state)
{
    fixture *f = *state;
    go_live(f, "order.projection", 1);
    app_error err = APP_ERROR_INIT;
    rm_writer *live = NULL, *replay = NULL;
    assert_int_equal(rm_writer_new(&live, f->m, "order.projection", 1, false, &err), 0);
    rs_store lp = rm_writer_port(live);
    assert_int_equal(lp.ops->set(lp.self, "order:1", "old", &err), 0);

    assert_int_equal(rm_writer_new(&replay, f->m, "order.projection", 2, true, &err), 0);
    rs_store rp = rm_writer_port(replay);
    char *out = NULL;
    assert_int_equal(rp.ops->get(rp.self, "order:1", &out, &err), 0);
    assert_null(out); /* the new generation starts empty */
    assert_int_equal(rp.ops->set(rp.self, "order:1", "new", &err), 0);
    assert_int_equal(rp.ops->set(rp.self, "order:2", "gone", &err), 0);
    assert_int_equal(rp.ops->del(rp.self, "order:2", &err), 0);
    assert_int_equal(rp.ops->zadd(rp.self, "order:list", 1.0, "1", &err), 0);
    assert_int_equal(rp.ops->get(rp.self, "order:1", &out, &err), 0);
    assert_string_equal(out, "new"); /* its own writes, before they are sent */
    free(out);
    assert_null(fake_rs_value(&f->fake, "order.projection@2:order:1"));
    assert_int_equal(rm_writer_flush(replay, &err), 0);
    assert_string_equal(fake_rs_value(&f->fake, "order.projection@2:order:1"), "new");
    assert_null(fake_rs_value(&f->fake, "order.projection@2:order:2"));

    /* Queries still read the live generation until the switch, then the new one at once. */
    assert_int_equal(get(f, "order:1", &out), 0);
    assert_string_equal(out, "old");
    free(out);
    go_live(f, "order.projection", 2);
    assert_int_equal(get(f, "order:1", &out), 0);
    assert_string_equal(out, "new");
    free(out);
    char **ids = NULL;
    size_t n = 0;
    assert_int_equal(f->reader.ops->zrevrange(f->reader.self, "order:list", 0, 10, &ids, &n, &err),
                     0);
    assert_int_equal(n, 1);
    assert_string_equal(ids[0], "1");
    rs_strings_free(ids, n);

    size_t deleted = 0;
    assert_int_equal(rm_drop(f->m, "order.projection", 1, &deleted, &err), 0);
    assert_int_equal(deleted, 1);
    assert_null(fake_rs_value(&f->fake, "order.projection@1:order:1"));
    assert_non_null(fake_rs_value(&f->fake, "order.projection@2:order:1"));
    rm_writer_free(live);
    rm_writer_free(replay);
}

/* A read store that keeps nothing and counts what it is asked: for writers past the bound of
 * what a buffered writer remembers. */
typedef struct counting_rs {
    size_t gets, writes;
} counting_rs;

static int crs_get(void *self, const char *key, char **out, app_error *err)
{
    (void)key, (void)err;
    ((counting_rs *)self)->gets++;
    *out = NULL;
    return 0;
}

static int crs_write_batch(void *self, const rs_write *writes, size_t n, app_error *err)
{
    (void)writes, (void)err;
    ((counting_rs *)self)->writes += n;
    return 0;
}

/* Past the keys it remembers with their values, a writer building a generation from the
 * start forgets the values but still knows which keys it wrote: a key it never wrote is
 * absent without asking the store; one it wrote is asked for. */
static void test_a_large_build_knows_its_keys(void **state)
{
    (void)state;
    counting_rs counts = {0};
    static const rs_store_ops ops = {.get = crs_get, .write_batch = crs_write_batch};
    rs_store store = {&ops, &counts};
    rm_models *m = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(rm_models_new(&m, &store, &err), 0);
    assert_int_equal(rm_models_add(m, &orders, &err), 0);
    rm_writer *w = NULL;
    assert_int_equal(rm_writer_new(&w, m, "order.projection", 2, true, &err), 0);
    rs_store wp = rm_writer_port(w);
    enum { KEYS = 120000 };
    char key[32], *out = NULL;
    for (int i = 0; i < KEYS; i++) {
        snprintf(key, sizeof key, "order:%d", i);
        assert_int_equal(wp.ops->get(wp.self, key, &out, &err), 0);
        assert_null(out);
        assert_int_equal(wp.ops->set(wp.self, key, "{}", &err), 0);
        if (i % 500 == 499)
            assert_int_equal(rm_writer_flush(w, &err), 0);
    }
    assert_int_equal(rm_writer_flush(w, &err), 0);
    assert_int_equal(counts.writes, KEYS);
    assert_int_equal(counts.gets, 0); /* every key was new, and the writer knew it */
    assert_int_equal(wp.ops->get(wp.self, "order:never", &out, &err), 0);
    assert_null(out);
    assert_int_equal(counts.gets, 0);
    assert_int_equal(wp.ops->get(wp.self, "order:7", &out, &err), 0);
    assert_int_equal(counts.gets, 1); /* written, value forgotten: asked for */

    /* Catching up after the build (not complete): every miss is asked for. */
    assert_int_equal(rm_writer_set_buffered(w, true, false, &err), 0);
    assert_int_equal(wp.ops->get(wp.self, "order:never", &out, &err), 0);
    assert_int_equal(counts.gets, 2);
    rm_writer_free(w);
    rm_models_free(m);
}

static void test_a_lost_read_store_answers_unavailable_not_missing(void **state)
{
    fixture *f = *state;
    go_live(f, "order.projection", 1);
    app_error err = APP_ERROR_INIT;
    assert_int_equal(f->store.ops->set(f->store.self, "order.projection@1:order:9", "x", &err), 0);
    char *out = NULL;
    assert_int_equal(get(f, "order:9", &out), 0); /* the reader caches the control record */
    assert_string_equal(out, "x");
    free(out);
    /* Everything is gone (a flush); the cached record still names generation 1, yet a miss
     * makes the reader look again and answer 503 instead of "not found". */
    size_t deleted = 0;
    assert_int_equal(f->store.ops->del_prefix(f->store.self, "", &deleted, &err), 0);
    assert_int_equal(get(f, "order:9", &out), APP_EUNAVAIL);
}

static void test_keys_from_before_generations_are_dropped(void **state)
{
    fixture *f = *state;
    app_error err = APP_ERROR_INIT;
    const char *keys[] = {"order:1",
                          "order:product:X",
                          "order.projection@1:order:1",
                          "order.product_catalog@2:order:product:X",
                          "read-model:order.projection",
                          "user:1"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        assert_int_equal(f->store.ops->set(f->store.self, keys[i], "{}", &err), 0);
    size_t deleted = 0;
    assert_int_equal(rm_drop_unversioned(f->m, "order.projection", &deleted, &err), 0);
    assert_int_equal(deleted, 2);
    assert_null(fake_rs_value(&f->fake, "order:1"));
    assert_null(fake_rs_value(&f->fake, "order:product:X"));
    for (size_t i = 2; i < sizeof keys / sizeof keys[0]; i++)
        assert_non_null(fake_rs_value(&f->fake, keys[i]));
}

static void test_control_records(void **state)
{
    fixture *f = *state;
    app_error err = APP_ERROR_INIT;
    rm_next n;
    bool found = true;
    assert_int_equal(rm_next_load(f->m, "order.projection", &n, &found, &err), 0);
    assert_false(found);
    rm_next ready = {1795888291945, true};
    assert_int_equal(rm_next_save(f->m, "order.projection", &ready, &err), 0);
    assert_int_equal(rm_next_load(f->m, "order.projection", &n, &found, &err), 0);
    assert_true(found);
    assert_true(n.ready);
    assert_int_equal(n.generation, 1795888291945);
    assert_int_equal(rm_next_clear(f->m, "order.projection", &err), 0);
    assert_int_equal(rm_next_load(f->m, "order.projection", &n, &found, &err), 0);
    assert_false(found);

    assert_int_equal(
        f->store.ops->set(f->store.self, "read-model:order.projection", "garbage", &err), 0);
    rm_control c;
    assert_int_equal(rm_control_load(f->m, "order.projection", &c, &found, &err), APP_EINTERNAL);
    assert_true(rm_new_generation(INT64_C(1) << 50) > INT64_C(1) << 50);
    char name[64];
    rm_checkpoint_name(name, sizeof name, "user.projection", 12);
    assert_string_equal(name, "user.projection@12");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_missing_or_building_model_is_unavailable, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_keys_map_to_the_live_generation_by_longest_prefix,
                                        setup, teardown),
        cmocka_unit_test(test_a_large_build_knows_its_keys),
        cmocka_unit_test_setup_teardown(test_batched_writer_in_the_live_generation, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_a_batch_reads_its_models_ahead, setup, teardown),
        cmocka_unit_test_setup_teardown(test_buffered_writer_builds_beside_the_live_generation,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_lost_read_store_answers_unavailable_not_missing,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_keys_from_before_generations_are_dropped, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_control_records, setup, teardown),
    };
    return cmocka_run_group_tests_name("read-model generations", tests, NULL, NULL);
}
