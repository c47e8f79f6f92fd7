/* `make chaos`: mixed load from a bounded client against two app processes for CHAOS_SECONDS
 * (default 600) while a scheduler with a fixed seed (CHAOS_SEED, default 42) injects faults:
 * SIGKILL of one app and its restart, PostgreSQL restarted (-m fast or -m immediate), Redis
 * restarted (every other time empty), the Kafka broker stopped and started. At the end it
 * checks, against its own list of answers:
 * - every command answered 2xx has its events in the log (lost: 0);
 * - no product has reserved above onHand, or a negative availability;
 * - every order is confirmed or cancelled, none still pending past its deadline;
 * - every shipped order has each line's reservation committed, and no order is both shipped
 *   and cancelled, no reservation both committed and released;
 * - every event of the run is on Kafka at least once, each stream in order once duplicates
 *   are dropped;
 * - the read models equal a fresh replay: what the API reads before `app replay` equals what
 *   it reads after the service switched to the replayed generation.
 * And prints a table: faults injected, requests, 2xx, 503s, lost. */
#include <cjson/cJSON.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
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
#include "test/support/kafka_reader.h"
#include "test/support/services.h"
#include "test/support/str_map.h"

#define APPS       2
#define CLIENTS    4
#define PRODUCTS   8
#define DEADLINE   "10000" /* order.placement_timeout_ms */
#define GIVE_UP_MS 60000   /* a client stops resending one request after this */

static ts_app apps[APPS];
static pthread_mutex_t apps_lock = PTHREAD_MUTEX_INITIALIZER; /* a restart in progress */
static char env_kafka[160], env_prefix[160];
static const char *app_env[] = {"APP_KAFKA_ENABLED=true",
                                env_kafka,
                                env_prefix,
                                "APP_ORDER_PLACEMENT_TIMEOUT_MS=" DEADLINE,
                                "APP_HTTP_REQUEST_TIMEOUT_MS=5000",
                                NULL};
static char tag[9], sku_tag[9], topic_prefix[64];

typedef enum { OP_REGISTER, OP_ORDER, OP_CANCEL, OP_SHIP, OP_STOCK, OP_KINDS } op_kind;
static const char *const op_names[] = {"registrations", "orders", "cancellations", "shipments",
                                       "stock additions"};

/* What the clients got answered 2xx, shared. */
typedef struct answered {
    op_kind kind;
    char id[UUID_STR_LEN]; /* the user or order; the sku for a stock addition */
} answered;

static pthread_mutex_t book_lock = PTHREAD_MUTEX_INITIALIZER;
typedef char uuid_text[UUID_STR_LEN];
static answered *book; /* every 2xx of the run, however long */
static uuid_text *users, *orders;
static size_t n_book, n_users, n_orders, cap_book, cap_users, cap_orders;
static atomic_long requests, ok2xx, unavailable, refused, gave_up, wrong;
static char first_wrong[512];
static atomic_bool stop_load;

static int setup(void **state)
{
    (void)state;
    const char *brokers = getenv("APP_TEST_KAFKA_BROKERS");
    if (!brokers || !*brokers) {
        fprintf(stderr, "chaos: needs the tests' Kafka broker (test/run.sh starts it)\n");
        return -1;
    }
    char id[UUID_STR_LEN];
    uuid_v4(id);
    snprintf(tag, sizeof tag, "%.8s", id);
    for (int i = 0; i < 8; i++)
        sku_tag[i] = (char)(tag[i] >= 'a' && tag[i] <= 'f' ? tag[i] - 'a' + 'A' : tag[i]);
    snprintf(topic_prefix, sizeof topic_prefix, "chaos-%s.", tag);
    snprintf(env_kafka, sizeof env_kafka, "APP_KAFKA_BROKERS=%s", brokers);
    snprintf(env_prefix, sizeof env_prefix, "APP_KAFKA_TOPIC_PREFIX=%s", topic_prefix);
    for (int i = 0; i < APPS; i++)
        if (ts_app_start(&apps[i], app_env) != 0)
            return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < APPS; i++)
        ts_app_end(&apps[i]);
    free(book);
    free(users);
    free(orders);
    return 0;
}

