/* deploy/compose.yaml and the Dockerfile, checked by the container engine's own code and
 * against the rest of deploy/.
 * - Docker Compose's loader (compose-go, through test/tools/dockercheck) loads the file for
 *   each profile: schema, interpolation, profiles, consistency. Each profile brings up what
 *   it should, every access point is published on loopback only, and the loader refuses a
 *   broken file and a missing demo key.
 * - What the loaded model means agrees with the files it mounts: Kong's upstreams and
 *   Prometheus's targets reach the app where it listens; in the split profile each service
 *   loads its one context with a database of its own, its Kuma data plane shares its network
 *   namespace with the address the data plane file is given, and its remote.* addresses are
 *   its data plane's outbounds; Grafana's data source is the Prometheus of either profile.
 * - BuildKit's Dockerfile frontend parses the Dockerfile with docker build's checks, and the
 *   runtime stage installs the Debian package of every library the app links. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>
#include <yaml.h>

#include "test/support/services.h"
#include "test/support/yaml_doc.h"

#define COMPOSE    "deploy/compose.yaml"
#define DEMO_KEY   "KONG_DEMO_KEY=test-demo-key"
#define MODEL_SIZE (1 << 20)

static const char *const contexts[] = {"user", "inventory", "order"};
#define N_CONTEXTS (sizeof contexts / sizeof *contexts)

static char dockercheck[512];   /* the built tool */
static cJSON *monolith, *split; /* the loaded models */

/* Loads COMPOSE (or file, its relative paths from deploy/) for profile with the loader;
 * returns its exit status, the model or the loader's reason in out. */
static int load(const char *file, const char *profile, const char *env, char *out, size_t size)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "env -u KONG_DEMO_KEY %s '%s' compose '%s' '%s' deploy", env,
             dockercheck, file, profile);
    int status = ts_run(cmd, out, size);
    assert_true(status >= 0);
    return status;
}

/* The model of profile, or NULL after printing the loader's reason. */
static cJSON *model_of(const char *profile)
{
    static char out[MODEL_SIZE];
    if (load(COMPOSE, profile, DEMO_KEY, out, sizeof out) != 0) {
        fprintf(stderr, "Docker Compose's loader refuses %s with --profile %s:\n%s\n", COMPOSE,
                profile, out);
        return NULL;
    }
    cJSON *m = cJSON_Parse(out);
    if (!m)
        fprintf(stderr, "the loader's model of profile %s is no JSON:\n%.2000s\n", profile, out);
    return m;
}

/* Builds the tool and loads both profiles: every test reads them. */
static int setup(void **state)
{
    (void)state;
    if (ts_tool("sh test/tools/gotool.sh test/tools/dockercheck", dockercheck,
                sizeof dockercheck) != 0)
        return -1;
    monolith = model_of("monolith");
    split = model_of("split");
    return monolith && split ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    cJSON_Delete(monolith);
    cJSON_Delete(split);
    return 0;
}

/* ---- reading the model ------------------------------------------------------------------- */

static cJSON *service(cJSON *m, const char *name)
{
    cJSON *s =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(m, "services"), name);
    if (!s)
        fail_msg("the model has no service %s", name);
    return s;
}

static const char *str(cJSON *node, const char *key)
{
    const char *v = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(node, key));
    return v ? v : "";
}

static const char *env_of(cJSON *svc, const char *name)
{
    return str(cJSON_GetObjectItemCaseSensitive(svc, "environment"), name);
}

/* The port of a host:port. */
static int port_of(const char *hostport)
{
    const char *colon = strrchr(hostport, ':');
    return colon ? atoi(colon + 1) : 0;
}

/* Whether the service mounts the repository file (a path under deploy/) at target. */
static bool mounts(cJSON *svc, const char *file, const char *target)
{
    char *real = realpath(file, NULL);
    assert_non_null(real);
    bool found = false;
    cJSON *v;
    cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(svc, "volumes"))
    {
        if (strcmp(str(v, "type"), "bind") == 0 && strcmp(str(v, "source"), real) == 0 &&
            strcmp(str(v, "target"), target) == 0)
            found = true;
    }
    free(real);
    return found;
}

