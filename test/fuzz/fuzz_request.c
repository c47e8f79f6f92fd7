/* libFuzzer: a request as the edge takes it apart after the guard: the path through the
 * router of every route this build serves (contexts, operations, internal), the caller
 * through access control (API keys, gateway consumers, end users), the body through the
 * JSON budget and parser, and the internal endpoints' envelope. Input: "METHOD PATH\n",
 * header lines "Name: value\n", an empty line, the body. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "http/access.h"
#include "http/router.h"
#include "kernel/module.h"
#include "kernel/ops.h"
#include "kernel/remote.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static http_router *router;
static http_access *access_rules;

static void fuzz_init(void)
{
    app_error err = APP_ERROR_INIT;
    if (http_router_new(&router, &err) != 0)
        abort();
    http_router_add(router, ops_routes, &err);
    http_router_add(router, remote_routes, &err);
    for (size_t i = 0; app_modules[i]; i++)
        http_router_add(router, app_modules[i]->routes, &err);
    static config_api_key key = {.consumer = "fuzz", .scopes = CONFIG_SCOPE_READ};
    static config_network gw = {.family = 2, .addr = {127, 0, 0, 1}, .prefix = 8};
    http_access_options o = {.required = true,
                             .keys = &key,
                             .n_keys = 1,
                             .gateways = &gw,
                             .n_gateways = 1,
                             .requests_per_minute = 60,
                             .burst = 5};
    if (http_access_new(&access_rules, &o, &err) != 0)
        abort();
}

static const char *header(char *head, const char *name)
{
    size_t n = strlen(name);
    for (char *line = strchr(head, '\n'); line; line = strchr(line + 1, '\n'))
        if (strncasecmp(line + 1, name, n) == 0 && line[1 + n] == ':')
            return line + 2 + n + (line[2 + n] == ' ');
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!router)
        fuzz_init();
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char *body = strstr(text, "\n\n");
    size_t body_len = 0;
    if (body) {
        *body = '\0';
        body += 2;
        body_len = size - (size_t)(body - text);
    }
    /* A header's value runs to the end of the text: access control must refuse what a value
     * may not hold (line breaks among it). */
    char *head = text;
    char *line_end = strchr(head, '\n');
    char *sp = strchr(head, ' ');
    if (sp && (!line_end || sp < line_end)) {
        *sp = '\0';
        char *path = sp + 1;
        if (line_end)
            *line_end = '\0';
        static const struct {
            const char *name;
            http_method m;
        } methods[] = {{"GET", HTTP_M_GET},       {"POST", HTTP_M_POST},   {"PUT", HTTP_M_PUT},
                       {"DELETE", HTTP_M_DELETE}, {"PATCH", HTTP_M_PATCH}, {"HEAD", HTTP_M_HEAD}};
        http_method m = HTTP_M_OTHER;
        for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
            if (strcmp(head, methods[i].name) == 0)
                m = methods[i].m;
        http_route_match match;
        app_error err = APP_ERROR_INIT;
        if (http_router_match(router, m, path, &match, &err) == 0)
            for (size_t i = 0; i < match.n_params; i++)
                free(match.param_values[i]);
        char *decoded = NULL;
        if (http_path_decode(path, &decoded, &err) == 0)
            free(decoded);
        if (line_end)
            *line_end = '\n'; /* header() walks the lines from here */
    }
    char actor[129];
    unsigned scopes = 0;
    app_error err = APP_ERROR_INIT;
    http_caller c = {.peer = size % 2 ? "127.0.0.1" : "198.51.100.7",
                     .apikey = header(text, "apikey"),
                     .consumer_username = header(text, "X-Consumer-Username"),
                     .end_user = header(text, "X-Authenticated-Userid")};
    http_access_identify(access_rules, &c, actor, sizeof actor, &scopes, &err);
    cJSON *j = NULL;
    if (body && json_utf8_valid(body, body_len) &&
        json_parse_body(body, body_len, JSON_MAX_VALUES, JSON_MAX_DEPTH, &j, &err) == 0) {
        if (cJSON_IsObject(j)) {
            bus_meta meta;
            const cJSON *payload = NULL;
            remote_envelope_parse(j, &meta, &payload, &err);
            cJSON *out = NULL;
            char *reply = remote_reply_text(APP_EINVAL, NULL, &err, &(int){0});
            if (reply)
                remote_reply_parse(422, reply, &out, &err);
            cJSON_Delete(out);
            free(reply);
        }
        cJSON_Delete(j);
    }
    free(text);
    return 0;
}