static void note_wrong(const char *fmt, ...)
{
    if (atomic_fetch_add(&wrong, 1) == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(first_wrong, sizeof first_wrong, fmt, ap);
        va_end(ap);
    }
}

static int app_port(int i)
{
    pthread_mutex_lock(&apps_lock);
    int port = apps[i].port;
    pthread_mutex_unlock(&apps_lock);
    return port;
}

/* Sends one command until it has an answer: resent with the same Idempotency-Key after a 503
 * or no answer at all (an app killed: the other one then), up to GIVE_UP_MS. Returns the
 * final status (0: gave up) and the body's JSON in *out (2xx only). */
static int command(unsigned *seed, const char *method, const char *path, const char *body,
                   cJSON **out)
{
    char key[UUID_STR_LEN], key_header[80];
    uuid_v4(key);
    snprintf(key_header, sizeof key_header, "Idempotency-Key: %s", key);
    const char *headers[] = {"Content-Type: application/json", key_header, NULL};
    int target = (int)(rand_r(seed) % APPS);
    long long until = ts_now_ms() + GIVE_UP_MS;
    *out = NULL;
    while (ts_now_ms() < until) {
        tc_response r;
        memset(&r, 0, sizeof r);
        int rc = tc_http("127.0.0.1", app_port(target), method, path, body ? headers : NULL, body,
                         body ? strlen(body) : 0, &r);
        atomic_fetch_add(&requests, 1);
        int status = rc == 0 ? r.status : 0;
        if (status >= 200 && status < 300) {
            atomic_fetch_add(&ok2xx, 1);
            *out = tc_json(&r);
            tc_response_free(&r);
            return status;
        }
        if (status == 503) {
            atomic_fetch_add(&unavailable, 1);
            if (!tc_header(&r, "Retry-After"))
                note_wrong("%s %s: 503 without Retry-After", method, path);
        } else if (status == 409) {
            atomic_fetch_add(&refused, 1); /* e.g. cancelling a cancelled order */
            tc_response_free(&r);
            return status;
        } else if (status != 0) {
            note_wrong("%s %s: %d %s", method, path, status, r.body);
            tc_response_free(&r);
            return status;
        }
        tc_response_free(&r);
        target = (target + 1) % APPS; /* the other process, or this one again later */
        usleep(100 * 1000);
    }
    atomic_fetch_add(&gave_up, 1);
    return 0;
}

/* Room for one more of size bytes at *array (n used, *cap allocated). */
static void *room(void *array, size_t n, size_t *cap, size_t size)
{
    if (n < *cap)
        return array;
    *cap = *cap ? *cap * 2 : 4096;
    void *grown = realloc(array, *cap * size);
    if (!grown) {
        fprintf(stderr, "chaos: out of memory for the book of answers\n");
        abort();
    }
    return grown;
}

static void book_add(op_kind kind, const char *id)
{
    pthread_mutex_lock(&book_lock);
    book = room(book, n_book, &cap_book, sizeof *book);
    book[n_book].kind = kind;
    snprintf(book[n_book].id, sizeof book[n_book].id, "%s", id);
    n_book++;
    if (kind == OP_REGISTER) {
        users = room(users, n_users, &cap_users, sizeof *users);
        snprintf(users[n_users++], UUID_STR_LEN, "%s", id);
    }
    if (kind == OP_ORDER) {
        orders = room(orders, n_orders, &cap_orders, sizeof *orders);
        snprintf(orders[n_orders++], UUID_STR_LEN, "%s", id);
    }
    pthread_mutex_unlock(&book_lock);
}

/* A random entry of *list (n of them), into out; false when empty. */
static bool pick(unsigned *seed, uuid_text *const *list, const size_t *n, char *out)
{
    pthread_mutex_lock(&book_lock);
    bool any = *n > 0;
    if (any)
        snprintf(out, UUID_STR_LEN, "%s", (*list)[rand_r(seed) % *n]);
    pthread_mutex_unlock(&book_lock);
    return any;
}

