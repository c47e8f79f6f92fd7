/* The combiner (src/kernel/combiner.c): an operation alone runs at once on its caller's
 * thread; operations that arrive while their stream's group runs wait, and run as the next
 * group, led by the first of them; a group never mixes streams, nor holds more than
 * COMB_GROUP_MAX; every operation gets its own result, exactly once. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernel/combiner.h"
#include "test/support/services.h"

enum { MAX_GROUPS = 64, MAX_OPS = 200 };

/* What the run function saw: each group's stream, size and leader. */
typedef struct log_entry {
    char stream[16];
    size_t size;
    pthread_t leader;
} log_entry;

static comb_table *table;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static log_entry groups[MAX_GROUPS];
static size_t n_groups;
static int runs_of[MAX_OPS]; /* by op number: times an op was in a group */
/* While holding, the first group to run waits (and says it runs): the test queues others
 * behind it meanwhile. */
static atomic_int holding, held;

typedef struct op_arg {
    int number;
    int answer; /* the rc the run gives it */
} op_arg;

static bool released(void *arg)
{
    (void)arg;
    return !holding;
}

static void record(const char *stream, comb_op *const *ops, size_t n)
{
    pthread_mutex_lock(&log_lock);
    if (n_groups < MAX_GROUPS) {
        snprintf(groups[n_groups].stream, sizeof groups[n_groups].stream, "%s", stream);
        groups[n_groups].size = n;
        groups[n_groups].leader = pthread_self();
        n_groups++;
    }
    for (size_t i = 0; i < n; i++)
        runs_of[((op_arg *)ops[i]->arg)->number]++;
    pthread_mutex_unlock(&log_lock);
}

static void run(const char *stream, comb_op *const *ops, size_t n)
{
    if (holding && !held) {
        held = 1;
        /* On a caller's thread, where cmocka cannot fail the test: past the guard the group
         * runs, and the test's own checks say what went wrong. */
        (void)ts_wait_until(released, NULL, TS_HANG_GUARD_MS);
    }
    record(stream, ops, n);
    for (size_t i = 0; i < n; i++) {
        op_arg *a = ops[i]->arg;
        ops[i]->rc = a->answer;
        if (a->answer != 0)
            snprintf(ops[i]->err.message, sizeof ops[i]->err.message, "op %d refused", a->number);
        ops[i]->err.code = a->answer;
    }
}

static int setup(void **state)
{
    (void)state;
    n_groups = 0;
    memset(runs_of, 0, sizeof runs_of);
    holding = held = 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    comb_table_free(table);
    table = NULL;
    return 0;
}

typedef struct caller {
    const char *stream;
    op_arg arg;
    comb_op op;
    int rc;
    pthread_t thread;
} caller;

static void *call(void *p)
{
    caller *c = p;
    c->op.arg = &c->arg;
    c->rc = comb_run(table, c->stream, &c->op, run);
    return NULL;
}

static void start(caller *c, const char *stream, int number, int answer)
{
    *c = (caller){.stream = stream, .arg = {number, answer}};
    assert_int_equal(pthread_create(&c->thread, NULL, call, c), 0);
}

typedef struct queue_of {
    const char *stream;
    size_t len;
} queue_of;

static bool queued(void *arg)
{
    const queue_of *q = arg;
    return comb_queued(table, q->stream) == q->len;
}

static bool holds(void *arg)
{
    (void)arg;
    return held;
}

/* Starts c and returns once it waits on its stream (queued behind a running group). */
static void start_queued(caller *c, const char *stream, int number, int answer)
{
    queue_of q = {stream, comb_queued(table, stream) + 1};
    start(c, stream, number, answer);
    if (ts_wait_until(queued, &q, TS_HANG_GUARD_MS) != 0)
        fail_msg("operation %d never queued on %s", number, stream);
}

/* Starts c as the leader of a group that holds until release(). */
static void start_holding(caller *c, const char *stream)
{
    holding = 1;
    start(c, stream, 0, 0);
    if (ts_wait_until(holds, NULL, TS_HANG_GUARD_MS) != 0)
        fail_msg("the first operation never ran");
}

static void release(void)
{
    holding = 0;
}

