/* Who a request comes from, and whether it may go on. A caller is named by an API key (the
 * `apikey` header, checked against the SHA-256 digests in the configuration) or, for a
 * connection from a trusted gateway, by the consumer the gateway authenticated (Kong's
 * X-Consumer-Username / X-Consumer-ID). Each caller then draws from a token bucket of its
 * own. Free of libevent, so it is tested on its own; thread-safe. */
#ifndef HTTP_ACCESS_H
#define HTTP_ACCESS_H

#include <stdbool.h>
#include <stddef.h>

#include "core/config.h"
#include "core/error.h"

typedef struct http_access http_access;

typedef struct http_access_options {
    bool required; /* a request with no consumer is refused (401) */
    const config_api_key *keys;
    size_t n_keys;
    const config_network *gateways;
    size_t n_gateways;
    int requests_per_minute; /* per caller; 0 turns the rate limit off */
    int burst;               /* requests a caller may send at once (the bucket's size) */
    size_t max_callers;      /* buckets kept at most; 0 means 100,000 */
    /* Who may call the internal endpoints: these peers, with a bearer token of this SHA-256
     * when has_token. */
    const config_network *internal_peers;
    size_t n_internal_peers;
    bool has_token;
    unsigned char token_sha256[32];
} http_access_options;

/* What a request says about its caller: header values or NULL, and the connection's peer. */
typedef struct http_caller {
    const char *peer;              /* numeric address, "127.0.0.1" or "::1" */
    const char *apikey;            /* apikey */
    const char *consumer_username; /* X-Consumer-Username */
    const char *consumer_id;       /* X-Consumer-ID */
    const char *anonymous;         /* X-Anonymous-Consumer: "true" when Kong let it through */
    const char *end_user;          /* X-Authenticated-Userid: the user Kong authenticated */
} http_caller;

/* Copies what it needs from o. *out owned by the caller; free with http_access_free. */
int http_access_new(http_access **out, const http_access_options *o, app_error *err);
void http_access_free(http_access *a); /* accepts NULL */

/* Names the caller in actor (size bytes) and what it may do in *scopes (CONFIG_SCOPE_* bits;
 * scopes may be NULL): an API key's own scopes, every scope for a key without any, for a
 * gateway's consumer and for an anonymous caller. Actor: the consumer a trusted gateway names, else
 * the consumer of a known API key, else "" (anonymous). APP_EUNAUTH when consumers are required and
 * there is none, or a key is given that is not known; APP_EBADREQ for a gateway's consumer header
 * that is not 1..128 printable characters. Headers of a gateway are ignored unless the peer is one
 * of the trusted gateways. */
int http_access_identify(const http_access *a, const http_caller *c, char *actor, size_t size,
                         unsigned *scopes, app_error *err);

#define HTTP_ACCESS_ALL_SCOPES (CONFIG_SCOPE_READ | CONFIG_SCOPE_WRITE | CONFIG_SCOPE_ADMIN)
/* In *scopes: the caller is an end user (a trusted gateway's X-Authenticated-Userid, which is
 * then the actor), and may touch only what is its own. */
#define HTTP_ACCESS_END_USER (1u << 8)

/* Whether a caller may use the internal endpoints: its peer address is one of the internal
 * peers and, when a token is configured, authorization is "Bearer <token>" with that token.
 * 0, or APP_EFORBIDDEN saying which of the two failed. */
int http_access_internal(const http_access *a, const char *peer, const char *authorization,
                         app_error *err);

/* The rate-limit bucket of a request: its consumer ("c:alice") when it has one, else its
 * address ("a:192.0.2.7"); an IPv6 address counts by its /64, the block one host usually
 * holds, so that a client cannot get fresh buckets by hopping within it. */
void http_access_caller(const char *actor, const char *peer, char *out, size_t size);

/* Where a caller stands with the rate limit after a request. */
typedef struct http_quota {
    bool limited;      /* a rate limit applies (the fields below mean something) */
    int limit;         /* the bucket's size */
    int remaining;     /* requests left right now */
    int retry_after_s; /* when refused: seconds until the next request may go */
} http_quota;

/* Takes one request from the bucket of caller `who` at now_s (seconds on a monotonic
 * clock). 0 when it may go, APP_ERATELIMIT when the bucket is empty; q filled either way.
 * When every one of max_callers buckets is in use and none is full, a new caller is let
 * through untracked rather than refused. */
int http_access_admit(http_access *a, const char *who, double now_s, http_quota *q, app_error *err);

/* Guessing keys: each refused credential (an unknown API key) takes a token from its
 * address's own bucket (10 at once, then 30 a minute, whatever the rate limit says). While
 * that bucket is empty, http_access_blocked answers APP_ERATELIMIT, and the request is
 * refused before its key is even looked at. */
int http_access_blocked(http_access *a, const char *peer, double now_s, app_error *err);
void http_access_failed(http_access *a, const char *peer, double now_s);

/* Buckets held now (for tests and metrics). */
size_t http_access_callers(http_access *a);

#endif