/* Whether the service's command has the argument arg. */
static bool has_arg(cJSON *svc, const char *arg)
{
    cJSON *a;
    cJSON_ArrayForEach(a, cJSON_GetObjectItemCaseSensitive(svc, "command"))
    {
        if (cJSON_IsString(a) && strcmp(a->valuestring, arg) == 0)
            return true;
    }
    return false;
}

/* The text of a scalar node, or NULL. */
static const char *yaml_scalar(yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static yaml_node_t *yaml_item(yaml_document_t *d, yaml_node_t *seq, size_t i)
{
    if (!seq || seq->type != YAML_SEQUENCE_NODE ||
        seq->data.sequence.items.start + i >= seq->data.sequence.items.top)
        return NULL;
    return yaml_document_get_node(d, seq->data.sequence.items.start[i]);
}

/* The scrape targets of a Prometheus configuration, into out (n at most); their count. */
static size_t prometheus_targets(const char *file, char out[][64], size_t n)
{
    yaml_document_t d;
    assert_int_equal(ty_load(file, &d), 0);
    yaml_node_t *job =
        yaml_item(&d, ty_get(&d, yaml_document_get_root_node(&d), "scrape_configs"), 0);
    yaml_node_t *targets =
        ty_get(&d, yaml_item(&d, ty_get(&d, job, "static_configs"), 0), "targets");
    size_t k = 0;
    for (yaml_node_t *t; k < n && (t = yaml_item(&d, targets, k)); k++)
        snprintf(out[k], sizeof out[k], "%s", yaml_scalar(t));
    yaml_document_delete(&d);
    return k;
}

/* ---- the profiles --------------------------------------------------------------------------- */

static void expect_services(cJSON *m, const char *profile, const char *const want[])
{
    size_t n = 0;
    for (; want[n]; n++)
        service(m, want[n]);
    cJSON *services = cJSON_GetObjectItemCaseSensitive(m, "services");
    if ((size_t)cJSON_GetArraySize(services) != n) {
        cJSON *s;
        cJSON_ArrayForEach(s, services)
        {
            bool wanted = false;
            for (size_t i = 0; want[i]; i++)
                wanted = wanted || strcmp(want[i], s->string) == 0;
            if (!wanted)
                fail_msg("profile %s runs %s too", profile, s->string);
        }
    }
}

static void test_each_profile_loads(void **state)
{
    (void)state;
    static const char *const infrastructure[] = {"postgres", "redis",   "kafka", "kafka-ui",
                                                 "jaeger",   "grafana", NULL};
    static const char *const in_monolith[] = {"postgres", "redis", "kafka", "kafka-ui",   "jaeger",
                                              "grafana",  "app",   "kong",  "prometheus", NULL};
    static const char *const in_split[] = {"postgres",
                                           "redis",
                                           "kafka",
                                           "kafka-ui",
                                           "jaeger",
                                           "grafana",
                                           "user",
                                           "inventory",
                                           "order",
                                           "kong-split",
                                           "kuma-cp",
                                           "kuma-mesh",
                                           "kuma-policies",
                                           "kuma-dp-user",
                                           "kuma-dp-inventory",
                                           "kuma-dp-order",
                                           "kuma-dp-kong",
                                           "prometheus-split",
                                           NULL};
    expect_services(monolith, "monolith", in_monolith);
    expect_services(split, "split", in_split);
    /* With no profile, only the infrastructure. */
    static char out[MODEL_SIZE];
    if (load(COMPOSE, "", DEMO_KEY, out, sizeof out) != 0)
        fail_msg("the loader refuses %s with no profile:\n%s", COMPOSE, out);
    cJSON *none = cJSON_Parse(out);
    assert_non_null(none);
    expect_services(none, "(none)", infrastructure);
    cJSON_Delete(none);
}

/* The seed system's access points, each published on loopback only; nothing else published. */
static void expect_published(cJSON *m, const char *profile, const int want[], size_t n_want)
{
    bool seen[8] = {false};
    cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(m, "services"))
    {
        cJSON *p;
        cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(s, "ports"))
        {
            int published = atoi(str(p, "published"));
            if (strcmp(str(p, "host_ip"), "127.0.0.1") != 0)
                fail_msg("profile %s: %s publishes port %d beyond loopback", profile, s->string,
                         published);
            size_t i = 0;
            while (i < n_want && want[i] != published)
                i++;
            if (i == n_want)
                fail_msg("profile %s: %s publishes port %d, no access point", profile, s->string,
                         published);
            if (seen[i])
                fail_msg("profile %s: port %d is published twice", profile, published);
            seen[i] = true;
        }
    }
    for (size_t i = 0; i < n_want; i++)
        if (!seen[i])
            fail_msg("profile %s publishes no port %d", profile, want[i]);
}

