/* Blocking libpq connection pool: a fixed number of slots, each connected on first use and
 * reconnected after it is found broken. */
#include "adapters/postgres/pg_pool.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/deadline.h"
#include "core/log.h"
#include "core/text.h"

/* A statement prepared on a slot's connection, named "q<index>", kept with its text. */
typedef struct pg_prepared {
    uint32_t hash;
    char *sql;
} pg_prepared;

typedef struct pg_slot {
    PGconn *conn;
    bool in_use;
    pg_prepared prepared[PG_POOL_PREPARED_MAX]; /* touched only by the slot's user */
    int n_prepared;
} pg_slot;

struct pg_pool {
    char *dsn;
    int connect_timeout_s;
    int size;
    pg_slot *slots;
    pthread_mutex_t lock;
    pthread_cond_t freed;
};

/* Server notices ("already exists, skipping") are noise on stderr; keep them for debugging. */
static void notice_to_log(void *arg, const char *message)
{
    (void)arg;
    log_debug("postgresql: %.*s", (int)strcspn(message, "\n"), message);
}

int pg_connect(const char *dsn, int connect_timeout_s, PGconn **out, app_error *err)
{
    char timeout[16];
    snprintf(timeout, sizeof timeout, "%d", connect_timeout_s > 0 ? connect_timeout_s : 5);
    /* Later keywords override the expanded dsn: the configured timeout wins. */
    const char *const keys[] = {"dbname", "connect_timeout", "fallback_application_name", NULL};
    const char *const vals[] = {dsn, timeout, "app", NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (!conn)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    if (PQstatus(conn) != CONNECTION_OK) {
        app_error_set(err, APP_EUNAVAIL, "could not connect to postgresql");
        if (err) {
            char msg[sizeof err->detail];
            snprintf(msg, sizeof msg, "%s", PQerrorMessage(conn));
            msg[strcspn(msg, "\n")] = '\0';
            app_error_detail(err, "%s", msg);
        }
        PQfinish(conn);
        return APP_EUNAVAIL;
    }
    PQsetNoticeProcessor(conn, notice_to_log, NULL);
    *out = conn;
    return 0;
}

bool pg_conn_alive(PGconn *conn)
{
    if (!conn || PQstatus(conn) != CONNECTION_OK)
        return false;
    /* A terminated backend sends its FATAL message and closes: reading it marks the
     * connection bad now instead of failing the next query. */
    for (int i = 0; i < 4; i++) { /* the message, then the end of the stream */
        struct pollfd fd = {.fd = PQsocket(conn), .events = POLLIN};
        if (poll(&fd, 1, 0) <= 0)
            break;
        if (!PQconsumeInput(conn))
            return false;
    }
    return PQstatus(conn) == CONNECTION_OK;
}

static bool sqlstate_unavailable(const char *state)
{
    if (!state || strlen(state) != 5)
        return false;
    /* 08 connection, 40 serialization/deadlock, 53 resources, 57 shutdown, 58 system. */
    static const char *const classes[] = {"08", "40", "53", "57", "58"};
    for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++)
        if (strncmp(state, classes[i], 2) == 0)
            return true;
    return false;
}

int pg_result_error(PGconn *conn, const PGresult *res, const char *what, app_error *err)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorMessage(res) : "";
    if (!msg || !*msg)
        msg = conn ? PQerrorMessage(conn) : "";
    bool unavailable =
        !res || !conn || PQstatus(conn) != CONNECTION_OK || sqlstate_unavailable(state);
    int code = unavailable ? APP_EUNAVAIL : APP_EINTERNAL;
    if (!err)
        return code;
    app_error_set(err, code, "%s failed", what);
    char detail[sizeof err->detail];
    snprintf(detail, sizeof detail, "%s", msg && *msg ? msg : "no answer from postgresql");
    detail[strcspn(detail, "\n")] = '\0';
    app_error_detail(err, "%s", detail);
    return code;
}

