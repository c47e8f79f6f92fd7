/* The event store on PostgreSQL: appends group-committed per context by one committer
 * thread in libpq pipeline mode, reads through a pool, LISTEN/NOTIFY for cross-process
 * wake-ups. */
#include "adapters/postgres/pg_event_store.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/metrics.h"
#include "core/trace.h"
#include "core/uuid.h"

#define APPEND_LOCK_NS       0x61707064 /* "appd": advisory lock namespace of appends */
#define LEAD_LOCK_NS         0x6c656164 /* "lead": advisory lock namespace of leases */
#define READ_ACQUIRE_MS      5000
#define PING_ACQUIRE_MS      1000
#define RECONNECT_HOLDOFF_MS 250 /* fail fast instead of reconnecting per batch while down */
/* How long the committer tries to learn what became of a batch whose connection broke before
 * the commit's answer (a restart takes a second or two); past it the outcome is unknown. */
#define RESOLVE_WAIT_MS       10000
#define LISTEN_BACKOFF_MIN_MS 100
#define LISTEN_BACKOFF_MAX_MS 5000

#define M_APPEND_SECONDS "eventstore_append_duration_seconds"
#define M_BATCH_SIZE     "eventstore_batch_size"

/* One append waiting for its committer. Lives on the appending thread's stack. */
typedef struct append_job {
    const es_append_req *req;
    char expected[24];
    char *events_json;
    char *claims_json;
    char *releases_json;
    char *process_json; /* NULL when the append carries no process state */
    char *idem_json;    /* NULL when the append records no idempotency key */
    int rc;
    app_error err;
    es_append_result result;
    size_t batch;  /* the appends of the transaction it rode in */
    bool answered; /* es_append's answer arrived (rc and result are the transaction's) */
    /* Posted by the committer once the job's outcome is in it; the waiting command thread
     * then owns the job again (and may free it at once), so the committer touches it no
     * more. A semaphore, not the context's lock: a batch's waiters wake without queueing
     * on that lock behind each other and the committer. */
    sem_t done;
    struct append_job *next;
} append_job;

/* Everything the store keeps per context. Created on first use, freed with the store. */
typedef struct pg_ctx {
    pg_event_store *store;
    char name[64];
    char schema[64];
    char channel[80];
    char lock_key[16];
    bool mirrored; /* schema is the inbox: the log is read here, never appended to */
    char metric_labels[96];
    char append_sql[192];
    char append_keyed_sql[224];
    char notify_sql[352];

    pthread_mutex_t lock;     /* guards what follows, up to the committer's own fields */
    pthread_cond_t work_cv;   /* the committer waits for appends */
    pthread_cond_t append_cv; /* wait_for_append waits for commits */
    append_job *head, *tail;
    uint64_t wake_seq;
    int64_t known_head; /* highest position known committed, from here or NOTIFY */
    bool committer_started;
    pthread_t committer;

    /* Owned by the committer thread. */
    PGconn *conn;
    struct timespec connect_failed_at;
    app_error connect_err;
    append_job **batch;

    bool listening; /* written by the listener thread, under the store's lock */
    struct pg_ctx *next;
} pg_ctx;

/* A leadership lease: a session-level advisory lock held on a connection of its own, so it
 * lasts exactly as long as that connection (and the process) does. */
typedef struct pg_lease {
    char context[64];
    char name[128];
    pthread_mutex_t lock; /* guards conn and held */
    PGconn *conn;
    bool held;
    struct pg_lease *next;
} pg_lease;

struct pg_event_store {
    pg_pool *pool;
    char *dsn;
    int connect_timeout_s;
    int max_batch;
    char **mirrored; /* contexts whose log is the inbox <context>_inbox, fed from Kafka */
    size_t n_mirrored;
    atomic_bool stopping;

    pthread_mutex_t lock; /* guards ctxs, stats, listener_pid and each ctx's listening */
    pg_ctx *ctxs;         /* pushed at the head, never removed before free */
    pg_lease *leases;     /* likewise */
    uint64_t batches;
    uint64_t commands;

    pthread_t listener;
    bool listener_started;
    int listener_pid; /* backend pid of the listener's session; 0 while it has none */
    int wake_pipe[2];
};

/* ---- small helpers ---------------------------------------------------------------- */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void deadline_after(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &attr);
    pthread_condattr_destroy(&attr);
}

static bool utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        size_t n;
        unsigned min;
        if (c < 0x80) {
            p++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1, min = 0x80, c &= 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2, min = 0x800, c &= 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3, min = 0x10000, c &= 0x07;
        } else {
            return false;
        }
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                return false;
            c = (c << 6) | (p[i] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
            return false;
        p += n + 1;
    }
    return true;
}

/* A growable string; oom sticks so callers check once at the end. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

/* s as a JSON string literal; s is valid UTF-8, so only quotes, backslashes and control
 * characters need escaping. */
static void sb_json_string(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            sb_put(b, esc, 2);
        } else if (c < 0x20) {
            char esc[8];
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

/* ---- contexts ------------------------------------------------------------------------ */

int pg_context_schema(const char *context, char *out, size_t size, app_error *err)
{
    size_t len = context ? strlen(context) : 0;
    bool ok = len > 0 && len <= 40;
    for (size_t i = 0; ok && i < len; i++)
        ok = context[i] == '_' || (context[i] >= 'a' && context[i] <= 'z');
    if (!ok || len + 5 > size) {
        app_error_set(err, APP_EINVAL, "invalid context name");
        if (err)
            app_error_field(err, "context", "must match [a-z_]+");
        return APP_EINVAL;
    }
    snprintf(out, size, "%s_ctx", context);
    return 0;
}

int pg_inbox_schema(const char *context, char *out, size_t size, app_error *err)
{
    char ctx_schema[64];
    int rc = pg_context_schema(context, ctx_schema, sizeof ctx_schema, err);
    if (rc < 0)
        return rc;
    if ((size_t)snprintf(out, size, "%s_inbox", context) >= size)
        return app_error_set(err, APP_EINVAL, "invalid context name");
    return 0;
}

void pg_log_channel(const char *schema, char *out, size_t size)
{
    snprintf(out, size, "%s_events", schema);
}

void pg_event_store_append_lock(const char *schema, int32_t *ns, int32_t *key)
{
    *ns = APPEND_LOCK_NS;
    *key = pg_lock_key(schema);
}

static bool store_mirrors(const pg_event_store *s, const char *context)
{
    for (size_t i = 0; i < s->n_mirrored; i++)
        if (strcmp(s->mirrored[i], context) == 0)
            return true;
    return false;
}

/* Where context's tables are in this database: its own schema, or the inbox of a context
 * mirrored from Kafka (same tables, so every read goes through the same SQL). */
static int store_schema(const pg_event_store *s, const char *context, char *out, size_t size,
                        app_error *err)
{
    if (context && store_mirrors(s, context))
        return pg_inbox_schema(context, out, size, err);
    return pg_context_schema(context, out, size, err);
}

static void wake_listener(pg_event_store *s)
{
    if (s->wake_pipe[1] >= 0) {
        ssize_t w = write(s->wake_pipe[1], "x", 1);
        (void)w; /* a full pipe already holds a wake-up */
    }
}

static int ctx_get(pg_event_store *s, const char *context, pg_ctx **out, app_error *err)
{
    char schema[64];
    int rc = store_schema(s, context, schema, sizeof schema, err);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&s->lock);
    for (pg_ctx *c = s->ctxs; c; c = c->next) {
        if (strcmp(c->name, context) == 0) {
            pthread_mutex_unlock(&s->lock);
            *out = c;
            return 0;
        }
    }
    pg_ctx *c = calloc(1, sizeof *c);
    if (c)
        c->batch = calloc((size_t)s->max_batch, sizeof *c->batch);
    if (!c || !c->batch) {
        pthread_mutex_unlock(&s->lock);
        if (c)
            free(c);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    c->store = s;
    snprintf(c->name, sizeof c->name, "%s", context);
    snprintf(c->schema, sizeof c->schema, "%s", schema);
    c->mirrored = store_mirrors(s, context);
    pg_log_channel(schema, c->channel, sizeof c->channel);
    snprintf(c->lock_key, sizeof c->lock_key, "%d", (int)pg_lock_key(schema));
    snprintf(c->metric_labels, sizeof c->metric_labels, "context=\"%s\"", context);
    snprintf(
        c->append_sql, sizeof c->append_sql,
        "SELECT %s.es_append($1, $2::bigint, $3::jsonb, $4::jsonb, $5::jsonb, $6::jsonb)::text",
        schema);
    snprintf(c->append_keyed_sql, sizeof c->append_keyed_sql,
             "SELECT %s.es_append_keyed($1::jsonb, $2, $3::bigint, $4::jsonb, $5::jsonb, $6::jsonb,"
             " $7::jsonb)::text",
             schema);
    /* max(global_position) is one backward index probe; currval would fail in a session
     * whose batches so far were all conflicts. */
    snprintf(c->notify_sql, sizeof c->notify_sql,
             "SELECT pg_notify('%s', (SELECT coalesce(max(global_position), 0) FROM %s.events)"
             "::text)",
             c->channel, schema);
    pthread_mutex_init(&c->lock, NULL);
    cond_init_monotonic(&c->work_cv);
    cond_init_monotonic(&c->append_cv);
    c->next = s->ctxs;
    s->ctxs = c;
    pthread_mutex_unlock(&s->lock);
    wake_listener(s); /* it LISTENs on the new channel */
    *out = c;
    return 0;
}

/* Wakes wait_for_append callers; pos is a position known committed (0 if none). */
static void ctx_announce(pg_ctx *c, int64_t pos)
{
    pthread_mutex_lock(&c->lock);
    if (pos > c->known_head)
        c->known_head = pos;
    c->wake_seq++;
    pthread_cond_broadcast(&c->append_cv);
    pthread_mutex_unlock(&c->lock);
}

/* ---- the committer -------------------------------------------------------------------- */

#define LOCK_SQL "SELECT pg_advisory_xact_lock($1::int4, $2::int4)"

/* The statements of every batch, prepared once per connection: a batch then costs the
 * server no parsing and, once it settles on generic plans, no planning. */
static int committer_prepare(const pg_ctx *c, PGconn *conn, app_error *err)
{
    static const char *const names[] = {"es_lock", "es_append", "es_append_keyed", "es_notify"};
    const char *const texts[] = {LOCK_SQL, c->append_sql, c->append_keyed_sql, c->notify_sql};
    const int n_params[] = {2, 6, 7, 0};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        PGresult *res = PQprepare(conn, names[i], texts[i], n_params[i], NULL);
        int rc = res && PQresultStatus(res) == PGRES_COMMAND_OK
                     ? 0
                     : pg_result_error(conn, res, "preparing the append statements", err);
        PQclear(res);
        if (rc < 0)
            return rc == APP_EUNAVAIL ? rc : APP_EUNAVAIL;
    }
    return 0;
}

