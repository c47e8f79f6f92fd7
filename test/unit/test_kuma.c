/* deploy/kuma/: the mesh of the split deployment, checked three ways.
 * - By Kuma's own schemas (test/tools/schemas, Kuma 2.14.3), through test/tools/check_kuma.py
 *   (PyPI's jsonschema, closed against unknown fields), and the check can fail.
 * - By the contexts' declared contracts (app_module.sends): the traffic permissions allow
 *   exactly the calls the contexts make, plus the gateway to every service; each caller's
 *   data plane has an outbound for each service it calls, and its remote.* address points
 *   there.
 * - By the app's remote.* defaults: the mesh's timeout, retries and breaker agree with the
 *   app's own, and the mesh never repeats a request that reached a service.
 * - By where the data planes listen: no port twice, and Kong's upstreams in the mesh
 *   (deploy/kong/kong-split.yml) are its data plane's outbounds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <yaml.h>

#include "core/config.h"
#include "kernel/module.h"
#include "test/support/services.h"
#include "test/support/yaml_doc.h"

#define KUMA_SCHEMA "test/tools/schemas/kuma-2.14.3-openapi.yaml"
#define KUMA_FILES                                                                                 \
    "deploy/kuma/mesh.yaml deploy/kuma/policies.yaml deploy/kuma/dataplanes/user.yaml "            \
    "deploy/kuma/dataplanes/order.yaml deploy/kuma/dataplanes/inventory.yaml "                     \
    "deploy/kuma/dataplanes/kong.yaml"
#define KUMA_GATEWAY "kong"
#define MAX_DOCS     16

static char python[512]; /* the tools venv's python3 */

static int setup(void **state)
{
    (void)state;
    return ts_tool("sh test/tools/pyvenv.sh test/tools/requirements.txt python3", python,
                   sizeof python);
}

/* ---- by Kuma's schemas ---------------------------------------------------------------------- */

static int check_kuma(const char *files, char *out, size_t size)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' test/tools/check_kuma.py %s %s", python, KUMA_SCHEMA, files);
    int status = ts_run(cmd, out, size);
    assert_true(status >= 0);
    return status;
}

static void test_resources_fit_kumas_schemas(void **state)
{
    (void)state;
    char out[16384];
    if (check_kuma(KUMA_FILES, out, sizeof out) != 0)
        fail_msg("deploy/kuma does not fit Kuma's schemas:\n%s", out);
    assert_non_null(strstr(out, "14 Kuma resources valid"));
}

/* One change to a shipped file; the check must refuse it, saying why. */
static void expect_refused(const char *file, const char *from, const char *to, const char *why)
{
    char out[16384], path[64];
    ts_file_changed(file, from, to, path, sizeof path);
    int status = check_kuma(path, out, sizeof out);
    unlink(path);
    assert_int_equal(status, 1);
    if (!strstr(out, why))
        fail_msg("the check said \"%s\", not \"%s\"", out, why);
}

static void test_misspelt_resources_are_refused(void **state)
{
    (void)state;
    expect_refused("deploy/kuma/policies.yaml", "numRetries: 2", "numRetriez: 2",
                   "'numRetriez' was unexpected");
    expect_refused("deploy/kuma/policies.yaml", "default: {action: Allow}",
                   "default: {action: Permit}", "is not one of");
    expect_refused("deploy/kuma/mesh.yaml", "type: builtin", "type: 7", "not of type");
    expect_refused("deploy/kuma/dataplanes/order.yaml", "servicePort: 8083", "servicePort: 8O83",
                   "not of type 'integer'");
}

/* ---- reading the resources --------------------------------------------------------------------
 */

typedef struct docs {
    yaml_document_t d[MAX_DOCS];
    size_t n;
} docs;

static void docs_load(docs *ds, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    yaml_parser_t p;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_file(&p, f);
    ds->n = 0;
    for (;;) {
        assert_true(ds->n < MAX_DOCS);
        if (!yaml_parser_load(&p, &ds->d[ds->n]))
            fail_msg("%s: %s at line %zu", path, p.problem, p.problem_mark.line + 1);
        if (!yaml_document_get_root_node(&ds->d[ds->n])) {
            yaml_document_delete(&ds->d[ds->n]);
            break;
        }
        ds->n++;
    }
    yaml_parser_delete(&p);
    fclose(f);
}

static void docs_free(docs *ds)
{
    for (size_t i = 0; i < ds->n; i++)
        yaml_document_delete(&ds->d[i]);
    ds->n = 0;
}