static void *client_main(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    char body[320], path[128], id[UUID_STR_LEN];
    for (long i = 0; !atomic_load(&stop_load); i++) {
        int roll = (int)(rand_r(&seed) % 100);
        cJSON *j = NULL;
        if (roll < 30 || !pick(&seed, &users, &n_users, id)) {
            snprintf(body, sizeof body, "{\"email\":\"c%s.%u.%ld@example.com\",\"name\":\"Chaos\"}",
                     tag, (unsigned)(uintptr_t)arg, i);
            if (command(&seed, "POST", "/v1/users", body, &j) / 100 == 2)
                book_add(OP_REGISTER, cJSON_GetStringValue(cJSON_GetObjectItem(j, "id")));
        } else if (roll < 65) {
            int p = (int)(rand_r(&seed) % PRODUCTS), q = (int)(rand_r(&seed) % PRODUCTS);
            snprintf(body, sizeof body,
                     "{\"customerId\":\"%s\",\"lines\":[{\"sku\":\"C%s-%d\",\"quantity\":%d}%s", id,
                     sku_tag, p, 1 + (int)(rand_r(&seed) % 3), p == q ? "]}" : ",");
            if (p != q)
                snprintf(body + strlen(body), sizeof body - strlen(body),
                         "{\"sku\":\"C%s-%d\",\"quantity\":1}]}", sku_tag, q);
            if (command(&seed, "POST", "/v1/orders", body, &j) / 100 == 2)
                book_add(OP_ORDER, cJSON_GetStringValue(cJSON_GetObjectItem(j, "id")));
        } else if (roll < 85) {
            /* Cancel or ship an order placed earlier: one not yet confirmed, or gone the
             * other way, answers 409. */
            bool ship = roll >= 77;
            if (pick(&seed, &orders, &n_orders, id)) {
                snprintf(path, sizeof path, "/v1/orders/%s/%s", id, ship ? "ship" : "cancel");
                if (command(&seed, "POST", path, NULL, &j) / 100 == 2)
                    book_add(ship ? OP_SHIP : OP_CANCEL, id);
            }
        } else {
            char sku[32];
            snprintf(sku, sizeof sku, "C%s-%d", sku_tag, (int)(rand_r(&seed) % PRODUCTS));
            snprintf(path, sizeof path, "/v1/products/%s/stock", sku);
            if (command(&seed, "POST", path, "{\"quantity\":5}", &j) / 100 == 2)
                book_add(OP_STOCK, sku);
        }
        cJSON_Delete(j);
    }
    return NULL;
}

/* ---- faults -------------------------------------------------------------------------------- */

typedef enum { F_KILL, F_POSTGRES, F_REDIS, F_KAFKA, F_KINDS } fault_kind;
static const char *const fault_names[] = {"SIGKILL and restart of an app", "PostgreSQL restart",
                                          "Redis restart", "Kafka broker stop and start"};
static int faults[F_KINDS];

static void inject(fault_kind f, int n)
{
    char cmd[512], out[256];
    switch (f) {
    case F_KILL: {
        int i = n % APPS;
        pthread_mutex_lock(&apps_lock);
        ts_app_stop(&apps[i], SIGKILL);
        pthread_mutex_unlock(&apps_lock);
        usleep(500 * 1000);
        pthread_mutex_lock(&apps_lock);
        assert_int_equal(ts_app_restart(&apps[i], app_env), 0);
        pthread_mutex_unlock(&apps_lock);
        break;
    }
    case F_POSTGRES:
        assert_int_equal(ts_pg_restart(n % 2 ? "immediate" : "fast"), 0);
        break;
    case F_REDIS:
        if (n % 2) { /* back empty */
            snprintf(cmd, sizeof cmd, "redis-cli -u '%s' FLUSHALL", ts_env("APP_REDIS_URL"));
            ts_run(cmd, out, sizeof out);
        }
        assert_int_equal(ts_redis_stop(), 0);
        usleep(1000 * 1000);
        assert_int_equal(ts_redis_start(), 0);
        break;
    case F_KAFKA:
        assert_int_equal(ts_kafka_ctl("stop-broker"), 0);
        usleep(3000 * 1000);
        assert_int_equal(ts_kafka_ctl("start-broker"), 0);
        break;
    default:
        break;
    }
    faults[f]++;
}

/* ---- the checks at the end ----------------------------------------------------------------- */

