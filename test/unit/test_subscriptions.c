/* The subscription runner on the in-memory event store: a subscriber that allows it handles
 * the events of different streams at the same time, those of one stream always in log
 * order; every event is handled, a failed one again after a pause, and the checkpoint never
 * passes an event that was not handled. Others see one event at a time. An event the handler
 * fails on for good (a poison event) goes to the dead letters after max_attempts and the
 * subscriber goes on; a dependency that is down never dead-letters; a redrive hands a dead
 * letter to the running subscriber again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/metrics.h"
#include "core/uuid.h"
#include "kernel/subscriptions.h"
#include "test/support/fake_stores.h"

#define STREAMS  10
#define VERSIONS 20
#define EVENTS   (STREAMS * VERSIONS)

/* What the handler saw. */
static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t seen_max[STREAMS];   /* highest version handled, per stream */
static int handled_count[EVENTS];   /* times each position was handled */
static int running, most_running;   /* handlers running now, and the most at once */
static int stream_running[STREAMS]; /* handlers of each stream running now */
/* A version came before the one ahead of it, or two of one stream ran at once. */
static bool out_of_order;
static int64_t fail_position; /* fails once at this position (0: never) */
static int failures;
/* A poison event: the handler fails at poison_position with poison_code (0: handles it),
 * APP_EUNAVAIL only transient_left times. poison_tries counts its attempts. */
static int64_t poison_position;
static int poison_code, transient_left, poison_tries;

static void reset(void)
{
    memset(seen_max, 0, sizeof seen_max);
    memset(handled_count, 0, sizeof handled_count);
    memset(stream_running, 0, sizeof stream_running);
    running = most_running = failures = 0;
    out_of_order = false;
    fail_position = 0;
    poison_position = 0;
    poison_code = transient_left = poison_tries = 0;
}

static int handle(const bus_ctx *ctx, const es_event *ev, app_error *err)
{
    (void)ctx;
    int stream = atoi(ev->stream_id + 2); /* "s-<n>" */
    pthread_mutex_lock(&seen_lock);
    if (ev->position == fail_position && failures == 0) {
        failures++;
        pthread_mutex_unlock(&seen_lock);
        return app_error_set(err, APP_EUNAVAIL, "injected failure");
    }
    if (ev->position == poison_position) {
        poison_tries++;
        int code = poison_code;
        if (code == APP_EUNAVAIL && transient_left-- <= 0)
            code = 0;
        if (code != 0) {
            pthread_mutex_unlock(&seen_lock);
            return app_error_set(err, code, "cannot apply event %lld", (long long)ev->position);
        }
    }
    if (seen_max[stream] < ev->version - 1 || stream_running[stream] > 0)
        out_of_order = true; /* its predecessor in the stream was not handled yet */
    stream_running[stream]++;
    running++;
    if (running > most_running)
        most_running = running;
    pthread_mutex_unlock(&seen_lock);
    /* A step that waits, as a saga's commands wait for their commit; stream 0's take longer,
     * so lanes drift apart and a stream split over two of them would overtake itself. */
    usleep(stream == 0 ? 8000 : 1000);
    pthread_mutex_lock(&seen_lock);
    running--;
    stream_running[stream]--;
    if (ev->version > seen_max[stream])
        seen_max[stream] = ev->version;
    handled_count[ev->position - 1]++;
    pthread_mutex_unlock(&seen_lock);
    return 0;
}

static const mod_subscription by_stream = {
    .name = "test.by_stream", .source_context = "t", .handle = handle, .flags = MOD_SUB_BY_STREAM};
static const mod_subscription in_order = {
    .name = "test.in_order", .source_context = "t", .handle = handle};

