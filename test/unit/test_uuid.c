/* Random UUIDs (src/core/uuid.c): the canonical version 4 form, no repeats across threads,
 * and a child after fork() never hands out the ids its parent is about to. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/uuid.h"

static void test_form(void **state)
{
    (void)state;
    for (int i = 0; i < 1000; i++) {
        char id[UUID_STR_LEN];
        uuid_v4(id);
        assert_int_equal(strlen(id), 36);
        assert_true(uuid_valid(id));
        assert_int_equal(id[14], '4');           /* the version */
        assert_non_null(strchr("89ab", id[19])); /* the variant */
    }
    assert_false(uuid_valid("0F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F9"));
    assert_false(uuid_valid("0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f"));
    assert_false(uuid_valid("0f1e2d3c04b5a-4978-8695-a4b3c2d1e0f9"));
    assert_false(uuid_valid(NULL));
}

enum { THREADS = 4, EACH = 5000 };
static char ids[THREADS * EACH][UUID_STR_LEN];

static void *make_ids(void *arg)
{
    char(*mine)[UUID_STR_LEN] = arg;
    for (int i = 0; i < EACH; i++)
        uuid_v4(mine[i]);
    return NULL;
}

static int by_text(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_no_repeats(void **state)
{
    (void)state;
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, make_ids, ids[t * EACH]), 0);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    qsort(ids, THREADS * EACH, UUID_STR_LEN, by_text);
    for (int i = 1; i < THREADS * EACH; i++)
        assert_string_not_equal(ids[i - 1], ids[i]);
}

/* The child's first id against the parent's next one: with the parent's unused random bytes
 * copied into the child, they would be the same. */
static void test_fork(void **state)
{
    (void)state;
    char first[UUID_STR_LEN], mine[UUID_STR_LEN], theirs[UUID_STR_LEN] = "";
    uuid_v4(first); /* the pool is filled, and most of it unused */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char id[UUID_STR_LEN];
        uuid_v4(id);
        ssize_t n = write(fds[1], id, sizeof id);
        _exit(n == (ssize_t)sizeof id ? 0 : 1);
    }
    close(fds[1]);
    assert_int_equal(read(fds[0], theirs, sizeof theirs), (ssize_t)sizeof theirs);
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    uuid_v4(mine);
    assert_true(uuid_valid(theirs));
    assert_string_not_equal(mine, theirs);
    assert_string_not_equal(first, theirs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_form),
        cmocka_unit_test(test_no_repeats),
        cmocka_unit_test(test_fork),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
