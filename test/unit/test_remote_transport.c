/* The bus transport to a context in another process, against a scripted owner on a real
 * loopback socket: what is sent again and what never is, answers passed through unchanged,
 * the caller's deadline, the breaker, and keep-alive connections (also after the owner closed
 * an idle one). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>

#include "core/metrics.h"
#include "core/trace.h"
#include "kernel/bus.h"
#include "kernel/remote.h"
#include "test/support/services.h"

/* ---- the scripted owner ------------------------------------------------------------------ */

typedef enum step {
    ANSWER_OK,          /* 200 {"result":{"n":<request number>}}, marked as the bus's */
    ANSWER_NOT_FOUND,   /* the owner's 404 problem, marked */
    ANSWER_UNAVAILABLE, /* the owner's 503 problem, marked (its own dependency is down) */
    PROXY_503,          /* 503 from something on the way: no mark */
    SLOW,               /* answers OK after 3 s */
} step;

#define MAX_STEPS 8

static struct {
    pthread_mutex_t lock;
    step script[MAX_STEPS]; /* what the n-th request gets; past the end, ANSWER_OK */
    size_t n_script;
    int requests;
    int peer_ports[64]; /* of each request: one port per connection */
    char last_body[4096];
    char last_auth[128];
} owner = {.lock = PTHREAD_MUTEX_INITIALIZER};

static struct event_base *owner_base;
static struct evhttp *owner_http;
static pthread_t owner_thread;
static int owner_port;

static void script(const step *steps, size_t n)
{
    pthread_mutex_lock(&owner.lock);
    if (n > 0)
        memcpy(owner.script, steps, n * sizeof *steps);
    owner.n_script = n;
    owner.requests = 0;
    pthread_mutex_unlock(&owner.lock);
}

static int requests(void)
{
    pthread_mutex_lock(&owner.lock);
    int n = owner.requests;
    pthread_mutex_unlock(&owner.lock);
    return n;
}

static void reply(struct evhttp_request *req, int status, const char *body, bool marked)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, body, strlen(body));
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "application/json");
    if (marked)
        evhttp_add_header(h, HTTP_INTERNAL_REPLY_HEADER, "1");
    evhttp_send_reply(req, status, "x", b);
    evbuffer_free(b);
}

static void slow_reply(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    reply(arg, 200, "{\"result\":{\"n\":0}}", true);
}

static void owner_handle(struct evhttp_request *req, void *arg)
{
    (void)arg;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    char *peer = NULL;
    ev_uint16_t port = 0;
    evhttp_connection_get_peer(evhttp_request_get_connection(req), &peer, &port);
    const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    pthread_mutex_lock(&owner.lock);
    int n = owner.requests++;
    if (n < 64)
        owner.peer_ports[n] = port;
    size_t len = evbuffer_get_length(in);
    if (len >= sizeof owner.last_body)
        len = sizeof owner.last_body - 1;
    evbuffer_copyout(in, owner.last_body, len);
    owner.last_body[len] = '\0';
    snprintf(owner.last_auth, sizeof owner.last_auth, "%s", auth ? auth : "");
    step s = (size_t)n < owner.n_script ? owner.script[n] : ANSWER_OK;
    pthread_mutex_unlock(&owner.lock);

    char body[256];
    switch (s) {
    case ANSWER_OK:
        snprintf(body, sizeof body, "{\"result\":{\"n\":%d}}", n + 1);
        reply(req, 200, body, true);
        break;
    case ANSWER_NOT_FOUND:
        reply(req, 404,
              "{\"type\":\"https://problems.app.dev/not-found\",\"title\":\"Not Found\","
              "\"status\":404,\"message\":\"no product S-1\"}",
              true);
        break;
    case ANSWER_UNAVAILABLE:
        reply(req, 503,
              "{\"type\":\"https://problems.app.dev/service-unavailable\",\"title\":\"x\","
              "\"status\":503,\"message\":\"the event store is unavailable\"}",
              true);
        break;
    case PROXY_503:
        reply(req, 503, "upstream connect error", false);
        break;
    case SLOW: {
        struct timeval tv = {3, 0};
        event_base_once(owner_base, -1, EV_TIMEOUT, slow_reply, req, &tv);
        break;
    }
    }
}

