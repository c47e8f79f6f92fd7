/* One loop's Redis connection: hiredis's asynchronous context attached to the loop's
 * event_base. Replies come in the order of the commands, so the pending GETs form a queue
 * and one timer, set for the oldest, bounds every wait. */
#include "adapters/redis/rds_loop.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "core/deadline.h"
#include "core/log.h"

#define RDS_LOOP_RETRY_MS 1000 /* after a failed connection, no other attempt for this long */

typedef struct rds_pending rds_pending;

struct rds_pending {
    rds_loop *loop;
    rs_get_done done;
    void *arg;
    int64_t deadline_ms;
    rds_pending *prev, *next;
};

struct rds_loop {
    struct event_base *base;
    rds_url url;
    char *prefix;
    int timeout_ms;
    redisAsyncContext *ac; /* NULL: not connected (nor connecting) */
    int64_t failed_ms;     /* when a connection last failed; 0: none did */
    const char *why;       /* why the pending GETs end, while the connection is torn down */
    rds_pending *head, *tail;
    struct event *timer; /* at the oldest pending GET's deadline */
    struct event *flush; /* writes the GETs of this turn of the loop, before it polls */
    bool flushing;       /* flush is active */
};

/* ---- the queue of pending GETs -------------------------------------------------------- */

static void pending_unlink(rds_loop *l, rds_pending *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        l->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        l->tail = p->prev;
    p->prev = p->next = NULL;
}

static void pending_push(rds_loop *l, rds_pending *p)
{
    p->prev = l->tail;
    p->next = NULL;
    if (l->tail)
        l->tail->next = p;
    else
        l->head = p;
    l->tail = p;
}

static void timer_arm(rds_loop *l, int64_t in_ms)
{
    if (in_ms < 1)
        in_ms = 1;
    struct timeval tv = {(time_t)(in_ms / 1000), (suseconds_t)((in_ms % 1000) * 1000)};
    evtimer_add(l->timer, &tv);
}

/* ---- the connection ------------------------------------------------------------------- */

/* hiredis frees the context after these two return: forget it. */
static void on_connect(const redisAsyncContext *ac, int status)
{
    rds_loop *l = ac->data;
    if (status == REDIS_OK)
        return;
    log_warn("redis: the loop's connection to %s:%d failed: %s", l->url.host, l->url.port,
             ac->errstr[0] ? ac->errstr : "unknown error");
    l->failed_ms = deadline_now_ms();
    l->why = "could not connect to redis";
    if (l->ac == ac)
        l->ac = NULL;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    rds_loop *l = ac->data;
    if (status != REDIS_OK) {
        log_warn("redis: the loop's connection to %s:%d was lost: %s", l->url.host, l->url.port,
                 ac->errstr[0] ? ac->errstr : "unknown error");
        l->failed_ms = deadline_now_ms();
    }
    if (l->ac == ac)
        l->ac = NULL;
}

/* Closes the connection now: every pending GET ends (with l->why) before this returns. */
static void drop_connection(rds_loop *l, const char *why)
{
    redisAsyncContext *ac = l->ac;
    if (!ac)
        return;
    l->ac = NULL;
    l->why = why;
    redisAsyncFree(ac);
    l->why = NULL;
}

/* AUTH and SELECT: a refusal closes the connection (the GETs behind them end unanswered). */
static void on_setup(redisAsyncContext *ac, void *reply, void *privdata)
{
    rds_loop *l = ac->data;
    const redisReply *r = reply;
    if (!r || r->type != REDIS_REPLY_ERROR || (ac->c.flags & REDIS_DISCONNECTING))
        return; /* fine, or the connection is closing for what was refused before */
    log_warn("redis: the loop's connection to %s:%d could not %s: %s", l->url.host, l->url.port,
             (const char *)privdata, r->str ? r->str : "error reply");
    l->failed_ms = deadline_now_ms();
    redisAsyncDisconnect(ac);
}

