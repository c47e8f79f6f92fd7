/* `app replay` while the service serves: read models are rebuilt into a new generation and
 * switched to at once (queries never see a half-built one), nothing but the projections
 * runs again; a replay with no service running switches by itself; a read store that
 * comes back empty is noticed and rebuilt without anyone asking; a generation a replay
 * announced but nobody switched to is taken over by the next process that runs the
 * projection, or by the next replay; and a replay killed half-way leaves a generation the
 * next replay deletes. */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/uuid.h"
#include "test/support/http_client.h"
#include "test/support/services.h"

static ts_app app;
static const char *const json_headers[] = {"Content-Type: application/json", NULL};

/* Runs the app with args, stdout and stderr captured together; returns the exit status. */
static int run_app(const char *args, char *out, size_t n)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s", ts_app_binary(), args);
    int status = ts_run(cmd, out, n);
    assert_true(status >= 0);
    return status;
}

/* Checkpoint rows of a projection in its context's schema: one per generation it keeps. */
static int checkpoint_rows(const char *schema, const char *projection)
{
    char cmd[1024], out[64] = "";
    snprintf(cmd, sizeof cmd,
             "psql '%s' -qtAX -c \"SELECT count(*) FROM %s.checkpoints"
             " WHERE subscriber = '%s' OR subscriber LIKE '%s@%%'\"",
             ts_env("APP_POSTGRES_DSN"), schema, projection, projection);
    assert_int_equal(ts_run(cmd, out, sizeof out), 0);
    return atoi(out);
}

static int status_of(const char *method, const char *path, const char *body, cJSON **json)
{
    tc_response r;
    memset(&r, 0, sizeof r);
    assert_int_equal(tc_http("127.0.0.1", app.port, method, path, body ? json_headers : NULL, body,
                             body ? strlen(body) : 0, &r),
                     0);
    int status = r.status;
    if (json)
        *json = status >= 200 && status < 300 ? tc_json(&r) : NULL;
    tc_response_free(&r);
    return status;
}

static cJSON *call(const char *method, const char *path, const char *body, int want)
{
    cJSON *j = NULL;
    int got = status_of(method, path, body, &j);
    if (got != want)
        fail_msg("%s %s: expected %d, got %d", method, path, want, got);
    return j;
}

static const char *str(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItem(o, name);
    return cJSON_IsString(v) ? v->valuestring : "";
}

typedef struct want {
    const char *path, *member, *value;
} want;

static bool has(void *p)
{
    want *w = p;
    cJSON *j = NULL;
    bool ok =
        status_of("GET", w->path, NULL, &j) == 200 && strcmp(str(j, w->member), w->value) == 0;
    cJSON_Delete(j);
    return ok;
}

static void wait_member(const char *path, const char *member, const char *value)
{
    want w = {path, member, value};
    if (ts_wait_until(has, &w, 20000) != 0)
        fail_msg("%s never had %s = %s", path, member, value);
}

static int count_items(const char *path)
{
    cJSON *j = call("GET", path, NULL, 200);
    int n = cJSON_GetArraySize(cJSON_GetObjectItem(j, "items"));
    cJSON_Delete(j);
    return n;
}

/* subscription_events_total of one subscriber in the app (0 when it never ran). */
static double handled(const char *subscriber)
{
    char sample[160];
    snprintf(sample, sizeof sample, "subscription_events_total{subscriber=\"%s\"}", subscriber);
    return tc_metric("127.0.0.1", app.port, sample, 0);
}

/* ---- the read store and the log, as a replay leaves them ----------------------------- */

static ts_app replay; /* a replay run in the background, to be killed */

/* The prefix of every read-store key (redis.key_prefix). */
static const char *key_prefix(void)
{
    const char *p = getenv("APP_REDIS_KEY_PREFIX");
    return p ? p : "app:";
}

/* Runs query with psql (from a here-document, so quotes need no escaping); the first line
 * of its output, unaligned and without headers, goes to out. */
