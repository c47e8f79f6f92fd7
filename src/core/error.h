/* One error model for the whole process: a code, a short message and optional
 * detail and field errors. Only the edges (HTTP, CLI, log) turn it into text. */
#ifndef CORE_ERROR_H
#define CORE_ERROR_H

#include <stddef.h>

typedef enum app_err_code {
    APP_OK = 0,
    APP_EBADREQ = -1,      /* 400 malformed JSON, wrong types */
    APP_EUNAUTH = -2,      /* 401 no or bad API key */
    APP_ENOTFOUND = -3,    /* 404 unknown resource or route */
    APP_EMETHOD = -4,      /* 405 wrong method */
    APP_ECONFLICT = -5,    /* 409 duplicate, or a state that forbids the command */
    APP_EPRECOND = -6,     /* 412 If-Match version mismatch */
    APP_ETOOLARGE = -7,    /* 413 body too large */
    APP_EMEDIA = -8,       /* 415 not JSON */
    APP_EINVAL = -9,       /* 422 well-formed but invalid values */
    APP_ERATELIMIT = -10,  /* 429 */
    APP_EUNAVAIL = -11,    /* 503 a dependency is down */
    APP_EINTERNAL = -12,   /* 500 a bug */
    APP_ENOMEM = -13,      /* 500 out of memory */
    APP_EVERSION = -14,    /* stream version conflict; the bus retries or maps it to 409/412 */
    APP_ECONFIG = -15,     /* configuration error (exit status 2) */
    APP_EIDEMPOTENT = -16, /* an Idempotency-Key has a record already; the bus answers from it */
    APP_EFORBIDDEN = -17,  /* 403 a caller that may not use this endpoint at all */
} app_err_code;

#define APP_ERROR_MAX_FIELDS 8

typedef struct app_field_error {
    char field[64];
    char message[160];
} app_field_error;

typedef struct app_error {
    int code;          /* an app_err_code */
    char message[160]; /* short, lower-case, no final period */
    char detail[512];  /* optional sentence(s) for people */
    size_t n_fields;
    app_field_error fields[APP_ERROR_MAX_FIELDS];
} app_error;

#define APP_ERROR_INIT                                                                             \
    {                                                                                              \
        0                                                                                          \
    }

/* Sets code, message (printf-style) and clears detail and fields. Returns code. */
int app_error_set(app_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sets the detail sentence; keeps code and message. Returns err->code. */
int app_error_detail(app_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends one field error (dropped silently past APP_ERROR_MAX_FIELDS). */
void app_error_field(app_error *err, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void app_error_clear(app_error *err);

/* HTTP status for a code (500 for unknown codes) and the problem title. */
int app_error_http_status(int code);
const char *app_error_title(int code);
/* Stable slug for problem "type" and logs, e.g. "conflict". */
const char *app_error_slug(int code);

/* The message of an APP_EUNAVAIL whose write may or may not have happened (the database went
 * away between the commit and its answer, and is not back to say): the HTTP layer tells the
 * client to send the request again with the same Idempotency-Key. */
#define APP_OUTCOME_UNKNOWN "outcome unknown"
/* The code a slug stands for ("conflict" is APP_ECONFLICT, "internal-error" APP_EINTERNAL),
 * or 0 when no code has that slug. */
int app_error_code_of_slug(const char *slug);

#endif
