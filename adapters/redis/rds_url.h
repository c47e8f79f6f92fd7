/* Parsing of redis:// URLs into what a hiredis connection needs (hiredis has no parser). */
#ifndef ADAPTERS_REDIS_RDS_URL_H
#define ADAPTERS_REDIS_RDS_URL_H

#include "core/error.h"

#define RDS_URL_DEFAULT_PORT 6379
#define RDS_URL_MAX_DB       15

typedef struct rds_url {
    char host[256];     /* hostname, IPv4 or IPv6 address (without brackets) */
    int port;           /* 1..65535, default 6379 */
    int db;             /* 0..15, default 0 */
    char user[128];     /* empty: no ACL user (AUTH <password> only) */
    char password[256]; /* empty: no AUTH */
} rds_url;

/* Parses redis://[[user]:password@]host[:port][/db]. User and password may be
 * percent-encoded. On failure returns APP_ECONFIG with err saying what is wrong (the
 * password is never echoed) and leaves *out zeroed. */
int rds_url_parse(const char *url, rds_url *out, app_error *err);

#endif