static void *owner_run(void *arg)
{
    (void)arg;
    event_base_dispatch(owner_base);
    return NULL;
}

static int owner_start(void **state)
{
    (void)state;
    evthread_use_pthreads();
    owner_base = event_base_new();
    owner_http = evhttp_new(owner_base);
    evhttp_set_gencb(owner_http, owner_handle, NULL);
    /* The owner closes a connection idle this long: the caller must notice before reusing it. */
    struct timeval idle = {0, 300 * 1000};
    evhttp_set_timeout_tv(owner_http, &idle);
    struct evhttp_bound_socket *s = evhttp_bind_socket_with_handle(owner_http, "127.0.0.1", 0);
    if (!s)
        return -1;
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    getsockname(evhttp_bound_socket_get_fd(s), (struct sockaddr *)&sa, &len);
    owner_port = ntohs(sa.sin_port);
    return pthread_create(&owner_thread, NULL, owner_run, NULL);
}

static int owner_stop(void **state)
{
    (void)state;
    event_base_loopbreak(owner_base);
    pthread_join(owner_thread, NULL);
    evhttp_free(owner_http);
    event_base_free(owner_base);
    return 0;
}

/* ---- the caller ---------------------------------------------------------------------------- */

static const bus_handler_def commands[] = {
    {"inventory.reserve_stock", NULL, BUS_IDEMPOTENT},
    {"inventory.create_product", NULL, 0},
    {NULL, NULL, 0},
};
static const bus_handler_def queries[] = {
    {"inventory.describe_product", NULL, 0},
    {NULL, NULL, 0},
};

typedef struct caller {
    bus *bus;
    remote *remote;
} caller;

static void caller_open(caller *c, const char *url, int breaker_threshold)
{
    app_error err = APP_ERROR_INIT;
    bus_options bo = {0};
    assert_int_equal(bus_new(&c->bus, &bo, &err), 0);
    remote_options ro = {
        .timeout_ms = 5000,
        .pool_size = 2,
        .retry_backoff_ms = 5,
        .retry_backoff_max_ms = 20,
        .breaker_failure_threshold = breaker_threshold,
        .breaker_open_ms = 60000,
        .token = "t0ken",
    };
    assert_int_equal(remote_new(&c->remote, &ro, &err), 0);
    if (remote_add(c->remote, c->bus, "inventory", url, commands, queries, &err) != 0)
        fail_msg("%s", err.message);
}

static void caller_close(caller *c)
{
    remote_free(c->remote);
    bus_free(c->bus);
}

static char owner_url[64];

static caller *the_caller(void)
{
    static caller c;
    if (!c.bus) {
        snprintf(owner_url, sizeof owner_url, "http://127.0.0.1:%d", owner_port);
        caller_open(&c, owner_url, 1000);
    }
    return &c;
}

static int run(bus_kind kind, const char *name, int64_t deadline_ms, cJSON **out, app_error *err)
{
    bus_meta meta;
    bus_meta_init(&meta, "corr-7", NULL);
    meta.deadline_ms = deadline_ms;
    cJSON *payload = cJSON_CreateObject();
    cJSON_AddStringToObject(payload, "sku", "S-1");
    int rc = kind == BUS_COMMAND ? bus_send(the_caller()->bus, name, payload, &meta, out, err)
                                 : bus_ask(the_caller()->bus, name, payload, &meta, out, err);
    cJSON_Delete(payload);
    return rc;
}

static int result_n(const cJSON *out)
{
    const cJSON *n = cJSON_GetObjectItem(out, "n");
    assert_true(cJSON_IsNumber(n));
    return (int)n->valuedouble;
}

/* ---- tests ------------------------------------------------------------------------------- */