static int committer_connect(pg_ctx *c, app_error *err)
{
    pg_event_store *s = c->store;
    if (c->conn && pg_conn_alive(c->conn))
        return 0;
    if (c->conn) {
        PQfinish(c->conn);
        c->conn = NULL;
    }
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (c->connect_failed_at.tv_sec != 0) {
        double since = (double)(now.tv_sec - c->connect_failed_at.tv_sec) +
                       (double)(now.tv_nsec - c->connect_failed_at.tv_nsec) / 1e9;
        if (since * 1000.0 < RECONNECT_HOLDOFF_MS) {
            *err = c->connect_err;
            return err->code;
        }
    }
    int rc = pg_connect(s->dsn, s->connect_timeout_s, &c->conn, err);
    if (rc == 0 && (rc = committer_prepare(c, c->conn, err)) < 0) {
        PQfinish(c->conn);
        c->conn = NULL;
    }
    if (rc < 0) {
        if (c->connect_failed_at.tv_sec == 0)
            log_warn("event store committer for %s cannot connect: %s", c->schema, err->detail);
        c->connect_failed_at = now;
        c->connect_err = *err;
        return rc;
    }
    if (c->connect_failed_at.tv_sec != 0)
        log_info("event store committer for %s reconnected", c->schema);
    c->connect_failed_at.tv_sec = 0;
    return 0;
}

static void job_fail(append_job *job, const app_error *err)
{
    job->rc = err->code;
    job->err = *err;
}

/* The job carries an event id the log has already: refused, as a conflict on event_id. */
static void job_duplicate_event(append_job *job, const char *event_id)
{
    app_error_clear(&job->err);
    job->answered = true;
    job->rc = app_error_set(&job->err, APP_ECONFLICT, "event already stored");
    app_error_detail(&job->err, "event %s is already in the log", event_id ? event_id : "?");
    app_error_field(&job->err, "event_id", "is taken");
}

/* When res is the unique index on event_id refusing a row, id gets the event id from its
 * detail ("Key (event_id)=(<uuid>) already exists.", "?" if unreadable); else "". es_append
 * leaves that check to the index (migration 006): a duplicate is a client's mistake, and rare. */
static void duplicate_event_of(const PGresult *res, char id[UUID_STR_LEN])
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *constraint = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
    const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    id[0] = '\0';
    if (!state || strcmp(state, "23505") != 0 || !constraint ||
        strcmp(constraint, "events_event_id_key") != 0)
        return;
    const char *at = detail ? strstr(detail, "=(") : NULL;
    bool readable = at && strcspn(at + 2, ")") == UUID_STR_LEN - 1;
    snprintf(id, UUID_STR_LEN, "%.*s", readable ? UUID_STR_LEN - 1 : 1, readable ? at + 2 : "?");
}

/* Reads the jsonb answer of es_append into the job (final only if the batch commits). */
static void job_outcome(append_job *job, const char *text)
{
    cJSON *doc = cJSON_Parse(text);
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(doc, "status");
    const char *status = cJSON_IsString(st) ? st->valuestring : "";
    app_error_clear(&job->err);
    job->answered = true;
    if (strcmp(status, "ok") == 0) {
        job->rc = 0;
        job->result.version =
            (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(doc, "version"));
        job->result.first_position =
            (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(doc, "first_position"));
        job->result.last_position =
            (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(doc, "last_position"));
    } else if (strcmp(status, "conflict") == 0) {
        int64_t cur =
            (int64_t)cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(doc, "version"));
        job->rc = app_error_set(&job->err, APP_EVERSION, "stream version conflict");
        app_error_detail(&job->err, "stream %s is at version %" PRId64, job->req->stream_id, cur);
    } else if (strcmp(status, "duplicate") == 0) {
        const char *scope = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(doc, "scope"));
        scope = scope ? scope : "key";
        job->rc = app_error_set(&job->err, APP_ECONFLICT, "%s is taken", scope);
        app_error_field(&job->err, scope, "is taken");
    } else if (strcmp(status, "idempotent") == 0) {
        const es_idempotency *k = job->req->idempotency;
        job->rc = app_error_set(&job->err, APP_EIDEMPOTENT, "idempotency key is recorded already");
        app_error_detail(&job->err, "key %s was used meanwhile", k ? k->key : "?");
    } else if (strcmp(status, "duplicate_event") == 0) {
        /* From es_append before migration 006, which checked event ids itself. */
        job_duplicate_event(
            job, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(doc, "event_id")));
    } else {
        job->rc = app_error_set(&job->err, APP_EINTERNAL, "unexpected answer from es_append");
    }
    cJSON_Delete(doc);
}

/* ---- a batch whose connection broke: what became of it ------------------------------------ */

static void sleep_ms(int ms)
{
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* Whether job may have written: an append whose answer said it wrote, or never came. */
static bool job_maybe_written(const append_job *job)
{
    return !job->answered || job->rc == 0;
}

/* Learns, on conn, which of jobs are in the log: once the backend that ran the batch (pid) is
 * gone (it is ended if it still runs, so that it cannot commit after we looked), each job
 * whose event ids are stored committed. Returns 0 with *written[i] set per job, or -1 when
 * the database did not answer. */
static int resolve_on(PGconn *conn, const char *schema, int pid, append_job **jobs, size_t n,
                      bool *written)
{
    char pidtext[16], sql[320];
    snprintf(pidtext, sizeof pidtext, "%d", pid);
    const char *pp[] = {pidtext};
    for (int tries = 0; pid > 0; tries++) {
        PGresult *res = PQexecParams(conn,
                                     tries == 0 ? "SELECT count(pg_terminate_backend(pid))"
                                                  " FROM pg_stat_activity WHERE pid = $1::int"
                                                : "SELECT count(*) FROM pg_stat_activity"
                                                  " WHERE pid = $1::int",
                                     1, NULL, pp, NULL, NULL, 0);
        bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
        bool gone = ok && tries > 0 && strcmp(PQgetvalue(res, 0, 0), "0") == 0;
        PQclear(res);
        if (!ok)
            return -1;
        if (gone)
            break;
        if (tries > 0)
            sleep_ms(20);
        if (tries > 250)
            return -1; /* it will not go: ask again later */
    }
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s.events WHERE event_id = ANY($1::uuid[])",
             schema);
    for (size_t i = 0; i < n; i++) {
        written[i] = false;
        const es_append_req *r = jobs[i]->req;
        if (!job_maybe_written(jobs[i]) || r->n_events == 0)
            continue;
        /* An append's events commit together: the first says for all of them. */
        char ids[64];
        snprintf(ids, sizeof ids, "{%s}", r->events[0].event_id);
        const char *p[] = {ids};
        PGresult *res = PQexecParams(conn, sql, 1, NULL, p, NULL, NULL, 0);
        bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
        written[i] = ok && strcmp(PQgetvalue(res, 0, 0), "0") != 0;
        PQclear(res);
        if (!ok)
            return -1;
    }
    return 0;
}

/* The connection broke before the batch's commit was answered: the transaction may have
 * committed or not. Each job gets its true outcome: its own answer when it wrote nothing or
 * the batch is found committed, "not stored" when its events are not in the log, and, when
 * the database does not come back within RESOLVE_WAIT_MS to say, APP_OUTCOME_UNKNOWN. */
static void resolve_batch(pg_ctx *c, int pid, append_job **jobs, size_t n, const app_error *cause)
{
    bool *written = calloc(n, sizeof *written);
    bool resolved = false;
    struct timespec started;
    clock_gettime(CLOCK_MONOTONIC, &started);
    for (;;) {
        app_error cerr = APP_ERROR_INIT;
        PGconn *conn = NULL;
        if (written && pg_connect(c->store->dsn, c->store->connect_timeout_s, &conn, &cerr) == 0) {
            resolved = resolve_on(conn, c->schema, pid, jobs, n, written) == 0;
            app_error perr = APP_ERROR_INIT;
            if (resolved && !c->conn && committer_prepare(c, conn, &perr) == 0)
                c->conn = conn; /* the committer goes on with it */
            else
                PQfinish(conn);
        }
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double waited = (double)(now.tv_sec - started.tv_sec) * 1000.0 +
                        (double)(now.tv_nsec - started.tv_nsec) / 1e6;
        if (resolved || !written || waited >= RESOLVE_WAIT_MS)
            break;
        sleep_ms(200);
    }
    size_t stored = 0, lost = 0, unknown = 0;
    for (size_t i = 0; i < n; i++) {
        append_job *job = jobs[i];
        if (job->answered && job->rc != 0)
            continue; /* it wrote nothing, whatever became of the others */
        if (resolved && written[i] && job->answered) {
            stored++; /* committed, as it answered */
            continue;
        }
        app_error err = APP_ERROR_INIT;
        if (resolved && written[i]) {
            /* Committed, its answer lost: its events are stored, but what the append returned
             * (the version, the positions) is not known here; a retry with the same
             * Idempotency-Key answers from the record. */
            app_error_set(&err, APP_EUNAVAIL, APP_OUTCOME_UNKNOWN);
            app_error_detail(&err, "the append committed, but its answer was lost: %s",
                             cause->detail);
            unknown++;
        } else if (resolved) {
            app_error_set(&err, APP_EUNAVAIL, "event store append failed");
            app_error_detail(&err, "not stored: %s", cause->detail);
            lost++;
        } else {
            app_error_set(&err, APP_EUNAVAIL, APP_OUTCOME_UNKNOWN);
            app_error_detail(&err,
                             "the connection broke before the commit was answered, and "
                             "the database has not come back to say: %s",
                             cause->detail);
            unknown++;
        }
        job_fail(job, &err);
    }
    free(written);
    log_warn("event store committer for %s lost its connection during a batch of %zu: %zu "
             "committed, %zu not stored, %zu unknown (%s)",
             c->schema, n, stored, lost, unknown, cause->detail);
}