static const char *scalar(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* The first item of a sequence node, or NULL. */
static yaml_node_t *first(yaml_document_t *d, const yaml_node_t *seq)
{
    if (!seq || seq->type != YAML_SEQUENCE_NODE ||
        seq->data.sequence.items.start >= seq->data.sequence.items.top)
        return NULL;
    return yaml_document_get_node(d, *seq->data.sequence.items.start);
}

/* The scalar at a path of keys ("spec", "to", ...; a NULL ends it) under node; arrays are
 * entered at their first item. */
static const char *at(yaml_document_t *d, yaml_node_t *node, ...)
{
    va_list ap;
    va_start(ap, node);
    for (const char *key; node && (key = va_arg(ap, const char *)) != NULL;) {
        if (node->type == YAML_SEQUENCE_NODE)
            node = first(d, node);
        node = ty_get(d, node, key);
    }
    va_end(ap);
    return scalar(node);
}

/* The first resource of type; fails the test when there is none. */
static yaml_node_t *resource(docs *ds, const char *type, yaml_document_t **doc)
{
    for (size_t i = 0; i < ds->n; i++) {
        yaml_node_t *root = yaml_document_get_root_node(&ds->d[i]);
        const char *t = at(&ds->d[i], root, "type", NULL);
        if (t && strcmp(t, type) == 0) {
            *doc = &ds->d[i];
            return root;
        }
    }
    fail_msg("no %s in deploy/kuma/policies.yaml", type);
    return NULL;
}

/* ---- by the contexts' contracts ---------------------------------------------------------------
 */

/* Whether context from sends anything to context to, by its declared contract. */
static bool context_calls(const char *from, const char *to)
{
    const app_module *m = app_module_find(from);
    assert_non_null(m);
    size_t n = strlen(to);
    for (const char *const *s = m->sends; s && *s; s++)
        if (strncmp(*s, to, n) == 0 && (*s)[n] == '.')
            return true;
    return false;
}

/* Whether policies allow from to call to. */
static bool permitted(docs *ds, const char *from, const char *to)
{
    for (size_t i = 0; i < ds->n; i++) {
        yaml_document_t *d = &ds->d[i];
        yaml_node_t *root = yaml_document_get_root_node(d);
        const char *type = at(d, root, "type", NULL);
        if (!type || strcmp(type, "MeshTrafficPermission") != 0)
            continue;
        const char *kind = at(d, root, "spec", "targetRef", "kind", NULL);
        const char *target = at(d, root, "spec", "targetRef", "name", NULL);
        assert_non_null(kind);
        if (strcmp(kind, "MeshService") != 0)
            fail_msg("a MeshTrafficPermission for %s: only per-service permissions here", kind);
        if (strcmp(target, to) != 0)
            continue;
        yaml_node_t *froms = ty_get(d, ty_get(d, root, "spec"), "from");
        assert_true(froms && froms->type == YAML_SEQUENCE_NODE);
        for (yaml_node_item_t *it = froms->data.sequence.items.start;
             it < froms->data.sequence.items.top; it++) {
            yaml_node_t *f = yaml_document_get_node(d, *it);
            const char *src = at(d, f, "targetRef", "name", NULL);
            const char *action = at(d, f, "default", "action", NULL);
            if (src && strcmp(src, from) == 0 && action && strcmp(action, "Allow") == 0)
                return true;
        }
    }
    return false;
}

/* The outbound port of dataplane file for service, or 0. */
static int outbound_port(const char *file, const char *service)
{
    yaml_document_t d;
    assert_int_equal(ty_load(file, &d), 0);
    yaml_node_t *out =
        ty_get(&d, ty_get(&d, yaml_document_get_root_node(&d), "networking"), "outbound");
    int port = 0;
    if (out && out->type == YAML_SEQUENCE_NODE)
        for (yaml_node_item_t *it = out->data.sequence.items.start;
             it < out->data.sequence.items.top; it++) {
            yaml_node_t *o = yaml_document_get_node(&d, *it);
            const char *s = at(&d, o, "tags", "kuma.io/service", NULL);
            if (s && strcmp(s, service) == 0)
                port = atoi(at(&d, o, "port", NULL));
        }
    yaml_document_delete(&d);
    return port;
}

/* The value of name in the env file, into out; false when absent. */
static bool env_value(const char *file, const char *name, char *out, size_t size)
{
    FILE *f = fopen(file, "r");
    if (!f)
        fail_msg("cannot open %s", file);
    char line[512];
    bool found = false;
    size_t n = strlen(name);
    while (!found && fgets(line, sizeof line, f))
        if (strncmp(line, name, n) == 0 && line[n] == '=') {
            line[strcspn(line, "\n")] = '\0';
            snprintf(out, size, "%s", line + n + 1);
            found = true;
        }
    fclose(f);
    return found;
}

static void test_permissions_follow_the_contracts(void **state)
{
    (void)state;
    docs ds;
    docs_load(&ds, "deploy/kuma/policies.yaml");
    int calls = 0;
    for (size_t i = 0; app_modules[i]; i++) {
        const char *to = app_modules[i]->name;
        /* The gateway reaches every service. */
        if (!permitted(&ds, KUMA_GATEWAY, to))
            fail_msg("the gateway may not call %s", to);
        for (size_t k = 0; app_modules[k]; k++) {
            const char *from = app_modules[k]->name;
            bool want = k != i && context_calls(from, to);
            if (permitted(&ds, from, to) != want)
                fail_msg("%s %s call %s by its contract, but the mesh %s it", from,
                         want ? "does" : "does not", to, want ? "forbids" : "allows");
            char dp[128], env[128], name[64], value[256], expect[64];
            snprintf(dp, sizeof dp, "deploy/kuma/dataplanes/%s.yaml", from);
            snprintf(env, sizeof env, "deploy/kuma/env/%s.env", from);
            snprintf(name, sizeof name, "APP_REMOTE_%s", to);
            for (char *p = name; *p; p++)
                if (*p >= 'a' && *p <= 'z')
                    *p = (char)(*p - 'a' + 'A');
            int port = outbound_port(dp, to);
            bool has_env = env_value(env, name, value, sizeof value);
            if (!want) {
                if (port || has_env)
                    fail_msg("%s has an outbound or %s for %s, which it never calls", from, name,
                             to);
                continue;
            }
            calls++;
            if (!port)
                fail_msg("%s calls %s, but its data plane has no outbound for it", from, to);
            snprintf(expect, sizeof expect, "http://127.0.0.1:%d", port);
            if (!has_env || strcmp(value, expect) != 0)
                fail_msg("%s: %s should be %s, the outbound for %s", env, name, expect, to);
        }
    }
    assert_int_equal(calls, 2); /* order calls user and inventory */
    docs_free(&ds);
}

/* ---- by the app's remote.* settings ------------------------------------------------------------
 */

/* Milliseconds of a Kuma duration such as "5s", "50ms", "1m", "1h". */
static long duration_ms(const char *s)
{
    assert_non_null(s);
    char *end;
    double v = strtod(s, &end);
    if (strcmp(end, "ms") == 0)
        return (long)v;
    if (strcmp(end, "s") == 0)
        return (long)(v * 1000);
    if (strcmp(end, "m") == 0)
        return (long)(v * 60000);
    if (strcmp(end, "h") == 0)
        return (long)(v * 3600000);
    fail_msg("not a duration: %s", s);
    return 0;
}

static void test_mesh_agrees_with_the_apps_remote_calls(void **state)
{
    (void)state;
    app_config cfg;
    config_defaults(&cfg);
    docs ds;
    docs_load(&ds, "deploy/kuma/policies.yaml");
    yaml_document_t *d;
    yaml_node_t *r = resource(&ds, "MeshTimeout", &d);
    long timeout = duration_ms(at(d, r, "spec", "to", "default", "http", "requestTimeout", NULL));
    if (timeout != cfg.remote.timeout_ms)
        fail_msg("MeshTimeout gives a call %ld ms, the app %d ms (remote.timeout_ms)", timeout,
                 cfg.remote.timeout_ms);

    r = resource(&ds, "MeshRetry", &d);
    assert_int_equal(
        duration_ms(at(d, r, "spec", "to", "default", "http", "backOff", "baseInterval", NULL)),
        cfg.remote.retry_backoff_ms);
    assert_int_equal(
        duration_ms(at(d, r, "spec", "to", "default", "http", "backOff", "maxInterval", NULL)),
        cfg.remote.retry_backoff_max_ms);
    /* Only failures before the request reached a service: the app sends a command that is not
     * idempotent exactly once, so the mesh may not send it again. */
    yaml_node_t *to0 = first(d, ty_get(d, ty_get(d, r, "spec"), "to"));
    yaml_node_t *http = ty_get(d, ty_get(d, to0, "default"), "http");
    yaml_node_t *on = ty_get(d, http, "retryOn");
    assert_true(on && on->type == YAML_SEQUENCE_NODE);
    for (yaml_node_item_t *it = on->data.sequence.items.start; it < on->data.sequence.items.top;
         it++) {
        const char *what = scalar(yaml_document_get_node(d, *it));
        if (!what || (strcmp(what, "ConnectFailure") != 0 && strcmp(what, "RefusedStream") != 0))
            fail_msg("MeshRetry retries on %s: a request that reached the service would run "
                     "twice",
                     what ? what : "?");
    }

    r = resource(&ds, "MeshCircuitBreaker", &d);
    assert_int_equal(atoi(at(d, r, "spec", "to", "default", "outlierDetection", "detectors",
                             "totalFailures", "consecutive", NULL)),
                     cfg.remote.breaker_failure_threshold);

    r = resource(&ds, "MeshHealthCheck", &d);
    assert_string_equal(at(d, r, "spec", "to", "default", "http", "path", NULL), "/health/ready");
    docs_free(&ds);
}

/* ---- where the data planes listen ----------------------------------------------------------- */

static const char *const dataplanes[] = {"user", "inventory", "order", KUMA_GATEWAY};

/* Adds the port of each item of the sequence key of networking to ports. */
static void add_ports(yaml_document_t *d, yaml_node_t *net, const char *key, const char *file,
                      int ports[], const char *owners[], size_t *n)
{
    yaml_node_t *seq = ty_get(d, net, key);
    if (!seq)
        return;
    assert_int_equal(seq->type, YAML_SEQUENCE_NODE);
    for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
         it++) {
        assert_true(*n < 64);
        owners[*n] = file;
        ports[(*n)++] = atoi(at(d, yaml_document_get_node(d, *it), "port", NULL));
    }
}

