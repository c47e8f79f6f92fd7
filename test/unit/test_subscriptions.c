/* The subscription runner on the in-memory event store: a subscriber that allows it handles
 * the events of different streams at the same time, those of one stream always in log
 * order; every event is handled, a failed one again after a pause, and the checkpoint never
 * passes an event that was not handled. Others see one event at a time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

static void reset(void)
{
    memset(seen_max, 0, sizeof seen_max);
    memset(handled_count, 0, sizeof handled_count);
    memset(stream_running, 0, sizeof stream_running);
    running = most_running = failures = 0;
    out_of_order = false;
    fail_position = 0;
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

static const mod_subscription by_stream = {"test.by_stream", "t", handle, MOD_SUB_BY_STREAM, NULL};
static const mod_subscription in_order = {"test.in_order", "t", handle, 0, NULL};

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

/* Runs sub over the filled log with lanes until its checkpoint is at the end. */
static void run(const mod_subscription *sub, int lanes)
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
                            .batch_size = 64,
                            .poll_interval_ms = 10,
                            .lanes = lanes};
    sub_runner *r = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(sub_runner_new(&r, &o, &err), 0);
    assert_int_equal(sub_runner_add(r, "t", sub, &err), 0);
    assert_int_equal(sub_runner_start(r, &err), 0);
    for (int i = 0; i < 3000 && checkpoint_of(&f, sub->name) < EVENTS; i++)
        usleep(10 * 1000);
    sub_runner_free(r);
    assert_int_equal(checkpoint_of(&f, sub->name), EVENTS);
    fake_es_free(&f);
    fake_rs_free(&rs);
    metrics_reset();
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_streams_at_once_each_in_order),
        cmocka_unit_test(test_one_at_a_time_without_the_flag),
        cmocka_unit_test(test_one_lane_is_one_at_a_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