static cJSON *get(const char *path)
{
    tc_response r;
    memset(&r, 0, sizeof r);
    cJSON *j = NULL;
    if (tc_http("127.0.0.1", app_port(0), "GET", path, NULL, NULL, 0, &r) == 0 && r.status == 200)
        j = tc_json(&r);
    tc_response_free(&r);
    return j;
}

/* Stream -> how many events of type it holds, from context schema's log: one query. */
static ts_map *streams_with(const char *schema, const char *type)
{
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT stream_id, count(*) FROM %s.events WHERE event_type = '%s'"
             " GROUP BY stream_id",
             schema, type);
    return ts_sql_map(sql);
}

/* Whether prefix+id has one more event in set than were already counted; counts it. */
static bool in_log(ts_map *set, const char *prefix, const char *id)
{
    char stream[128];
    snprintf(stream, sizeof stream, "%s%s", prefix, id);
    long long n = 0;
    if (!ts_map_get(set, stream, &n) || n < 1)
        return false;
    ts_map_put(set, stream, n - 1);
    return true;
}

static bool orders_settled(void *arg)
{
    (void)arg;
    for (size_t i = 0; i < n_orders; i++) {
        char path[96];
        snprintf(path, sizeof path, "/v1/orders/%s", orders[i]);
        cJSON *o = get(path);
        const char *st = cJSON_GetStringValue(cJSON_GetObjectItem(o, "status"));
        bool pending = !st || strcmp(st, "pending") == 0;
        cJSON_Delete(o);
        if (pending)
            return false;
    }
    return true;
}

/* Shipped orders whose committed lines in the inventory log are not as many as their lines. */
#define UNCOMMITTED_SHIPMENTS                                                                      \
    "WITH shipped AS (SELECT stream_id FROM order_ctx.events"                                      \
    " WHERE event_type = 'order.order.shipped'),"                                                  \
    " lines AS (SELECT substr(p.stream_id, 7) AS id, jsonb_array_length(p.data->'lines') AS n"     \
    " FROM order_ctx.events p JOIN shipped USING (stream_id)"                                      \
    " WHERE p.event_type = 'order.order.placed'),"                                                 \
    " committed AS (SELECT data->>'orderId' AS id, count(*) AS n FROM inventory_ctx.events"        \
    " WHERE event_type = 'inventory.product.reservation_committed' GROUP BY 1)"                    \
    " SELECT count(*) FROM lines LEFT JOIN committed c USING (id) WHERE coalesce(c.n, 0) <> "      \
    "lines.n"

static bool shipments_committed(void *arg)
{
    (void)arg;
    return ts_sql_int(UNCOMMITTED_SHIPMENTS) == 0;
}

static size_t count(const char *text, const char *what)
{
    size_t n = 0;
    for (const char *p = strstr(text, what); p; p = strstr(p + 1, what))
        n++;
    return n;
}

/* The read side of every entity of the run, as text, one line each. */
static char *read_everything(void)
{
    size_t cap = 1 << 20, len = 0;
    char *all = malloc(cap);
    assert_non_null(all);
    all[0] = '\0';
    for (int kind = 0; kind < 3; kind++) {
        size_t n = kind == 0 ? n_users : kind == 1 ? n_orders : PRODUCTS;
        for (size_t i = 0; i < n; i++) {
            char path[96];
            if (kind == 0)
                snprintf(path, sizeof path, "/v1/users/%s", users[i]);
            else if (kind == 1)
                snprintf(path, sizeof path, "/v1/orders/%s", orders[i]);
            else
                snprintf(path, sizeof path, "/v1/products/C%s-%zu", sku_tag, i);
            cJSON *j = get(path);
            char *text = j ? cJSON_PrintUnformatted(j) : NULL;
            size_t need = len + strlen(path) + (text ? strlen(text) : 8) + 4;
            if (need > cap) {
                cap = need * 2;
                all = realloc(all, cap);
                assert_non_null(all);
            }
            len += (size_t)snprintf(all + len, cap - len, "%s %s\n", path, text ? text : "missing");
            free(text);
            cJSON_Delete(j);
        }
    }
    return all;
}

/* Reads context's topic: each stream must be in order once duplicates are dropped; *missing
 * gets how many events of the log (the run's own: a fresh database) are not on it. Returns
 * the number of messages read. */