static void sql(const char *query, char *out, size_t size)
{
    char cmd[3800];
    int n = snprintf(cmd, sizeof cmd, "{ psql '%s' -qtAX -v ON_ERROR_STOP=1 <<'SQL'\n%s;\nSQL\n}",
                     ts_env("APP_POSTGRES_DSN"), query);
    assert_true(n > 0 && (size_t)n < sizeof cmd);
    if (ts_run(cmd, out, size) != 0)
        fail_msg("psql failed: %s\n%s", out, query);
    out[strcspn(out, "\n")] = '\0';
}

static long long sql_number(const char *query)
{
    char out[64];
    sql(query, out, sizeof out);
    char *end;
    long long n = strtoll(out, &end, 10);
    if (end == out || *end)
        fail_msg("expected a number from %s, got \"%s\"", query, out);
    return n;
}

/* The position in the checkpoint of one generation of user.projection, -1 when it has none. */
static long long checkpoint_of(long long generation)
{
    char q[256];
    snprintf(q, sizeof q,
             "SELECT coalesce((SELECT position FROM user_ctx.checkpoints"
             " WHERE subscriber = 'user.projection@%lld'), -1)",
             generation);
    return sql_number(q);
}

static long long user_log_head(void)
{
    return sql_number("SELECT coalesce(max(global_position), 0) FROM user_ctx.events");
}

/* Writes a user's registration straight into the user log, as a command served meanwhile by
 * a process that does not run the projection would; id gets the new user's id. */
static void register_in_log(char id[UUID_STR_LEN])
{
    uuid_v4(id);
    char q[512], out[64];
    snprintf(
        q, sizeof q,
        "INSERT INTO user_ctx.events (stream_id, stream_version, event_id, event_type,"
        " schema_version, data, metadata)"
        " VALUES ('user-%s', 1, gen_random_uuid(), 'user.user.registered', 1,"
        " jsonb_build_object('userId', '%s', 'email', 'late.%.8s@example.com', 'name', 'Late'),"
        " jsonb_build_object('correlationId', 'test-replay'))",
        id, id, id);
    sql(q, out, sizeof out);
}

/* What redis-cli prints for args (an integer reply, with --raw); fails on anything else. */
static long long redis_number(const char *args)
{
    char cmd[512], out[256];
    snprintf(cmd, sizeof cmd, "redis-cli -u '%s' --raw %s", ts_env("APP_REDIS_URL"), args);
    int status = ts_run(cmd, out, sizeof out);
    char *end;
    long long n = strtoll(out, &end, 10);
    if (status != 0 || end == out || (*end && *end != '\n'))
        fail_msg("redis-cli %s: status %d: %s", args, status, out);
    return n;
}

/* Keys of one generation of user.projection in the read store. */
static long long keys_of(long long generation)
{
    char args[256];
    snprintf(args, sizeof args,
             "EVAL \"return #redis.call('KEYS', ARGV[1])\" 0 '%suser.projection@%lld:*'",
             key_prefix(), generation);
    return redis_number(args);
}

/* A control record of user.projection: "" the live one, ":next" the one a replay announced.
 * Returns the generation it names, 0 when it is missing; *flag is its state being "active",
 * or for ":next" its being ready. */
static long long control_record(const char *suffix, bool *flag)
{
    char cmd[512], out[256];
    snprintf(cmd, sizeof cmd, "redis-cli -u '%s' --raw GET '%sread-model:user.projection%s'",
             ts_env("APP_REDIS_URL"), key_prefix(), suffix);
    if (ts_run(cmd, out, sizeof out) != 0)
        fail_msg("redis-cli GET: %s", out);
    *flag = false;
    if (out[strspn(out, "\n")] == '\0')
        return 0;
    cJSON *o = cJSON_Parse(out);
    const cJSON *g = cJSON_GetObjectItem(o, "generation");
    if (!cJSON_IsNumber(g))
        fail_msg("read-model:user.projection%s is not a control record: %s", suffix, out);
    long long generation = (long long)g->valuedouble;
    *flag = suffix[0] ? cJSON_IsTrue(cJSON_GetObjectItem(o, "ready"))
                      : strcmp(str(o, "state"), "active") == 0;
    cJSON_Delete(o);
    return generation;
}