static void test_alone(void **state)
{
    (void)state;
    assert_non_null(table = comb_table_new(8));
    op_arg ok = {0, 0}, refused = {1, 7};
    comb_op a = {.arg = &ok}, b = {.arg = &refused};
    assert_int_equal(comb_run(table, "s", &a, run), 0);
    assert_int_equal(comb_run(table, "s", &b, run), 7);
    assert_int_equal(b.err.code, 7);
    assert_string_equal(b.err.message, "op 1 refused");
    /* Each ran alone, on this thread. */
    assert_int_equal(n_groups, 2);
    assert_int_equal(groups[0].size, 1);
    assert_true(pthread_equal(groups[0].leader, pthread_self()));
    assert_int_equal(comb_queued(table, "s"), 0);
}

/* While the first group runs, the others queue; they run as one group, led by the first to
 * arrive, and each gets its own answer. */
static void test_waiters_run_as_one_group(void **state)
{
    (void)state;
    enum { WAITERS = 10 };
    assert_non_null(table = comb_table_new(8));
    caller first, waiters[WAITERS];
    start_holding(&first, "hot");
    for (int i = 0; i < WAITERS; i++)
        start_queued(&waiters[i], "hot", 1 + i, i % 3 == 0 ? 5 : 0);
    release();
    pthread_join(first.thread, NULL);
    for (int i = 0; i < WAITERS; i++)
        pthread_join(waiters[i].thread, NULL);

    assert_int_equal(n_groups, 2);
    assert_int_equal(groups[0].size, 1);
    assert_int_equal(groups[1].size, WAITERS);
    assert_true(pthread_equal(groups[0].leader, first.thread));
    assert_true(pthread_equal(groups[1].leader, waiters[0].thread));
    assert_int_equal(first.rc, 0);
    for (int i = 0; i < WAITERS; i++) {
        assert_int_equal(waiters[i].rc, i % 3 == 0 ? 5 : 0);
        assert_int_equal(runs_of[1 + i], 1);
    }
    assert_int_equal(comb_queued(table, "hot"), 0);
}

/* One slot for every stream: a group holds one stream's operations only, and the other
 * stream's wait their turn, in order. */
static void test_a_group_is_one_stream(void **state)
{
    (void)state;
    assert_non_null(table = comb_table_new(1));
    caller first, w[4];
    start_holding(&first, "a");
    start_queued(&w[0], "b", 1, 0);
    start_queued(&w[1], "a", 2, 0);
    start_queued(&w[2], "b", 3, 0);
    start_queued(&w[3], "a", 4, 0);
    release();
    pthread_join(first.thread, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(w[i].thread, NULL);

    /* a alone; then b's two (the first waiter was b's); then a's two. */
    assert_int_equal(n_groups, 3);
    assert_string_equal(groups[0].stream, "a");
    assert_string_equal(groups[1].stream, "b");
    assert_int_equal(groups[1].size, 2);
    assert_true(pthread_equal(groups[1].leader, w[0].thread));
    assert_string_equal(groups[2].stream, "a");
    assert_int_equal(groups[2].size, 2);
    assert_true(pthread_equal(groups[2].leader, w[1].thread));
    for (int i = 0; i <= 4; i++)
        assert_int_equal(runs_of[i], 1);
}

/* More waiters than a group holds: they run in groups of COMB_GROUP_MAX at most. */
static void test_groups_are_bounded(void **state)
{
    (void)state;
    enum { WAITERS = COMB_GROUP_MAX + 5 };
    assert_non_null(table = comb_table_new(4));
    caller first;
    static caller waiters[WAITERS];
    start_holding(&first, "big");
    for (int i = 0; i < WAITERS; i++)
        start_queued(&waiters[i], "big", 1 + i, 0);
    release();
    pthread_join(first.thread, NULL);
    for (int i = 0; i < WAITERS; i++)
        pthread_join(waiters[i].thread, NULL);

    assert_int_equal(n_groups, 3);
    assert_int_equal(groups[1].size, COMB_GROUP_MAX);
    assert_int_equal(groups[2].size, 5);
    for (int i = 0; i <= WAITERS; i++)
        assert_int_equal(runs_of[i], 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_waiters_run_as_one_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_group_is_one_stream, setup, teardown),
        cmocka_unit_test_setup_teardown(test_groups_are_bounded, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