/* Streams s-0..s-9, versions interleaved: s-0 v1, s-1 v1, ..., s-9 v1, s-0 v2, ... */
static void fill(fake_es *f)
{
    es_store port = fake_es_port(f);
    for (int v = 1; v <= VERSIONS; v++) {
        for (int s = 0; s < STREAMS; s++) {
            char stream[16], id[UUID_STR_LEN];
            snprintf(stream, sizeof stream, "s-%d", s);
            uuid_v4(id);
            es_new_event ev = {id, "t.thing.happened", 1, "{}", "{}"};
            es_append_req req = {.context = "t",
                                 .stream_id = stream,
                                 .expected_version = v - 1,
                                 .events = &ev,
                                 .n_events = 1};
            app_error err = APP_ERROR_INIT;
            assert_int_equal(port.ops->append(port.self, &req, NULL, &err), 0);
        }
    }
}

static int64_t checkpoint_of(fake_es *f, const char *name)
{
    es_store port = fake_es_port(f);
    int64_t pos = 0;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(port.ops->load_checkpoint(port.self, "t", name, &pos, &err), 0);
    return pos;
}

/* What a run took: its time, and the checkpoints it stored. */
typedef struct run_result {
    long ms;
    size_t checkpoints_saved;
} run_result;

/* Runs sub over the filled log with lanes and batch_size until its stored checkpoint is at
 * the end; out (may be NULL) gets what it took. */
static void run_batches(const mod_subscription *sub, int lanes, int batch_size, run_result *out)
{
    fake_es f;
    fake_rs rs;
    fake_es_init(&f, "t");
    fake_rs_init(&rs);
    fill(&f);
    es_store events = fake_es_port(&f);
    rs_store reads = fake_rs_port(&rs);
    sub_runner_options o = {.events = &events,
                            .reads = &reads,
                            .batch_size = batch_size,
                            .poll_interval_ms = 10,
                            .lanes = lanes};
    sub_runner *r = NULL;
    app_error err = APP_ERROR_INIT;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(sub_runner_new(&r, &o, &err), 0);
    assert_int_equal(sub_runner_add(r, "t", sub, &err), 0);
    assert_int_equal(sub_runner_start(r, &err), 0);
    for (int i = 0; i < 3000 && checkpoint_of(&f, sub->name) < EVENTS; i++)
        usleep(10 * 1000);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    sub_runner_free(r);
    assert_int_equal(checkpoint_of(&f, sub->name), EVENTS);
    if (out) {
        out->ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        out->checkpoints_saved = f.checkpoints_saved;
    }
    fake_es_free(&f);
    fake_rs_free(&rs);
    metrics_reset();
}

static void run(const mod_subscription *sub, int lanes)
{
    run_batches(sub, lanes, 64, NULL);
}

static void test_streams_at_once_each_in_order(void **state)
{
    (void)state;
    reset();
    fail_position = 57; /* some event in the middle of the first batch */
    run(&by_stream, 4);
    assert_false(out_of_order);
    assert_int_equal(failures, 1);
    for (int i = 0; i < EVENTS; i++)
        if (handled_count[i] < 1)
            fail_msg("event at position %d was never handled", i + 1);
    for (int s = 0; s < STREAMS; s++)
        assert_int_equal(seen_max[s], VERSIONS);
    if (most_running < 2 || most_running > 4)
        fail_msg("%d events were handled at once with four lanes", most_running);
}

static void test_one_at_a_time_without_the_flag(void **state)
{
    (void)state;
    reset();
    run(&in_order, 4);
    assert_false(out_of_order);
    assert_int_equal(most_running, 1);
    for (int i = 0; i < EVENTS; i++)
        assert_int_equal(handled_count[i], 1); /* no failure: each exactly once */
}

static void test_one_lane_is_one_at_a_time(void **state)
{
    (void)state;
    reset();
    run(&by_stream, 1);
    assert_int_equal(most_running, 1);
    assert_false(out_of_order);
}

/* ---- checkpoints --------------------------------------------------------------------- */

static atomic_int quick_handled;

static int quick(const bus_ctx *ctx, const es_event *ev, app_error *err)
{
    (void)ctx, (void)ev, (void)err;
    atomic_fetch_add(&quick_handled, 1);
    return 0;
}

/* A subscriber busy with one event a batch does not store its checkpoint after each: at most
 * every SUB_SAVE_MS (200 ms), and once it has caught up, where it then is. */