static long long live_generation(bool *active)
{
    return control_record("", active);
}

static long long announced_generation(bool *ready)
{
    return control_record(":next", ready);
}

/* Starts `app replay --projection user.projection` in the background (in `replay`), its
 * output to a log of its own next to the apps' logs. */
static void replay_start(void)
{
    static const char *const args[] = {"--config",     "config/app.yaml", "replay",
                                       "--projection", "user.projection", NULL};
    ts_app_spawn(&replay, args, NULL);
}

/* SIGKILLs the background replay, which must still be running. */
static void replay_kill(void)
{
    int status = ts_app_stop(&replay, SIGKILL);
    if (status != 128 + SIGKILL) {
        ts_app_dump_log(&replay, 4000);
        fail_msg("the replay had ended by itself (status %d) before it could be killed", status);
    }
}

typedef struct subscriber {
    const char *name;   /* as /health/ready names it */
    const char *schema; /* of the context whose log it reads */
} subscriber;

static subscriber user_projection = {"user.projection", "user_ctx"};

/* True when the app runs the subscriber, caught up with the head of its log. */
static bool caught_up(void *arg)
{
    const subscriber *sub = arg;
    cJSON *j = NULL;
    bool ok = false;
    if (status_of("GET", "/health/ready", NULL, &j) == 200) {
        const cJSON *s = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "subscriptions"), sub->name);
        const cJSON *checkpoint = cJSON_GetObjectItem(s, "checkpoint");
        char q[128];
        snprintf(q, sizeof q, "SELECT coalesce(max(global_position), 0) FROM %s.events",
                 sub->schema);
        ok = strcmp(str(s, "status"), "running") == 0 && cJSON_IsNumber(checkpoint) &&
             (long long)checkpoint->valuedouble == sql_number(q);
    }
    cJSON_Delete(j);
    return ok;
}

/* A world to replay: users, a product, confirmed orders of one customer. */
typedef struct world {
    char tag[UUID_STR_LEN];
    char sku[32];
    char users[12][UUID_STR_LEN];
    char orders[4][UUID_STR_LEN];
} world;

static void make_world(world *w)
{
    char body[256], path[128];
    uuid_v4(w->tag);
    snprintf(w->sku, sizeof w->sku, "RPL-%.8s", w->tag);
    for (char *p = w->sku; *p; p++)
        if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    snprintf(body, sizeof body,
             "{\"sku\":\"%s\",\"name\":\"Replayed\",\"price\":{\"amount\":250,\"currency\":"
             "\"EUR\"},\"stock\":10}",
             w->sku);
    cJSON_Delete(call("POST", "/v1/products", body, 201));
    for (int i = 0; i < 12; i++) {
        snprintf(body, sizeof body, "{\"email\":\"r%d.%.8s@example.com\",\"name\":\"R %d\"}", i,
                 w->tag, i);
        cJSON *u = call("POST", "/v1/users", body, 201);
        snprintf(w->users[i], sizeof w->users[i], "%s", str(u, "id"));
        cJSON_Delete(u);
    }
    /* Changes after creation, so that the rebuilt models must fold more than one event. */
    snprintf(path, sizeof path, "/v1/users/%s/deactivate", w->users[11]);
    cJSON_Delete(call("POST", path, "{}", 200));
    for (int i = 0; i < 4; i++) {
        snprintf(body, sizeof body,
                 "{\"customerId\":\"%s\",\"lines\":[{\"sku\":\"%s\",\"quantity\":2}]}", w->users[0],
                 w->sku);
        cJSON *o = call("POST", "/v1/orders", body, 202);
        snprintf(w->orders[i], sizeof w->orders[i], "%s", str(o, "id"));
        cJSON_Delete(o);
    }
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "/v1/orders/%s", w->orders[i]);
        wait_member(path, "status", "confirmed");
    }
    snprintf(path, sizeof path, "/v1/users/%s", w->users[11]);
    wait_member(path, "status", "deactivated");
    snprintf(path, sizeof path, "/v1/products/%s", w->sku);
    wait_member(path, "sku", w->sku);
}

