/* Read-store port over Redis: a mutex-guarded pool of blocking hiredis connections. Each
 * call borrows one connection, so callers must run on worker threads, not event loops. */
#include "adapters/redis/rds_store.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adapters/redis/rds_loop.h"
#include "adapters/redis/rds_url.h"
#include "core/breaker.h"
#include "core/deadline.h"

typedef struct rds_slot {
    redisContext *conn; /* NULL until first use or after an I/O error */
    bool busy;
} rds_slot;

struct rds_store {
    rds_url url;
    char *prefix;
    size_t prefix_len;
    int timeout_ms;
    size_t n_slots;
    rds_slot *slots;
    pthread_mutex_t mu;
    pthread_cond_t freed; /* signalled when a slot stops being busy */
    /* Opens after RDS_BREAKER_FAILURES calls in a row found Redis unreachable: while Redis is
     * down, callers get their 503 at once instead of each waiting out a timeout. */
    pthread_mutex_t breaker_mu;
    breaker breaker;
};

#define RDS_BREAKER_FAILURES 5
#define RDS_BREAKER_OPEN_MS  1000

/* ---- pool ---------------------------------------------------------------------------- */

/* Borrows a slot, preferring one that is already connected. */
static int pool_acquire(rds_store *s, rds_slot **out, app_error *err)
{
    struct timespec deadline;
    deadline_in_ms(CLOCK_MONOTONIC, s->timeout_ms, &deadline);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        rds_slot *idle = NULL;
        for (size_t i = 0; i < s->n_slots; i++) {
            rds_slot *slot = &s->slots[i];
            if (slot->busy)
                continue;
            if (slot->conn) {
                idle = slot;
                break;
            }
            if (!idle)
                idle = slot;
        }
        if (idle) {
            idle->busy = true;
            pthread_mutex_unlock(&s->mu);
            *out = idle;
            return 0;
        }
        if (pthread_cond_timedwait(&s->freed, &s->mu, &deadline) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&s->mu);
    app_error_set(err, APP_EUNAVAIL, "no free redis connection");
    if (err)
        app_error_detail(err, "all %zu pooled connections stayed busy for %d ms", s->n_slots,
                         s->timeout_ms);
    return APP_EUNAVAIL;
}

static void pool_release(rds_store *s, rds_slot *slot)
{
    pthread_mutex_lock(&s->mu);
    slot->busy = false;
    pthread_cond_signal(&s->freed);
    pthread_mutex_unlock(&s->mu);
}

/* ---- SIGPIPE ------------------------------------------------------------------------- */

/* hiredis writes with write(2), so a peer that closed the socket would raise SIGPIPE and
 * kill the process. Block it on this thread around each call and swallow what we caused,
 * as libpq does, instead of relying on the whole process ignoring SIGPIPE. */
typedef struct rds_sigpipe {
    sigset_t old;
    bool was_pending;
} rds_sigpipe;

static void sigpipe_block(rds_sigpipe *sp)
{
    sigset_t pipe_set, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &sp->old);
    sigpending(&pending);
    sp->was_pending = sigismember(&pending, SIGPIPE) == 1;
}

static void sigpipe_restore(rds_sigpipe *sp)
{
    if (!sp->was_pending) {
        sigset_t pipe_set;
        sigemptyset(&pipe_set);
        sigaddset(&pipe_set, SIGPIPE);
        const struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_set, NULL, &zero) == SIGPIPE)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &sp->old, NULL);
}

/* ---- connections and commands -------------------------------------------------------- */

static struct timeval ms_to_tv(int ms)
{
    struct timeval tv = {ms / 1000, (long)(ms % 1000) * 1000L};
    return tv;
}

