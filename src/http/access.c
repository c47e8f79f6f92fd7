/* API keys, trusted gateways and per-caller token buckets (see access.h). */
#include "http/access.h"

#include <arpa/inet.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/sha256.h"
#include "core/text.h"

#define ACCESS_SHARDS      16   /* buckets are spread over this many locks */
#define ACCESS_SLOTS       1024 /* hash chains per shard */
#define ACCESS_MAX_CALLERS 100000
#define ACCESS_ACTOR_MAX   128
/* Refused credentials an address may send: a burst, then one every two seconds. */
#define ACCESS_FAILURES_PER_MINUTE 30
#define ACCESS_FAILURES_BURST      10

typedef struct access_bucket {
    struct access_bucket *next;
    double tokens; /* requests the caller may still send */
    double at;     /* when tokens was last brought up to date */
    char who[];
} access_bucket;

typedef struct access_shard {
    pthread_mutex_t lock;
    access_bucket *slots[ACCESS_SLOTS];
    size_t count;
} access_shard;

/* Token buckets by caller, all of one rate and size. */
typedef struct access_limiter {
    double rate; /* tokens per second; 0: no limit */
    double burst;
    size_t max_per_shard;
    access_shard shards[ACCESS_SHARDS];
} access_limiter;

struct http_access {
    bool required;
    config_api_key *keys;
    size_t n_keys;
    config_network *gateways;
    size_t n_gateways;
    config_network *peers; /* of the internal endpoints */
    size_t n_peers;
    bool has_token;
    unsigned char token_sha256[32];
    access_limiter requests; /* rate_limit.*, per caller */
    access_limiter failures; /* refused credentials, per address */
};

/* A copy of n items of size bytes (NULL for none, or when out of memory: *failed). */
static void *access_copy(const void *items, size_t n, size_t size, bool *failed)
{
    if (n == 0)
        return NULL;
    void *copy = malloc(n * size);
    if (copy)
        memcpy(copy, items, n * size);
    else
        *failed = true;
    return copy;
}

static void access_limiter_init(access_limiter *l, double rate, double burst, size_t max)
{
    l->rate = rate;
    l->burst = burst;
    l->max_per_shard = (max + ACCESS_SHARDS - 1) / ACCESS_SHARDS;
    for (size_t i = 0; i < ACCESS_SHARDS; i++)
        pthread_mutex_init(&l->shards[i].lock, NULL);
}

static void access_limiter_free(access_limiter *l)
{
    for (size_t i = 0; i < ACCESS_SHARDS; i++) {
        access_shard *s = &l->shards[i];
        for (size_t j = 0; j < ACCESS_SLOTS; j++) {
            access_bucket *b = s->slots[j];
            while (b) {
                access_bucket *next = b->next;
                free(b);
                b = next;
            }
        }
        pthread_mutex_destroy(&s->lock);
    }
}

int http_access_new(http_access **out, const http_access_options *o, app_error *err)
{
    http_access *a = calloc(1, sizeof *a);
    if (!a)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    bool failed = false;
    a->required = o->required;
    a->keys = access_copy(o->keys, o->n_keys, sizeof *a->keys, &failed);
    a->n_keys = o->n_keys;
    a->gateways = access_copy(o->gateways, o->n_gateways, sizeof *a->gateways, &failed);
    a->n_gateways = o->n_gateways;
    a->peers = access_copy(o->internal_peers, o->n_internal_peers, sizeof *a->peers, &failed);
    a->n_peers = o->n_internal_peers;
    a->has_token = o->has_token;
    memcpy(a->token_sha256, o->token_sha256, sizeof a->token_sha256);
    if (failed) {
        free(a->keys);
        free(a->gateways);
        free(a->peers);
        free(a);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    size_t max = o->max_callers ? o->max_callers : ACCESS_MAX_CALLERS;
    access_limiter_init(&a->requests,
                        o->requests_per_minute > 0 ? o->requests_per_minute / 60.0 : 0,
                        o->burst > 0 ? o->burst : 1, max);
    access_limiter_init(&a->failures, ACCESS_FAILURES_PER_MINUTE / 60.0, ACCESS_FAILURES_BURST,
                        max);
    *out = a;
    return 0;
}

void http_access_free(http_access *a)
{
    if (!a)
        return;
    access_limiter_free(&a->requests);
    access_limiter_free(&a->failures);
    free(a->keys);
    free(a->gateways);
    free(a->peers);
    free(a);
}

/* ---- who is calling ---------------------------------------------------------------------- */

/* Whether the numeric address peer lies in one of the n networks. */
static bool access_peer_in(const config_network *nets, size_t n, const char *peer)
{
    unsigned char addr[16];
    int family;
    if (!peer || n == 0)
        return false;
    if (inet_pton(AF_INET, peer, addr) == 1) {
        family = AF_INET;
    } else if (inet_pton(AF_INET6, peer, addr) == 1) {
        family = AF_INET6;
        /* An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d. */
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(addr, mapped, sizeof mapped) == 0) {
            memmove(addr, addr + 12, 4);
            family = AF_INET;
        }
    } else {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        const config_network *net = &nets[i];
        if (net->family != family)
            continue;
        int whole = net->prefix / 8, rest = net->prefix % 8;
        if (memcmp(addr, net->addr, (size_t)whole) != 0)
            continue;
        if (rest) {
            unsigned char mask = (unsigned char)(0xff << (8 - rest));
            if ((addr[whole] & mask) != (net->addr[whole] & mask))
                continue;
        }
        return true;
    }
    return false;
}