/* Each data plane's address is the template variable kuma-dp fills in (--dataplane-var), and
 * no two data planes listen on the same port (inbound, outbound or admin), so that they can
 * share one machine as well as run one per container (deploy/compose.yaml). */
static void test_data_planes_can_share_one_machine(void **state)
{
    (void)state;
    int ports[64];
    const char *owners[64];
    size_t n = 0;
    static char files[4][64];
    for (size_t i = 0; i < sizeof dataplanes / sizeof *dataplanes; i++) {
        yaml_document_t d;
        snprintf(files[i], sizeof files[i], "deploy/kuma/dataplanes/%s.yaml", dataplanes[i]);
        assert_int_equal(ty_load(files[i], &d), 0);
        yaml_node_t *net = ty_get(&d, yaml_document_get_root_node(&d), "networking");
        const char *address = at(&d, net, "address", NULL);
        if (!address || strcmp(address, "{{ address }}") != 0)
            fail_msg("%s: networking.address is %s, not the template \"{{ address }}\"", files[i],
                     address ? address : "missing");
        add_ports(&d, net, "inbound", files[i], ports, owners, &n);
        add_ports(&d, net, "outbound", files[i], ports, owners, &n);
        owners[n] = files[i];
        ports[n++] = atoi(at(&d, net, "admin", "port", NULL));
        yaml_document_delete(&d);
    }
    for (size_t i = 0; i < n; i++) {
        assert_true(ports[i] > 0 && ports[i] < 65536);
        for (size_t j = i + 1; j < n; j++)
            if (ports[i] == ports[j])
                fail_msg("port %d is in %s and in %s", ports[i], owners[i], owners[j]);
    }
}

