/* deploy/kong/kong.yml and the server agree: every route a context serves is routed by Kong,
 * for each of its methods, by exactly one Kong route, of the Kong service named after that
 * context; no Kong route leads nowhere; the operations endpoints are not exposed; the plugins
 * the app relies on (key-auth on `apikey` hiding the key, X-Request-ID, CORS preflights, the
 * headers a client may not send) are there; and decK's own reconciler accepts the file
 * (test/tools/kongcheck, built from the Go module proxy), and refuses a broken one.
 * Kong's router is modelled for the subset the file uses: "~" regex paths, anchored at the
 * start, each ending in "$"; methods. */
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <yaml.h>

#include <cmocka.h>

#include "kernel/module.h"
#include "kernel/ops.h"
#include "kernel/remote.h"
#include "test/support/services.h"
#include "test/support/yaml_doc.h"

#define MAX_ROUTES 64
#define MAX_PATHS  4

typedef struct kong_route {
    char name[64];
    char service[64];
    char methods[8][8];
    size_t n_methods;
    char paths[MAX_PATHS][128];
    regex_t re[MAX_PATHS];
    size_t n_paths;
    bool strip_path;
} kong_route;

static kong_route routes[MAX_ROUTES];
static size_t n_routes;
static yaml_document_t doc;
static yaml_node_t *root;

static yaml_node_t *get(yaml_node_t *map, const char *key)
{
    return ty_get(&doc, map, key);
}