static size_t check_kafka(const char *context, const char *schema, size_t *missing_out)
{
    char topic[160];
    snprintf(topic, sizeof topic, "%s%s.events", topic_prefix, context);
    rd_kafka_t *c = tk_reader_new(getenv("APP_TEST_KAFKA_BROKERS"), topic);
    if (!c)
        fail_msg("%s does not exist", topic);
    /* Read each partition up to where it ended when the reading began. */
    rd_kafka_topic_partition_list_t *parts = NULL;
    assert_int_equal(rd_kafka_assignment(c, &parts), RD_KAFKA_RESP_ERR_NO_ERROR);
    int64_t ends[256];
    size_t left = 0;
    assert_true(parts->cnt > 0 && parts->cnt <= 256);
    for (int i = 0; i < parts->cnt; i++) {
        int64_t lo = 0;
        int p = parts->elems[i].partition;
        assert_true(p >= 0 && p < 256);
        assert_int_equal(rd_kafka_query_watermark_offsets(c, topic, p, &lo, &ends[p], 10000), 0);
        left += (size_t)(ends[p] - lo);
    }
    rd_kafka_topic_partition_list_destroy(parts);

    /* stream -> the highest version seen; event id -> seen (the log's ids of the run). */
    ts_map *high = ts_map_new(), *seen = ts_map_new();
    size_t n = 0;
    while (left > 0) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 1000);
        if (!m)
            continue;
        if (!m->err && m->offset < ends[m->partition]) {
            left--;
            n++;
            cJSON *ev = cJSON_ParseWithLength(m->payload, m->len);
            const char *eid = cJSON_GetStringValue(cJSON_GetObjectItem(ev, "eventId"));
            const char *sid = cJSON_GetStringValue(cJSON_GetObjectItem(ev, "streamId"));
            long long v = (long long)cJSON_GetNumberValue(cJSON_GetObjectItem(ev, "version")), h;
            if (!eid || !sid || v < 1)
                fail_msg("%s: a message without eventId, streamId or version", topic);
            if (ts_map_put(seen, eid, 1)) { /* a duplicate says nothing about order */
                if (ts_map_get(high, sid, &h) && h >= v)
                    fail_msg("%s: %s version %lld arrived after %lld", topic, sid, v, h);
                ts_map_put(high, sid, v);
            }
            cJSON_Delete(ev);
        }
        rd_kafka_message_destroy(m);
    }
    tk_reader_free(c);

    /* Every event of the log (since this run's topics exist only for it) arrived. */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "psql '%s' -qtAX -c \"SELECT event_id::text FROM %s.events\"",
             ts_env("APP_POSTGRES_DSN"), schema);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    char line[64];
    size_t missing = 0, in_log = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (!line[0])
            continue;
        in_log++;
        missing += !ts_map_get(seen, line, NULL);
    }
    assert_int_equal(pclose(f), 0);
    ts_map_free(high);
    ts_map_free(seen);
    if (missing)
        print_message("kafka: %zu of the %zu events of %s not on %s yet\n", missing, in_log, schema,
                      topic);
    *missing_out = missing;
    return n;
}