/* Redis error replies that mean "cannot serve now" rather than "bad command". */
bool rds_reply_error_transient(const char *msg)
{
    static const char *const words[] = {"LOADING", "READONLY",   "MASTERDOWN", "BUSY",
                                        "OOM",     "TRYAGAIN",   "NOAUTH",     "CLUSTERDOWN",
                                        "MISCONF", "NOREPLICAS", NULL};
    for (size_t i = 0; words[i]; i++) {
        size_t n = strlen(words[i]);
        if (strncmp(msg, words[i], n) == 0 && (msg[n] == ' ' || msg[n] == '\0'))
            return true;
    }
    return false;
}

/* Runs one setup command (AUTH, SELECT) on a fresh connection. */
static int setup_command(rds_store *s, redisContext *c, const char *what, int argc,
                         const char **argv, const size_t *lens, app_error *err)
{
    redisReply *reply = redisCommandArgv(c, argc, argv, lens);
    if (!reply) {
        app_error_set(err, APP_EUNAVAIL, "could not %s on redis at %s:%d", what, s->url.host,
                      s->url.port);
        if (err)
            app_error_detail(err, "%s", c->errstr);
        return APP_EUNAVAIL;
    }
    int rc = 0;
    if (reply->type == REDIS_REPLY_ERROR) {
        rc = app_error_set(err, APP_EUNAVAIL, "could not %s on redis at %s:%d", what, s->url.host,
                           s->url.port);
        if (err)
            app_error_detail(err, "%s", reply->str ? reply->str : "error reply");
    }
    freeReplyObject(reply);
    return rc;
}

static int slot_connect(rds_store *s, rds_slot *slot, app_error *err)
{
    redisContext *c = redisConnectWithTimeout(s->url.host, s->url.port, ms_to_tv(s->timeout_ms));
    if (!c)
        return app_error_set(err, APP_ENOMEM, "out of memory connecting to redis");
    if (c->err) {
        app_error_set(err, APP_EUNAVAIL, "could not connect to redis at %s:%d", s->url.host,
                      s->url.port);
        if (err)
            app_error_detail(err, "%s", c->errstr);
        redisFree(c);
        return APP_EUNAVAIL;
    }
    int rc = 0;
    if (redisSetTimeout(c, ms_to_tv(s->timeout_ms)) != REDIS_OK) {
        rc = app_error_set(err, APP_EUNAVAIL, "could not set the redis timeout");
        goto fail;
    }
    if (s->url.password[0]) {
        const char *argv[3] = {"AUTH", s->url.user, s->url.password};
        size_t lens[3] = {4, strlen(s->url.user), strlen(s->url.password)};
        if (s->url.user[0])
            rc = setup_command(s, c, "authenticate", 3, argv, lens, err);
        else {
            argv[1] = s->url.password;
            lens[1] = lens[2];
            rc = setup_command(s, c, "authenticate", 2, argv, lens, err);
        }
        if (rc < 0)
            goto fail;
    }
    if (s->url.db != 0) {
        char db[16];
        int n = snprintf(db, sizeof db, "%d", s->url.db);
        const char *argv[2] = {"SELECT", db};
        size_t lens[2] = {6, (size_t)n};
        rc = setup_command(s, c, "select the database", 2, argv, lens, err);
        if (rc < 0)
            goto fail;
    }
    slot->conn = c;
    return 0;
fail:
    redisFree(c);
    return rc;
}

/* A reused connection that the peer closed (restart, idle timeout) is worth one retry;
 * a timeout is not, or a hung Redis would cost twice the timeout. */
static bool io_error_retryable(int hiredis_err, int saved_errno)
{
    if (hiredis_err == REDIS_ERR_EOF)
        return true;
    return hiredis_err == REDIS_ERR_IO &&
           (saved_errno == ECONNRESET || saved_errno == EPIPE || saved_errno == ENOTCONN);
}

/* One command of a pipeline. */
typedef struct rds_cmd {
    int argc;
    const char **argv;
    const size_t *lens;
} rds_cmd;

