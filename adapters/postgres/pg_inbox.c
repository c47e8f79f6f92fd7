/* The inbox on PostgreSQL: a batch of messages from Kafka and the consumer's offsets in one
 * transaction, under the same advisory lock as appends so positions stay in commit order. */
#include "adapters/postgres/pg_inbox.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/postgres/pg_event_store.h"
#include "adapters/postgres/pg_migrate.h"

#define INBOX_ACQUIRE_MS 5000

int pg_inbox_migrate(pg_pool *pool, const char *source, const char *role, int *applied_out,
                     app_error *err)
{
    char schema[64];
    int rc = pg_inbox_schema(source, schema, sizeof schema, err);
    if (rc < 0)
        return rc;
    if (role)
        return pg_migrate_context_owned(pool, schema, role, pg_store_migrations,
                                        pg_inbox_migrations, applied_out, err);
    return pg_migrate_context(pool, schema, pg_store_migrations, pg_inbox_migrations, applied_out,
                              err);
}

static int pg_inbox_load_offsets(void *self, const char *source, const char *group,
                                 const char *topic, inbox_position *parts, size_t n, app_error *err)
{
    pg_pool *pool = self;
    char schema[64], sql[256];
    int rc = pg_inbox_schema(source, schema, sizeof schema, err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++)
        parts[i].next_offset = -1;
    snprintf(sql, sizeof sql,
             "SELECT partition, next_offset FROM %s.kafka_offsets"
             " WHERE group_id = $1 AND topic = $2",
             schema);
    const char *params[] = {group, topic};
    PGconn *conn = NULL;
    if ((rc = pg_pool_acquire(pool, INBOX_ACQUIRE_MS, &conn, err)) < 0)
        return rc;
    PGresult *res = NULL;
    rc = pg_exec(conn, sql, 2, params, PGRES_TUPLES_OK, &res, err);
    pg_pool_release(pool, conn);
    if (rc < 0)
        return rc;
    for (int r = 0; r < PQntuples(res); r++) {
        long p = strtol(PQgetvalue(res, r, 0), NULL, 10);
        for (size_t i = 0; i < n; i++)
            if (parts[i].partition == p)
                parts[i].next_offset = strtoll(PQgetvalue(res, r, 1), NULL, 10);
    }
    PQclear(res);
    return 0;
}

/* The SQL of one batch, for schema. */
typedef struct inbox_sql {
    char lock[96];
    char event[512];
    char dead[384];
    char offset[384];
    char notify[320];
} inbox_sql;

static void inbox_sql_init(inbox_sql *q, const char *schema)
{
    snprintf(q->lock, sizeof q->lock, "SELECT pg_advisory_xact_lock($1::int4, $2::int4)");
    /* Dedup by event id only: another event with the same stream version would be a fork of
     * the source's log, which must fail (and be dead-lettered) rather than vanish. */
    snprintf(q->event, sizeof q->event,
             "INSERT INTO %s.events (stream_id, stream_version, event_id, event_type,"
             " schema_version, data, metadata, recorded_at)"
             " VALUES ($1, $2::bigint, $3::uuid, $4, $5::int, $6::jsonb, $7::jsonb,"
             " coalesce($8::timestamptz, now()))"
             " ON CONFLICT (event_id) DO NOTHING",
             schema);
    snprintf(q->dead, sizeof q->dead,
             "INSERT INTO %s.dead_letters AS d (subscriber, position, event_id, error)"
             " VALUES ($1, $2::bigint, $3::uuid, $4)"
             " ON CONFLICT (subscriber, position) DO UPDATE"
             " SET error = excluded.error, attempts = d.attempts + 1",
             schema);
    snprintf(q->offset, sizeof q->offset,
             "INSERT INTO %s.kafka_offsets AS o (group_id, topic, partition, next_offset)"
             " VALUES ($1, $2, $3::int, $4::bigint)"
             " ON CONFLICT (group_id, topic, partition) DO UPDATE"
             " SET next_offset = greatest(o.next_offset, excluded.next_offset),"
             " updated_at = now()",
             schema);
    char channel[96];
    pg_log_channel(schema, channel, sizeof channel);
    snprintf(q->notify, sizeof q->notify,
             "SELECT pg_notify('%s', (SELECT coalesce(max(global_position), 0) FROM %s.events)"
             "::text)",
             channel, schema);
}