static void test_chaos(void **state)
{
    (void)state;
    const char *s_env = getenv("CHAOS_SECONDS"), *seed_env = getenv("CHAOS_SEED");
    int seconds = s_env && *s_env ? atoi(s_env) : 600;
    unsigned seed = seed_env && *seed_env ? (unsigned)atoi(seed_env) : 42;
    assert_true(seconds > 0);
    for (int p = 0; p < PRODUCTS; p++) {
        char body[256];
        snprintf(body, sizeof body,
                 "{\"sku\":\"C%s-%d\",\"name\":\"Chaos %d\",\"price\":{\"amount\":100,"
                 "\"currency\":\"EUR\"},\"stock\":20}",
                 sku_tag, p, p);
        cJSON *j = NULL;
        unsigned s = seed;
        assert_int_equal(command(&s, "POST", "/v1/products", body, &j), 201);
        cJSON_Delete(j);
    }

    pthread_t threads[CLIENTS];
    for (int i = 0; i < CLIENTS; i++)
        assert_int_equal(
            pthread_create(&threads[i], NULL, client_main, (void *)(uintptr_t)(seed + 1 + i)), 0);
    long long end = ts_now_ms() + seconds * 1000LL;
    /* Faults come in rounds, each kind once per round in a shuffled order, so that even a
     * short run has every kind. */
    fault_kind round[F_KINDS];
    for (int n = 0; ts_now_ms() < end; n++) {
        usleep((useconds_t)(5 + rand_r(&seed) % 6) * 1000 * 1000);
        if (ts_now_ms() >= end)
            break;
        if (n % F_KINDS == 0) {
            for (int i = 0; i < F_KINDS; i++)
                round[i] = (fault_kind)i;
            for (int i = F_KINDS - 1; i > 0; i--) {
                int j = (int)(rand_r(&seed) % (unsigned)(i + 1));
                fault_kind t = round[i];
                round[i] = round[j];
                round[j] = t;
            }
        }
        fault_kind f = round[n % F_KINDS];
        print_message("chaos: %llds: %s\n", (ts_now_ms() - end) / 1000 + seconds, fault_names[f]);
        inject(f, faults[f]);
    }
    atomic_store(&stop_load, true);
    for (int i = 0; i < CLIENTS; i++)
        pthread_join(threads[i], NULL);

    /* Lost: a 2xx command whose events are not in the log. A registration and an order
     * have their stream; a cancellation, its order's cancelled event; each stock addition
     * answered 2xx, a stock_added event of its own (the Idempotency-Key keeps a resent one
     * from adding twice). */
    ts_map *registered = streams_with("user_ctx", "user.user.registered");
    ts_map *placed = streams_with("order_ctx", "order.order.placed");
    ts_map *cancelled = streams_with("order_ctx", "order.order.cancelled");
    ts_map *shipped = streams_with("order_ctx", "order.order.shipped");
    ts_map *added = streams_with("inventory_ctx", "inventory.product.stock_added");
    size_t lost = 0, done[OP_KINDS] = {0};
    for (size_t i = 0; i < n_book; i++) {
        const answered *a = &book[i];
        done[a->kind]++;
        bool found;
        char stream[128];
        switch (a->kind) {
        case OP_REGISTER:
            found = in_log(registered, "user-", a->id);
            break;
        case OP_ORDER:
            found = in_log(placed, "order-", a->id);
            break;
        case OP_CANCEL: /* cancelling twice answers 2xx twice: one event */
        case OP_SHIP:   /* likewise */
            snprintf(stream, sizeof stream, "order-%s", a->id);
            found = ts_map_get(a->kind == OP_CANCEL ? cancelled : shipped, stream, NULL);
            break;
        default:
            found = in_log(added, "product-", a->id);
            break;
        }
        if (!found && lost++ == 0)
            print_message("lost: %s %s\n", op_names[a->kind], a->id);
    }
    ts_map_free(registered);
    ts_map_free(placed);
    ts_map_free(cancelled);
    ts_map_free(shipped);
    ts_map_free(added);

    print_message("%-32s %8s\n", "fault", "injected");
    for (int f = 0; f < F_KINDS; f++)
        print_message("%-32s %8d\n", fault_names[f], faults[f]);
    print_message("%-32s %8s\n", "command", "2xx");
    for (int k = 0; k < OP_KINDS; k++)
        print_message("%-32s %8zu\n", op_names[k], done[k]);
    print_message("requests %ld, 2xx %ld, 503 %ld, 409 %ld, given up %ld, lost %zu\n",
                  atomic_load(&requests), atomic_load(&ok2xx), atomic_load(&unavailable),
                  atomic_load(&refused), atomic_load(&gave_up), lost);
    if (atomic_load(&wrong))
        fail_msg("%ld wrong answers; the first: %s", atomic_load(&wrong), first_wrong);
    assert_int_equal(lost, 0);
    if (atomic_load(&gave_up))
        fail_msg("%ld requests were still unanswered after %d s of resending",
                 atomic_load(&gave_up), GIVE_UP_MS / 1000);

    /* Every order settles; none stays pending past its deadline. */
    if (ts_wait_until(orders_settled, NULL, 60000) != 0)
        fail_msg("orders are still pending a minute after the load stopped");
    print_message("orders: all %zu settled: confirmed, shipped or cancelled\n", n_orders);
    /* A line's reservation ends once: no order both shipped and cancelled, and each shipped
     * order has every line committed (the saga may still be finishing), none released. */
    if (ts_wait_until(shipments_committed, NULL, 60000) != 0)
        fail_msg("%lld shipped orders still lack a committed line a minute after the load",
                 ts_sql_int(UNCOMMITTED_SHIPMENTS));
    assert_int_equal(ts_sql_int("SELECT count(*) FROM order_ctx.events a JOIN order_ctx.events b"
                                " USING (stream_id) WHERE a.event_type = 'order.order.shipped'"
                                " AND b.event_type = 'order.order.cancelled'"),
                     0);
    assert_int_equal(
        ts_sql_int("SELECT count(*) FROM inventory_ctx.events c JOIN inventory_ctx.events r"
                   " ON r.stream_id = c.stream_id AND r.data->>'orderId' = c.data->>'orderId'"
                   " WHERE c.event_type = 'inventory.product.reservation_committed'"
                   " AND r.event_type = 'inventory.product.reservation_released'"),
        0);
    print_message("shipments: %lld, every line committed once, none also released or "
                  "cancelled\n",
                  ts_sql_int("SELECT count(*) FROM order_ctx.events"
                             " WHERE event_type = 'order.order.shipped'"));
    /* No product reserved above what it has. */
    for (int p = 0; p < PRODUCTS; p++) {
        char path[64];
        snprintf(path, sizeof path, "/v1/products/C%s-%d", sku_tag, p);
        cJSON *j = get(path);
        assert_non_null(j);
        double on_hand = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "onHand"));
        double reserved = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "reserved"));
        double available = cJSON_GetNumberValue(cJSON_GetObjectItem(j, "available"));
        if (reserved > on_hand || available < 0)
            fail_msg("%s: onHand %.0f, reserved %.0f, available %.0f", path, on_hand, reserved,
                     available);
        cJSON_Delete(j);
    }
    print_message("products: none reserved above onHand, none below zero available\n");

    /* Kafka holds every event, each stream in order (the relays may still be draining a
     * backlog from the last broker outage). */
    size_t msgs = 0, missing = 1;
    for (int tries = 0; missing && tries < 30; tries++) {
        if (tries)
            usleep(2000 * 1000);
        size_t m1, m2, m3;
        msgs = check_kafka("user", "user_ctx", &m1) + check_kafka("order", "order_ctx", &m2) +
               check_kafka("inventory", "inventory_ctx", &m3);
        missing = m1 + m2 + m3;
    }
    if (missing)
        fail_msg("%zu events never reached Kafka", missing);
    print_message("kafka: %zu messages, every event, every stream in order\n", msgs);

    /* The read models equal a replay of the log: every entity of the run is readable, and
     * reads the same once the service switched to freshly replayed generations (the old ones
     * deleted, so nothing can be read from them any more). */
    char *before = read_everything();
    const char *gap = strstr(before, " missing\n");
    if (gap) {
        const char *line = gap;
        while (line > before && line[-1] != '\n')
            line--;
        fail_msg("not in the read models: %.*s", (int)(gap - line), line);
    }
    static char out[65536];
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s --config config/app.yaml replay", ts_app_binary());
    if (ts_run(cmd, out, sizeof out) != 0)
        fail_msg("app replay failed:\n%s", out);
    size_t built = count(out, ": building generation "),
           live = count(out, "switched to generation ");
    if (built == 0 || live != built)
        fail_msg("app replay built %zu generations and switched to %zu:\n%s", built, live, out);
    char *after = read_everything();
    if (strcmp(before, after) != 0)
        fail_msg("the read models differ from a replay of the log");
    print_message("read models: %zu entities read the same after a replay\n",
                  n_users + n_orders + PRODUCTS);
    free(before);
    free(after);
    for (int i = 0; i < APPS; i++)
        assert_int_equal(ts_app_stop_clean(&apps[i]), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chaos),
    };
    return cmocka_run_group_tests_name("chaos", tests, setup, teardown);
}