static void test_a_busy_subscriber_saves_its_checkpoint_now_and_then(void **state)
{
    (void)state;
    static const mod_subscription sub = {
        .name = "test.quick", .source_context = "t", .handle = quick};
    atomic_store(&quick_handled, 0);
    run_result res;
    run_batches(&sub, 1, 1, &res); /* stored at the end once caught up */
    assert_int_equal(atomic_load(&quick_handled), EVENTS);
    size_t most = (size_t)(res.ms / 200) + 2; /* one per 200 ms, and the one at the end */
    if (res.checkpoints_saved > most)
        fail_msg("%zu checkpoints stored for %d batches in %ld ms (at most %zu)",
                 res.checkpoints_saved, EVENTS, res.ms, most);
}

/* ---- a projection's reads ------------------------------------------------------------- */

/* Keeps "t:<stream>" = the stream's last version, reading it first as projections do. */
static int project(const bus_ctx *ctx, const es_event *ev, app_error *err)
{
    char key[64], *text = NULL, value[32];
    snprintf(key, sizeof key, "t:%s", ev->stream_id);
    int rc = ctx->reads->ops->get(ctx->reads->self, key, &text, err);
    bool seen = rc == 0 && text && atoll(text) >= ev->version;
    free(text);
    if (rc != 0 || seen)
        return rc;
    snprintf(value, sizeof value, "%lld", (long long)ev->version);
    return ctx->reads->ops->set(ctx->reads->self, key, value, err);
}

static bool project_key(const es_event *ev, char *out, size_t size)
{
    return (size_t)snprintf(out, size, "t:%s", ev->stream_id) < size;
}

static const char *const projected_keys[] = {"t:", NULL};
static const mod_subscription projection = {.name = "test.projection",
                                            .source_context = "t",
                                            .handle = project,
                                            .flags = MOD_SUB_PROJECTION,
                                            .keys = projected_keys,
                                            .read_key = project_key};

/* Runs the projection until it has handled the whole log. */
static void project_all(es_store *events, rs_store *reads, rm_models *models, int64_t end)
{
    sub_runner_options o = {.events = events,
                            .reads = reads,
                            .models = models,
                            .batch_size = 64,
                            .poll_interval_ms = 10,
                            .lanes = 1};
    sub_runner *r = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(sub_runner_new(&r, &o, &err), 0);
    assert_int_equal(sub_runner_add(r, "t", &projection, &err), 0);
    assert_int_equal(sub_runner_start(r, &err), 0);
    sub_status st = {0};
    for (int i = 0; i < 3000 && (st.checkpoint < end || st.rebuilding); i++) {
        usleep(10 * 1000);
        sub_runner_status(r, 0, &st);
    }
    sub_runner_free(r);
    assert_int_equal(st.checkpoint, end);
}

/* In a live read model, a batch's handlers find what they read in the writer: the runner
 * asked for all of it in one round trip (rs_store_ops.get_many) before the batch. */
static void test_a_projection_reads_a_batch_in_one_round_trip(void **state)
{
    (void)state;
    fake_es f;
    fake_rs rs;
    fake_es_init(&f, "t");
    fake_rs_init(&rs);
    fill(&f);
    es_store events = fake_es_port(&f);
    rs_store reads = fake_rs_port(&rs);
    rm_models *models = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(rm_models_new(&models, &reads, &err), 0);
    assert_int_equal(rm_models_add(models, &projection, &err), 0);
    project_all(&events, &reads, models, EVENTS); /* built from the log, then live */

    /* One more version of each stream, handled by a runner that finds the model live. */
    for (int s = 0; s < STREAMS; s++) {
        char stream[16], id[UUID_STR_LEN];
        snprintf(stream, sizeof stream, "s-%d", s);
        uuid_v4(id);
        es_new_event ev = {id, "t.thing.happened", 1, "{}", "{}"};
        es_append_req req = {.context = "t",
                             .stream_id = stream,
                             .expected_version = VERSIONS,
                             .events = &ev,
                             .n_events = 1};
        assert_int_equal(events.ops->append(events.self, &req, NULL, &err), 0);
    }
    rs.gets_of = "test.projection@";
    rs.gets = rs.get_manys = rs.keys_asked = 0;
    project_all(&events, &reads, models, EVENTS + STREAMS);
    assert_int_equal(rs.get_manys, 1);
    assert_int_equal(rs.keys_asked, STREAMS);
    assert_int_equal(rs.gets, 0);
    rm_control c = {0};
    bool found = false;
    assert_int_equal(rm_control_load(models, "test.projection", &c, &found, &err), 0);
    assert_true(found);
    for (int s = 0; s < STREAMS; s++) {
        char key[64];
        snprintf(key, sizeof key, "test.projection@%lld:t:s-%d", (long long)c.generation, s);
        assert_string_equal(fake_rs_value(&rs, key), "21");
    }
    rm_models_free(models);
    fake_es_free(&f);
    fake_rs_free(&rs);
    metrics_reset();
}

