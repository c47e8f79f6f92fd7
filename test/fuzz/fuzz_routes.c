/* libFuzzer: the routes of every context, run whole: a request's path parameter, query and
 * JSON body through the route, the bus and the handlers' decoding and validation, down to the
 * domain and the stores (the in-memory fakes of test/support, so that no I/O runs). Input:
 * one byte choosing the route (and whether the caller is an end user), the path parameter up
 * to "\n", the query string up to "\n", then the body.
 *
 * Beyond the sanitizers: a route that succeeds answers something; one that fails says why,
 * with the code it returned; and a client's input never makes an internal error. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/json.h"
#include "core/metrics.h"
#include "kernel/bus.h"
#include "kernel/module.h"
#include "ports/clock.h"
#include "test/support/fake_stores.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_RESET_EVERY 200 /* the fakes hold FAKE_STORE_MAX streams: start over this often */

static const http_route_def *routes[256];
static size_t n_routes;
static fake_es es;
static fake_rs rs;
static es_store events;
static rs_store reads;
static bus *b;
static unsigned runs;

static void fuzz_init(void)
{
    app_error err = APP_ERROR_INIT;
    app_config cfg;
    config_defaults(&cfg);
    fake_es_init(&es, NULL);
    fake_rs_init(&rs);
    events = fake_es_port(&es);
    reads = fake_rs_port(&rs);
    bus_options o = {
        .events = &events, .reads = &reads, .clock = &app_system_clock, .max_conflict_retries = 3};
    if (bus_new(&b, &o, &err) != 0)
        abort();
    for (size_t i = 0; app_modules[i]; i++) {
        const app_module *m = app_modules[i];
        if ((m->configure && m->configure(&cfg, &err) != 0) ||
            bus_register(b, BUS_COMMAND, m->commands, &err) != 0 ||
            bus_register(b, BUS_QUERY, m->queries, &err) != 0)
            abort();
        for (const http_route_def *r = m->routes; r->fn && n_routes < 256; r++)
            routes[n_routes++] = r;
    }
    if (n_routes == 0)
        abort();
}

/* The method a route takes first. */
static http_method fuzz_method(unsigned methods)
{
    for (unsigned bit = 1; bit; bit <<= 1)
        if (methods & bit)
            return (http_method)bit;
    return HTTP_M_GET;
}

/* The next "\n"-ended part of [*p, end) as a string in out (cut to size). */
static void fuzz_part(const char **p, const char *end, char *out, size_t size)
{
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    size_t n = (size_t)((nl ? nl : end) - *p);
    snprintf(out, size, "%.*s", (int)(n < size ? n : size - 1), *p);
    *p = nl ? nl + 1 : end;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!b)
        fuzz_init();
    if (size < 1)
        return 0;
    if (++runs % FUZZ_RESET_EVERY == 0) {
        fake_es_free(&es);
        fake_rs_free(&rs);
        fake_es_init(&es, NULL);
        fake_rs_init(&rs);
        metrics_reset();
    }
    const http_route_def *r = routes[data[0] % n_routes];
    bool end_user = data[0] >= 128;
    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    char param[128], query[512];
    fuzz_part(&p, end, param, sizeof param);
    fuzz_part(&p, end, query, sizeof query);

    http_req req;
    memset(&req, 0, sizeof req);
    req.method = fuzz_method(r->methods);
    req.path = r->pattern;
    req.query = query[0] ? query : NULL;
    /* Every parameter of the pattern gets the same value. */
    for (const char *s = strchr(r->pattern, '{'); s && req.n_params < HTTP_MAX_PARAMS;
         s = strchr(s + 1, '{')) {
        static char names[HTTP_MAX_PARAMS][32];
        const char *close = strchr(s, '}');
        size_t len = close ? (size_t)(close - s - 1) : 0;
        snprintf(names[req.n_params], sizeof names[0], "%.*s", (int)len, s + 1);
        req.param_names[req.n_params] = names[req.n_params];
        req.param_values[req.n_params++] = strdup(param);
    }
    app_error err = APP_ERROR_INIT;
    if (p < end) {
        size_t n = (size_t)(end - p);
        if (!json_utf8_valid(p, n) ||
            json_parse_body(p, n, JSON_MAX_VALUES, JSON_MAX_DEPTH, &req.body, &err) != 0 ||
            !cJSON_IsObject(req.body))
            goto done; /* the server refuses it before any route */
    } else if (r->flags & HTTP_ROUTE_JSON_BODY) {
        goto done;
    }
    bus_meta_init(&req.meta, "fuzz", NULL);
    if (end_user)
        snprintf(req.meta.subject, sizeof req.meta.subject, "%s", param);

    http_res res;
    memset(&res, 0, sizeof res);
    app_error_clear(&err);
    int rc = r->fn(b, &req, &res, &err);
    if (rc == 0 && !res.body && !res.text && res.status != 204)
        abort(); /* a success without an answer */
    if (rc != 0 && (err.code != rc || !err.message[0] || res.body))
        abort(); /* a failure that does not say why, or answers as well */
    if (rc == APP_EINTERNAL)
        abort(); /* a client's input is never the server's fault */
    cJSON_Delete(res.body);
    free(res.text);
done:
    cJSON_Delete(req.body);
    for (size_t i = 0; i < req.n_params; i++)
        free(req.param_values[i]);
    return 0;
}