static void test_access_points(void **state)
{
    (void)state;
    /* gateway, Kafka UI, Prometheus, Grafana, Jaeger; and the Kuma GUI in the mesh. */
    static const int common[] = {8000, 8080, 9090, 3001, 16686};
    static const int mesh[] = {8000, 8080, 9090, 3001, 16686, 5685};
    expect_published(monolith, "monolith", common, sizeof common / sizeof *common);
    expect_published(split, "split", mesh, sizeof mesh / sizeof *mesh);
    /* The Kuma GUI is the control plane's API port. */
    cJSON *p =
        cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(service(split, "kuma-cp"), "ports"), 0);
    assert_int_equal(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(p, "target")), 5681);
}

/* ---- what the model means, against the files it mounts ------------------------------------- */

static void expect_app_image(cJSON *svc, const char *name)
{
    cJSON *build = cJSON_GetObjectItemCaseSensitive(svc, "build");
    char *root = realpath(".", NULL);
    assert_non_null(root);
    if (strcmp(str(build, "context"), root) != 0 ||
        strcmp(str(build, "dockerfile"), "Dockerfile") != 0)
        fail_msg("%s is not built from the repository's Dockerfile", name);
    free(root);
    const char *tracing = env_of(svc, "APP_TRACING_ENDPOINT");
    if (strcmp(tracing, "http://jaeger:4318") != 0)
        fail_msg("%s sends its spans to %s, not to Jaeger's OTLP/HTTP receiver", name, tracing);
    if (strcmp(env_of(svc, "APP_KAFKA_BROKERS"), "kafka:9092") != 0 ||
        strcmp(env_of(svc, "APP_KAFKA_ENABLED"), "true") != 0)
        fail_msg("%s does not copy its events to the compose file's Kafka", name);
}

/* The environment a service of the model gives the app is a configuration the app accepts:
 * `app check-config` with exactly that environment (and the image's config/app.yaml). */
static void expect_app_accepts(cJSON *svc, const char *name)
{
    static char cmd[8192], out[16384];
    size_t o = (size_t)snprintf(cmd, sizeof cmd, "env -i PATH=/usr/bin:/bin");
    cJSON *kv;
    cJSON_ArrayForEach(kv, cJSON_GetObjectItemCaseSensitive(svc, "environment"))
    {
        const char *v = cJSON_GetStringValue(kv);
        assert_non_null(v);
        assert_null(strchr(v, '\''));
        o += (size_t)snprintf(cmd + o, sizeof cmd - o, " %s='%s'", kv->string, v);
        assert_true(o < sizeof cmd);
    }
    snprintf(cmd + o, sizeof cmd - o, " '%s' --config config/app.yaml check-config",
             ts_app_binary());
    if (ts_run(cmd, out, sizeof out) != 0)
        fail_msg("the app refuses the environment of %s:\n%s", name, out);
}