static bool access_from_gateway(const http_access *a, const char *peer)
{
    return access_peer_in(a->gateways, a->n_gateways, peer);
}

static bool access_printable(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] == 0x7f)
            return false;
    return true;
}

/* The consumer of key, or NULL. Every configured digest is compared in full, so the time
 * taken says nothing about which bytes matched. */
static const config_api_key *access_key_of(const http_access *a, const char *key)
{
    uint8_t digest[SHA256_DIGEST_LEN];
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, key, strlen(key));
    sha256_final(&c, digest);
    const config_api_key *found = NULL;
    for (size_t i = 0; i < a->n_keys; i++) {
        unsigned char diff = 0;
        for (size_t j = 0; j < SHA256_DIGEST_LEN; j++)
            diff |= (unsigned char)(digest[j] ^ a->keys[i].sha256[j]);
        if (diff == 0 && !found)
            found = &a->keys[i];
    }
    return found;
}

int http_access_identify(const http_access *a, const http_caller *c, char *actor, size_t size,
                         unsigned *scopes, app_error *err)
{
    actor[0] = '\0';
    unsigned ignored;
    if (!scopes)
        scopes = &ignored;
    *scopes = HTTP_ACCESS_ALL_SCOPES;
    if (access_from_gateway(a, c->peer) && c->end_user) {
        if (!access_printable(c->end_user, ACCESS_ACTOR_MAX))
            return app_error_set(err, APP_EBADREQ,
                                 "X-Authenticated-Userid must be 1 to %d printable characters",
                                 ACCESS_ACTOR_MAX);
        snprintf(actor, size, "%s", c->end_user);
        *scopes = CONFIG_SCOPE_READ | CONFIG_SCOPE_WRITE | HTTP_ACCESS_END_USER;
        return 0;
    }
    if (access_from_gateway(a, c->peer)) {
        bool anonymous = c->anonymous && strcmp(c->anonymous, "true") == 0;
        const char *name = c->consumer_username ? c->consumer_username : c->consumer_id;
        const char *header = c->consumer_username ? "X-Consumer-Username" : "X-Consumer-ID";
        if (name && !anonymous) {
            if (!access_printable(name, ACCESS_ACTOR_MAX))
                return app_error_set(err, APP_EBADREQ, "%s must be 1 to %d printable characters",
                                     header, ACCESS_ACTOR_MAX);
            snprintf(actor, size, "%s", name);
            return 0;
        }
    }
    if (c->apikey) {
        const config_api_key *key = access_key_of(a, c->apikey);
        if (key) {
            snprintf(actor, size, "%s", key->consumer);
            *scopes = key->scopes ? key->scopes : HTTP_ACCESS_ALL_SCOPES;
            return 0;
        }
        if (a->required)
            return app_error_set(err, APP_EUNAUTH, "the API key is not valid");
    }
    if (a->required)
        return app_error_set(err, APP_EUNAUTH, "an API key is required in the apikey header");
    return 0;
}

int http_access_internal(const http_access *a, const char *peer, const char *authorization,
                         app_error *err)
{
    if (!access_peer_in(a->peers, a->n_peers, peer)) {
        app_error_set(err, APP_EFORBIDDEN, "internal endpoints answer trusted peers only");
        app_error_detail(err, "%s is not in internal.trusted_peers", peer ? peer : "the caller");
        return APP_EFORBIDDEN;
    }
    if (!a->has_token)
        return 0;
    static const char bearer[] = "Bearer ";
    if (!authorization || strncmp(authorization, bearer, sizeof bearer - 1) != 0)
        return app_error_set(err, APP_EFORBIDDEN, "internal endpoints need the internal token");
    uint8_t digest[SHA256_DIGEST_LEN];
    sha256_ctx c;
    sha256_init(&c);
    const char *token = authorization + sizeof bearer - 1;
    sha256_update(&c, token, strlen(token));
    sha256_final(&c, digest);
    unsigned char diff = 0;
    for (size_t j = 0; j < SHA256_DIGEST_LEN; j++)
        diff |= (unsigned char)(digest[j] ^ a->token_sha256[j]);
    if (diff != 0)
        return app_error_set(err, APP_EFORBIDDEN, "the internal token is not valid");
    return 0;
}

/* ---- rate limit ------------------------------------------------------------------------ */