static const char *text(yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* The items of a sequence node, one at a time: for (i = 0; (it = item(seq, i)); i++). */
static yaml_node_t *item(yaml_node_t *seq, size_t i)
{
    if (!seq || seq->type != YAML_SEQUENCE_NODE ||
        seq->data.sequence.items.start + i >= seq->data.sequence.items.top)
        return NULL;
    return yaml_document_get_node(&doc, seq->data.sequence.items.start[i]);
}

static int load(void **state)
{
    (void)state;
    if (ty_load("deploy/kong/kong.yml", &doc) != 0)
        return -1;
    root = yaml_document_get_root_node(&doc);
    yaml_node_t *svc;
    for (size_t s = 0; (svc = item(get(root, "services"), s)); s++) {
        yaml_node_t *r;
        for (size_t i = 0; (r = item(get(svc, "routes"), i)) && n_routes < MAX_ROUTES; i++) {
            kong_route *k = &routes[n_routes++];
            snprintf(k->name, sizeof k->name, "%s",
                     text(get(r, "name")) ? text(get(r, "name")) : "");
            snprintf(k->service, sizeof k->service, "%s",
                     text(get(svc, "name")) ? text(get(svc, "name")) : "");
            const char *strip = text(get(r, "strip_path"));
            k->strip_path = !strip || strcmp(strip, "false") != 0; /* Kong's default is true */
            yaml_node_t *m;
            for (size_t j = 0; (m = item(get(r, "methods"), j)) && k->n_methods < 8; j++)
                snprintf(k->methods[k->n_methods++], sizeof k->methods[0], "%s", text(m));
            yaml_node_t *p;
            for (size_t j = 0; (p = item(get(r, "paths"), j)) && k->n_paths < MAX_PATHS; j++) {
                const char *path = text(p);
                snprintf(k->paths[k->n_paths], sizeof k->paths[0], "%s", path ? path : "");
                /* "~/v1/x$" is the regex "/v1/x$" anchored at the start of the path. */
                char re[160];
                snprintf(re, sizeof re, "^%s", path && path[0] == '~' ? path + 1 : "(not a regex)");
                if (regcomp(&k->re[k->n_paths], re, REG_EXTENDED | REG_NOSUB) != 0) {
                    fprintf(stderr, "route %s: path %s is not a regular expression\n", k->name,
                            path);
                    return -1;
                }
                k->n_paths++;
            }
        }
    }
    return n_routes > 0 ? 0 : -1;
}

static int unload(void **state)
{
    (void)state;
    for (size_t i = 0; i < n_routes; i++)
        for (size_t j = 0; j < routes[i].n_paths; j++)
            regfree(&routes[i].re[j]);
    yaml_document_delete(&doc);
    return 0;
}

static bool route_matches(const kong_route *k, const char *method, const char *path)
{
    bool method_ok = false;
    for (size_t i = 0; i < k->n_methods; i++)
        method_ok = method_ok || strcasecmp(k->methods[i], method) == 0;
    for (size_t i = 0; method_ok && i < k->n_paths; i++)
        if (regexec(&k->re[i], path, 0, NULL, 0) == 0)
            return true;
    return false;
}

/* A request path for a route pattern: every {param} replaced by a plausible value. */
static void concrete(const char *pattern, char *out, size_t size)
{
    size_t o = 0;
    for (const char *p = pattern; *p && o + 40 < size;) {
        if (*p == '{') {
            const char *end = strchr(p, '}');
            bool sku = strncmp(p, "{sku}", 5) == 0;
            o += (size_t)snprintf(out + o, size - o, "%s",
                                  sku ? "SKU-42" : "0b5e2c1a-7d4f-4e8a-9c3b-1f2e3d4c5b6a");
            p = end ? end + 1 : p + strlen(p);
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
}

static const struct {
    unsigned bit;
    const char *name;
} methods[] = {{HTTP_M_GET, "GET"},
               {HTTP_M_POST, "POST"},
               {HTTP_M_PUT, "PUT"},
               {HTTP_M_DELETE, "DELETE"},
               {HTTP_M_PATCH, "PATCH"}};

static void test_every_route_reaches_its_context(void **state)
{
    (void)state;
    size_t checked = 0;
    for (size_t i = 0; app_modules[i]; i++)
        for (const http_route_def *r = app_modules[i]->routes; r && r->pattern; r++)
            for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++) {
                if (!(r->methods & methods[m].bit))
                    continue;
                char path[256];
                concrete(r->pattern, path, sizeof path);
                const kong_route *hit = NULL;
                size_t hits = 0;
                for (size_t k = 0; k < n_routes; k++)
                    if (route_matches(&routes[k], methods[m].name, path)) {
                        hit = &routes[k];
                        hits++;
                    }
                if (hits != 1)
                    fail_msg("%s %s (%s) matches %zu Kong routes, not one", methods[m].name,
                             r->pattern, path, hits);
                if (strcmp(hit->service, app_modules[i]->name) != 0)
                    fail_msg("%s %s is served by the %s context but Kong sends it to service %s "
                             "(route %s)",
                             methods[m].name, r->pattern, app_modules[i]->name, hit->service,
                             hit->name);
                checked++;
            }
    assert_true(checked >= 14);
}

static void test_no_route_leads_nowhere(void **state)
{
    (void)state;
    for (size_t k = 0; k < n_routes; k++) {
        const kong_route *kr = &routes[k];
        if (kr->strip_path)
            fail_msg("route %s: strip_path must be false (the app routes the whole path)",
                     kr->name);
        if (kr->n_methods == 0 || kr->n_paths == 0)
            fail_msg("route %s: needs methods and paths", kr->name);
        for (size_t p = 0; p < kr->n_paths; p++) {
            size_t len = strlen(kr->paths[p]);
            if (kr->paths[p][0] != '~' || len < 3 || kr->paths[p][len - 1] != '$')
                fail_msg("route %s: path %s must be a \"~\" regex ending in \"$\"", kr->name,
                         kr->paths[p]);
        }
        /* Each method of it reaches some route of the app; OPTIONS is the CORS preflight,
         * which Kong answers itself (test_plugins). */
        for (size_t m = 0; m < kr->n_methods; m++) {
            bool used = strcasecmp(kr->methods[m], "OPTIONS") == 0;
            for (size_t i = 0; app_modules[i] && !used; i++)
                for (const http_route_def *r = app_modules[i]->routes; r && r->pattern && !used;
                     r++)
                    for (size_t b = 0; b < sizeof methods / sizeof methods[0]; b++) {
                        char path[256];
                        concrete(r->pattern, path, sizeof path);
                        if ((r->methods & methods[b].bit) &&
                            strcasecmp(methods[b].name, kr->methods[m]) == 0 &&
                            route_matches(kr, kr->methods[m], path))
                            used = true;
                    }
            if (!used)
                fail_msg("route %s: %s reaches no route of the app", kr->name, kr->methods[m]);
        }
    }
    /* Probes and metrics stay inside. */
    for (const http_route_def *r = ops_routes; r->pattern; r++)
        for (size_t k = 0; k < n_routes; k++)
            for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++)
                if (route_matches(&routes[k], methods[m].name, r->pattern))
                    fail_msg("route %s exposes %s", routes[k].name, r->pattern);
}

/* The internal endpoints (one service's bus calling another's) are not the public API: no
 * Kong route reaches them, whatever the message name or method. */
static void test_internal_endpoints_not_routed(void **state)
{
    (void)state;
    static const char *const names[] = {"inventory.reserve_stock", "user.describe_customer",
                                        "order.place_order", "x"};
    size_t tried = 0;
    for (const http_route_def *r = remote_routes; r->pattern; r++) {
        assert_true(r->flags & HTTP_ROUTE_INTERNAL);
        assert_int_equal(strncmp(r->pattern, "/internal/", 10), 0);
        for (size_t n = 0; n < sizeof names / sizeof names[0]; n++) {
            char path[256];
            snprintf(path, sizeof path, "%.*s%s", (int)(strchr(r->pattern, '{') - r->pattern),
                     r->pattern, names[n]);
            for (size_t k = 0; k < n_routes; k++)
                for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++)
                    if (route_matches(&routes[k], methods[m].name, path))
                        fail_msg("Kong route %s exposes %s %s", routes[k].name, methods[m].name,
                                 path);
            tried++;
        }
    }
    assert_int_equal(tried, 8);
}