/* ---- poison events --------------------------------------------------------------------- */

#define POISON 57 /* an event in the middle of the first batch */

typedef struct running_sub {
    fake_es f;
    fake_rs rs;
    es_store events;
    rs_store reads;
    sub_runner *r;
} running_sub;

/* Starts sub over the filled log (max_attempts 3, a backoff of 1 to 4 ms) and waits until its
 * checkpoint is at the end. */
static void start(running_sub *rn, const mod_subscription *sub, int lanes)
{
    fake_es_init(&rn->f, "t");
    fake_rs_init(&rn->rs);
    fill(&rn->f);
    rn->events = fake_es_port(&rn->f);
    rn->reads = fake_rs_port(&rn->rs);
    sub_runner_options o = {.events = &rn->events,
                            .reads = &rn->reads,
                            .batch_size = 64,
                            .poll_interval_ms = 10,
                            .lanes = lanes,
                            .max_attempts = 3,
                            .backoff_min_ms = 1,
                            .backoff_max_ms = 4};
    app_error err = APP_ERROR_INIT;
    assert_int_equal(sub_runner_new(&rn->r, &o, &err), 0);
    assert_int_equal(sub_runner_add(rn->r, "t", sub, &err), 0);
    assert_int_equal(sub_runner_start(rn->r, &err), 0);
    for (int i = 0; i < 3000 && checkpoint_of(&rn->f, sub->name) < EVENTS; i++)
        usleep(10 * 1000);
    assert_int_equal(checkpoint_of(&rn->f, sub->name), EVENTS);
}

static void stop(running_sub *rn)
{
    sub_runner_free(rn->r);
    fake_es_free(&rn->f);
    fake_rs_free(&rn->rs);
    metrics_reset();
}

static es_dead_letter_list dead_letters(running_sub *rn)
{
    es_dead_letter_list l = {0};
    app_error err = APP_ERROR_INIT;
    assert_int_equal(
        rn->events.ops->list_dead_letters(rn->events.self, "t", NULL, 0, 100, &l, &err), 0);
    return l;
}

static int tries(void)
{
    pthread_mutex_lock(&seen_lock);
    int n = poison_tries;
    pthread_mutex_unlock(&seen_lock);
    return n;
}

/* The poison event is tried max_attempts times, dead-lettered with the subscriber's name and
 * the handler's error, and everything after it is handled, its own stream's events too; a
 * redrive fails again while the handler still cannot apply it, then hands it over. */