static void test_monolith_matches_the_deploy_files(void **state)
{
    (void)state;
    cJSON *app = service(monolith, "app");
    expect_app_image(app, "app");
    expect_app_accepts(app, "app");
    assert_string_equal(env_of(app, "APP_CONTEXTS"), "");
    const char *listen = env_of(app, "APP_HTTP_LISTEN");

    /* Kong loads deploy/kong/kong.yml in the app's network namespace, where its upstream's
     * target is where the app listens. */
    cJSON *kong = service(monolith, "kong");
    assert_string_equal(str(kong, "network_mode"), "service:app");
    assert_true(mounts(kong, "deploy/kong/kong.yml", "/kong/kong.yml"));
    yaml_document_t d;
    assert_int_equal(ty_load("deploy/kong/kong.yml", &d), 0);
    yaml_node_t *up = yaml_item(&d, ty_get(&d, yaml_document_get_root_node(&d), "upstreams"), 0);
    const char *target =
        yaml_scalar(ty_get(&d, yaml_item(&d, ty_get(&d, up, "targets"), 0), "target"));
    if (!target || strcmp(target, listen) != 0)
        fail_msg("kong.yml's upstream target is %s; the app listens on %s", target ? target : "?",
                 listen);
    yaml_document_delete(&d);

    /* Prometheus reads deploy/prometheus (the rules next to the configuration) in the same
     * namespace, and scrapes the app where it listens. */
    cJSON *prom = service(monolith, "prometheus");
    assert_string_equal(str(prom, "network_mode"), "service:app");
    assert_true(mounts(prom, "deploy/prometheus", "/etc/prometheus"));
    assert_true(has_arg(prom, "--config.file=/etc/prometheus/prometheus.yml"));
    char targets[4][64];
    assert_int_equal(prometheus_targets("deploy/prometheus/prometheus.yml", targets, 4), 1);
    assert_string_equal(targets[0], listen);
}

