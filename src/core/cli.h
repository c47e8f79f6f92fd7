/* The command line: options and the command to run, parsed into a plain struct. */
#ifndef CORE_CLI_H
#define CORE_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "core/error.h"

#ifndef APP_VERSION
#define APP_VERSION "0.1.0"
#endif

/* Used when neither --config nor -c is given. */
#define CLI_DEFAULT_CONFIG "config/app.yaml"

typedef enum cli_command {
    CLI_SERVE = 0, /* the default */
    CLI_MIGRATE,
    CLI_CHECK_CONFIG,
    CLI_REPLAY, /* projection: NULL for every projection */
    CLI_DLQ_LIST,
    CLI_DLQ_REDRIVE, /* dlq_id: NULL for every dead letter */
    CLI_ROUTES,      /* the HTTP routes this configuration serves */
} cli_command;

typedef struct cli_args {
    const char *config_path; /* borrowed from argv, or CLI_DEFAULT_CONFIG */
    cli_command command;
    const char *projection; /* replay --projection NAME */
    const char *dlq_id;     /* dlq redrive ID */
    bool help;
    bool version;
} cli_args;

/* Fills out from argv (out holds pointers into argv). On an unknown option or command, a
 * missing argument or a stray one, returns APP_ECONFIG with a message; the caller prints it
 * with the usage and exits 2. --help and --version stop the parse successfully. */
int cli_parse(int argc, char **argv, cli_args *out, app_error *err);

/* The usage text: commands, options and the main APP_* variables. */
void cli_usage(FILE *f, const char *prog);

#endif