/* Every read model of the world is whole: fails the test on the first difference. */
static void check_world(const world *w, bool wait)
{
    char path[160];
    for (int i = 0; i < 12; i++) {
        snprintf(path, sizeof path, "/v1/users/%s", w->users[i]);
        if (wait) {
            wait_member(path, "status", i == 11 ? "deactivated" : "active");
            continue;
        }
        cJSON *u = call("GET", path, NULL, 200);
        assert_string_equal(str(u, "status"), i == 11 ? "deactivated" : "active");
        cJSON_Delete(u);
    }
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "/v1/orders/%s", w->orders[i]);
        if (wait)
            wait_member(path, "status", "confirmed");
        cJSON *o = call("GET", path, NULL, 200);
        assert_string_equal(str(o, "status"), "confirmed");
        cJSON_Delete(o);
    }
    snprintf(path, sizeof path, "/v1/users/%s/orders", w->users[0]);
    assert_int_equal(count_items(path), 4);
    snprintf(path, sizeof path, "/v1/products/%s", w->sku);
    if (wait)
        wait_member(path, "sku", w->sku);
    cJSON *p = call("GET", path, NULL, 200);
    assert_int_equal(cJSON_GetObjectItem(p, "reserved")->valueint, 8);
    assert_int_equal(cJSON_GetObjectItem(p, "available")->valueint, 2);
    cJSON_Delete(p);
}

typedef struct replay_job {
    const char *args;
    char out[16384];
    int status;
    bool done;
    pthread_mutex_t mu;
} replay_job;

static void *replay_thread(void *arg)
{
    replay_job *job = arg;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s", ts_app_binary(), job->args);
    int status = ts_run(cmd, job->out, sizeof job->out);
    pthread_mutex_lock(&job->mu);
    job->status = status < 0 ? 128 : status;
    job->done = true;
    pthread_mutex_unlock(&job->mu);
    return NULL;
}

static bool job_done(replay_job *job)
{
    pthread_mutex_lock(&job->mu);
    bool done = job->done;
    pthread_mutex_unlock(&job->mu);
    return done;
}

static void test_replay_while_serving(void **state)
{
    (void)state;
    assert_int_equal(ts_app_start(&app, NULL), 0);
    world w;
    make_world(&w);
    char path[160];
    /* The saga handles the confirmations it wrote too: read its count once it has. */
    static subscriber saga = {"order.placement_saga", "order_ctx"};
    assert_int_equal(ts_wait_until(caught_up, &saga, TS_HANG_GUARD_MS), 0);
    double saga_before = handled("order.placement_saga");
    assert_true(saga_before >= 8); /* placed + confirmed of each order, at least */

    /* Replay every projection while reads go on: each read answers 200 with the whole model,
     * before, during and after the switch. */
    static replay_job job;
    memset(&job, 0, sizeof job);
    pthread_mutex_init(&job.mu, NULL);
    job.args = "--config config/app.yaml replay";
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, replay_thread, &job), 0);
    int rounds = 0;
    while (!job_done(&job)) {
        check_world(&w, false);
        rounds++;
    }
    pthread_join(t, NULL);
    pthread_mutex_destroy(&job.mu);
    if (job.status != 0)
        fail_msg("replay exited %d:\n%s", job.status, job.out);
    print_message("replay (%d rounds of reads meanwhile):\n%s", rounds, job.out);
    const char *projections[] = {"user.projection", "order.projection", "order.product_catalog",
                                 "order.customer_directory", "inventory.projection"};
    for (size_t i = 0; i < sizeof projections / sizeof projections[0]; i++) {
        char line[128];
        snprintf(line, sizeof line, "%s: the service switched to generation", projections[i]);
        if (!strstr(job.out, line))
            fail_msg("no switch of %s in:\n%s", projections[i], job.out);
    }
    check_world(&w, false);

    /* No side effect ran again: the saga handled nothing new, no order or product event was
     * added. */
    assert_true(handled("order.placement_saga") == saga_before);
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "/v1/orders/%s/events", w.orders[i]);
        assert_int_equal(count_items(path), 2);
    }
    snprintf(path, sizeof path, "/v1/products/%s/events", w.sku);
    assert_int_equal(count_items(path), 1 + 4);

    /* The live projections go on in the new generation. */
    char body[256];
    snprintf(body, sizeof body, "{\"email\":\"after.%.8s@example.com\",\"name\":\"After\"}", w.tag);
    cJSON *u = call("POST", "/v1/users", body, 201);
    snprintf(path, sizeof path, "/v1/users/%s", str(u, "id"));
    cJSON_Delete(u);
    wait_member(path, "status", "active");
    ts_app_stop_clean(&app);
}