/* Writes jobs in one transaction, pipelined: BEGIN, the context's advisory lock, one
 * es_append per job, NOTIFY, COMMIT, then one sync. Returns 0 when it committed (each job
 * then holds its own outcome), else fails every job and returns the error code;
 * *retry_alone is set when an es_append call itself raised, so that running the jobs one
 * by one confines the failure to the guilty one. */
static int run_batch(pg_ctx *c, append_job **jobs, size_t n, bool *retry_alone)
{
    app_error err = APP_ERROR_INIT;
    *retry_alone = false;
    for (size_t i = 0; i < n; i++) {
        jobs[i]->batch = n;
        jobs[i]->answered = false;
    }
    if (committer_connect(c, &err) < 0)
        goto fail;
    PGconn *conn = c->conn;
    int pid = PQbackendPID(conn);
    if (!PQenterPipelineMode(conn)) {
        pg_result_error(conn, NULL, "entering pipeline mode", &err);
        goto drop;
    }

    const char *lock_params[] = {"", c->lock_key};
    char ns[16];
    snprintf(ns, sizeof ns, "%d", APPEND_LOCK_NS);
    lock_params[0] = ns;
    bool sent = PQsendQueryParams(conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0) &&
                PQsendQueryPrepared(conn, "es_lock", 2, lock_params, NULL, NULL, 0);
    for (size_t i = 0; sent && i < n; i++) {
        const append_job *j = jobs[i];
        const char *params[] = {j->idem_json,   j->req->stream_id, j->expected,    j->events_json,
                                j->claims_json, j->releases_json,  j->process_json};
        sent = j->idem_json ? PQsendQueryPrepared(conn, "es_append_keyed", 7, params, NULL, NULL, 0)
                            : PQsendQueryPrepared(conn, "es_append", 6, params + 1, NULL, NULL, 0);
    }
    sent = sent && PQsendQueryPrepared(conn, "es_notify", 0, NULL, NULL, NULL, 0) &&
           PQsendQueryParams(conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0) && PQpipelineSync(conn);
    if (!sent) {
        /* Part of it may have reached the server (a COMMIT runs when it arrives): ask. */
        pg_result_error(conn, NULL, "sending the append batch", &err);
        goto broken;
    }

    /* Results arrive per query, each followed by NULL, then the sync. Blocking mode is safe
     * here: the answers are one short row each, far below the socket buffers, so the server
     * never blocks writing them while we are still sending. */
    size_t q = 0, n_queries = n + 4, guard = 0;
    bool synced = false, failed = false, committed = false, append_raised = false;
    char duplicate[UUID_STR_LEN] = "";
    while (!synced && guard++ < 4 * (n_queries + 2)) {
        PGresult *res = PQgetResult(conn);
        if (!res) {
            if (PQstatus(conn) != CONNECTION_OK)
                break;
            q++;
            continue;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_PIPELINE_SYNC) {
            synced = true;
        } else if (st == PGRES_FATAL_ERROR || st == PGRES_PIPELINE_ABORTED) {
            if (!failed) {
                pg_result_error(conn, res, "appending events", &err);
                append_raised = st == PGRES_FATAL_ERROR && q >= 2 && q < 2 + n;
                if (append_raised)
                    duplicate_event_of(res, duplicate);
            }
            failed = true;
        } else if (q >= 2 && q < 2 + n) {
            if (st == PGRES_TUPLES_OK && PQntuples(res) == 1)
                job_outcome(jobs[q - 2], PQgetvalue(res, 0, 0));
            else if (!failed)
                failed = true, app_error_set(&err, APP_EINTERNAL, "unexpected es_append result");
        } else if (q == n + 3) {
            committed = st == PGRES_COMMAND_OK && strcmp(PQcmdStatus(res), "COMMIT") == 0;
        }
        PQclear(res);
    }
    if (synced && !failed && committed) {
        if (!PQexitPipelineMode(conn)) {
            PQfinish(c->conn); /* the batch is committed; start the next one afresh */
            c->conn = NULL;
        }
        return 0;
    }
    if (!failed)
        pg_result_error(conn, NULL, "committing the append batch", &err);
    if (synced && PQstatus(conn) == CONNECTION_OK && PQexitPipelineMode(conn)) {
        /* The server answered every statement and refused the batch: nothing committed. */
        PGresult *res = PQexec(conn, "ROLLBACK");
        bool clean = res && PQresultStatus(res) == PGRES_COMMAND_OK;
        PQclear(res);
        if (clean && n == 1 && duplicate[0]) {
            job_duplicate_event(jobs[0], duplicate); /* refused alone: its own answer */
            return APP_ECONFLICT;
        }
        if (clean) {
            *retry_alone = append_raised && n > 1;
            goto fail;
        }
    }
broken:
    /* The connection broke (a restart, a crash, the network) before the commit's answer. */
    PQfinish(c->conn);
    c->conn = NULL;
    if (err.code == 0 || err.code == APP_EINTERNAL) {
        char detail[sizeof err.detail];
        snprintf(detail, sizeof detail, "%s", err.detail);
        app_error_set(&err, APP_EUNAVAIL, "event store append failed");
        app_error_detail(&err, "%s", detail);
    }
    resolve_batch(c, pid, jobs, n, &err);
    for (size_t i = 0; i < n; i++)
        if (jobs[i]->rc != 0)
            return APP_EUNAVAIL;
    return 0;
drop:
    PQfinish(c->conn);
    c->conn = NULL;
fail:
    if (err.code == 0 || err.code == APP_EINTERNAL) {
        /* The caller only needs to know its events are not stored; the detail says why. */
        char detail[sizeof err.detail];
        snprintf(detail, sizeof detail, "%s", err.detail);
        app_error_set(&err, APP_EUNAVAIL, "event store append failed");
        app_error_detail(&err, "%s", detail);
    }
    err.code = APP_EUNAVAIL;
    for (size_t i = 0; i < n; i++)
        job_fail(jobs[i], &err);
    return APP_EUNAVAIL;
}

static void *committer_main(void *arg)
{
    pg_ctx *c = arg;
    pg_event_store *s = c->store;
    for (;;) {
        pthread_mutex_lock(&c->lock);
        while (!c->head && !atomic_load(&s->stopping))
            pthread_cond_wait(&c->work_cv, &c->lock);
        if (atomic_load(&s->stopping)) {
            app_error err = APP_ERROR_INIT;
            app_error_set(&err, APP_EUNAVAIL, "event store is shutting down");
            for (append_job *j = c->head, *next; j; j = next) {
                next = j->next; /* read before the post: the job may vanish after it */
                job_fail(j, &err);
                sem_post(&j->done);
            }
            c->head = c->tail = NULL;
            pthread_mutex_unlock(&c->lock);
            break;
        }
        size_t n = 0;
        while (c->head && n < (size_t)s->max_batch) {
            c->batch[n++] = c->head;
            c->head = c->head->next;
        }
        if (!c->head)
            c->tail = NULL;
        pthread_mutex_unlock(&c->lock);

        bool retry_alone = false;
        size_t transactions = 1;
        int rc = run_batch(c, c->batch, n, &retry_alone);
        if (rc < 0 && retry_alone) {
            log_warn("append batch of %zu in %s failed (%s); retrying one by one", n, c->schema,
                     c->batch[0]->err.detail);
            for (size_t i = 0; i < n; i++) {
                bool again;
                run_batch(c, &c->batch[i], 1, &again);
            }
            transactions += n;
        }
        int64_t last = 0;
        for (size_t i = 0; i < n; i++)
            if (c->batch[i]->rc == 0 && c->batch[i]->result.last_position > last)
                last = c->batch[i]->result.last_position;

        metrics_histogram_observe(M_BATCH_SIZE, c->metric_labels, (double)n);
        pthread_mutex_lock(&s->lock);
        s->batches += transactions;
        s->commands += n;
        pthread_mutex_unlock(&s->lock);

        pthread_mutex_lock(&c->lock);
        if (last > c->known_head)
            c->known_head = last;
        c->wake_seq++;
        pthread_cond_broadcast(&c->append_cv);
        pthread_mutex_unlock(&c->lock);
        for (size_t i = 0; i < n; i++)
            sem_post(&c->batch[i]->done); /* the job may vanish after this */
    }
    if (c->conn) {
        PQfinish(c->conn);
        c->conn = NULL;
    }
    return NULL;
}

/* ---- append ---------------------------------------------------------------------------- */

static int check_text(const char *s, const char *field, app_error *err)
{
    if (!s || !*s || !utf8_valid(s)) {
        app_error_set(err, APP_EINVAL, "invalid append request");
        if (err)
            app_error_field(err, field, "must be non-empty UTF-8 text");
        return APP_EINVAL;
    }
    return 0;
}

/* Event data and metadata are embedded as JSON values, so they must be objects that both
 * cJSON and jsonb accept (jsonb refuses \u0000). */
