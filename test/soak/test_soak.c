/* `make soak`: steady mixed load for SOAK_MINUTES (default 30) against the sanitized app,
 * sampling its resident memory and open file descriptors every 10 s. It passes when:
 * - RSS is flat: the mean of the last third of the samples is within 10 % of the mean of the
 *   second third (the first third is warm-up: pools, caches, ASan's quarantine filling);
 * - file descriptors are flat: the most in the last third is at most the most in the second
 *   third, plus a few for connections in passing;
 * - every request got a 2xx;
 * - the app stops cleanly, and the sanitizers report no leak at exit.
 * The load: four clients, each registering a user, reading it back, changing its email,
 * placing a one-line order for one of ten products and cancelling every other order (stock is
 * added back as it runs low). The samples are printed as a table. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/uuid.h"
#include "test/support/http_client.h"
#include "test/support/services.h"

#define CLIENTS     4
#define PRODUCTS    10
#define SAMPLE_MS   10000
#define MAX_SAMPLES 2000

static ts_app app;
static atomic_bool stop_load;
static atomic_long requests, failures;
static char tag[9], sku_tag[9]; /* a run's own names; SKUs are upper case */
static char first_failure[512];
static pthread_mutex_t failure_lock = PTHREAD_MUTEX_INITIALIZER;

static int setup(void **state)
{
    (void)state;
    ts_app_share(&app);
    return ts_app_start(&app, NULL);
}

/* One request; a non-2xx answer counts as a failure (the first is kept). The body of a 2xx,
 * parsed, or NULL. */
static cJSON *call(const char *method, const char *path, const char *body)
{
    const char *headers[] = {"Content-Type: application/json", NULL};
    tc_response r;
    memset(&r, 0, sizeof r);
    int rc = tc_http("127.0.0.1", app.port, method, path, body ? headers : NULL, body,
                     body ? strlen(body) : 0, &r);
    atomic_fetch_add(&requests, 1);
    cJSON *j = NULL;
    if (rc == 0 && r.status >= 200 && r.status < 300) {
        j = tc_json(&r);
    } else {
        atomic_fetch_add(&failures, 1);
        pthread_mutex_lock(&failure_lock);
        if (!first_failure[0])
            snprintf(first_failure, sizeof first_failure, "%s %s: %d %s%s", method, path, r.status,
                     r.body ? r.body : "", r.error);
        pthread_mutex_unlock(&failure_lock);
    }
    tc_response_free(&r);
    return j;
}

static const char *str(const cJSON *o, const char *name)
{
    const char *v = cJSON_GetStringValue(cJSON_GetObjectItem(o, name));
    return v ? v : "";
}

static void add_stock(int p, int quantity)
{
    char path[96], body[64];
    snprintf(path, sizeof path, "/v1/products/S%s-%d/stock", sku_tag, p);
    snprintf(body, sizeof body, "{\"quantity\":%d}", quantity);
    cJSON_Delete(call("POST", path, body));
}

static void *client_main(void *arg)
{
    int who = (int)(intptr_t)arg;
    char body[256], path[128], id[UUID_STR_LEN], order[UUID_STR_LEN];
    for (long i = 0; !atomic_load(&stop_load); i++) {
        snprintf(body, sizeof body, "{\"email\":\"s%s.%d.%ld@example.com\",\"name\":\"Soak\"}", tag,
                 who, i);
        cJSON *u = call("POST", "/v1/users", body);
        snprintf(id, sizeof id, "%s", str(u, "id"));
        cJSON_Delete(u);
        if (!id[0])
            continue;
        snprintf(path, sizeof path, "/v1/users/%s", id);
        cJSON_Delete(call("GET", path, NULL));
        snprintf(path, sizeof path, "/v1/users/%s/email", id);
        snprintf(body, sizeof body, "{\"email\":\"s%s.%d.%ld.b@example.com\"}", tag, who, i);
        cJSON_Delete(call("PUT", path, body));

        int p = (int)((i + who) % PRODUCTS);
        snprintf(body, sizeof body,
                 "{\"customerId\":\"%s\",\"lines\":[{\"sku\":\"S%s-%d\",\"quantity\":1}]}", id,
                 sku_tag, p);
        cJSON *o = call("POST", "/v1/orders", body);
        snprintf(order, sizeof order, "%s", str(o, "id"));
        cJSON_Delete(o);
        if (order[0] && i % 2 == 0) {
            snprintf(path, sizeof path, "/v1/orders/%s/cancel", order);
            cJSON_Delete(call("POST", path, NULL));
        }
        if (i % 200 == 199)
            add_stock(p, 200);
    }
    return NULL;
}