static yaml_node_t *plugin(const char *name)
{
    yaml_node_t *p;
    for (size_t i = 0; (p = item(get(root, "plugins"), i)); i++)
        if (text(get(p, "name")) && strcmp(text(get(p, "name")), name) == 0)
            return p;
    return NULL;
}

static void test_services_plugins_upstreams(void **state)
{
    (void)state;
    assert_string_equal(text(get(root, "_format_version")), "3.0");
    yaml_node_t *svc;
    for (size_t s = 0; (svc = item(get(root, "services"), s)); s++) {
        const char *name = text(get(svc, "name")), *host = text(get(svc, "host"));
        assert_non_null(name);
        assert_non_null(app_module_find(name)); /* one Kong service per context */
        bool upstream = false;
        yaml_node_t *u;
        for (size_t i = 0; (u = item(get(root, "upstreams"), i)); i++)
            if (host && text(get(u, "name")) && strcmp(text(get(u, "name")), host) == 0) {
                upstream = true;
                assert_non_null(item(get(u, "targets"), 0));
                assert_string_equal(text(get(get(get(u, "healthchecks"), "active"), "http_path")),
                                    "/health/ready");
            }
        if (!upstream)
            fail_msg("service %s: host %s is not an upstream", name, host ? host : "(none)");
    }

    yaml_node_t *key_auth = plugin("key-auth");
    assert_non_null(key_auth);
    yaml_node_t *conf = get(key_auth, "config");
    assert_string_equal(text(item(get(conf, "key_names"), 0)), "apikey");
    assert_null(item(get(conf, "key_names"), 1));
    assert_string_equal(text(get(conf, "hide_credentials")), "true");
    yaml_node_t *corr = plugin("correlation-id");
    assert_non_null(corr);
    assert_string_equal(text(get(get(corr, "config"), "header_name")), "X-Request-ID");
    assert_string_equal(text(get(get(plugin("rate-limiting"), "config"), "limit_by")), "consumer");
}

/* The value list under config.<a>.<b> of a plugin holds want. */
static bool lists(yaml_node_t *list, const char *want)
{
    yaml_node_t *v;
    for (size_t i = 0; (v = item(list, i)); i++)
        if (text(v) && strcasecmp(text(v), want) == 0)
            return true;
    return false;
}

