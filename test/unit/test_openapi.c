/* docs/openapi.yaml and the server agree: every route a context or the kernel registers is
 * in the contract with its methods, and the contract promises no route the server lacks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include <cmocka.h>

#include "kernel/module.h"
#include "kernel/ops.h"
#include "test/support/yaml_doc.h"

#define MAX_OPS 128

typedef struct op {
    char path[128];
    char method[8];
} op;

static op spec[MAX_OPS];
static size_t n_spec;

static int load_spec(void **state)
{
    (void)state;
    yaml_document_t doc;
    if (ty_load("docs/openapi.yaml", &doc) != 0)
        return -1;
    const yaml_node_t *paths = ty_get(&doc, yaml_document_get_root_node(&doc), "paths");
    for (yaml_node_pair_t *p = paths ? paths->data.mapping.pairs.start : NULL;
         p && p < paths->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = yaml_document_get_node(&doc, p->key);
        const yaml_node_t *item = yaml_document_get_node(&doc, p->value);
        for (yaml_node_pair_t *m = item->data.mapping.pairs.start;
             m < item->data.mapping.pairs.top && n_spec < MAX_OPS; m++) {
            const yaml_node_t *mk = yaml_document_get_node(&doc, m->key);
            snprintf(spec[n_spec].path, sizeof spec[n_spec].path, "%s", k->data.scalar.value);
            snprintf(spec[n_spec].method, sizeof spec[n_spec].method, "%s", mk->data.scalar.value);
            n_spec++;
        }
    }
    yaml_document_delete(&doc);
    return n_spec > 0 ? 0 : -1;
}

static bool in_spec(const char *path, const char *method)
{
    for (size_t i = 0; i < n_spec; i++)
        if (strcmp(spec[i].path, path) == 0 && strcasecmp(spec[i].method, method) == 0)
            return true;
    return false;
}

static const struct {
    unsigned bit;
    const char *name;
} methods[] = {{HTTP_M_GET, "get"},
               {HTTP_M_POST, "post"},
               {HTTP_M_PUT, "put"},
               {HTTP_M_DELETE, "delete"},
               {HTTP_M_PATCH, "patch"}};

static bool in_code(const char *path, const char *method)
{
    const http_route_def *tables[8] = {ops_routes};
    size_t n = 1;
    for (size_t i = 0; app_modules[i] && n < 8; i++)
        tables[n++] = app_modules[i]->routes;
    for (size_t t = 0; t < n; t++)
        for (const http_route_def *r = tables[t]; r && r->pattern; r++)
            for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++)
                if ((r->methods & methods[m].bit) && strcmp(r->pattern, path) == 0 &&
                    strcmp(methods[m].name, method) == 0)
                    return true;
    return false;
}

static void test_every_route_is_documented(void **state)
{
    (void)state;
    const http_route_def *tables[8] = {ops_routes};
    size_t n = 1;
    for (size_t i = 0; app_modules[i] && n < 8; i++)
        tables[n++] = app_modules[i]->routes;
    size_t checked = 0;
    for (size_t t = 0; t < n; t++)
        for (const http_route_def *r = tables[t]; r && r->pattern; r++)
            for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++)
                if (r->methods & methods[m].bit) {
                    if (!in_spec(r->pattern, methods[m].name))
                        fail_msg("%s %s is served but not in docs/openapi.yaml", methods[m].name,
                                 r->pattern);
                    checked++;
                }
    assert_true(checked >= 17);
}

static void test_every_documented_route_is_served(void **state)
{
    (void)state;
    for (size_t i = 0; i < n_spec; i++)
        if (!in_code(spec[i].path, spec[i].method))
            fail_msg("%s %s is in docs/openapi.yaml but no route serves it", spec[i].method,
                     spec[i].path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_route_is_documented),
        cmocka_unit_test(test_every_documented_route_is_served),
    };
    return cmocka_run_group_tests_name("openapi contract", tests, load_spec, NULL);
}