/* Sends every command on one connection, then reads every reply (one round trip). On I/O
 * failure the connection is dropped and NULL is returned with hiredis' error. */
static redisReply **pipeline_run(redisContext *c, const rds_cmd *cmds, size_t n)
{
    redisReply **replies = calloc(n, sizeof *replies);
    if (!replies)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (redisAppendCommandArgv(c, cmds[i].argc, cmds[i].argv, cmds[i].lens) != REDIS_OK)
            goto fail;
    for (size_t i = 0; i < n; i++) {
        void *reply = NULL;
        if (redisGetReply(c, &reply) != REDIS_OK || !reply)
            goto fail;
        replies[i] = reply;
    }
    return replies;
fail:
    for (size_t i = 0; i < n; i++)
        if (replies[i])
            freeReplyObject(replies[i]);
    free(replies);
    return NULL;
}

static void replies_free(redisReply **replies, size_t n)
{
    for (size_t i = 0; replies && i < n; i++)
        freeReplyObject(replies[i]);
    free(replies);
}

/* Runs cmds on a pooled connection in one round trip. On success (*out)[i] is the reply to
 * cmds[i], none of them an error reply (free with replies_free). */
static int exec_cmds(rds_store *s, const rds_cmd *cmds, size_t n, redisReply ***out, app_error *err)
{
    *out = NULL;
    const char *name = cmds[0].argv[0];
    pthread_mutex_lock(&s->breaker_mu);
    bool allowed = breaker_allow(&s->breaker);
    long long wait_ms = allowed ? 0 : (long long)breaker_wait_ms(&s->breaker);
    pthread_mutex_unlock(&s->breaker_mu);
    if (!allowed) {
        app_error_set(err, APP_EUNAVAIL, "redis is unavailable");
        if (err)
            app_error_detail(err,
                             "circuit breaker open after %d failed calls in a row; next "
                             "attempt in %lld ms",
                             RDS_BREAKER_FAILURES, wait_ms);
        return APP_EUNAVAIL;
    }
    rds_sigpipe sp;
    sigpipe_block(&sp);
    int rc = 0;
    bool reached = false; /* a busy pool says nothing about Redis itself */
    for (int attempt = 0;; attempt++) {
        rds_slot *slot;
        rc = pool_acquire(s, &slot, err);
        if (rc < 0)
            break;
        reached = true;
        bool fresh = false;
        if (!slot->conn) {
            rc = slot_connect(s, slot, err);
            if (rc < 0) {
                pool_release(s, slot);
                break;
            }
            fresh = true;
        }
        errno = 0;
        redisReply **replies = pipeline_run(slot->conn, cmds, n);
        int saved_errno = errno;
        if (!replies) {
            int herr = slot->conn->err;
            char why[sizeof slot->conn->errstr];
            snprintf(why, sizeof why, "%s", herr ? slot->conn->errstr : "out of memory");
            redisFree(slot->conn);
            slot->conn = NULL;
            pool_release(s, slot);
            if (!herr) {
                rc = app_error_set(err, APP_ENOMEM, "out of memory");
                break;
            }
            /* Every write the port offers is idempotent, so sending them again is safe. */
            if (!fresh && attempt == 0 && io_error_retryable(herr, saved_errno))
                continue;
            bool timed_out =
                herr == REDIS_ERR_IO && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK);
            rc = app_error_set(err, APP_EUNAVAIL, "redis %s failed", name);
            if (err) {
                if (timed_out)
                    app_error_detail(err, "no answer within %d ms (%s)", s->timeout_ms, why);
                else
                    app_error_detail(err, "%s", why);
            }
            break;
        }
        pool_release(s, slot);
        for (size_t i = 0; i < n; i++) {
            if (replies[i]->type != REDIS_REPLY_ERROR)
                continue;
            const char *msg = replies[i]->str ? replies[i]->str : "error reply";
            int code = rds_reply_error_transient(msg) ? APP_EUNAVAIL : APP_EINTERNAL;
            rc = app_error_set(err, code, "redis %s failed", cmds[i].argv[0]);
            if (err)
                app_error_detail(err, "%s", msg);
            break;
        }
        if (rc < 0) {
            replies_free(replies, n);
            break;
        }
        *out = replies;
        break;
    }
    sigpipe_restore(&sp);
    pthread_mutex_lock(&s->breaker_mu);
    if (rc == APP_EUNAVAIL && reached)
        breaker_failure(&s->breaker);
    else if (rc == APP_EUNAVAIL)
        breaker_release(&s->breaker);
    else
        breaker_success(&s->breaker); /* an answer, even an error reply: Redis is there */
    pthread_mutex_unlock(&s->breaker_mu);
    return rc;
}