static void test_replay_without_a_service(void **state)
{
    (void)state;
    assert_int_equal(ts_app_start(&app, NULL), 0);
    world w;
    make_world(&w);
    ts_app_stop_clean(&app);

    char out[16384];
    assert_int_equal(
        run_app("--config config/app.yaml replay --projection user.projection", out, sizeof out),
        0);
    if (!strstr(out, "user.projection: no running process has it; switched to generation"))
        fail_msg("unexpected replay output:\n%s", out);
    assert_null(strstr(out, "order.projection")); /* only the one asked for */
    assert_non_null(strstr(out, "events replayed in"));
    /* The old generation went with its checkpoint. */
    assert_int_equal(checkpoint_rows("user_ctx", "user.projection"), 1);

    assert_int_equal(ts_app_start(&app, NULL), 0);
    check_world(&w, false);
    ts_app_stop_clean(&app);

    assert_int_equal(run_app("--config config/app.yaml replay --projection nope", out, sizeof out),
                     2);
    assert_non_null(strstr(out, "no projection named nope"));
    assert_non_null(strstr(out, "user.projection"));
}

static void test_empty_read_store_is_rebuilt(void **state)
{
    (void)state;
    assert_int_equal(ts_app_start(&app, NULL), 0);
    world w;
    make_world(&w);

    /* Redis loses everything (as when restarted without persistence): the app notices and
     * builds every read model again from the log, by itself. */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "redis-cli -u '%s' FLUSHALL >/dev/null", ts_env("APP_REDIS_URL"));
    assert_int_equal(system(cmd), 0);
    check_world(&w, true);

    /* Meanwhile, a read of a model being rebuilt is a 503, never a wrong 404 for a user that
     * exists: every answer since the flush was 200 or 503. */
    char path[160];
    snprintf(path, sizeof path, "/v1/users/%s", w.users[3]);
    assert_int_equal(system(cmd), 0);
    for (int i = 0; i < 50; i++) {
        int status = status_of("GET", path, NULL, NULL);
        if (status != 200 && status != 503)
            fail_msg("GET %s answered %d while its read model was rebuilt", path, status);
    }
    check_world(&w, true);
    assert_int_equal(checkpoint_rows("user_ctx", "user.projection"), 1);
    assert_int_equal(checkpoint_rows("order_ctx", "order.projection"), 1);
    ts_app_stop_clean(&app);
}

typedef struct generation_watch {
    long long live;       /* the generation serving when the replay started */
    long long generation; /* the one the replay builds, once seen */
} generation_watch;

/* The replay has announced a generation, not ready yet, and saved a checkpoint of it: it
 * has written part of it and goes on. */