static void test_plugins(void **state)
{
    (void)state;
    /* CORS: Kong answers preflights, and every route takes OPTIONS so that it can. */
    yaml_node_t *cors = get(plugin("cors"), "config");
    assert_non_null(cors);
    assert_string_equal(text(get(cors, "preflight_continue")), "false");
    assert_non_null(item(get(cors, "origins"), 0));
    for (size_t k = 0; k < n_routes; k++) {
        bool options = false;
        for (size_t m = 0; m < routes[k].n_methods; m++)
            options = options || strcasecmp(routes[k].methods[m], "OPTIONS") == 0;
        if (!options)
            fail_msg("route %s takes no OPTIONS: browsers' preflights would get 404",
                     routes[k].name);
    }
    static const char *const allowed[] = {"apikey", "Idempotency-Key", "If-Match", "Content-Type",
                                          "X-Request-ID"};
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
        if (!lists(get(cors, "headers"), allowed[i]))
            fail_msg("CORS does not let browsers send %s", allowed[i]);
    assert_true(lists(get(cors, "exposed_headers"), "ETag"));
    assert_non_null(plugin("prometheus"));
    /* A client cannot pose as an end user, and the internal marker never leaves. */
    yaml_node_t *req = get(get(get(plugin("request-transformer"), "config"), "remove"), "headers");
    assert_true(lists(req, "X-Authenticated-Userid"));
    yaml_node_t *res = get(get(get(plugin("response-transformer"), "config"), "remove"), "headers");
    assert_true(lists(res, HTTP_INTERNAL_REPLY_HEADER));
    /* A limit for all clients together on each service, besides the per-consumer one. */
    yaml_node_t *svc;
    for (size_t s = 0; (svc = item(get(root, "services"), s)); s++) {
        bool limited = false;
        yaml_node_t *p;
        for (size_t i = 0; (p = item(get(svc, "plugins"), i)); i++)
            limited = limited ||
                      (text(get(p, "name")) && strcmp(text(get(p, "name")), "rate-limiting") == 0 &&
                       text(get(get(p, "config"), "limit_by")) &&
                       strcmp(text(get(get(p, "config"), "limit_by")), "service") == 0);
        if (!limited)
            fail_msg("service %s has no rate limit for all its clients", text(get(svc, "name")));
    }
}

/* ---- the split layout (deploy/kong/kong-split.yml) ----------------------------------------- */

/* node as text, every scalar and structure, so that two subtrees compare by value. */
static void node_text(yaml_document_t *d, yaml_node_t *n, char *out, size_t size, size_t *o)
{
    if (!n || *o + 4 >= size)
        return;
    switch (n->type) {
    case YAML_SCALAR_NODE:
        *o += (size_t)snprintf(out + *o, size - *o, "'%s'", (const char *)n->data.scalar.value);
        break;
    case YAML_SEQUENCE_NODE:
        *o += (size_t)snprintf(out + *o, size - *o, "[");
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
             it++)
            node_text(d, yaml_document_get_node(d, *it), out, size, o);
        *o += (size_t)snprintf(out + *o, size - *o, "]");
        break;
    case YAML_MAPPING_NODE:
        *o += (size_t)snprintf(out + *o, size - *o, "{");
        for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
             p++) {
            node_text(d, yaml_document_get_node(d, p->key), out, size, o);
            node_text(d, yaml_document_get_node(d, p->value), out, size, o);
        }
        *o += (size_t)snprintf(out + *o, size - *o, "}");
        break;
    default:
        break;
    }
}

static void text_of(yaml_document_t *d, yaml_node_t *n, char *out, size_t size)
{
    size_t o = 0;
    out[0] = '\0';
    node_text(d, n, out, size, &o);
    if (o + 4 >= size)
        fail_msg("a Kong subtree is too large to compare");
}

/* The split layout routes and guards exactly as kong.yml does; only where each service
 * goes differs: its own context's upstream, of one target (which is Kong's data plane
 * outbound to that service: test_kuma checks the ports). */
