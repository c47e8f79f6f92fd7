/* Command-line parsing and usage text; the caller decides what to run and the exit code. */
#include "core/cli.h"

#include <string.h>

/* Matches "--name VALUE", "--name=VALUE" or the short form "-x VALUE". On a match, *value is
 * the argument (or NULL when it is missing) and *i points at the last word consumed. */
static bool cli_opt_value(int argc, char **argv, int *i, const char *lng, const char *shrt,
                          const char **value)
{
    const char *a = argv[*i];
    size_t n = strlen(lng);
    if (strncmp(a, lng, n) == 0 && a[n] == '=') {
        *value = a + n + 1;
        return true;
    }
    if (strcmp(a, lng) == 0 || (shrt && strcmp(a, shrt) == 0)) {
        *value = *i + 1 < argc ? argv[++*i] : NULL;
        return true;
    }
    return false;
}

static int cli_command_word(cli_args *out, const char *word, int *positional, app_error *err)
{
    static const struct {
        const char *name;
        cli_command command;
    } commands[] = {
        {"serve", CLI_SERVE},   {"migrate", CLI_MIGRATE}, {"check-config", CLI_CHECK_CONFIG},
        {"replay", CLI_REPLAY}, {"routes", CLI_ROUTES},
    };
    int pos = (*positional)++;
    if (pos == 0) {
        if (strcmp(word, "dlq") == 0) {
            out->command = CLI_DLQ_LIST; /* refined by the next word */
            return 0;
        }
        for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
            if (strcmp(word, commands[i].name) == 0) {
                out->command = commands[i].command;
                return 0;
            }
        return app_error_set(err, APP_ECONFIG, "unknown command \"%.60s\"", word);
    }
    if (out->command == CLI_DLQ_LIST && pos == 1) {
        if (strcmp(word, "list") == 0)
            return 0;
        if (strcmp(word, "redrive") == 0) {
            out->command = CLI_DLQ_REDRIVE;
            return 0;
        }
        return app_error_set(err, APP_ECONFIG, "unknown dlq command \"%.60s\" (list or redrive)",
                             word);
    }
    if (out->command == CLI_DLQ_REDRIVE && pos == 2) {
        out->dlq_id = word;
        return 0;
    }
    return app_error_set(err, APP_ECONFIG, "unexpected argument \"%.60s\"", word);
}

int cli_parse(int argc, char **argv, cli_args *out, app_error *err)
{
    memset(out, 0, sizeof *out);
    out->config_path = CLI_DEFAULT_CONFIG;
    out->command = CLI_SERVE;
    int positional = 0;
    bool dlq_seen = false, options_done = false;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *value = NULL;
        if (options_done || a[0] != '-' || a[1] == '\0') {
            int rc = cli_command_word(out, a, &positional, err);
            if (rc)
                return rc;
            dlq_seen = dlq_seen || (positional == 1 && out->command == CLI_DLQ_LIST);
            continue;
        }
        if (strcmp(a, "--") == 0) {
            options_done = true;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            out->help = true;
            return 0;
        } else if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            out->version = true;
            return 0;
        } else if (cli_opt_value(argc, argv, &i, "--config", "-c", &value)) {
            if (!value || !value[0])
                return app_error_set(err, APP_ECONFIG, "option --config needs a file name");
            out->config_path = value;
        } else if (cli_opt_value(argc, argv, &i, "--projection", NULL, &value)) {
            if (!value || !value[0])
                return app_error_set(err, APP_ECONFIG, "option --projection needs a name");
            out->projection = value;
        } else {
            return app_error_set(err, APP_ECONFIG, "unknown option \"%.60s\"", a);
        }
    }
    if (out->projection && out->command != CLI_REPLAY)
        return app_error_set(err, APP_ECONFIG, "option --projection is only valid with replay");
    if (dlq_seen && positional < 2)
        return app_error_set(err, APP_ECONFIG, "dlq needs a command: list or redrive [ID]");
    return 0;
}

void cli_usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [--config FILE] [COMMAND]\n"
            "\n"
            "commands:\n"
            "  serve                      serve HTTP and run subscriptions (default)\n"
            "  migrate                    apply the loaded contexts' migrations and exit\n"
            "  check-config               validate the configuration and exit\n"
            "  replay [--projection NAME] rebuild read models from the event log\n"
            "  dlq list                   list dead letters\n"
            "  dlq redrive [ID]           deliver dead letters again (all, or one by id)\n"
            "  routes                     list the HTTP routes the loaded contexts serve\n"
            "\n"
            "options:\n"
            "  -c, --config FILE          configuration file (default %s)\n"
            "  -h, --help                 show this help and exit\n"
            "  -V, --version              show the version and exit\n"
            "\n"
            "environment (overrides the file; every key has one, APP_<SECTION>_<KEY>):\n"
            "  APP_HTTP_LISTEN            host:port to serve on, e.g. 0.0.0.0:8080\n"
            "  APP_HTTP_THREADS           HTTP event loop threads\n"
            "  APP_WORKERS_THREADS        worker pool threads\n"
            "  APP_POSTGRES_DSN           libpq connection string\n"
            "  APP_POSTGRES_POOL_SIZE     PostgreSQL connections\n"
            "  APP_REDIS_URL              redis://host:port/db\n"
            "  APP_REDIS_KEY_PREFIX       prefix of every Redis key\n"
            "  APP_LOG_LEVEL              debug, info, warn or error\n"
            "  APP_CONTEXTS               comma-separated contexts to load, e.g. user,order\n"
            "  APP_REMOTE_<CONTEXT>       where a context not loaded here is served, e.g.\n"
            "                             APP_REMOTE_INVENTORY=http://127.0.0.1:8082\n"
            "\n"
            "exit status: 0 success, 1 runtime failure, 2 bad command line or configuration\n"
            "version %s\n",
            prog ? prog : "app", CLI_DEFAULT_CONFIG, APP_VERSION);
}