static int check_object(const char *text, const char *field, app_error *err)
{
    const char *end = NULL;
    cJSON *doc =
        utf8_valid(text) && !strstr(text, "\\u0000") ? cJSON_ParseWithOpts(text, &end, 1) : NULL;
    bool ok = cJSON_IsObject(doc);
    cJSON_Delete(doc);
    if (!ok) {
        app_error_set(err, APP_EINVAL, "invalid append request");
        if (err)
            app_error_field(err, field, "must be a JSON object");
        return APP_EINVAL;
    }
    return 0;
}

static int claims_json(const es_claim *claims, size_t n, const char *field, char **out,
                       app_error *err)
{
    sbuf b = {0};
    sb_str(&b, "[");
    for (size_t i = 0; i < n; i++) {
        int rc = check_text(claims[i].scope, field, err);
        if (rc == 0)
            rc = check_text(claims[i].key, field, err);
        if (rc < 0) {
            free(b.p);
            return rc;
        }
        sb_str(&b, i ? ",{\"scope\":" : "{\"scope\":");
        sb_json_string(&b, claims[i].scope);
        sb_str(&b, ",\"key\":");
        sb_json_string(&b, claims[i].key);
        sb_str(&b, "}");
    }
    sb_str(&b, "]");
    if (b.oom) {
        free(b.p);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    *out = b.p;
    return 0;
}

static int events_json(const es_append_req *req, char **out, app_error *err)
{
    sbuf b = {0};
    int rc = 0;
    sb_str(&b, "[");
    for (size_t i = 0; i < req->n_events; i++) {
        const es_new_event *ev = &req->events[i];
        const char *data = ev->data ? ev->data : "{}";
        const char *meta = ev->metadata ? ev->metadata : "{}";
        if (!ev->event_id || !uuid_valid(ev->event_id)) {
            rc = app_error_set(err, APP_EINVAL, "invalid append request");
            if (err)
                app_error_field(err, "event_id", "must be a lower-case uuid");
            goto fail;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(req->events[j].event_id, ev->event_id) == 0) {
                rc = app_error_set(err, APP_EINVAL, "invalid append request");
                if (err)
                    app_error_field(err, "event_id", "appears twice");
                goto fail;
            }
        }
        if ((rc = check_text(ev->type, "type", err)) < 0 ||
            (rc = check_object(data, "data", err)) < 0 ||
            (rc = check_object(meta, "metadata", err)) < 0)
            goto fail;
        char num[32];
        snprintf(num, sizeof num, "%d", ev->schema_version);
        sb_str(&b, i ? ",{\"event_id\":\"" : "{\"event_id\":\"");
        sb_str(&b, ev->event_id);
        sb_str(&b, "\",\"type\":");
        sb_json_string(&b, ev->type);
        sb_str(&b, ",\"schema_version\":");
        sb_str(&b, num);
        sb_str(&b, ",\"data\":");
        sb_str(&b, data);
        sb_str(&b, ",\"metadata\":");
        sb_str(&b, meta);
        sb_str(&b, "}");
    }
    sb_str(&b, "]");
    if (b.oom) {
        rc = app_error_set(err, APP_ENOMEM, "out of memory");
        goto fail;
    }
    *out = b.p;
    return 0;
fail:
    free(b.p);
    return rc;
}