static void test_split_matches_the_deploy_files(void **state)
{
    (void)state;
    char targets[8][64];
    assert_int_equal(prometheus_targets("deploy/prometheus/prometheus-split.yml", targets, 8),
                     N_CONTEXTS);
    const char *databases[N_CONTEXTS];
    for (size_t i = 0; i < N_CONTEXTS; i++) {
        const char *c = contexts[i];
        cJSON *svc = service(split, c);
        expect_app_image(svc, c);
        expect_app_accepts(svc, c);
        /* One context, a database of its own. */
        assert_string_equal(env_of(svc, "APP_CONTEXTS"), c);
        const char *dsn = env_of(svc, "APP_POSTGRES_DSN");
        const char *db = strstr(dsn, "dbname=");
        assert_non_null(db);
        databases[i] = db + 7;
        for (size_t j = 0; j < i; j++)
            if (strncmp(databases[i], databases[j], strcspn(databases[j], " ")) == 0)
                fail_msg("%s and %s share a database", c, contexts[j]);

        /* Its data plane: the file of its name, in its namespace, given its address. */
        char name[64], arg[160], file[128];
        snprintf(name, sizeof name, "kuma-dp-%s", c);
        cJSON *dp = service(split, name);
        snprintf(arg, sizeof arg, "service:%s", c);
        assert_string_equal(str(dp, "network_mode"), arg);
        snprintf(arg, sizeof arg, "--dataplane-file=/kuma/dataplanes/%s.yaml", c);
        if (!has_arg(dp, arg))
            fail_msg("%s does not run %s", name, arg);
        const char *ip = str(cJSON_GetObjectItemCaseSensitive(
                                 cJSON_GetObjectItemCaseSensitive(svc, "networks"), "default"),
                             "ipv4_address");
        snprintf(arg, sizeof arg, "--dataplane-var=address=%s", ip);
        if (!ip[0] || !has_arg(dp, arg))
            fail_msg("%s is not given %s's address %s", name, c, ip);

        /* The data plane's inbound forwards to where the service listens. */
        yaml_document_t d;
        snprintf(file, sizeof file, "deploy/kuma/dataplanes/%s.yaml", c);
        assert_int_equal(ty_load(file, &d), 0);
        yaml_node_t *in = yaml_item(
            &d, ty_get(&d, ty_get(&d, yaml_document_get_root_node(&d), "networking"), "inbound"),
            0);
        int service_port = atoi(yaml_scalar(ty_get(&d, in, "servicePort")));
        yaml_document_delete(&d);
        const char *listen = env_of(svc, "APP_HTTP_LISTEN");
        if (port_of(listen) != service_port)
            fail_msg("%s listens on %s; its data plane forwards to port %d", c, listen,
                     service_port);

        /* Its remote.* addresses are those of deploy/kuma/env/<context>.env (its outbounds,
         * which test_kuma checks). */
        snprintf(file, sizeof file, "deploy/kuma/env/%s.env", c);
        FILE *f = fopen(file, "r");
        assert_non_null(f);
        char line[512];
        while (fgets(line, sizeof line, f)) {
            line[strcspn(line, "\n")] = '\0';
            char *eq = strchr(line, '=');
            if (line[0] == '#' || !eq)
                continue;
            *eq = '\0';
            if (strcmp(env_of(svc, line), eq + 1) != 0)
                fail_msg("%s: %s is \"%s\", not %s's \"%s\"", c, line, env_of(svc, line), file,
                         eq + 1);
        }
        fclose(f);

        /* Prometheus scrapes it by its name, where it listens. */
        snprintf(arg, sizeof arg, "%s:%d", c, port_of(listen));
        bool scraped = false;
        for (size_t t = 0; t < N_CONTEXTS; t++)
            scraped = scraped || strcmp(targets[t], arg) == 0;
        if (!scraped)
            fail_msg("prometheus-split.yml does not scrape %s", arg);
    }

    /* Each database is made on PostgreSQL's first start. */
    static char sql[4096];
    FILE *f = fopen("deploy/compose/postgres-init.sql", "r");
    assert_non_null(f);
    sql[fread(sql, 1, sizeof sql - 1, f)] = '\0';
    fclose(f);
    assert_true(mounts(service(split, "postgres"), "deploy/compose/postgres-init.sql",
                       "/docker-entrypoint-initdb.d/10-databases.sql"));
    for (size_t i = 0; i < N_CONTEXTS; i++) {
        char create[96];
        snprintf(create, sizeof create, "CREATE DATABASE %.*s;", (int)strcspn(databases[i], " "),
                 databases[i]);
        if (!strstr(sql, create))
            fail_msg("postgres-init.sql lacks \"%s\"", create);
    }

    /* Kong in the mesh: kong-split.yml, with Kong's data plane in its namespace. */
    cJSON *kong = service(split, "kong-split");
    assert_true(mounts(kong, "deploy/kong/kong-split.yml", "/kong/kong.yml"));
    cJSON *dp = service(split, "kuma-dp-kong");
    assert_string_equal(str(dp, "network_mode"), "service:kong-split");
    assert_true(has_arg(dp, "--dataplane-file=/kuma/dataplanes/kong.yaml"));

    /* The mesh is applied before any data plane starts: mesh.yaml, then policies.yaml. */
    assert_true(has_arg(service(split, "kuma-mesh"), "/kuma/mesh.yaml"));
    assert_true(has_arg(service(split, "kuma-policies"), "/kuma/policies.yaml"));
    assert_true(mounts(service(split, "kuma-mesh"), "deploy/kuma", "/kuma"));
    cJSON *after = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(service(split, "kuma-policies"), "depends_on"),
        "kuma-mesh");
    assert_string_equal(str(after, "condition"), "service_completed_successfully");
    assert_true(mounts(service(split, "prometheus-split"), "deploy/prometheus", "/etc/prometheus"));
}

/* Grafana: the dashboard and a default Prometheus data source, named "prometheus" on the
 * network in both profiles. */
