-- make bench's write ceiling: a registration's event appended as PostgreSQL alone can do it,
-- one per transaction (pgbench -M prepared, 8 clients). The first event of a new stream into
-- a table made with the log's own DDL (test/bench/run.sh), so with its constraints: the
-- unique (stream_id, stream_version) and event_id; jsonb the size of a registration's.
INSERT INTO bench_ceiling.events (stream_id, stream_version, event_id, event_type,
                                  schema_version, data, metadata)
VALUES ('user-' || gen_random_uuid(), 1, gen_random_uuid(), 'user.user.registered', 1,
        jsonb_build_object('name', 'Bench User', 'email', 'b' || random() || '@bench.example',
                           'userId', gen_random_uuid()),
        jsonb_build_object('messageId', gen_random_uuid(), 'causationId', gen_random_uuid(),
                           'correlationId', gen_random_uuid()));
