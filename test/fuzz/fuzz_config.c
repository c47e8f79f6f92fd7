/* libFuzzer: the configuration loader on any file, then any environment. Input: the YAML
 * text, a NUL byte, then "NAME=value" lines for the APP_* variables. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *env_text;
static size_t env_len;

/* The value of name among the "NAME=value" lines of the input. */
static const char *fuzz_lookup(const char *name)
{
    static char value[4096];
    size_t n = strlen(name);
    for (const char *p = env_text; p && p < env_text + env_len;) {
        const char *end = memchr(p, '\n', (size_t)(env_text + env_len - p));
        size_t len = end ? (size_t)(end - p) : (size_t)(env_text + env_len - p);
        if (len > n && memcmp(p, name, n) == 0 && p[n] == '=') {
            size_t v = len - n - 1 < sizeof value - 1 ? len - n - 1 : sizeof value - 1;
            memcpy(value, p + n + 1, v);
            value[v] = '\0';
            return value;
        }
        p = end ? end + 1 : NULL;
    }
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t yaml_len = nul ? (size_t)(nul - data) : size;
    env_text = nul ? (const char *)nul + 1 : NULL;
    env_len = nul ? size - yaml_len - 1 : 0;
    int fd = memfd_create("config", 0);
    if (fd < 0)
        return 0;
    if (write(fd, data, yaml_len) != (ssize_t)yaml_len) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    app_config cfg;
    app_error err = APP_ERROR_INIT;
    if (config_load(path, &cfg, &err) == 0)
        config_apply_env(&cfg, fuzz_lookup, &err);
    else if (err.message[0] == '\0')
        abort(); /* a refusal always says why */
    close(fd);
    return 0;
}