static int connect_now(rds_loop *l, app_error *err)
{
    redisAsyncContext *ac = redisAsyncConnect(l->url.host, l->url.port);
    if (!ac)
        return app_error_set(err, APP_ENOMEM, "out of memory connecting to redis");
    if (ac->err) {
        app_error_set(err, APP_EUNAVAIL, "could not connect to redis at %s:%d", l->url.host,
                      l->url.port);
        if (err)
            app_error_detail(err, "%s", ac->errstr);
        l->failed_ms = deadline_now_ms();
        redisAsyncFree(ac);
        return APP_EUNAVAIL;
    }
    ac->data = l;
    l->why = NULL;
    if (redisLibeventAttach(ac, l->base) != REDIS_OK) {
        redisAsyncFree(ac);
        return app_error_set(err, APP_ENOMEM, "could not attach redis to the event loop");
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    l->ac = ac;
    /* Queued now, sent once connected, answered before any GET. */
    static char auth[] = "authenticate", select_db[] = "select the database";
    if (l->url.password[0] && l->url.user[0])
        redisAsyncCommand(ac, on_setup, auth, "AUTH %s %s", l->url.user, l->url.password);
    else if (l->url.password[0])
        redisAsyncCommand(ac, on_setup, auth, "AUTH %s", l->url.password);
    if (l->url.db != 0)
        redisAsyncCommand(ac, on_setup, select_db, "SELECT %d", l->url.db);
    return 0;
}

/* ---- GET ------------------------------------------------------------------------------ */

static void on_get(redisAsyncContext *ac, void *reply, void *privdata)
{
    rds_pending *p = privdata;
    rds_loop *l = p->loop;
    pending_unlink(l, p);
    const redisReply *r = reply;
    app_error err = APP_ERROR_INIT;
    int rc = 0;
    const char *value = NULL;
    size_t len = 0;
    if (!r) {
        rc = app_error_set(&err, APP_EUNAVAIL, "redis GET failed");
        app_error_detail(&err, "%s",
                         l->why                ? l->why
                         : ac && ac->errstr[0] ? ac->errstr
                                               : "the connection closed");
    } else if (r->type == REDIS_REPLY_STRING) {
        value = r->str;
        len = r->len;
    } else if (r->type == REDIS_REPLY_ERROR) {
        const char *msg = r->str ? r->str : "error reply";
        rc = app_error_set(&err, rds_reply_error_transient(msg) ? APP_EUNAVAIL : APP_EINTERNAL,
                           "redis GET failed");
        app_error_detail(&err, "%s", msg);
    } else if (r->type != REDIS_REPLY_NIL) {
        rc = app_error_set(&err, APP_EINTERNAL, "redis GET answered type %d", r->type);
    }
    p->done(p->arg, rc, value, len, &err);
    free(p);
}

/* The oldest pending GET ran out of time: Redis is stuck or gone, so is the connection. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rds_loop *l = arg;
    if (!l->head)
        return;
    int64_t left = l->head->deadline_ms - deadline_now_ms();
    if (left > 0) {
        timer_arm(l, left);
        return;
    }
    char why[96];
    snprintf(why, sizeof why, "no answer within %d ms", l->timeout_ms);
    log_warn("redis: the loop's connection to %s:%d had %s: closing it", l->url.host, l->url.port,
             why);
    l->failed_ms = deadline_now_ms();
    drop_connection(l, why);
}

/* The GETs the loop's callbacks queued in this turn go out in one write, at the end of the
 * turn, instead of the next turn's after the poll said the socket has room (it has): one
 * write, and no epoll change to watch for room. */
static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    rds_loop *l = arg;
    l->flushing = false;
    if (l->ac && (l->ac->c.flags & REDIS_CONNECTED))
        redisAsyncHandleWrite(l->ac);
}

int rds_loop_get(rds_loop *l, const char *key, rs_get_done done, void *arg, app_error *err)
{
    if (!l->ac) {
        if (l->failed_ms && deadline_now_ms() - l->failed_ms < RDS_LOOP_RETRY_MS) {
            app_error_set(err, APP_EUNAVAIL, "redis is unavailable");
            if (err)
                app_error_detail(err, "the loop's connection failed less than %d ms ago",
                                 RDS_LOOP_RETRY_MS);
            return APP_EUNAVAIL;
        }
        int rc = connect_now(l, err);
        if (rc != 0)
            return rc;
    }
    rds_pending *p = calloc(1, sizeof *p);
    if (!p)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    *p = (rds_pending){.loop = l, .done = done, .arg = arg};
    if (redisAsyncCommand(l->ac, on_get, p, "GET %s%s", l->prefix, key) != REDIS_OK) {
        free(p);
        return app_error_set(err, APP_EUNAVAIL, "redis GET could not be sent");
    }
    p->deadline_ms = deadline_now_ms() + l->timeout_ms;
    pending_push(l, p);
    if (!l->flushing) {
        l->flushing = true;
        event_active(l->flush, 0, 0);
    }
    if (!evtimer_pending(l->timer, NULL))
        timer_arm(l, l->timeout_ms);
    return 0;
}

/* ---- lifecycle ------------------------------------------------------------------------ */

int rds_loop_new(rds_loop **out, struct event_base *base, const rds_url *url, const char *prefix,
                 int timeout_ms, app_error *err)
{
    *out = NULL;
    rds_loop *l = calloc(1, sizeof *l);
    if (!l)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    l->base = base;
    l->url = *url;
    l->timeout_ms = timeout_ms > 0 ? timeout_ms : 1000;
    l->prefix = strdup(prefix ? prefix : "");
    l->timer = evtimer_new(base, on_timer, l);
    l->flush = event_new(base, -1, 0, on_flush, l);
    if (!l->prefix || !l->timer || !l->flush) {
        rds_loop_free(l);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    *out = l;
    return 0;
}

void rds_loop_free(rds_loop *l)
{
    if (!l)
        return;
    drop_connection(l, "the event loop is stopping");
    if (l->timer)
        event_free(l->timer);
    if (l->flush)
        event_free(l->flush);
    free(l->prefix);
    free(l);
}