/* Runs one command. On success *out is a non-error reply (freeReplyObject). */
static int exec_argv(rds_store *s, int argc, const char **argv, const size_t *lens,
                     redisReply **out, app_error *err)
{
    *out = NULL;
    rds_cmd cmd = {argc, argv, lens};
    redisReply **replies;
    int rc = exec_cmds(s, &cmd, 1, &replies, err);
    if (rc < 0)
        return rc;
    *out = replies[0];
    free(replies);
    return 0;
}

static int unexpected_reply(redisReply *reply, const char *cmd, app_error *err)
{
    int type = reply ? reply->type : -1;
    freeReplyObject(reply);
    return app_error_set(err, APP_EINTERNAL, "unexpected redis reply type %d to %s", type, cmd);
}

/* The prefixed key, owned by the caller (free). */
static char *full_key(rds_store *s, const char *key, size_t *len, app_error *err)
{
    if (!key) {
        app_error_set(err, APP_EINTERNAL, "read store key is NULL");
        return NULL;
    }
    size_t klen = strlen(key);
    char *k = malloc(s->prefix_len + klen + 1);
    if (!k) {
        app_error_set(err, APP_ENOMEM, "out of memory");
        return NULL;
    }
    memcpy(k, s->prefix, s->prefix_len);
    memcpy(k + s->prefix_len, key, klen + 1);
    *len = s->prefix_len + klen;
    return k;
}

/* ---- port operations ----------------------------------------------------------------- */