/* res (may be NULL) when it has status want: into *out (NULL to discard); else the error. */
static int take_result(PGconn *conn, PGresult *res, ExecStatusType want, PGresult **out,
                       app_error *err)
{
    if (!res || PQresultStatus(res) != want) {
        int rc = pg_result_error(conn, res, "query", err);
        PQclear(res);
        return rc;
    }
    if (out)
        *out = res;
    else
        PQclear(res);
    return 0;
}

int pg_exec(PGconn *conn, const char *sql, int n_params, const char *const *params,
            ExecStatusType want, PGresult **out, app_error *err)
{
    PGresult *res = PQexecParams(conn, sql, n_params, NULL, params, NULL, NULL, 0);
    return take_result(conn, res, want, out, err);
}

int pg_schema_name_valid(const char *name)
{
    if (!name || !*name || strlen(name) > 48)
        return 0;
    if (!(name[0] == '_' || (name[0] >= 'a' && name[0] <= 'z')))
        return 0;
    for (const char *p = name; *p; p++)
        if (!(*p == '_' || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')))
            return 0;
    return 1;
}

int32_t pg_lock_key(const char *name)
{
    return (int32_t)text_fnv1a(name);
}

int pg_pool_new(pg_pool **out, const char *dsn, int size, int connect_timeout_s, app_error *err)
{
    if (!dsn || size <= 0)
        return app_error_set(err, APP_EINVAL, "invalid postgresql pool options");
    pg_pool *pool = calloc(1, sizeof *pool);
    if (!pool)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    pool->dsn = strdup(dsn);
    pool->slots = calloc((size_t)size, sizeof *pool->slots);
    if (!pool->dsn || !pool->slots) {
        free(pool->dsn);
        free(pool->slots);
        free(pool);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    pool->size = size;
    pool->connect_timeout_s = connect_timeout_s;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&pool->freed, &attr);
    pthread_condattr_destroy(&attr);
    *out = pool;
    return 0;
}

/* The slot's connection is gone or new: so are the statements prepared on it. */
static void slot_forget_prepared(pg_slot *s)
{
    for (int i = 0; i < s->n_prepared; i++)
        free(s->prepared[i].sql);
    s->n_prepared = 0;
}

void pg_pool_free(pg_pool *pool)
{
    if (!pool)
        return;
    for (int i = 0; i < pool->size; i++) {
        if (pool->slots[i].conn)
            PQfinish(pool->slots[i].conn);
        slot_forget_prepared(&pool->slots[i]);
    }
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->freed);
    free(pool->slots);
    free(pool->dsn);
    free(pool);
}

int pg_pool_acquire(pg_pool *pool, int timeout_ms, PGconn **out, app_error *err)
{
    struct timespec deadline;
    deadline_in_ms(CLOCK_MONOTONIC, timeout_ms, &deadline);

    pthread_mutex_lock(&pool->lock);
    pg_slot *slot = NULL;
    for (;;) {
        /* Prefer a slot that is already connected. */
        for (int i = 0; i < pool->size; i++) {
            pg_slot *s = &pool->slots[i];
            if (!s->in_use && (!slot || (!slot->conn && s->conn)))
                slot = s;
        }
        if (slot)
            break;
        if (pthread_cond_timedwait(&pool->freed, &pool->lock, &deadline) == ETIMEDOUT) {
            pthread_mutex_unlock(&pool->lock);
            return app_error_set(err, APP_EUNAVAIL, "no free postgresql connection");
        }
    }
    slot->in_use = true;
    PGconn *conn = slot->conn;
    pthread_mutex_unlock(&pool->lock);

    if (conn && !pg_conn_alive(conn)) {
        PQfinish(conn);
        conn = NULL;
    }
    if (!conn) {
        slot_forget_prepared(slot); /* in use: only this thread touches it */
        int rc = pg_connect(pool->dsn, pool->connect_timeout_s, &conn, err);
        if (rc < 0) {
            pthread_mutex_lock(&pool->lock);
            slot->conn = NULL;
            slot->in_use = false;
            pthread_cond_signal(&pool->freed);
            pthread_mutex_unlock(&pool->lock);
            return rc;
        }
    }
    pthread_mutex_lock(&pool->lock);
    slot->conn = conn;
    pthread_mutex_unlock(&pool->lock);
    *out = conn;
    return 0;
}

void pg_pool_release(pg_pool *pool, PGconn *conn)
{
    if (!conn)
        return;
    bool keep = PQstatus(conn) == CONNECTION_OK;
    if (keep) {
        PGTransactionStatusType ts = PQtransactionStatus(conn);
        if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) {
            PGresult *res = PQexec(conn, "ROLLBACK");
            keep = res && PQresultStatus(res) == PGRES_COMMAND_OK;
            PQclear(res);
        } else if (ts != PQTRANS_IDLE) {
            keep = false; /* a query still running: start over with a fresh connection */
        }
    }
    pthread_mutex_lock(&pool->lock);
    for (int i = 0; i < pool->size; i++) {
        pg_slot *s = &pool->slots[i];
        if (s->in_use && s->conn == conn) {
            if (!keep) {
                PQfinish(conn);
                s->conn = NULL;
                slot_forget_prepared(s);
            }
            s->in_use = false;
            break;
        }
    }
    pthread_cond_signal(&pool->freed);
    pthread_mutex_unlock(&pool->lock);
}