/* VmRSS of pid in kB, and its open file descriptors. */
static long rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = atol(line + 6);
    if (f)
        fclose(f);
    return kb;
}

static int open_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static double mean(const long *v, size_t from, size_t to)
{
    double sum = 0;
    for (size_t i = from; i < to; i++)
        sum += (double)v[i];
    return to > from ? sum / (double)(to - from) : 0;
}

static long most(const long *v, size_t from, size_t to)
{
    long m = 0;
    for (size_t i = from; i < to; i++)
        m = v[i] > m ? v[i] : m;
    return m;
}

static void test_soak(void **state)
{
    (void)state;
    const char *minutes_env = getenv("SOAK_MINUTES");
    double minutes = minutes_env && *minutes_env ? atof(minutes_env) : 30;
    assert_true(minutes > 0);
    char id[UUID_STR_LEN];
    uuid_v4(id);
    snprintf(tag, sizeof tag, "%.8s", id);
    for (int i = 0; i < 8; i++)
        sku_tag[i] = (char)(tag[i] >= 'a' && tag[i] <= 'f' ? tag[i] - 'a' + 'A' : tag[i]);
    for (int p = 0; p < PRODUCTS; p++) {
        char body[256];
        snprintf(body, sizeof body,
                 "{\"sku\":\"S%s-%d\",\"name\":\"Soak %d\",\"price\":{\"amount\":100,"
                 "\"currency\":\"EUR\"},\"stock\":1000}",
                 sku_tag, p, p);
        cJSON *j = call("POST", "/v1/products", body);
        assert_non_null(j);
        cJSON_Delete(j);
    }

    pthread_t threads[CLIENTS];
    for (int i = 0; i < CLIENTS; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, client_main, (void *)(intptr_t)i), 0);
    static long rss[MAX_SAMPLES], fds[MAX_SAMPLES], done[MAX_SAMPLES];
    size_t n = 0;
    long long start = ts_now_ms(), end = start + (long long)(minutes * 60000);
    print_message("%8s %10s %6s %10s\n", "seconds", "RSS (MB)", "fds", "requests");
    while (ts_now_ms() < end && n < MAX_SAMPLES) {
        usleep(SAMPLE_MS * 1000);
        rss[n] = rss_kb(app.pid);
        fds[n] = open_fds(app.pid);
        done[n] = atomic_load(&requests);
        print_message("%8lld %10.1f %6ld %10ld\n", (ts_now_ms() - start) / 1000,
                      (double)rss[n] / 1024.0, fds[n], done[n]);
        n++;
    }
    atomic_store(&stop_load, true);
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(threads[i], NULL);

    long total = atomic_load(&requests), failed = atomic_load(&failures);
    print_message("%ld requests in %.1f minutes (%.0f/s), %ld failed\n", total, minutes,
                  (double)total / (minutes * 60), failed);
    if (failed)
        fail_msg("%ld of %ld requests failed; the first: %s", failed, total, first_failure);
    assert_true(n >= 3);
    size_t third = n / 3;
    double second = mean(rss, third, 2 * third), last = mean(rss, 2 * third, n);
    print_message("RSS: second third %.1f MB, last third %.1f MB (%+.1f %%); fds: most %ld "
                  "then %ld\n",
                  second / 1024, last / 1024, (last - second) / second * 100,
                  most(fds, third, 2 * third), most(fds, 2 * third, n));
    if (last > second * 1.10 || last < second * 0.90)
        fail_msg("RSS is not flat: %.1f MB in the second third, %.1f MB in the last", second / 1024,
                 last / 1024);
    if (most(fds, 2 * third, n) > most(fds, third, 2 * third) + 8)
        fail_msg("open file descriptors grow: at most %ld in the second third, %ld in the last",
                 most(fds, third, 2 * third), most(fds, 2 * third, n));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_soak),
        cmocka_unit_test(ts_test_app_stops_cleanly),
    };
    return cmocka_run_group_tests_name("soak", tests, setup, ts_app_group_end);
}