static int op_get(void *self, const char *key, char **out, app_error *err)
{
    rds_store *s = self;
    *out = NULL;
    size_t klen;
    char *k = full_key(s, key, &klen, err);
    if (!k)
        return err ? err->code : APP_ENOMEM;
    const char *argv[2] = {"GET", k};
    size_t lens[2] = {3, klen};
    redisReply *reply;
    int rc = exec_argv(s, 2, argv, lens, &reply, err);
    free(k);
    if (rc < 0)
        return rc;
    if (reply->type == REDIS_REPLY_NIL) {
        freeReplyObject(reply);
        return 0;
    }
    if (reply->type != REDIS_REPLY_STRING)
        return unexpected_reply(reply, "GET", err);
    char *copy = malloc(reply->len + 1);
    if (!copy) {
        freeReplyObject(reply);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    memcpy(copy, reply->str, reply->len);
    copy[reply->len] = '\0';
    freeReplyObject(reply);
    *out = copy;
    return 0;
}

static int op_set(void *self, const char *key, const char *value, app_error *err)
{
    rds_store *s = self;
    if (!value)
        return app_error_set(err, APP_EINTERNAL, "read store value is NULL");
    size_t klen;
    char *k = full_key(s, key, &klen, err);
    if (!k)
        return err ? err->code : APP_ENOMEM;
    const char *argv[3] = {"SET", k, value};
    size_t lens[3] = {3, klen, strlen(value)};
    redisReply *reply;
    int rc = exec_argv(s, 3, argv, lens, &reply, err);
    free(k);
    if (rc < 0)
        return rc;
    if (reply->type != REDIS_REPLY_STATUS)
        return unexpected_reply(reply, "SET", err);
    freeReplyObject(reply);
    return 0;
}

static int op_del(void *self, const char *key, app_error *err)
{
    rds_store *s = self;
    size_t klen;
    char *k = full_key(s, key, &klen, err);
    if (!k)
        return err ? err->code : APP_ENOMEM;
    const char *argv[2] = {"DEL", k};
    size_t lens[2] = {3, klen};
    redisReply *reply;
    int rc = exec_argv(s, 2, argv, lens, &reply, err);
    free(k);
    if (rc < 0)
        return rc;
    if (reply->type != REDIS_REPLY_INTEGER)
        return unexpected_reply(reply, "DEL", err);
    freeReplyObject(reply);
    return 0;
}

static int op_zadd(void *self, const char *key, double score, const char *member, app_error *err)
{
    rds_store *s = self;
    if (isnan(score))
        return app_error_set(err, APP_EINVAL, "sorted set score is not a number");
    if (!member)
        return app_error_set(err, APP_EINTERNAL, "sorted set member is NULL");
    size_t klen;
    char *k = full_key(s, key, &klen, err);
    if (!k)
        return err ? err->code : APP_ENOMEM;
    char num[40];
    int n = snprintf(num, sizeof num, "%.17g", score);
    const char *argv[4] = {"ZADD", k, num, member};
    size_t lens[4] = {4, klen, (size_t)n, strlen(member)};
    redisReply *reply;
    int rc = exec_argv(s, 4, argv, lens, &reply, err);
    free(k);
    if (rc < 0)
        return rc;
    if (reply->type != REDIS_REPLY_INTEGER)
        return unexpected_reply(reply, "ZADD", err);
    freeReplyObject(reply);
    return 0;
}

static int op_zrevrange(void *self, const char *key, size_t start, size_t stop, char ***out,
                        size_t *n, app_error *err)
{
    rds_store *s = self;
    *out = NULL;
    *n = 0;
    size_t klen;
    char *k = full_key(s, key, &klen, err);
    if (!k)
        return err ? err->code : APP_ENOMEM;
    char from[24], to[24];
    int from_len = start > (size_t)INT64_MAX
                       ? snprintf(from, sizeof from, "%lld", (long long)INT64_MAX)
                       : snprintf(from, sizeof from, "%zu", start);
    int to_len = stop > (size_t)INT64_MAX ? snprintf(to, sizeof to, "-1")
                                          : snprintf(to, sizeof to, "%zu", stop);
    const char *argv[4] = {"ZREVRANGE", k, from, to};
    size_t lens[4] = {9, klen, (size_t)from_len, (size_t)to_len};
    redisReply *reply;
    int rc = exec_argv(s, 4, argv, lens, &reply, err);
    free(k);
    if (rc < 0)
        return rc;
    if (reply->type != REDIS_REPLY_ARRAY)
        return unexpected_reply(reply, "ZREVRANGE", err);
    if (reply->elements == 0) {
        freeReplyObject(reply);
        return 0;
    }
    char **items = calloc(reply->elements, sizeof *items);
    if (!items) {
        freeReplyObject(reply);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    size_t count = 0;
    for (; count < reply->elements; count++) {
        const redisReply *el = reply->element[count];
        if (el->type != REDIS_REPLY_STRING) {
            rs_strings_free(items, count);
            return unexpected_reply(reply, "ZREVRANGE element", err);
        }
        items[count] = malloc(el->len + 1);
        if (!items[count]) {
            rs_strings_free(items, count);
            freeReplyObject(reply);
            return app_error_set(err, APP_ENOMEM, "out of memory");
        }
        memcpy(items[count], el->str, el->len);
        items[count][el->len] = '\0';
    }
    freeReplyObject(reply);
    *out = items;
    *n = count;
    return 0;
}

static int op_ping(void *self, app_error *err)
{
    rds_store *s = self;
    const char *argv[1] = {"PING"};
    size_t lens[1] = {4};
    redisReply *reply;
    int rc = exec_argv(s, 1, argv, lens, &reply, err);
    if (rc < 0)
        return rc;
    if (reply->type != REDIS_REPLY_STATUS)
        return unexpected_reply(reply, "PING", err);
    freeReplyObject(reply);
    return 0;
}

#define RDS_BATCH_MAX 512 /* commands per round trip */

/* The argument vectors of up to RDS_BATCH_MAX writes. */
typedef struct rds_chunk {
    char *keys[RDS_BATCH_MAX];
    const char *argv[RDS_BATCH_MAX][4];
    size_t lens[RDS_BATCH_MAX][4];
    char nums[RDS_BATCH_MAX][40];
    rds_cmd cmds[RDS_BATCH_MAX];
} rds_chunk;

/* Up to RDS_BATCH_MAX writes in one round trip. */
static int write_chunk(rds_store *s, const rs_write *w, size_t n, app_error *err)
{
    rds_chunk *c = calloc(1, sizeof *c);
    if (!c)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t klen = 0;
        if ((w[i].kind == RS_WRITE_SET || w[i].kind == RS_WRITE_ZADD) && !w[i].value)
            rc = app_error_set(err, APP_EINTERNAL, "read store value is NULL");
        else if (w[i].kind == RS_WRITE_ZADD && isnan(w[i].score))
            rc = app_error_set(err, APP_EINVAL, "sorted set score is not a number");
        else if (!(c->keys[i] = full_key(s, w[i].key, &klen, err)))
            rc = err ? err->code : APP_ENOMEM;
        if (rc)
            break;
        const char **argv = c->argv[i];
        size_t *lens = c->lens[i];
        c->cmds[i] = (rds_cmd){0, argv, lens};
        argv[1] = c->keys[i];
        lens[1] = klen;
        switch (w[i].kind) {
        case RS_WRITE_SET:
            c->cmds[i].argc = 3;
            argv[0] = "SET";
            argv[2] = w[i].value;
            lens[2] = strlen(w[i].value);
            break;
        case RS_WRITE_DEL:
            c->cmds[i].argc = 2;
            argv[0] = "DEL";
            break;
        case RS_WRITE_ZADD:
            c->cmds[i].argc = 4;
            argv[0] = "ZADD";
            argv[2] = c->nums[i];
            lens[2] = (size_t)snprintf(c->nums[i], sizeof c->nums[i], "%.17g", w[i].score);
            argv[3] = w[i].value;
            lens[3] = strlen(w[i].value);
            break;
        default:
            rc = app_error_set(err, APP_EINTERNAL, "unknown read store write %d", (int)w[i].kind);
            argv[0] = "";
        }
        lens[0] = strlen(argv[0]);
    }
    redisReply **replies = NULL;
    if (rc == 0)
        rc = exec_cmds(s, c->cmds, n, &replies, err);
    replies_free(replies, rc == 0 ? n : 0);
    for (size_t i = 0; i < n; i++)
        free(c->keys[i]);
    free(c);
    return rc;
}

static int op_write_batch(void *self, const rs_write *writes, size_t n, app_error *err)
{
    for (size_t done = 0; done < n; done += RDS_BATCH_MAX) {
        size_t chunk = n - done < RDS_BATCH_MAX ? n - done : RDS_BATCH_MAX;
        int rc = write_chunk(self, writes + done, chunk, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Up to RDS_BATCH_MAX keys in one MGET; values[i] as get_many gives them. */
static int get_chunk(rds_store *s, const char *const *keys, size_t n, char **values, app_error *err)
{
    const char **argv = calloc(n + 1, sizeof *argv);
    size_t *lens = calloc(n + 1, sizeof *lens);
    char **full = calloc(n, sizeof *full);
    int rc = argv && lens && full ? 0 : app_error_set(err, APP_ENOMEM, "out of memory");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (!(full[i] = full_key(s, keys[i], &lens[i + 1], err)))
            rc = err ? err->code : APP_ENOMEM;
        argv[i + 1] = full[i];
    }
    redisReply *reply = NULL;
    if (rc == 0) {
        argv[0] = "MGET";
        lens[0] = 4;
        rc = exec_argv(s, (int)n + 1, argv, lens, &reply, err);
    }
    if (rc == 0 && (reply->type != REDIS_REPLY_ARRAY || reply->elements != n)) {
        rc = unexpected_reply(reply, "MGET", err);
        reply = NULL;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const redisReply *r = reply->element[i];
        if (r->type == REDIS_REPLY_NIL)
            continue;
        if (r->type != REDIS_REPLY_STRING) {
            rc = app_error_set(err, APP_EINTERNAL, "unexpected redis reply type %d in MGET",
                               r->type);
        } else if (!(values[i] = malloc(r->len + 1))) {
            rc = app_error_set(err, APP_ENOMEM, "out of memory");
        } else {
            memcpy(values[i], r->str, r->len);
            values[i][r->len] = '\0';
        }
    }
    if (reply)
        freeReplyObject(reply);
    for (size_t i = 0; full && i < n; i++)
        free(full[i]);
    free(full);
    free(lens);
    free(argv);
    return rc;
}

static int op_get_many(void *self, const char *const *keys, size_t n, char **values, app_error *err)
{
    for (size_t i = 0; i < n; i++)
        values[i] = NULL;
    int rc = 0;
    for (size_t done = 0; rc == 0 && done < n; done += RDS_BATCH_MAX) {
        size_t chunk = n - done < RDS_BATCH_MAX ? n - done : RDS_BATCH_MAX;
        rc = get_chunk(self, keys + done, chunk, values + done, err);
    }
    if (rc != 0) {
        for (size_t i = 0; i < n; i++) {
            free(values[i]);
            values[i] = NULL;
        }
    }
    return rc;
}

/* prefix with the glob characters of SCAN MATCH escaped, then "*". Owned by the caller. */
static char *match_pattern(const char *prefix, size_t len)
{
    char *p = malloc(2 * len + 2);
    if (!p)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (strchr("*?[]\\", prefix[i]))
            p[o++] = '\\';
        p[o++] = prefix[i];
    }
    p[o++] = '*';
    p[o] = '\0';
    return p;
}

static int op_del_prefix(void *self, const char *prefix, size_t *deleted, app_error *err)
{
    rds_store *s = self;
    *deleted = 0;
    size_t plen;
    char *full = full_key(s, prefix, &plen, err);
    char *pattern = full ? match_pattern(full, plen) : NULL;
    free(full);
    if (!pattern)
        return full ? app_error_set(err, APP_ENOMEM, "out of memory")
                    : (err ? err->code : APP_ENOMEM);
    char cursor[32] = "0";
    int rc = 0;
    do {
        const char *argv[6] = {"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"};
        size_t lens[6] = {4, strlen(cursor), 5, strlen(pattern), 5, 4};
        redisReply *reply;
        rc = exec_argv(s, 6, argv, lens, &reply, err);
        if (rc < 0)
            break;
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
            reply->element[0]->type != REDIS_REPLY_STRING ||
            reply->element[1]->type != REDIS_REPLY_ARRAY) {
            rc = unexpected_reply(reply, "SCAN", err);
            break;
        }
        snprintf(cursor, sizeof cursor, "%s", reply->element[0]->str);
        const redisReply *keys = reply->element[1];
        if (keys->elements > 0) {
            const char **uargv = calloc(keys->elements + 1, sizeof *uargv);
            size_t *ulens = calloc(keys->elements + 1, sizeof *ulens);
            if (!uargv || !ulens) {
                free(uargv);
                free(ulens);
                freeReplyObject(reply);
                rc = app_error_set(err, APP_ENOMEM, "out of memory");
                break;
            }
            uargv[0] = "UNLINK";
            ulens[0] = 6;
            for (size_t i = 0; i < keys->elements; i++) {
                uargv[i + 1] = keys->element[i]->str;
                ulens[i + 1] = keys->element[i]->len;
            }
            redisReply *gone;
            rc = exec_argv(s, (int)keys->elements + 1, uargv, ulens, &gone, err);
            free(uargv);
            free(ulens);
            if (rc == 0) {
                if (gone->type == REDIS_REPLY_INTEGER && gone->integer > 0)
                    *deleted += (size_t)gone->integer;
                freeReplyObject(gone);
            }
        }
        freeReplyObject(reply);
    } while (rc == 0 && strcmp(cursor, "0") != 0);
    free(pattern);
    return rc;
}

/* ---- reads on an event loop ---------------------------------------------------------- */

/* The loop connection of the calling thread (rds_store_attach_loop), and its store. */
static _Thread_local struct {
    rds_store *store;
    rds_loop *loop;
} rds_here;

int rds_store_attach_loop(rds_store *s, struct event_base *base, app_error *err)
{
    if (rds_here.loop)
        return app_error_set(err, APP_EINTERNAL, "this thread has a redis loop connection already");
    int rc = rds_loop_new(&rds_here.loop, base, &s->url, s->prefix, s->timeout_ms, err);
    if (rc == 0)
        rds_here.store = s;
    return rc;
}

void rds_store_detach_loop(rds_store *s)
{
    if (rds_here.store != s)
        return;
    rds_loop_free(rds_here.loop);
    rds_here.loop = NULL;
    rds_here.store = NULL;
}

static int op_get_async(void *self, const char *key, rs_get_done done, void *arg, app_error *err)
{
    if (rds_here.store != self || !rds_here.loop)
        return app_error_set(err, APP_EUNAVAIL, "no redis loop connection on this thread");
    return rds_loop_get(rds_here.loop, key, done, arg, err);
}

static const rs_store_ops rds_ops = {
    .get = op_get,
    .set = op_set,
    .del = op_del,
    .zadd = op_zadd,
    .zrevrange = op_zrevrange,
    .ping = op_ping,
    .write_batch = op_write_batch,
    .del_prefix = op_del_prefix,
    .get_async = op_get_async,
    .get_many = op_get_many,
};

/* ---- lifecycle ----------------------------------------------------------------------- */

int rds_store_new(rds_store **out, const rds_store_options *opts, app_error *err)
{
    *out = NULL;
    rds_store *s = calloc(1, sizeof *s);
    if (!s)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    int rc = rds_url_parse(opts->url, &s->url, err);
    if (rc < 0) {
        free(s);
        return rc;
    }
    s->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 1000;
    s->n_slots = opts->pool_size > 0 ? (size_t)opts->pool_size : 4;
    s->prefix = strdup(opts->key_prefix ? opts->key_prefix : "");
    s->slots = calloc(s->n_slots, sizeof *s->slots);
    if (!s->prefix || !s->slots) {
        free(s->prefix);
        free(s->slots);
        free(s);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    s->prefix_len = strlen(s->prefix);

    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&s->freed, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->breaker_mu, NULL);
    breaker_init(&s->breaker, opts->clock, RDS_BREAKER_FAILURES, RDS_BREAKER_OPEN_MS);
    *out = s;
    return 0;
}

rs_store rds_store_port(rds_store *s)
{
    rs_store port = {&rds_ops, s};
    return port;
}

void rds_store_free(rds_store *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_slots; i++)
        if (s->slots[i].conn)
            redisFree(s->slots[i].conn);
    pthread_cond_destroy(&s->freed);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->breaker_mu);
    free(s->slots);
    free(s->prefix);
    free(s);
}