/* The slot conn was acquired from, in use by the caller; NULL when it is not this pool's. */
static pg_slot *slot_of(pg_pool *pool, PGconn *conn)
{
    pg_slot *slot = NULL;
    pthread_mutex_lock(&pool->lock);
    for (int i = 0; i < pool->size && !slot; i++)
        if (pool->slots[i].in_use && pool->slots[i].conn == conn)
            slot = &pool->slots[i];
    pthread_mutex_unlock(&pool->lock);
    return slot;
}

/* The index of sql among the slot's prepared statements, preparing it when there is room;
 * -1 to run it unprepared (no room, or the server would not prepare it: running it then
 * reports why). */
static int slot_prepare(pg_slot *slot, PGconn *conn, const char *sql, int n_params)
{
    uint32_t hash = text_fnv1a(sql);
    for (int i = 0; i < slot->n_prepared; i++)
        if (slot->prepared[i].hash == hash && strcmp(slot->prepared[i].sql, sql) == 0)
            return i;
    if (slot->n_prepared >= PG_POOL_PREPARED_MAX)
        return -1;
    char *copy = strdup(sql);
    if (!copy)
        return -1;
    char name[16];
    snprintf(name, sizeof name, "q%d", slot->n_prepared);
    PGresult *res = PQprepare(conn, name, sql, n_params, NULL);
    bool ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
    PQclear(res);
    if (!ok) {
        free(copy);
        return -1;
    }
    slot->prepared[slot->n_prepared] = (pg_prepared){hash, copy};
    return slot->n_prepared++;
}

int pg_pool_exec(pg_pool *pool, PGconn *conn, const char *sql, int n_params,
                 const char *const *params, ExecStatusType want, PGresult **out, app_error *err)
{
    pg_slot *slot = slot_of(pool, conn);
    int index = slot ? slot_prepare(slot, conn, sql, n_params) : -1;
    if (index < 0)
        return pg_exec(conn, sql, n_params, params, want, out, err);
    char name[16];
    snprintf(name, sizeof name, "q%d", index);
    PGresult *res = PQexecPrepared(conn, name, n_params, params, NULL, NULL, 0);
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (state && strcmp(state, "26000") == 0) {
        /* The session lost its statements (a pooler in between, DISCARD ALL): start over,
         * with every name free again. */
        PQclear(res);
        PQclear(PQexec(conn, "DEALLOCATE ALL"));
        slot_forget_prepared(slot);
        return pg_exec(conn, sql, n_params, params, want, out, err);
    }
    return take_result(conn, res, want, out, err);
}