static int process_json(const es_process *p, char **out, app_error *err)
{
    *out = NULL;
    if (!p)
        return 0;
    int rc = check_text(p->name, "process.name", err);
    if (rc == 0)
        rc = check_text(p->id, "process.id", err);
    if (rc == 0)
        rc = check_object(p->state ? p->state : "{}", "process.state", err);
    if (rc < 0)
        return rc;
    char num[32];
    snprintf(num, sizeof num, "%" PRId64, p->deadline_ms > 0 ? p->deadline_ms : 0);
    sbuf b = {0};
    sb_str(&b, "{\"name\":");
    sb_json_string(&b, p->name);
    sb_str(&b, ",\"id\":");
    sb_json_string(&b, p->id);
    sb_str(&b, ",\"state\":");
    sb_str(&b, p->state ? p->state : "{}");
    sb_str(&b, ",\"deadline_ms\":");
    sb_str(&b, num);
    sb_str(&b, p->done ? ",\"done\":true}" : ",\"done\":false}");
    if (b.oom) {
        free(b.p);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    *out = b.p;
    return 0;
}

/* {"actor","key","command","request_hash","response","ttl_seconds"}, the argument of
 * es_append_keyed and es_idempotency_record. */
static int idem_json(const es_idempotency *k, char **out, app_error *err)
{
    *out = NULL;
    if (!k)
        return 0;
    int rc = check_text(k->actor, "idempotency.actor", err);
    if (rc == 0)
        rc = check_text(k->key, "idempotency.key", err);
    if (rc == 0)
        rc = check_text(k->command, "idempotency.command", err);
    if (rc == 0)
        rc = check_text(k->request_hash, "idempotency.request_hash", err);
    if (rc == 0)
        rc = check_object(k->response ? k->response : "", "idempotency.response", err);
    if (rc == 0 && k->ttl_seconds < 1)
        rc = app_error_set(err, APP_EINVAL, "idempotency ttl must be at least one second");
    if (rc < 0)
        return rc;
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%d", k->ttl_seconds);
    sbuf b = {0};
    sb_str(&b, "{\"actor\":");
    sb_json_string(&b, k->actor);
    sb_str(&b, ",\"key\":");
    sb_json_string(&b, k->key);
    sb_str(&b, ",\"command\":");
    sb_json_string(&b, k->command);
    sb_str(&b, ",\"request_hash\":");
    sb_json_string(&b, k->request_hash);
    sb_str(&b, ",\"response\":"); /* as a string: jsonb would reorder the reply's members */
    sb_json_string(&b, k->response);
    sb_str(&b, ",\"ttl_seconds\":");
    sb_str(&b, ttl);
    sb_str(&b, "}");
    if (b.oom) {
        free(b.p);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    *out = b.p;
    return 0;
}

static int pg_es_append(void *self, const es_append_req *req, es_append_result *out, app_error *err)
{
    pg_event_store *s = self;
    pg_ctx *c = NULL;
    int rc = ctx_get(s, req->context, &c, err);
    if (rc < 0)
        return rc;
    if (c->mirrored) {
        /* Its own service owns the log; a copy written here would fork it. */
        app_error_set(err, APP_EINVAL,
                      "context %s is mirrored from kafka here: only its own service appends",
                      req->context);
        if (err)
            app_error_field(err, "context", "is mirrored from kafka (kafka.inbox)");
        return APP_EINVAL;
    }
    if ((rc = check_text(req->stream_id, "stream_id", err)) < 0)
        return rc;
    if (req->expected_version < ES_ANY_VERSION || (req->n_events && !req->events) ||
        (req->n_claims && !req->claims) || (req->n_releases && !req->releases)) {
        app_error_set(err, APP_EINVAL, "invalid append request");
        return APP_EINVAL;
    }

    double started = now_seconds();
    /* A span of the append, in the trace of the command it is for (the thread's). */
    trace_span span;
    trace_start(&span, "eventstore append", TRACE_CLIENT, trace_current());
    append_job job = {.req = req};
    snprintf(job.expected, sizeof job.expected, "%" PRId64, req->expected_version);
    if ((rc = events_json(req, &job.events_json, err)) < 0 ||
        (rc = claims_json(req->claims, req->n_claims, "claims", &job.claims_json, err)) < 0 ||
        (rc = claims_json(req->releases, req->n_releases, "releases", &job.releases_json, err)) <
            0 ||
        (rc = process_json(req->process, &job.process_json, err)) < 0 ||
        (rc = idem_json(req->idempotency, &job.idem_json, err)) < 0)
        goto done;

    sem_init(&job.done, 0, 0);
    pthread_mutex_lock(&c->lock);
    if (atomic_load(&s->stopping)) {
        pthread_mutex_unlock(&c->lock);
        rc = app_error_set(err, APP_EUNAVAIL, "event store is shutting down");
        goto done_sem;
    }
    if (!c->committer_started) {
        if (pthread_create(&c->committer, NULL, committer_main, c) != 0) {
            pthread_mutex_unlock(&c->lock);
            rc = app_error_set(err, APP_EINTERNAL, "could not start the committer thread");
            goto done_sem;
        }
        c->committer_started = true;
    }
    if (c->tail)
        c->tail->next = &job;
    else
        c->head = &job;
    c->tail = &job;
    pthread_cond_signal(&c->work_cv);
    pthread_mutex_unlock(&c->lock);
    while (sem_wait(&job.done) != 0 && errno == EINTR)
        ;

    rc = job.rc;
    if (rc == 0) {
        if (out)
            *out = job.result;
    } else if (err) {
        *err = job.err;
    }
    metrics_histogram_observe(M_APPEND_SECONDS, c->metric_labels, now_seconds() - started);
done_sem:
    sem_destroy(&job.done);
done:
    if (span.recording) {
        trace_attr_str(&span, "db.system", "postgresql");
        trace_attr_str(&span, "app.context", req->context);
        trace_attr_str(&span, "app.stream_id", req->stream_id);
        trace_attr_int(&span, "app.events", (int64_t)req->n_events);
        trace_attr_int(&span, "app.batch_size", (int64_t)job.batch);
        if (rc == 0 && req->n_events > 0)
            trace_attr_int(&span, "app.version", job.result.version);
        if (rc != 0 && rc != APP_EVERSION && rc != APP_ECONFLICT)
            trace_fail(&span, err ? err->message : "append failed");
    }
    trace_end(&span);
    free(job.events_json);
    free(job.claims_json);
    free(job.releases_json);
    free(job.process_json);
    free(job.idem_json);
    return rc;
}

/* ---- reads ------------------------------------------------------------------------------ */

/* One query through the pool. A pooled connection may have died with the server since it
 * was last used; reads are idempotent, so one retry on a fresh connection hides that. */
static int pool_query(pg_event_store *s, int acquire_ms, const char *sql, int n_params,
                      const char *const *params, ExecStatusType want, PGresult **out,
                      app_error *err)
{
    int rc = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        PGconn *conn = NULL;
        rc = pg_pool_acquire(s->pool, acquire_ms, &conn, err);
        if (rc < 0)
            return rc;
        rc = pg_pool_exec(s->pool, conn, sql, n_params, params, want, out, err);
        bool broken = PQstatus(conn) != CONNECTION_OK;
        pg_pool_release(s->pool, conn);
        if (rc == 0 || !broken)
            break;
    }
    return rc;
}

#define EVENT_COLUMNS                                                                              \
    "SELECT global_position, stream_id, stream_version, event_id::text, event_type,"               \
    " schema_version, data::text, metadata::text,"                                                 \
    " to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

static int rows_to_events(PGresult *res, es_event_list *out, app_error *err)
{
    size_t n = (size_t)PQntuples(res);
    if (n == 0)
        return 0;
    es_event *items = calloc(n, sizeof *items);
    if (!items)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    out->items = items;
    for (size_t i = 0; i < n; i++) {
        int r = (int)i;
        es_event *ev = &items[i];
        ev->position = strtoll(PQgetvalue(res, r, 0), NULL, 10);
        ev->version = strtoll(PQgetvalue(res, r, 2), NULL, 10);
        ev->schema_version = (int)strtol(PQgetvalue(res, r, 5), NULL, 10);
        snprintf(ev->event_id, sizeof ev->event_id, "%s", PQgetvalue(res, r, 3));
        snprintf(ev->recorded_at, sizeof ev->recorded_at, "%s", PQgetvalue(res, r, 8));
        ev->stream_id = strdup(PQgetvalue(res, r, 1));
        ev->type = strdup(PQgetvalue(res, r, 4));
        ev->data = strdup(PQgetvalue(res, r, 6));
        ev->metadata = strdup(PQgetvalue(res, r, 7));
        out->len = i + 1;
        if (!ev->stream_id || !ev->type || !ev->data || !ev->metadata) {
            es_event_list_free(out);
            return app_error_set(err, APP_ENOMEM, "out of memory");
        }
    }
    return 0;
}

static int query_events(pg_event_store *s, const char *sql, int n_params, const char *const *params,
                        es_event_list *out, app_error *err)
{
    PGresult *res = NULL;
    int rc = pool_query(s, READ_ACQUIRE_MS, sql, n_params, params, PGRES_TUPLES_OK, &res, err);
    if (rc < 0)
        return rc;
    rc = rows_to_events(res, out, err);
    PQclear(res);
    return rc;
}

/* Events of a stream after after_version, oldest first; at most limit when bounded. */
static int pg_stream_events(pg_event_store *s, const char *context, const char *stream_id,
                            int64_t after_version, bool bounded, size_t limit, es_event_list *out,
                            app_error *err)
{
    out->items = NULL;
    out->len = 0;
    char schema[64], sql[512], after[32], lim[32];
    int rc = store_schema(s, context, schema, sizeof schema, err);
    if (rc < 0)
        return rc;
    if (!stream_id)
        return app_error_set(err, APP_EINVAL, "stream id is required");
    snprintf(sql, sizeof sql,
             EVENT_COLUMNS " FROM %s.events WHERE stream_id = $1 AND stream_version > $2"
                           " ORDER BY stream_version%s",
             schema, bounded ? " LIMIT $3" : "");
    snprintf(after, sizeof after, "%" PRId64, after_version);
    snprintf(lim, sizeof lim, "%zu", limit);
    const char *params[] = {stream_id, after, lim};
    return query_events(s, sql, bounded ? 3 : 2, params, out, err);
}

static int pg_es_load_stream(void *self, const char *context, const char *stream_id,
                             int64_t after_version, es_event_list *out, app_error *err)
{
    return pg_stream_events(self, context, stream_id, after_version, false, 0, out, err);
}

static int pg_es_read_stream(void *self, const char *context, const char *stream_id,
                             int64_t after_version, size_t limit, es_event_list *out,
                             app_error *err)
{
    return pg_stream_events(self, context, stream_id, after_version, true, limit, out, err);
}

/* Why a plain position filter is gap-free here: every append transaction of a context takes
 * the same transaction-level advisory lock before it draws positions from the sequence, and
 * PostgreSQL releases that lock only after the commit is visible. So a transaction holding
 * positions above P starts drawing them only after every transaction with positions below P
 * has committed or rolled back: positions are assigned in commit order, and an event can
 * never become visible below a position a reader has already seen. The xmin-based filter of
 * DESIGN.md gives the same guarantee without the lock but stalls every subscriber behind
 * any long transaction in the database, even one that never touches the log. */
static int pg_es_read_log(void *self, const char *context, int64_t after_position, size_t limit,
                          es_event_list *out, app_error *err)
{
    pg_event_store *s = self;
    out->items = NULL;
    out->len = 0;
    char schema[64], sql[512], after[32], lim[32];
    int rc = store_schema(self, context, schema, sizeof schema, err);
    if (rc < 0 || limit == 0)
        return rc;
    snprintf(sql, sizeof sql,
             EVENT_COLUMNS " FROM %s.events WHERE global_position > $1"
                           " ORDER BY global_position LIMIT $2",
             schema);
    snprintf(after, sizeof after, "%" PRId64, after_position);
    snprintf(lim, sizeof lim, "%zu", limit);
    const char *params[] = {after, lim};
    return query_events(s, sql, 2, params, out, err);
}

static int query_int64(pg_event_store *s, int acquire_ms, const char *sql, int n_params,
                       const char *const *params, int64_t *out, app_error *err)
{
    PGresult *res = NULL;
    int rc = pool_query(s, acquire_ms, sql, n_params, params, PGRES_TUPLES_OK, &res, err);
    if (rc < 0)
        return rc;
    *out = PQntuples(res) > 0 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
    PQclear(res);
    return 0;
}

static int pg_es_head_position(void *self, const char *context, int64_t *out, app_error *err)
{
    char schema[64], sql[256];
    int rc = store_schema(self, context, schema, sizeof schema, err);
    if (rc < 0)
        return rc;
    snprintf(sql, sizeof sql, "SELECT coalesce(max(global_position), 0) FROM %s.events", schema);
    return query_int64(self, READ_ACQUIRE_MS, sql, 0, NULL, out, err);
}

static int pg_es_load_checkpoint(void *self, const char *context, const char *subscriber,
                                 int64_t *out, app_error *err)
{
    char schema[64], sql[256];
    int rc = store_schema(self, context, schema, sizeof schema, err);
    if (rc < 0)
        return rc;
    if ((rc = check_text(subscriber, "subscriber", err)) < 0)
        return rc;
    snprintf(sql, sizeof sql, "SELECT position FROM %s.checkpoints WHERE subscriber = $1", schema);
    const char *params[] = {subscriber};
    return query_int64(self, READ_ACQUIRE_MS, sql, 1, params, out, err);
}

static int pg_es_save_checkpoint(void *self, const char *context, const char *subscriber,
                                 int64_t position, app_error *err)
{
    char schema[64], sql[512], pos[32];
    int rc = store_schema(self, context, schema, sizeof schema, err);
    if (rc < 0)
        return rc;
    if ((rc = check_text(subscriber, "subscriber", err)) < 0)
        return rc;
    snprintf(sql, sizeof sql,
             "INSERT INTO %s.checkpoints (subscriber, position, updated_at)"
             " VALUES ($1, $2, now())"
             " ON CONFLICT (subscriber) DO UPDATE"
             " SET position = excluded.position, updated_at = excluded.updated_at",
             schema);
    snprintf(pos, sizeof pos, "%" PRId64, position);
    const char *params[] = {subscriber, pos};
    return pool_query(self, READ_ACQUIRE_MS, sql, 2, params, PGRES_COMMAND_OK, NULL, err);
}

/* Deletes subscriber's checkpoint, and with generations those of "<subscriber>@<n>" too. */
static int delete_checkpoints(void *self, const char *context, const char *subscriber,
                              bool generations, app_error *err)
{
    char schema[64], sql[256];
    int rc = store_schema(self, context, schema, sizeof schema, err);
    if (rc < 0)
        return rc;
    if ((rc = check_text(subscriber, "subscriber", err)) < 0)
        return rc;
    /* The generations by a prefix compared as text: LIKE would read the '_' of names such as
     * placement_saga as a wildcard. */
    snprintf(sql, sizeof sql, "DELETE FROM %s.checkpoints WHERE subscriber = $1%s", schema,
             generations ? " OR left(subscriber, length($1) + 1) = $1 || '@'" : "");
    const char *params[] = {subscriber};
    return pool_query(self, READ_ACQUIRE_MS, sql, 1, params, PGRES_COMMAND_OK, NULL, err);
}

static int pg_es_remove_checkpoint(void *self, const char *context, const char *subscriber,
                                   app_error *err)
{
    return delete_checkpoints(self, context, subscriber, false, err);
}

static int pg_es_remove_checkpoints(void *self, const char *context, const char *subscriber,
                                    app_error *err)
{
    return delete_checkpoints(self, context, subscriber, true, err);
}

static int pg_es_wait_for_append(void *self, const char *context, int64_t after_position,
                                 int timeout_ms)
{
    pg_event_store *s = self;
    pg_ctx *c = NULL;
    int rc = ctx_get(s, context, &c, NULL);
    if (rc < 0)
        return rc;
    struct timespec deadline;
    deadline_after(&deadline, timeout_ms > 0 ? timeout_ms : 0);
    pthread_mutex_lock(&c->lock);
    uint64_t seq = c->wake_seq;
    while (c->known_head <= after_position && c->wake_seq == seq && !atomic_load(&s->stopping)) {
        if (pthread_cond_timedwait(&c->append_cv, &c->lock, &deadline) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&c->lock);
    return 0;
}

static int pg_es_ping(void *self, app_error *err)
{
    return pool_query(self, PING_ACQUIRE_MS, "SELECT 1", 0, NULL, PGRES_TUPLES_OK, NULL, err);
}

/* ---- the LISTEN thread -------------------------------------------------------------- */

static int listen_new_channels(pg_event_store *s, PGconn *conn)
{
    pthread_mutex_lock(&s->lock);
    pg_ctx *first = s->ctxs;
    pthread_mutex_unlock(&s->lock);
    for (pg_ctx *c = first; c; c = c->next) {
        if (c->listening)
            continue;
        char sql[96];
        snprintf(sql, sizeof sql, "LISTEN %s", c->channel);
        PGresult *res = PQexec(conn, sql);
        bool ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
        PQclear(res);
        if (!ok)
            return -1;
        pthread_mutex_lock(&s->lock);
        c->listening = true;
        pthread_mutex_unlock(&s->lock);
    }
    return 0;
}

/* The listener's session is over: nothing listens until it reconnects. */
static void listener_drop(pg_event_store *s, PGconn **conn)
{
    PQfinish(*conn);
    *conn = NULL;
    pthread_mutex_lock(&s->lock);
    s->listener_pid = 0;
    for (pg_ctx *c = s->ctxs; c; c = c->next)
        c->listening = false;
    pthread_mutex_unlock(&s->lock);
}

static void listener_dispatch(pg_event_store *s, const PGnotify *nt)
{
    pthread_mutex_lock(&s->lock);
    pg_ctx *first = s->ctxs;
    pthread_mutex_unlock(&s->lock);
    for (pg_ctx *c = first; c; c = c->next) {
        if (strcmp(c->channel, nt->relname) == 0) {
            ctx_announce(c, strtoll(nt->extra ? nt->extra : "0", NULL, 10));
            return;
        }
    }
}

/* Sleeps ms unless the store is told to stop (the wake pipe). */
static void listener_sleep(pg_event_store *s, int ms)
{
    struct pollfd fd = {.fd = s->wake_pipe[0], .events = POLLIN};
    if (poll(&fd, 1, ms) > 0) {
        char buf[64];
        while (read(s->wake_pipe[0], buf, sizeof buf) > 0) {
        }
    }
}

static void *listener_main(void *arg)
{
    pg_event_store *s = arg;
    PGconn *conn = NULL;
    int backoff = LISTEN_BACKOFF_MIN_MS;
    bool warned = false;
    while (!atomic_load(&s->stopping)) {
        if (!conn) {
            app_error err = APP_ERROR_INIT;
            if (pg_connect(s->dsn, s->connect_timeout_s, &conn, &err) < 0) {
                if (!warned)
                    log_warn("event store listener cannot connect: %s", err.detail);
                warned = true;
                listener_sleep(s, backoff);
                backoff = backoff * 2 > LISTEN_BACKOFF_MAX_MS ? LISTEN_BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
            if (warned)
                log_info("event store listener reconnected");
            warned = false;
            backoff = LISTEN_BACKOFF_MIN_MS;
            pthread_mutex_lock(&s->lock);
            s->listener_pid = PQbackendPID(conn);
            pg_ctx *first = s->ctxs;
            pthread_mutex_unlock(&s->lock);
            for (pg_ctx *c = first; c; c = c->next)
                ctx_announce(c, 0); /* notifications sent while we were away are lost */
        }
        if (listen_new_channels(s, conn) < 0) {
            listener_drop(s, &conn);
            continue;
        }
        struct pollfd fds[2] = {{.fd = PQsocket(conn), .events = POLLIN},
                                {.fd = s->wake_pipe[0], .events = POLLIN}};
        int pr = poll(fds, 2, 1000);
        if (pr > 0 && fds[1].revents) {
            char buf[64];
            while (read(s->wake_pipe[0], buf, sizeof buf) > 0) {
            }
        }
        if (pr > 0 && fds[0].revents) {
            if (!PQconsumeInput(conn)) {
                log_warn("event store listener lost its connection");
                listener_drop(s, &conn);
                continue;
            }
            PGnotify *nt;
            while ((nt = PQnotifies(conn))) {
                listener_dispatch(s, nt);
                PQfreemem(nt);
            }
        }
        if (PQstatus(conn) != CONNECTION_OK)
            listener_drop(s, &conn);
    }
    if (conn)
        listener_drop(s, &conn);
    return NULL;
}

static int pg_es_due_processes(void *self, const char *context, const char *name, int64_t now_ms,
                               size_t limit, es_due_list *out, app_error *err)
{
    out->items = NULL;
    out->len = 0;
    char schema[64], sql[512], now[32], lim[32];
    int rc = store_schema(self, context, schema, sizeof schema, err);
    if (rc < 0)
        return rc;
    if ((rc = check_text(name, "name", err)) < 0)
        return rc;
    snprintf(sql, sizeof sql,
             "SELECT id, state::text, (extract(epoch FROM deadline) * 1000)::bigint"
             " FROM %s.processes WHERE name = $1 AND NOT done"
             " AND deadline <= to_timestamp($2::bigint / 1000.0)"
             " ORDER BY deadline LIMIT $3::bigint",
             schema);
    snprintf(now, sizeof now, "%" PRId64, now_ms);
    snprintf(lim, sizeof lim, "%zu", limit);
    const char *params[] = {name, now, lim};
    PGresult *res = NULL;
    rc = pool_query(self, READ_ACQUIRE_MS, sql, 3, params, PGRES_TUPLES_OK, &res, err);
    if (rc < 0)
        return rc;
    int n = PQntuples(res);
    if (n > 0) {
        out->items = calloc((size_t)n, sizeof *out->items);
        if (!out->items) {
            PQclear(res);
            return app_error_set(err, APP_ENOMEM, "out of memory");
        }
    }
    for (int i = 0; i < n; i++) {
        es_due_process *d = &out->items[out->len++];
        d->id = strdup(PQgetvalue(res, i, 0));
        d->state = strdup(PQgetvalue(res, i, 1));
        d->deadline_ms = strtoll(PQgetvalue(res, i, 2), NULL, 10);
        if (!d->id || !d->state) {
            PQclear(res);
            es_due_list_free(out);
            return app_error_set(err, APP_ENOMEM, "out of memory");
        }
    }
    PQclear(res);
    return 0;
}

/* ---- dead letters ------------------------------------------------------------------------ */

static int pg_es_add_dead_letter(void *self, const char *context, const char *subscriber,
                                 int64_t position, const char *event_id, const char *error,
                                 app_error *err)
{
    char schema[64], sql[640], pos[32];
    int rc = store_schema(self, context, schema, sizeof schema, err);
    if (rc < 0)
        return rc;
    if ((rc = check_text(subscriber, "subscriber", err)) < 0 ||
        (rc = check_text(error, "error", err)) < 0)
        return rc;
    if (event_id && *event_id && !uuid_valid(event_id)) {
        app_error_set(err, APP_EINVAL, "invalid dead letter");
        if (err)
            app_error_field(err, "event_id", "must be a lower-case uuid");
        return APP_EINVAL;
    }
    snprintf(sql, sizeof sql,
             "INSERT INTO %s.dead_letters AS d (subscriber, position, event_id, error)"
             " VALUES ($1, $2::bigint, $3::uuid, $4)"
             " ON CONFLICT (subscriber, position) DO UPDATE"
             " SET error = excluded.error, attempts = d.attempts + 1,"
             " event_id = coalesce(excluded.event_id, d.event_id), redrive_requested = false",
             schema);
    snprintf(pos, sizeof pos, "%" PRId64, position);
    const char *params[] = {subscriber, pos, event_id && *event_id ? event_id : NULL, error};
    return pool_query(self, READ_ACQUIRE_MS, sql, 4, params, PGRES_COMMAND_OK, NULL, err);
}

static int pg_es_list_dead_letters(void *self, const char *context, const char *subscriber,
                                   int64_t after_id, size_t limit, es_dead_letter_list *out,
                                   app_error *err)
{
    out->items = NULL;
    out->len = 0;
    char schema[64], sql[640], after[32], lim[32];
    int rc = store_schema(self, context, schema, sizeof schema, err);
    if (rc < 0 || limit == 0)
        return rc;
    if (subscriber && (rc = check_text(subscriber, "subscriber", err)) < 0)
        return rc;
    snprintf(sql, sizeof sql,
             "SELECT id, subscriber, position, coalesce(event_id::text, ''), error, attempts,"
             " to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),"
             " redrive_requested"
             " FROM %s.dead_letters WHERE ($1::text IS NULL OR subscriber = $1)"
             " AND id > $2::bigint ORDER BY id LIMIT $3::bigint",
             schema);
    snprintf(after, sizeof after, "%" PRId64, after_id);
    snprintf(lim, sizeof lim, "%zu", limit);
    const char *params[] = {subscriber, after, lim};
    PGresult *res = NULL;
    rc = pool_query(self, READ_ACQUIRE_MS, sql, 3, params, PGRES_TUPLES_OK, &res, err);
    if (rc < 0)
        return rc;
    int n = PQntuples(res);
    if (n > 0 && !(out->items = calloc((size_t)n, sizeof *out->items))) {
        PQclear(res);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        es_dead_letter *d = &out->items[out->len++];
        d->id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
        d->subscriber = strdup(PQgetvalue(res, i, 1));
        d->position = strtoll(PQgetvalue(res, i, 2), NULL, 10);
        snprintf(d->event_id, sizeof d->event_id, "%s", PQgetvalue(res, i, 3));
        d->error = strdup(PQgetvalue(res, i, 4));
        d->attempts = (int)strtol(PQgetvalue(res, i, 5), NULL, 10);
        snprintf(d->created_at, sizeof d->created_at, "%s", PQgetvalue(res, i, 6));
        d->redrive_requested = PQgetvalue(res, i, 7)[0] == 't';
        if (!d->subscriber || !d->error) {
            PQclear(res);
            es_dead_letter_list_free(out);
            return app_error_set(err, APP_ENOMEM, "out of memory");
        }
    }
    PQclear(res);
    return 0;
}

/* "<verb> <schema>.dead_letters<set> WHERE id = <id>"; APP_ENOTFOUND when it touched no
 * row. */
static int pg_es_dead_letter_by_id(void *self, const char *context, int64_t id, const char *verb,
                                   const char *set, app_error *err)
{
    char schema[64], sql[256], idtext[32];
    int rc = store_schema(self, context, schema, sizeof schema, err);
    if (rc < 0)
        return rc;
    snprintf(sql, sizeof sql, "%s %s.dead_letters%s WHERE id = $1::bigint", verb, schema, set);
    snprintf(idtext, sizeof idtext, "%" PRId64, id);
    const char *params[] = {idtext};
    PGresult *res = NULL;
    rc = pool_query(self, READ_ACQUIRE_MS, sql, 1, params, PGRES_COMMAND_OK, &res, err);
    if (rc < 0)
        return rc;
    bool gone = strcmp(PQcmdTuples(res), "0") == 0;
    PQclear(res);
    if (gone)
        return app_error_set(err, APP_ENOTFOUND, "no dead letter %" PRId64 " in %s", id, context);
    return 0;
}

static int pg_es_remove_dead_letter(void *self, const char *context, int64_t id, app_error *err)
{
    return pg_es_dead_letter_by_id(self, context, id, "DELETE FROM", "", err);
}

static int pg_es_request_redrive(void *self, const char *context, int64_t id, app_error *err)
{
    return pg_es_dead_letter_by_id(self, context, id, "UPDATE", " SET redrive_requested = true",
                                   err);
}

/* ---- snapshots --------------------------------------------------------------------------- */

static int pg_es_load_snapshot(void *self, const char *context, const char *stream_id,
                               es_snapshot *out, app_error *err)
{
    memset(out, 0, sizeof *out);
    char schema[64], sql[256];
    int rc = store_schema(self, context, schema, sizeof schema, err);
    if (rc < 0)
        return rc;
    if (!stream_id)
        return app_error_set(err, APP_EINVAL, "stream id is required");
    snprintf(sql, sizeof sql,
             "SELECT version, schema_version, state::text FROM %s.snapshots WHERE stream_id = $1",
             schema);
    const char *params[] = {stream_id};
    PGresult *res = NULL;
    rc = pool_query(self, READ_ACQUIRE_MS, sql, 1, params, PGRES_TUPLES_OK, &res, err);
    if (rc < 0)
        return rc;
    if (PQntuples(res) > 0) {
        out->state = strdup(PQgetvalue(res, 0, 2));
        if (!out->state) {
            PQclear(res);
            return app_error_set(err, APP_ENOMEM, "out of memory");
        }
        out->version = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        out->schema_version = (int)strtol(PQgetvalue(res, 0, 1), NULL, 10);
    }
    PQclear(res);
    return 0;
}

/* One statement checks that the version is committed and upserts, so a snapshot can only
 * describe a state that is in the log; an older snapshot never replaces a newer one. */
static int pg_es_save_snapshot(void *self, const char *context, const char *stream_id,
                               const es_snapshot *snap, app_error *err)
{
    char schema[64], sql[1024], version[32], schema_version[16];
    int rc = store_schema(self, context, schema, sizeof schema, err);
    if (rc < 0)
        return rc;
    if ((rc = check_text(stream_id, "stream_id", err)) < 0 ||
        (rc = check_object(snap->state ? snap->state : "", "state", err)) < 0)
        return rc;
    if (snap->version < 1)
        return app_error_set(err, APP_EINVAL, "snapshot version must be at least 1");
    snprintf(sql, sizeof sql,
             "WITH ok AS (SELECT EXISTS (SELECT 1 FROM %s.events"
             "  WHERE stream_id = $1 AND stream_version = $2::bigint) AS committed),"
             " saved AS (INSERT INTO %s.snapshots AS s"
             "  (stream_id, version, schema_version, state, updated_at)"
             "  SELECT $1, $2::bigint, $3::int, $4::jsonb, now() FROM ok WHERE committed"
             "  ON CONFLICT (stream_id) DO UPDATE"
             "  SET version = excluded.version, schema_version = excluded.schema_version,"
             "  state = excluded.state, updated_at = excluded.updated_at"
             "  WHERE s.version <= excluded.version RETURNING 1)"
             " SELECT committed FROM ok",
             schema, schema);
    snprintf(version, sizeof version, "%" PRId64, snap->version);
    snprintf(schema_version, sizeof schema_version, "%d", snap->schema_version);
    const char *params[] = {stream_id, version, schema_version, snap->state};
    PGresult *res = NULL;
    rc = pool_query(self, READ_ACQUIRE_MS, sql, 4, params, PGRES_TUPLES_OK, &res, err);
    if (rc < 0)
        return rc;
    bool committed = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!committed)
        return app_error_set(err, APP_EINVAL, "stream %s has no committed version %" PRId64,
                             stream_id, snap->version);
    return 0;
}

/* ---- idempotency keys ------------------------------------------------------------------ */

static int pg_es_idempotency_lookup(void *self, const char *context, const char *actor,
                                    const char *key, int ttl_seconds, es_idem_record *out,
                                    bool *found, app_error *err)
{
    memset(out, 0, sizeof *out);
    *found = false;
    char schema[64], sql[384], ttl[16];
    int rc = store_schema(self, context, schema, sizeof schema, err);
    if (rc == 0)
        rc = check_text(actor, "actor", err);
    if (rc == 0)
        rc = check_text(key, "key", err);
    if (rc < 0)
        return rc;
    snprintf(sql, sizeof sql,
             "SELECT command, request_hash, response FROM %s.idempotency_keys"
             " WHERE actor = $1 AND key = $2"
             " AND created_at >= now() - make_interval(secs => $3::int)",
             schema);
    snprintf(ttl, sizeof ttl, "%d", ttl_seconds);
    const char *params[] = {actor, key, ttl};
    PGresult *res = NULL;
    rc = pool_query(self, READ_ACQUIRE_MS, sql, 3, params, PGRES_TUPLES_OK, &res, err);
    if (rc < 0)
        return rc;
    if (PQntuples(res) == 1) {
        out->command = strdup(PQgetvalue(res, 0, 0));
        out->request_hash = strdup(PQgetvalue(res, 0, 1));
        out->response = strdup(PQgetvalue(res, 0, 2));
        if (!out->command || !out->request_hash || !out->response) {
            es_idem_record_free(out);
            rc = app_error_set(err, APP_ENOMEM, "out of memory");
        }
        *found = rc == 0;
    }
    PQclear(res);
    return rc;
}

static int pg_es_idempotency_save(void *self, const char *context, const es_idempotency *rec,
                                  app_error *err)
{
    char schema[64], sql[160], *json = NULL;
    int rc = store_schema(self, context, schema, sizeof schema, err);
    if (rc == 0)
        rc = idem_json(rec, &json, err);
    if (rc < 0)
        return rc;
    snprintf(sql, sizeof sql, "SELECT %s.es_idempotency_record($1::jsonb)", schema);
    const char *params[] = {json};
    PGresult *res = NULL;
    rc = pool_query(self, READ_ACQUIRE_MS, sql, 1, params, PGRES_TUPLES_OK, &res, err);
    free(json);
    if (rc < 0)
        return rc;
    bool recorded = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (!recorded)
        return app_error_set(err, APP_EIDEMPOTENT, "idempotency key is recorded already");
    return 0;
}

static int pg_es_idempotency_purge(void *self, const char *context, int ttl_seconds,
                                   int64_t *deleted, app_error *err)
{
    *deleted = 0;
    char schema[64], sql[256], ttl[16];
    int rc = store_schema(self, context, schema, sizeof schema, err);
    if (rc < 0)
        return rc;
    snprintf(sql, sizeof sql,
             "DELETE FROM %s.idempotency_keys"
             " WHERE created_at < now() - make_interval(secs => $1::int)",
             schema);
    snprintf(ttl, sizeof ttl, "%d", ttl_seconds);
    const char *params[] = {ttl};
    PGresult *res = NULL;
    rc = pool_query(self, READ_ACQUIRE_MS, sql, 1, params, PGRES_COMMAND_OK, &res, err);
    if (rc < 0)
        return rc;
    *deleted = strtoll(PQcmdTuples(res), NULL, 10);
    PQclear(res);
    return 0;
}

/* ---- leadership ------------------------------------------------------------------------- */

static int lease_get(pg_event_store *s, const char *context, const char *name, pg_lease **out,
                     app_error *err)
{
    char schema[64];
    int rc = pg_context_schema(context, schema, sizeof schema, err);
    if (rc < 0)
        return rc;
    if ((rc = check_text(name, "name", err)) < 0)
        return rc;
    if (strlen(name) >= sizeof((pg_lease *)0)->name)
        return app_error_set(err, APP_EINVAL, "lease name is too long");
    pthread_mutex_lock(&s->lock);
    for (pg_lease *l = s->leases; l; l = l->next) {
        if (strcmp(l->context, context) == 0 && strcmp(l->name, name) == 0) {
            pthread_mutex_unlock(&s->lock);
            *out = l;
            return 0;
        }
    }
    pg_lease *l = calloc(1, sizeof *l);
    if (!l) {
        pthread_mutex_unlock(&s->lock);
        return app_error_set(err, APP_ENOMEM, "out of memory");
    }
    snprintf(l->context, sizeof l->context, "%s", context);
    snprintf(l->name, sizeof l->name, "%s", name);
    pthread_mutex_init(&l->lock, NULL);
    l->next = s->leases;
    s->leases = l;
    pthread_mutex_unlock(&s->lock);
    *out = l;
    return 0;
}

static void lease_drop(pg_lease *l)
{
    if (l->conn)
        PQfinish(l->conn);
    l->conn = NULL;
    l->held = false;
}

void pg_event_store_lease_lock(const char *context, const char *name, int32_t *ns, int32_t *key)
{
    char schema[64], key_name[200];
    pg_context_schema(context, schema, sizeof schema, NULL);
    snprintf(key_name, sizeof key_name, "%s.%s", schema, name);
    *ns = LEAD_LOCK_NS;
    *key = pg_lock_key(key_name);
}

/* The advisory lock's two keys, as text parameters. */
static void lease_key(const pg_lease *l, char ns[16], char key[16])
{
    int32_t n, k;
    pg_event_store_lease_lock(l->context, l->name, &n, &k);
    snprintf(ns, 16, "%d", (int)n);
    snprintf(key, 16, "%d", (int)k);
}

static int pg_es_lead(void *self, const char *context, const char *name, bool *out, app_error *err)
{
    pg_event_store *s = self;
    pg_lease *l = NULL;
    *out = false;
    int rc = lease_get(s, context, name, &l, err);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&l->lock);
    if (l->held) {
        /* The lock lives as long as the session: a round trip proves the session does. */
        app_error e = APP_ERROR_INIT;
        if (pg_conn_alive(l->conn) &&
            pg_exec(l->conn, "SELECT 1", 0, NULL, PGRES_TUPLES_OK, NULL, &e) == 0) {
            *out = true;
            pthread_mutex_unlock(&l->lock);
            return 0;
        }
        log_warn("lost the lease %s of %s with its connection", name, context);
        lease_drop(l);
    }
    if (l->conn && !pg_conn_alive(l->conn))
        lease_drop(l);
    if (!l->conn && (rc = pg_connect(s->dsn, s->connect_timeout_s, &l->conn, err)) < 0) {
        l->conn = NULL;
        pthread_mutex_unlock(&l->lock);
        return rc;
    }
    char ns[16], key[16];
    lease_key(l, ns, key);
    const char *params[] = {ns, key};
    PGresult *res = NULL;
    rc = pg_exec(l->conn, "SELECT pg_try_advisory_lock($1::int4, $2::int4)", 2, params,
                 PGRES_TUPLES_OK, &res, err);
    if (rc < 0) {
        lease_drop(l);
    } else {
        l->held = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        *out = l->held;
        PQclear(res);
    }
    pthread_mutex_unlock(&l->lock);
    return rc;
}

static void pg_es_resign(void *self, const char *context, const char *name)
{
    pg_event_store *s = self;
    pg_lease *l = NULL;
    if (lease_get(s, context, name, &l, NULL) < 0)
        return;
    pthread_mutex_lock(&l->lock);
    /* Closing the session releases its locks too, but only once the server has read the
     * goodbye, a moment after PQfinish returns; unlocking first frees the lease for the next
     * caller by the time resign returns. */
    if (l->held && pg_conn_alive(l->conn)) {
        char ns[16], key[16];
        lease_key(l, ns, key);
        const char *params[] = {ns, key};
        app_error e = APP_ERROR_INIT;
        pg_exec(l->conn, "SELECT pg_advisory_unlock($1::int4, $2::int4)", 2, params,
                PGRES_TUPLES_OK, NULL, &e); /* if it fails, closing still frees it */
    }
    lease_drop(l);
    pthread_mutex_unlock(&l->lock);
}

/* ---- life cycle ---------------------------------------------------------------------------- */

static const es_store_ops pg_es_ops = {
    .append = pg_es_append,
    .load_stream = pg_es_load_stream,
    .read_stream = pg_es_read_stream,
    .read_log = pg_es_read_log,
    .head_position = pg_es_head_position,
    .load_checkpoint = pg_es_load_checkpoint,
    .save_checkpoint = pg_es_save_checkpoint,
    .remove_checkpoint = pg_es_remove_checkpoint,
    .remove_checkpoints = pg_es_remove_checkpoints,
    .wait_for_append = pg_es_wait_for_append,
    .ping = pg_es_ping,
    .due_processes = pg_es_due_processes,
    .add_dead_letter = pg_es_add_dead_letter,
    .list_dead_letters = pg_es_list_dead_letters,
    .remove_dead_letter = pg_es_remove_dead_letter,
    .request_redrive = pg_es_request_redrive,
    .lead = pg_es_lead,
    .resign = pg_es_resign,
    .load_snapshot = pg_es_load_snapshot,
    .save_snapshot = pg_es_save_snapshot,
    .idempotency_lookup = pg_es_idempotency_lookup,
    .idempotency_save = pg_es_idempotency_save,
    .idempotency_purge = pg_es_idempotency_purge,
};

es_store pg_event_store_port(pg_event_store *s)
{
    es_store port = {&pg_es_ops, s};
    return port;
}

pg_pool *pg_event_store_pool(pg_event_store *s)
{
    return s->pool;
}

int pg_event_store_listener_pid(pg_event_store *s, const char *context)
{
    int pid = 0;
    pthread_mutex_lock(&s->lock);
    for (pg_ctx *c = s->ctxs; c; c = c->next)
        if (strcmp(c->name, context) == 0 && c->listening)
            pid = s->listener_pid;
    pthread_mutex_unlock(&s->lock);
    return pid;
}

void pg_event_store_stats(pg_event_store *s, uint64_t *batches, uint64_t *commands)
{
    pthread_mutex_lock(&s->lock);
    if (batches)
        *batches = s->batches;
    if (commands)
        *commands = s->commands;
    pthread_mutex_unlock(&s->lock);
}

int pg_event_store_new(pg_event_store **out, const pg_event_store_options *opts, app_error *err)
{
    if (!opts || !opts->dsn)
        return app_error_set(err, APP_EINVAL, "event store needs a postgresql dsn");
    pg_event_store *s = calloc(1, sizeof *s);
    if (!s)
        return app_error_set(err, APP_ENOMEM, "out of memory");
    s->wake_pipe[0] = s->wake_pipe[1] = -1;
    pthread_mutex_init(&s->lock, NULL);
    atomic_init(&s->stopping, false);
    s->connect_timeout_s = opts->connect_timeout_s > 0 ? opts->connect_timeout_s : 5;
    s->max_batch = opts->max_batch > 0 ? opts->max_batch : 128;
    int rc;
    s->dsn = strdup(opts->dsn);
    if (opts->n_mirrored > 0)
        s->mirrored = calloc(opts->n_mirrored, sizeof *s->mirrored);
    for (size_t i = 0; s->mirrored && i < opts->n_mirrored; i++) {
        if (!(s->mirrored[s->n_mirrored] = strdup(opts->mirrored[i])))
            break;
        s->n_mirrored++;
    }
    if (!s->dsn || s->n_mirrored < opts->n_mirrored) {
        rc = app_error_set(err, APP_ENOMEM, "out of memory");
        goto fail;
    }
    rc = pg_pool_new(&s->pool, opts->dsn, opts->pool_size > 0 ? opts->pool_size : 4,
                     s->connect_timeout_s, err);
    if (rc < 0)
        goto fail;
    if (pipe2(s->wake_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
        s->wake_pipe[0] = s->wake_pipe[1] = -1;
        rc = app_error_set(err, APP_EINTERNAL, "could not create a pipe: %s", strerror(errno));
        goto fail;
    }

    metrics_declare(M_APPEND_SECONDS, METRIC_HISTOGRAM,
                    "Time from an append request to its durable commit, per command");
    metrics_declare(M_BATCH_SIZE, METRIC_HISTOGRAM,
                    "Appends written per group-commit transaction (sum/count is the mean)");

    /* The kernel's contexts are known up front, so the listener hears them from the start. */
    static const char *const known[] = {"inventory", "order", "user"};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        pg_ctx *c;
        if ((rc = ctx_get(s, known[i], &c, err)) < 0)
            goto fail;
    }
    if (pthread_create(&s->listener, NULL, listener_main, s) != 0) {
        rc = app_error_set(err, APP_EINTERNAL, "could not start the listener thread");
        goto fail;
    }
    s->listener_started = true;
    *out = s;
    return 0;
fail:
    pg_event_store_free(s);
    return rc;
}

void pg_event_store_free(pg_event_store *s)
{
    if (!s)
        return;
    atomic_store(&s->stopping, true);
    wake_listener(s);
    for (pg_ctx *c = s->ctxs; c; c = c->next) {
        pthread_mutex_lock(&c->lock);
        pthread_cond_broadcast(&c->work_cv);
        pthread_cond_broadcast(&c->append_cv);
        bool started = c->committer_started;
        pthread_mutex_unlock(&c->lock);
        if (started)
            pthread_join(c->committer, NULL);
    }
    if (s->listener_started)
        pthread_join(s->listener, NULL);
    pg_ctx *c = s->ctxs;
    while (c) {
        pg_ctx *next = c->next;
        pthread_mutex_destroy(&c->lock);
        pthread_cond_destroy(&c->work_cv);
        pthread_cond_destroy(&c->append_cv);
        free(c->batch);
        free(c);
        c = next;
    }
    pg_lease *l = s->leases;
    while (l) {
        pg_lease *next = l->next;
        lease_drop(l);
        pthread_mutex_destroy(&l->lock);
        free(l);
        l = next;
    }
    pg_pool_free(s->pool);
    if (s->wake_pipe[0] >= 0)
        close(s->wake_pipe[0]);
    if (s->wake_pipe[1] >= 0)
        close(s->wake_pipe[1]);
    pthread_mutex_destroy(&s->lock);
    for (size_t i = 0; i < s->n_mirrored; i++)
        free(s->mirrored[i]);
    free(s->mirrored);
    free(s->dsn);
    free(s);
}