static bool building(void *arg)
{
    generation_watch *g = arg;
    bool ready;
    long long next = announced_generation(&ready);
    if (next == 0 || next == g->live || ready)
        return false;
    g->generation = next;
    return checkpoint_of(next) > 0;
}

/* The replay has built a generation and announced it ready. */
static bool announced_ready(void *arg)
{
    generation_watch *g = arg;
    bool ready;
    long long next = announced_generation(&ready);
    g->generation = next;
    return next != 0 && next != g->live && ready;
}

/* Leaves a generation of user.projection built and announced ready by a replay but not
 * switched to, as a replay killed while it waited for the switch leaves it. The process that
 * runs the projection is frozen (SIGSTOP): it keeps the lease and cannot switch, so the
 * replay waits for it; the replay is killed, then the frozen process. *live is the
 * generation still serving, *built the announced one. */
static void announce_unswitched(world *w, long long *live, long long *built)
{
    assert_int_equal(ts_app_start(&app, NULL), 0);
    make_world(w);
    if (ts_wait_until(caught_up, &user_projection, TS_HANG_GUARD_MS) != 0)
        fail_msg("user.projection never ran caught up in the app");
    bool active;
    *live = live_generation(&active);
    assert_true(*live > 0 && active);
    assert_int_equal(kill(app.pid, SIGSTOP), 0);

    replay_start();
    generation_watch g = {*live, 0};
    if (ts_wait_until(announced_ready, &g, TS_HANG_GUARD_MS) != 0) {
        ts_app_dump_log(&replay, 4000);
        fail_msg("the replay never announced a generation ready");
    }
    replay_kill();
    assert_int_equal(ts_app_stop(&app, SIGKILL), 128 + SIGKILL);
    *built = g.generation;

    /* Announced, built up to the head of the log under its own checkpoint, not live. */
    bool ready;
    assert_true(announced_generation(&ready) == *built && ready);
    assert_true(live_generation(&active) == *live && active);
    assert_true(keys_of(*built) > 0);
    assert_true(checkpoint_of(*built) == user_log_head());
    assert_true(checkpoint_of(*live) >= 0);
    print_message("generation %lld built and announced, %lld still live\n", *built, *live);
}

typedef struct takeover {
    long long old, built;
} takeover;

/* The announced generation is live and no longer announced. */
static bool switched(void *arg)
{
    takeover *t = arg;
    bool active, ready;
    return live_generation(&active) == t->built && active && announced_generation(&ready) == 0;
}

/* The replaced generation is gone, with its checkpoint. */
static bool old_deleted(void *arg)
{
    takeover *t = arg;
    return keys_of(t->old) == 0 && checkpoint_of(t->old) < 0;
}

static void test_announced_generation_taken_over_by_the_next_process(void **state)
{
    (void)state;
    world w;
    takeover t;
    announce_unswitched(&w, &t.old, &t.built);
    char late[UUID_STR_LEN], path[160];
    register_in_log(late); /* after the build: whoever takes it over catches it up */

    /* The next process that runs the projection switches to it... */
    assert_int_equal(ts_app_start(&app, NULL), 0);
    if (ts_wait_until(switched, &t, TS_HANG_GUARD_MS) != 0) {
        ts_app_dump_log(&app, 4000);
        fail_msg("the app never switched to the announced generation %lld", t.built);
    }
    /* ...and deletes the generation it replaced, with its checkpoint. */
    if (ts_wait_until(old_deleted, &t, TS_HANG_GUARD_MS) != 0) {
        ts_app_dump_log(&app, 4000);
        fail_msg("generation %lld (%lld keys, checkpoint %lld) outlived the switch", t.old,
                 keys_of(t.old), checkpoint_of(t.old));
    }
    assert_int_equal(checkpoint_rows("user_ctx", "user.projection"), 1);
    snprintf(path, sizeof path, "/v1/users/%s", late);
    wait_member(path, "status", "active");
    check_world(&w, false);
    assert_int_equal(ts_wait_until(caught_up, &user_projection, TS_HANG_GUARD_MS), 0);
    assert_true(checkpoint_of(t.built) == user_log_head());
    ts_app_stop_clean(&app);
}