/* Kong's upstreams in the mesh (deploy/kong/kong-split.yml) are its data plane's outbounds:
 * each upstream, named after its service, has the one target 127.0.0.1:<outbound port>. */
static void test_kongs_upstreams_are_its_outbounds(void **state)
{
    (void)state;
    yaml_document_t d;
    assert_int_equal(ty_load("deploy/kong/kong-split.yml", &d), 0);
    yaml_node_t *ups = ty_get(&d, yaml_document_get_root_node(&d), "upstreams");
    assert_true(ups && ups->type == YAML_SEQUENCE_NODE);
    int seen = 0;
    for (yaml_node_item_t *it = ups->data.sequence.items.start; it < ups->data.sequence.items.top;
         it++) {
        yaml_node_t *u = yaml_document_get_node(&d, *it);
        const char *name = at(&d, u, "name", NULL);
        int port = outbound_port("deploy/kuma/dataplanes/" KUMA_GATEWAY ".yaml", name);
        if (!port)
            fail_msg("kong-split.yml: upstream %s has no outbound in Kong's data plane", name);
        yaml_node_t *targets = ty_get(&d, u, "targets");
        assert_true(targets && targets->type == YAML_SEQUENCE_NODE);
        assert_int_equal(targets->data.sequence.items.top - targets->data.sequence.items.start, 1);
        char want[64];
        snprintf(want, sizeof want, "127.0.0.1:%d", port);
        const char *target =
            at(&d, yaml_document_get_node(&d, *targets->data.sequence.items.start), "target", NULL);
        if (!target || strcmp(target, want) != 0)
            fail_msg("kong-split.yml: upstream %s's target is %s, not Kong's outbound %s", name,
                     target ? target : "missing", want);
        seen++;
    }
    assert_int_equal(seen, 3);
    yaml_document_delete(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resources_fit_kumas_schemas),
        cmocka_unit_test(test_misspelt_resources_are_refused),
        cmocka_unit_test(test_permissions_follow_the_contracts),
        cmocka_unit_test(test_mesh_agrees_with_the_apps_remote_calls),
        cmocka_unit_test(test_data_planes_can_share_one_machine),
        cmocka_unit_test(test_kongs_upstreams_are_its_outbounds),
    };
    return cmocka_run_group_tests_name("kuma", tests, setup, NULL);
}