/* A query is sent again after replies that are not the owner's, until the owner answers; the
 * envelope carries the payload, the correlation and the token. */
static void test_query_sent_again_until_answered(void **state)
{
    (void)state;
    static const step s[] = {PROXY_503, ANSWER_UNAVAILABLE, ANSWER_OK};
    script(s, 3);
    cJSON *out = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(run(BUS_QUERY, "inventory.describe_product", 0, &out, &err), 0);
    assert_int_equal(result_n(out), 3);
    assert_int_equal(requests(), 3);
    cJSON_Delete(out);
    pthread_mutex_lock(&owner.lock);
    assert_non_null(strstr(owner.last_body, "\"sku\":\"S-1\""));
    assert_non_null(strstr(owner.last_body, "\"correlationId\":\"corr-7\""));
    assert_string_equal(owner.last_auth, "Bearer t0ken");
    pthread_mutex_unlock(&owner.lock);
}

/* A command not marked idempotent goes once: after a reply that leaves its outcome unknown,
 * the caller hears "unavailable" and nothing is sent again. */
static void test_plain_command_goes_once(void **state)
{
    (void)state;
    static const step s[] = {PROXY_503, ANSWER_OK};
    script(s, 2);
    cJSON *out = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(run(BUS_COMMAND, "inventory.create_product", 0, &out, &err), APP_EUNAVAIL);
    assert_null(out);
    assert_int_equal(requests(), 1);
    assert_non_null(strstr(err.message, "inventory"));
}

/* An idempotent command is sent again, like a query. */
static void test_idempotent_command_sent_again(void **state)
{
    (void)state;
    static const step s[] = {PROXY_503, ANSWER_OK};
    script(s, 2);
    cJSON *out = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(run(BUS_COMMAND, "inventory.reserve_stock", 0, &out, &err), 0);
    assert_int_equal(result_n(out), 2);
    assert_int_equal(requests(), 2);
    cJSON_Delete(out);
}

/* The owner's verdict comes back as it is, and is final. */
static void test_answers_pass_through(void **state)
{
    (void)state;
    static const step s[] = {ANSWER_NOT_FOUND};
    script(s, 1);
    cJSON *out = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(run(BUS_QUERY, "inventory.describe_product", 0, &out, &err), APP_ENOTFOUND);
    assert_string_equal(err.message, "no product S-1");
    assert_int_equal(requests(), 1);
}

/* The caller's deadline bounds the whole call: a slow owner makes it unavailable, long before
 * its late answer. */
static void test_deadline(void **state)
{
    (void)state;
    static const step s[] = {SLOW, SLOW, SLOW, SLOW, SLOW, SLOW, SLOW, SLOW};
    script(s, 8);
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t start = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    cJSON *out = NULL;
    app_error err = APP_ERROR_INIT;
    assert_int_equal(run(BUS_QUERY, "inventory.describe_product", start + 300, &out, &err),
                     APP_EUNAVAIL);
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t took = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000 - start;
    if (took >= 3000)
        fail_msg("the call waited %lld ms, past the owner's slow answer", (long long)took);
    if (!strstr(err.detail, "in time") && !strstr(err.detail, "deadline"))
        fail_msg("the detail does not say time ran out: %s", err.detail);
}

/* Calls share keep-alive connections, also after the owner closed an idle one. */
static void test_keep_alive(void **state)
{
    (void)state;
    script(NULL, 0);
    for (int i = 0; i < 5; i++) {
        cJSON *out = NULL;
        app_error err = APP_ERROR_INIT;
        assert_int_equal(run(BUS_QUERY, "inventory.describe_product", 0, &out, &err), 0);
        cJSON_Delete(out);
    }
    pthread_mutex_lock(&owner.lock);
    for (int i = 1; i < 5; i++)
        assert_int_equal(owner.peer_ports[i], owner.peer_ports[0]);
    pthread_mutex_unlock(&owner.lock);

    /* Past the owner's idle timeout its end is closed: a command that may go only once
     * still goes, on a new connection. */
    struct timespec pause = {0, 600 * 1000 * 1000};
    nanosleep(&pause, NULL);
    script(NULL, 0);
    cJSON *out = NULL;
    app_error err = APP_ERROR_INIT;
    if (run(BUS_COMMAND, "inventory.create_product", 0, &out, &err) != 0)
        fail_msg("after an idle close: %s: %s", err.message, err.detail);
    assert_int_equal(requests(), 1);
    cJSON_Delete(out);
}