/* Where needle is in out, failing when it is not. */
static const char *expect_line(const char *out, const char *needle)
{
    const char *at = strstr(out, needle);
    if (!at)
        fail_msg("no \"%s\" in the replay's output:\n%s", needle, out);
    return at;
}

static void test_announced_generation_taken_over_by_the_next_replay(void **state)
{
    (void)state;
    world w;
    takeover t;
    announce_unswitched(&w, &t.old, &t.built);
    char late[UUID_STR_LEN], path[160], line[160], out[16384];
    register_in_log(late);

    /* No process runs the projection: the next replay completes the switch to the announced
     * generation first (it deletes the generation it replaced), then replays as asked. */
    assert_int_equal(
        run_app("--config config/app.yaml replay --projection user.projection", out, sizeof out),
        0);
    print_message("%s", out);
    snprintf(line, sizeof line,
             "user.projection: no running process has it; switched to generation %lld", t.built);
    const char *adopted = expect_line(out, line);
    snprintf(line, sizeof line, "user.projection: generation %lld deleted", t.old);
    assert_true(expect_line(out, line) > adopted);
    bool active, ready;
    long long now = live_generation(&active);
    assert_true(now > t.built && active);
    snprintf(line, sizeof line, "user.projection: building generation %lld", now);
    assert_true(expect_line(out, line) > adopted);
    snprintf(line, sizeof line, "user.projection: generation %lld deleted", t.built);
    expect_line(out, line);
    assert_int_equal(announced_generation(&ready), 0);
    assert_int_equal(keys_of(t.old), 0);
    assert_int_equal(keys_of(t.built), 0);
    assert_true(checkpoint_of(t.old) < 0 && checkpoint_of(t.built) < 0);
    assert_int_equal(checkpoint_rows("user_ctx", "user.projection"), 1);

    assert_int_equal(ts_app_start(&app, NULL), 0);
    snprintf(path, sizeof path, "/v1/users/%s", late);
    wait_member(path, "status", "active");
    check_world(&w, false);
    ts_app_stop_clean(&app);
}

/* Writes users * per_user events straight into the user log (each user registered, then
 * changing its email): a log long enough that a replay of it is still running when it is
 * seen writing. Emails are <tag>.<user>.<version>@example.com. */
static void write_user_log(const char *tag, int users, int per_user)
{
    char q[1536], out[64];
    snprintf(q, sizeof q,
             "INSERT INTO user_ctx.events (stream_id, stream_version, event_id, event_type,"
             " schema_version, data, metadata)"
             " SELECT 'user-' || u.id, v, gen_random_uuid(),"
             " CASE WHEN v = 1 THEN 'user.user.registered' ELSE 'user.user.email_changed' END, 1,"
             " CASE WHEN v = 1 THEN jsonb_build_object('userId', u.id, 'email',"
             "   '%.8s.' || u.i || '.1@example.com', 'name', 'Bulk ' || u.i)"
             " ELSE jsonb_build_object('userId', u.id,"
             "   'email', '%.8s.' || u.i || '.' || v || '@example.com',"
             "   'previousEmail', '%.8s.' || u.i || '.' || (v - 1) || '@example.com') END,"
             " jsonb_build_object('correlationId', 'test-replay')"
             " FROM (SELECT i, gen_random_uuid()::text AS id FROM generate_series(1, %d) i) u,"
             " generate_series(1, %d) v ORDER BY u.i, v",
             tag, tag, tag, users, per_user);
    sql(q, out, sizeof out);
}