static int store_message(PGconn *conn, const inbox_sql *q, const inbox_message *m, bool *inserted,
                         app_error *err)
{
    char offset[32];
    snprintf(offset, sizeof offset, "%" PRId64, m->offset);
    *inserted = false;
    if (m->reject) {
        char subscriber[48];
        snprintf(subscriber, sizeof subscriber, INBOX_DEAD_LETTER_PREFIX "%d", (int)m->partition);
        const char *params[] = {subscriber, offset, m->event_id, m->reject};
        return pg_exec(conn, q->dead, 4, params, PGRES_COMMAND_OK, NULL, err);
    }
    char version[32], schema_version[16];
    snprintf(version, sizeof version, "%" PRId64, m->version);
    snprintf(schema_version, sizeof schema_version, "%d", m->schema_version);
    const char *params[] = {m->stream_id,   version, m->event_id, m->type,
                            schema_version, m->data, m->metadata, m->recorded_at};
    PGresult *res = NULL;
    int rc = pg_exec(conn, q->event, 8, params, PGRES_COMMAND_OK, &res, err);
    if (rc == 0) {
        *inserted = strcmp(PQcmdTuples(res), "1") == 0;
        PQclear(res);
    }
    return rc;
}

static int pg_inbox_store(void *self, const char *source, const char *group, const char *topic,
                          const inbox_message *msgs, size_t n, size_t *stored, size_t *failed_at,
                          app_error *err)
{
    pg_pool *pool = self;
    char schema[64];
    size_t new_events = 0, at = n;
    if (stored)
        *stored = 0;
    if (failed_at)
        *failed_at = n;
    int rc = pg_inbox_schema(source, schema, sizeof schema, err);
    if (rc < 0 || n == 0)
        return rc;
    inbox_sql q = {0};
    inbox_sql_init(&q, schema);
    int32_t ns, key;
    pg_event_store_append_lock(schema, &ns, &key);
    char ns_text[16], key_text[16];
    snprintf(ns_text, sizeof ns_text, "%d", (int)ns);
    snprintf(key_text, sizeof key_text, "%d", (int)key);
    const char *lock_params[] = {ns_text, key_text};

    PGconn *conn = NULL;
    if ((rc = pg_pool_acquire(pool, INBOX_ACQUIRE_MS, &conn, err)) < 0)
        return rc;
    /* The lock before the first position is drawn, held to the commit: a reader never sees
     * a position above one that commits later (pg_event_store.c, read_log). */
    rc = pg_exec(conn, "BEGIN", 0, NULL, PGRES_COMMAND_OK, NULL, err);
    if (rc == 0)
        rc = pg_exec(conn, q.lock, 2, lock_params, PGRES_TUPLES_OK, NULL, err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        bool inserted = false;
        rc = store_message(conn, &q, &msgs[i], &inserted, err);
        if (rc < 0)
            at = i;
        new_events += inserted;
    }
    /* Each partition's last message is its latest in this batch: Kafka hands them over in
     * partition order. */
    for (size_t i = 0; rc == 0 && i < n; i++) {
        bool last = true;
        for (size_t j = i + 1; last && j < n; j++)
            last = msgs[j].partition != msgs[i].partition;
        if (!last)
            continue;
        char partition[16], next[32];
        snprintf(partition, sizeof partition, "%d", (int)msgs[i].partition);
        snprintf(next, sizeof next, "%" PRId64, msgs[i].offset + 1);
        const char *params[] = {group, topic, partition, next};
        rc = pg_exec(conn, q.offset, 4, params, PGRES_COMMAND_OK, NULL, err);
    }
    if (rc == 0 && new_events > 0)
        rc = pg_exec(conn, q.notify, 0, NULL, PGRES_TUPLES_OK, NULL, err);
    if (rc == 0)
        rc = pg_exec(conn, "COMMIT", 0, NULL, PGRES_COMMAND_OK, NULL, err);
    bool broken = PQstatus(conn) != CONNECTION_OK;
    pg_pool_release(pool, conn); /* rolls back what did not commit */
    if (rc < 0) {
        if (broken || rc == APP_EUNAVAIL) {
            /* Not the message's fault: the same batch is stored again later. */
            if (err)
                err->code = APP_EUNAVAIL;
            return APP_EUNAVAIL;
        }
        if (failed_at)
            *failed_at = at;
        return rc;
    }
    if (stored)
        *stored = new_events;
    return 0;
}

static const inbox_store_ops pg_inbox_ops = {
    .load_offsets = pg_inbox_load_offsets,
    .store = pg_inbox_store,
};

inbox_store pg_inbox_port(pg_pool *pool)
{
    inbox_store port = {&pg_inbox_ops, pool};
    return port;
}