void http_access_caller(const char *actor, const char *peer, char *out, size_t size)
{
    if (actor && actor[0]) {
        snprintf(out, size, "c:%s", actor);
        return;
    }
    unsigned char addr[16];
    char text[INET6_ADDRSTRLEN];
    if (peer && strchr(peer, ':') && inet_pton(AF_INET6, peer, addr) == 1) {
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(addr, mapped, sizeof mapped) == 0 &&
            inet_ntop(AF_INET, addr + 12, text, sizeof text)) {
            snprintf(out, size, "a:%s", text);
            return;
        }
        memset(addr + 8, 0, 8);
        if (inet_ntop(AF_INET6, addr, text, sizeof text)) {
            snprintf(out, size, "a:%s/64", text);
            return;
        }
    }
    snprintf(out, size, "a:%s", peer && peer[0] ? peer : "-");
}

static void access_refill(const access_limiter *a, access_bucket *b, double now)
{
    if (now > b->at) {
        b->tokens += (now - b->at) * a->rate;
        if (b->tokens > a->burst)
            b->tokens = a->burst;
        b->at = now;
    }
}

/* Drops the buckets that have filled up again: a full bucket is the same as none. */
static void access_sweep(const access_limiter *a, access_shard *s, double now)
{
    for (size_t j = 0; j < ACCESS_SLOTS; j++) {
        access_bucket **link = &s->slots[j];
        while (*link) {
            access_bucket *b = *link;
            access_refill(a, b, now);
            if (b->tokens >= a->burst) {
                *link = b->next;
                free(b);
                s->count--;
            } else {
                link = &b->next;
            }
        }
    }
}

/* Takes one token (take) or only looks (!take) from who's bucket: 0 while it has one, else
 * APP_ERATELIMIT with what (e.g. "requests") in the message. */
static int access_take(access_limiter *a, const char *who, double now_s, bool take,
                       const char *what, http_quota *q, app_error *err)
{
    *q = (http_quota){0};
    if (a->rate <= 0)
        return 0;
    q->limited = true;
    q->limit = (int)a->burst;
    uint32_t h = text_fnv1a(who);
    access_shard *s = &a->shards[h % ACCESS_SHARDS];
    access_bucket **slot = &s->slots[(h / ACCESS_SHARDS) % ACCESS_SLOTS];

    pthread_mutex_lock(&s->lock);
    access_bucket *b = *slot;
    while (b && strcmp(b->who, who) != 0)
        b = b->next;
    if (!b) {
        if (s->count >= a->max_per_shard)
            access_sweep(a, s, now_s);
        size_t n = strlen(who) + 1;
        if (s->count < a->max_per_shard)
            b = malloc(sizeof *b + n);
        if (!b) { /* too many callers at once (or no memory): let it through untracked */
            pthread_mutex_unlock(&s->lock);
            q->remaining = (int)a->burst - 1;
            return 0;
        }
        memcpy(b->who, who, n);
        b->tokens = a->burst;
        b->at = now_s;
        b->next = *slot;
        *slot = b;
        s->count++;
    }
    access_refill(a, b, now_s);
    int rc = 0;
    if (b->tokens >= 1) {
        if (take)
            b->tokens -= 1;
        q->remaining = (int)floor(b->tokens);
    } else {
        q->remaining = 0;
        double wait = (1 - b->tokens) / a->rate;
        q->retry_after_s = (int)ceil(wait);
        if (q->retry_after_s < 1)
            q->retry_after_s = 1;
        rc = app_error_set(err, APP_ERATELIMIT,
                           "rate limit of %d %s a minute exceeded; try again in %d s",
                           (int)lround(a->rate * 60), what, q->retry_after_s);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int http_access_admit(http_access *a, const char *who, double now_s, http_quota *q, app_error *err)
{
    return access_take(&a->requests, who, now_s, true, "requests", q, err);
}

/* The bucket of refused credentials of the address peer ("a:..." as http_access_caller
 * names it, an IPv6 address by its /64). */
static void access_failure_key(const char *peer, char *out, size_t size)
{
    http_access_caller(NULL, peer, out, size);
}

int http_access_blocked(http_access *a, const char *peer, double now_s, app_error *err)
{
    char who[96];
    http_quota q;
    access_failure_key(peer, who, sizeof who);
    return access_take(&a->failures, who, now_s, false, "refused credentials", &q, err);
}

void http_access_failed(http_access *a, const char *peer, double now_s)
{
    char who[96];
    http_quota q;
    app_error ignored = APP_ERROR_INIT;
    access_failure_key(peer, who, sizeof who);
    access_take(&a->failures, who, now_s, true, "refused credentials", &q, &ignored);
}

size_t http_access_callers(http_access *a)
{
    size_t n = 0;
    for (size_t i = 0; i < ACCESS_SHARDS; i++) {
        pthread_mutex_lock(&a->requests.shards[i].lock);
        n += a->requests.shards[i].count;
        pthread_mutex_unlock(&a->requests.shards[i].lock);
    }
    return n;
}