static void test_grafana_is_provisioned(void **state)
{
    (void)state;
    cJSON *grafana = service(monolith, "grafana");
    assert_true(mounts(grafana, "deploy/grafana/provisioning", "/etc/grafana/provisioning"));
    assert_true(mounts(grafana, "deploy/grafana/app-dashboard.json",
                       "/var/lib/grafana/dashboards/app-dashboard.json"));
    yaml_document_t d;
    assert_int_equal(ty_load("deploy/grafana/provisioning/dashboards/app.yaml", &d), 0);
    yaml_node_t *provider =
        yaml_item(&d, ty_get(&d, yaml_document_get_root_node(&d), "providers"), 0);
    assert_string_equal(yaml_scalar(ty_get(&d, ty_get(&d, provider, "options"), "path")),
                        "/var/lib/grafana/dashboards");
    yaml_document_delete(&d);
    assert_int_equal(ty_load("deploy/grafana/provisioning/datasources/prometheus.yaml", &d), 0);
    yaml_node_t *ds = yaml_item(&d, ty_get(&d, yaml_document_get_root_node(&d), "datasources"), 0);
    assert_string_equal(yaml_scalar(ty_get(&d, ds, "type")), "prometheus");
    assert_string_equal(yaml_scalar(ty_get(&d, ds, "isDefault")), "true");
    assert_string_equal(yaml_scalar(ty_get(&d, ds, "url")), "http://prometheus:9090");
    yaml_document_delete(&d);
    /* The dashboard asks for a Prometheus data source. */
    assert_int_equal(system("grep -q '\"type\": \"prometheus\"' deploy/grafana/app-dashboard.json"),
                     0);
    /* "prometheus": an alias of the app's namespace (where the monolith's Prometheus runs),
     * and of the split profile's Prometheus. */
    cJSON *alias;
    bool found = false;
    cJSON_ArrayForEach(
        alias,
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(service(monolith, "app"), "networks"), "default"),
            "aliases"))
    {
        found = found || strcmp(cJSON_GetStringValue(alias), "prometheus") == 0;
    }
    assert_true(found);
    found = false;
    cJSON_ArrayForEach(
        alias,
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(service(split, "prometheus-split"), "networks"),
                "default"),
            "aliases"))
    {
        found = found || strcmp(cJSON_GetStringValue(alias), "prometheus") == 0;
    }
    assert_true(found);
}

/* ---- the loader refuses ------------------------------------------------------------------- */

static void expect_refused(const char *profile, const char *from, const char *to,
                           const char *reason)
{
    char path[256];
    static char out[MODEL_SIZE];
    ts_file_changed(COMPOSE, from, to, path, sizeof path);
    int status = load(path, profile, DEMO_KEY, out, sizeof out);
    unlink(path);
    if (status == 0)
        fail_msg("the loader accepts \"%s\" for \"%s\"", to, from);
    if (!strstr(out, reason))
        fail_msg("the loader refuses \"%s\", but not for \"%s\":\n%s", to, reason, out);
}

static void test_loader_refuses_broken_files(void **state)
{
    (void)state;
    static char out[MODEL_SIZE];
    /* The demo consumer's key is never in the repository: it must be given. */
    assert_int_not_equal(load(COMPOSE, "monolith", "", out, sizeof out), 0);
    assert_non_null(strstr(out, "KONG_DEMO_KEY"));
    expect_refused("monolith", "    restart: unless-stopped\n    profiles: [monolith]",
                   "    restrat: unless-stopped\n    profiles: [monolith]", "restrat");
    expect_refused("split", "network_mode: service:user", "network_mode: service:users", "users");
    expect_refused("monolith", "ports: [\"127.0.0.1:8080:8080\"]",
                   "ports: [\"127.0.0.1:8080:80800\"]", "80800");
}

/* ---- the Dockerfile ------------------------------------------------------------------------ */