static void test_replay_killed_half_way(void **state)
{
    (void)state;
    enum { USERS = 2000, PER_USER = 50 };
    assert_int_equal(ts_app_start(&app, NULL), 0);
    world w;
    make_world(&w);
    ts_app_stop_clean(&app);
    char tag[UUID_STR_LEN], q[256], id[UUID_STR_LEN], path[160], email[96];
    uuid_v4(tag);
    write_user_log(tag, USERS, PER_USER);
    bool active, ready;
    long long live = live_generation(&active);
    assert_true(live > 0 && active);
    long long head = user_log_head();

    /* Killed once it has written part of its generation. */
    replay_start();
    generation_watch g = {live, 0};
    if (ts_wait_until(building, &g, TS_HANG_GUARD_MS) != 0) {
        ts_app_dump_log(&replay, 4000);
        fail_msg("the replay was never seen writing its generation");
    }
    replay_kill();
    long long dead = g.generation, reached = checkpoint_of(dead), dead_keys = keys_of(dead);
    print_message("replay killed at position %lld of %lld, %lld keys of generation %lld written\n",
                  reached, head, dead_keys, dead);
    /* Half-way indeed: announced but not ready, not live, part of it written. */
    assert_true(announced_generation(&ready) == dead && !ready);
    assert_true(live_generation(&active) == live && active);
    assert_true(reached > 0 && reached < head);
    assert_true(dead_keys > 0);

    /* The next replay deletes it, builds its own, and switches (no process runs it). */
    char out[16384], line[160];
    assert_int_equal(
        run_app("--config config/app.yaml replay --projection user.projection", out, sizeof out),
        0);
    print_message("%s", out);
    snprintf(line, sizeof line,
             "user.projection: removed generation %lld of an unfinished replay (%lld keys)", dead,
             dead_keys);
    expect_line(out, line);
    long long now = live_generation(&active);
    assert_true(now > dead && active);
    snprintf(line, sizeof line,
             "user.projection: no running process has it; switched to generation %lld", now);
    expect_line(out, line);
    assert_int_equal(announced_generation(&ready), 0);
    assert_int_equal(keys_of(dead), 0);
    assert_true(checkpoint_of(dead) < 0);
    assert_int_equal(keys_of(live), 0);
    assert_int_equal(checkpoint_rows("user_ctx", "user.projection"), 1);
    assert_true(checkpoint_of(now) == user_log_head());
    /* Whole: one key per registered user, the last email of each. */
    assert_true(keys_of(now) == sql_number("SELECT count(*) FROM user_ctx.events"
                                           " WHERE event_type = 'user.user.registered'"));
    assert_int_equal(ts_app_start(&app, NULL), 0);
    check_world(&w, false);
    snprintf(q, sizeof q,
             "SELECT substr(stream_id, 6) FROM user_ctx.events WHERE data->>'email' = "
             "'%.8s.%d.1@example.com'",
             tag, USERS);
    sql(q, id, sizeof id);
    snprintf(path, sizeof path, "/v1/users/%s", id);
    snprintf(email, sizeof email, "%.8s.%d.%d@example.com", tag, USERS, PER_USER);
    cJSON *u = call("GET", path, NULL, 200);
    assert_string_equal(str(u, "email"), email);
    cJSON_Delete(u);
    ts_app_stop_clean(&app);
}

/* Each test stops what it started and checks the stop; this only cleans up after a failed
 * one, so that what it left running cannot disturb the next. */
static int kill_leftovers(void **state)
{
    (void)state;
    ts_app_end(&replay);
    ts_app_end(&app);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_replay_while_serving, kill_leftovers),
        cmocka_unit_test_teardown(test_replay_without_a_service, kill_leftovers),
        cmocka_unit_test_teardown(test_empty_read_store_is_rebuilt, kill_leftovers),
        cmocka_unit_test_teardown(test_announced_generation_taken_over_by_the_next_process,
                                  kill_leftovers),
        cmocka_unit_test_teardown(test_announced_generation_taken_over_by_the_next_replay,
                                  kill_leftovers),
        /* Last: it makes the user log long. */
        cmocka_unit_test_teardown(test_replay_killed_half_way, kill_leftovers),
    };
    return cmocka_run_group_tests_name("e2e replay", tests, NULL, NULL);
}