static void poison_run(const mod_subscription *sub, int lanes)
{
    reset();
    poison_position = POISON;
    poison_code = APP_EINVAL;
    running_sub rn;
    start(&rn, sub, lanes);
    assert_int_equal(tries(), 3);
    for (int i = 0; i < EVENTS; i++)
        if (i + 1 != POISON && handled_count[i] < 1)
            fail_msg("event at position %d was never handled", i + 1);
    assert_int_equal(handled_count[POISON - 1], 0);
    assert_int_equal(seen_max[(POISON - 1) % STREAMS], VERSIONS);

    es_dead_letter_list l = dead_letters(&rn);
    assert_int_equal(l.len, 1);
    assert_int_equal(l.items[0].position, POISON);
    assert_string_equal(l.items[0].subscriber, sub->name);
    assert_int_equal(l.items[0].attempts, 1);
    assert_non_null(strstr(l.items[0].error, "cannot apply event 57"));
    es_dead_letter d = l.items[0];

    char reason[256];
    assert_int_equal(sub_dead_letter_redrive(&rn.events, "t", &d, 5000, reason, sizeof reason), -1);
    assert_non_null(strstr(reason, "failed again: cannot apply event 57"));
    assert_int_equal(tries(), 4);
    es_dead_letter_list again = dead_letters(&rn);
    assert_int_equal(again.len, 1);
    assert_int_equal(again.items[0].attempts, 2);
    assert_false(again.items[0].redrive_requested);
    es_dead_letter_list_free(&again);

    pthread_mutex_lock(&seen_lock);
    poison_code = 0; /* fixed */
    pthread_mutex_unlock(&seen_lock);
    assert_int_equal(sub_dead_letter_redrive(&rn.events, "t", &d, 5000, reason, sizeof reason), 0);
    assert_int_equal(handled_count[POISON - 1], 1);
    es_dead_letter_list none = dead_letters(&rn);
    assert_int_equal(none.len, 0);
    es_dead_letter_list_free(&none);
    es_dead_letter_list_free(&l);
    stop(&rn);
}

static void test_poison_event_by_stream(void **state)
{
    (void)state;
    poison_run(&by_stream, 4);
}

static void test_poison_event_in_order(void **state)
{
    (void)state;
    poison_run(&in_order, 1);
}

/* A dependency down (APP_EUNAVAIL) ten times in a row on one event, past max_attempts (3):
 * waited out, never dead-lettered, and the event is handled once it is back. */
static void test_a_dependency_down_never_dead_letters(void **state)
{
    (void)state;
    reset();
    poison_position = POISON;
    poison_code = APP_EUNAVAIL;
    transient_left = 10;
    running_sub rn;
    start(&rn, &by_stream, 4);
    assert_int_equal(tries(), 11);
    assert_int_equal(handled_count[POISON - 1], 1);
    es_dead_letter_list l = dead_letters(&rn);
    assert_int_equal(l.len, 0);
    es_dead_letter_list_free(&l);
    assert_false(out_of_order);
    stop(&rn);
}

/* A redrive nobody takes (no process runs the subscriber) gives up after its wait. */
static void test_a_redrive_nobody_takes(void **state)
{
    (void)state;
    fake_es f;
    fake_es_init(&f, "t");
    es_store events = fake_es_port(&f);
    app_error err = APP_ERROR_INIT;
    assert_int_equal(
        events.ops->add_dead_letter(events.self, "t", "test.nobody", 3, NULL, "it broke", &err), 0);
    es_dead_letter_list l = {0};
    assert_int_equal(events.ops->list_dead_letters(events.self, "t", NULL, 0, 10, &l, &err), 0);
    assert_int_equal(l.len, 1);
    char reason[256];
    assert_int_equal(sub_dead_letter_redrive(&events, "t", &l.items[0], 300, reason, sizeof reason),
                     -1);
    assert_non_null(strstr(reason, "is a process running subscriber test.nobody?"));
    es_dead_letter_list_free(&l);
    assert_int_equal(events.ops->list_dead_letters(events.self, "t", NULL, 0, 10, &l, &err), 0);
    assert_true(l.items[0].redrive_requested); /* it runs when a process does */
    es_dead_letter_list_free(&l);
    fake_es_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_streams_at_once_each_in_order),
        cmocka_unit_test(test_one_at_a_time_without_the_flag),
        cmocka_unit_test(test_one_lane_is_one_at_a_time),
        cmocka_unit_test(test_a_projection_reads_a_batch_in_one_round_trip),
        cmocka_unit_test(test_a_busy_subscriber_saves_its_checkpoint_now_and_then),
        cmocka_unit_test(test_poison_event_by_stream),
        cmocka_unit_test(test_poison_event_in_order),
        cmocka_unit_test(test_a_dependency_down_never_dead_letters),
        cmocka_unit_test(test_a_redrive_nobody_takes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