/* Failed calls in a row open the breaker; then calls fail at once, without being sent. */
static void test_breaker_opens(void **state)
{
    (void)state;
    static const step s[] = {PROXY_503, PROXY_503, PROXY_503, PROXY_503};
    script(s, 4);
    caller c;
    caller_open(&c, owner_url, 2);
    bus_meta meta;
    bus_meta_init(&meta, NULL, NULL);
    cJSON *payload = cJSON_CreateObject(), *out = NULL;
    for (int i = 0; i < 3; i++) {
        app_error err = APP_ERROR_INIT;
        assert_int_equal(bus_send(c.bus, "inventory.create_product", payload, &meta, &out, &err),
                         APP_EUNAVAIL);
        assert_int_equal(requests(), i < 2 ? i + 1 : 2);
        if ((strstr(err.detail, "circuit breaker") != NULL) != (i == 2))
            fail_msg("call %d: %s", i + 1, err.detail);
    }
    char *text = metrics_render();
    assert_non_null(strstr(text, "remote_breaker_open{remote=\"inventory\"} 1"));
    free(text);
    cJSON_Delete(payload);
    caller_close(&c);
}

static int teardown(void **state)
{
    caller *c = the_caller();
    caller_close(c);
    return owner_stop(state);
}

static trace_span traced[16];
static size_t n_traced;

static void keep_span(const trace_span *s, void *arg)
{
    (void)arg;
    if (n_traced < sizeof traced / sizeof traced[0])
        traced[n_traced++] = *s;
}

/* With tracing on, each try is a client span under the message's span, and the envelope
 * names the client span, so that the owner's spans are its children. */
static void test_client_span(void **state)
{
    (void)state;
    static const step s[] = {ANSWER_OK};
    script(s, 1);
    n_traced = 0;
    trace_configure(keep_span, NULL, 1.0, true);
    cJSON *out = NULL;
    app_error err = APP_ERROR_INIT;
    int rc = run(BUS_QUERY, "inventory.describe_product", 0, &out, &err);
    trace_configure(NULL, NULL, 0, true);
    assert_int_equal(rc, 0);
    cJSON_Delete(out);
    const trace_span *client = NULL, *query = NULL;
    for (size_t i = 0; i < n_traced; i++) {
        if (strcmp(traced[i].name, "POST /internal/v1/queries/inventory.describe_product") == 0)
            client = &traced[i];
        if (strcmp(traced[i].name, "query inventory.describe_product") == 0)
            query = &traced[i];
    }
    assert_non_null(client);
    assert_non_null(query);
    assert_int_equal(client->kind, TRACE_CLIENT);
    assert_true(client->has_parent);
    assert_memory_equal(client->parent_id, query->ctx.span_id, 8);
    char tp[TRACEPARENT_LEN], want[TRACEPARENT_LEN + 20];
    trace_ctx_format(&client->ctx, tp);
    snprintf(want, sizeof want, "\"traceparent\":\"%s\"", tp);
    pthread_mutex_lock(&owner.lock);
    if (!strstr(owner.last_body, want))
        fail_msg("the envelope does not name the client span %s: %s", tp, owner.last_body);
    pthread_mutex_unlock(&owner.lock);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query_sent_again_until_answered),
        cmocka_unit_test(test_plain_command_goes_once),
        cmocka_unit_test(test_idempotent_command_sent_again),
        cmocka_unit_test(test_answers_pass_through),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_breaker_opens),
        cmocka_unit_test(test_client_span),
    };
    return cmocka_run_group_tests_name("remote transport", tests, owner_start, teardown);
}