/* The Dockerfile's runtime stage: its text from the last FROM on. */
static const char *runtime_stage(void)
{
    static char text[16384];
    FILE *f = fopen("Dockerfile", "r");
    assert_non_null(f);
    text[fread(text, 1, sizeof text - 1, f)] = '\0';
    fclose(f);
    const char *last = strstr(text, "\nFROM debian:12-slim\n");
    assert_non_null(last);
    return last;
}

static void test_dockerfile_passes_buildkits_checks(void **state)
{
    (void)state;
    char cmd[1024], out[16384], path[256];
    snprintf(cmd, sizeof cmd, "'%s' dockerfile Dockerfile", dockercheck);
    if (ts_run(cmd, out, sizeof out) != 0)
        fail_msg("BuildKit refuses the Dockerfile:\n%s", out);
    /* The checks can fail: docker build --check's FromAsCasing, and an unknown instruction. */
    ts_file_changed("Dockerfile", "FROM debian:12-slim AS build", "FROM debian:12-slim as build",
                    path, sizeof path);
    snprintf(cmd, sizeof cmd, "'%s' dockerfile '%s'", dockercheck, path);
    int status = ts_run(cmd, out, sizeof out);
    unlink(path);
    assert_int_not_equal(status, 0);
    assert_non_null(strstr(out, "FromAsCasing"));
    ts_file_changed("Dockerfile", "EXPOSE 8080", "EXPOZE 8080", path, sizeof path);
    snprintf(cmd, sizeof cmd, "'%s' dockerfile '%s'", dockercheck, path);
    status = ts_run(cmd, out, sizeof out);
    unlink(path);
    assert_int_not_equal(status, 0);
    assert_non_null(strstr(out, "unknown instruction: EXPOZE"));

    /* Runs as a user of its own, and starts the app. */
    const char *last = runtime_stage();
    assert_non_null(strstr(last, "\nUSER app:app\n"));
    assert_non_null(strstr(last, "ENTRYPOINT [\"/usr/local/bin/app\""));
}

/* The runtime stage installs the Debian package of each shared library the app links (the
 * sanitizer runtimes of the test build aside, and libc's own, which every image has). */
static void test_image_has_the_apps_libraries(void **state)
{
    (void)state;
    ts_require_tool("dpkg-query", "dpkg");
    ts_require_tool("readelf", "binutils");
    char cmd[1024];
    static char out[16384];
    snprintf(
        cmd, sizeof cmd,
        "set -e; for lib in $(readelf -d '%s' | sed -n 's/.*Shared library: \\[\\(.*\\)\\]/\\1/p' "
        "| grep -Ev '^(libasan|libubsan|libc|libm|libpthread|libdl|librt|libgcc_s|"
        "libstdc\\+\\+|ld-linux)[.-]'); do dpkg-query -S \"*/$lib\" | head -n1 | "
        "cut -d: -f1; done | sort -u",
        ts_app_binary());
    if (ts_run(cmd, out, sizeof out) != 0)
        fail_msg("cannot list the app's libraries:\n%s", out);
    const char *last = runtime_stage();
    int n = 0;
    for (char *pkg = strtok(out, "\n"); pkg; pkg = strtok(NULL, "\n"), n++) {
        char word[128];
        snprintf(word, sizeof word, " %s ", pkg);
        if (!strstr(last, word))
            fail_msg("the runtime image lacks %s, which the app links", pkg);
    }
    assert_true(n >= 7); /* libevent (two), libpq, hiredis, librdkafka, cJSON, libyaml */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_profile_loads),
        cmocka_unit_test(test_access_points),
        cmocka_unit_test(test_monolith_matches_the_deploy_files),
        cmocka_unit_test(test_split_matches_the_deploy_files),
        cmocka_unit_test(test_grafana_is_provisioned),
        cmocka_unit_test(test_loader_refuses_broken_files),
        cmocka_unit_test(test_dockerfile_passes_buildkits_checks),
        cmocka_unit_test(test_image_has_the_apps_libraries),
    };
    return cmocka_run_group_tests_name("compose", tests, setup, teardown);
}