static void test_split_layout_matches(void **state)
{
    (void)state;
    yaml_document_t split;
    assert_int_equal(ty_load("deploy/kong/kong-split.yml", &split), 0);
    yaml_node_t *sroot = yaml_document_get_root_node(&split);
    static char a[65536], b[65536];
    text_of(&doc, get(root, "plugins"), a, sizeof a);
    text_of(&split, ty_get(&split, sroot, "plugins"), b, sizeof b);
    if (strcmp(a, b) != 0)
        fail_msg("kong-split.yml's plugins differ from kong.yml's");
    yaml_node_t *svc;
    size_t n = 0;
    for (size_t s = 0; (svc = item(get(root, "services"), s)); s++, n++) {
        yaml_node_t *other = ty_get(&split, sroot, "services");
        assert_true(other && other->type == YAML_SEQUENCE_NODE &&
                    other->data.sequence.items.start + s < other->data.sequence.items.top);
        yaml_node_t *ssvc = yaml_document_get_node(&split, other->data.sequence.items.start[s]);
        const char *name = text(get(svc, "name"));
        assert_string_equal(text(ty_get(&split, ssvc, "name")), name);
        static const char *const same[] = {"routes",   "plugins",      "port",
                                           "protocol", "read_timeout", "retries"};
        for (size_t k = 0; k < sizeof same / sizeof same[0]; k++) {
            text_of(&doc, get(svc, same[k]), a, sizeof a);
            text_of(&split, ty_get(&split, ssvc, same[k]), b, sizeof b);
            if (strcmp(a, b) != 0)
                fail_msg("service %s: %s differs between kong.yml and kong-split.yml", name,
                         same[k]);
        }
        const char *host = text(ty_get(&split, ssvc, "host"));
        assert_non_null(host);
        assert_string_equal(host, name);
        bool found = false;
        yaml_node_t *ups = ty_get(&split, sroot, "upstreams");
        for (yaml_node_item_t *it = ups->data.sequence.items.start;
             it < ups->data.sequence.items.top; it++) {
            yaml_node_t *u = yaml_document_get_node(&split, *it);
            if (strcmp(text(ty_get(&split, u, "name")), host) != 0)
                continue;
            yaml_node_t *targets = ty_get(&split, u, "targets");
            assert_int_equal(targets->data.sequence.items.top - targets->data.sequence.items.start,
                             1);
            found = true;
        }
        if (!found)
            fail_msg("kong-split.yml: service %s's host %s is no upstream", name, host);
    }
    assert_int_equal(n, 3);
    yaml_document_delete(&split);
}

/* ---- decK's own check (test/tools/kongcheck) ----------------------------------------------- */

static char kongcheck[512];

static int kong_check(const char *file, char *out, size_t size)
{
    if (!kongcheck[0] &&
        ts_tool("sh test/tools/gotool.sh test/tools/kongcheck", kongcheck, sizeof kongcheck) != 0)
        fail_msg("cannot build test/tools/kongcheck");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' %s", kongcheck, file);
    int status = ts_run(cmd, out, size);
    assert_true(status >= 0);
    return status;
}

static void test_deck_accepts_the_file(void **state)
{
    (void)state;
    char out[8192];
    if (kong_check("deploy/kong/kong.yml", out, sizeof out) != 0)
        fail_msg("decK's reconciler refuses deploy/kong/kong.yml:\n%s", out);
    assert_non_null(strstr(out, "valid"));
    if (kong_check("deploy/kong/kong-split.yml", out, sizeof out) != 0)
        fail_msg("decK's reconciler refuses deploy/kong/kong-split.yml:\n%s", out);
}

/* One change to the file; decK's check must refuse it, saying why. */
static void expect_refused(const char *from, const char *to, const char *why)
{
    char out[8192], path[64];
    ts_file_changed("deploy/kong/kong.yml", from, to, path, sizeof path);
    int status = kong_check(path, out, sizeof out);
    unlink(path);
    assert_int_equal(status, 1);
    if (!strstr(out, why))
        fail_msg("decK said \"%s\", not \"%s\"", out, why);
}

static void test_deck_refuses_broken_files(void **state)
{
    (void)state;
    expect_refused("connect_timeout: 2000", "connect_timeoutt: 2000",
                   "Additional property connect_timeoutt is not allowed");
    expect_refused("retries: 0", "retries: none", "Expected: integer");
    expect_refused("- name: users", "- name: user", "entity already exists");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_route_reaches_its_context),
        cmocka_unit_test(test_no_route_leads_nowhere),
        cmocka_unit_test(test_internal_endpoints_not_routed),
        cmocka_unit_test(test_services_plugins_upstreams),
        cmocka_unit_test(test_plugins),
        cmocka_unit_test(test_split_layout_matches),
        cmocka_unit_test(test_deck_accepts_the_file),
        cmocka_unit_test(test_deck_refuses_broken_files),
    };
    return cmocka_run_group_tests_name("kong routes", tests, load, unload);
}
