-- The event store of one context schema: the log, snapshots, subscriber checkpoints,
-- dead letters, idempotency keys, unique claims and process (saga) state. {{schema}} is the
-- context schema.

CREATE TABLE IF NOT EXISTS {{schema}}.events (
    global_position bigserial PRIMARY KEY,
    stream_id text NOT NULL,
    stream_version bigint NOT NULL,
    event_id uuid NOT NULL UNIQUE,
    event_type text NOT NULL,
    schema_version int NOT NULL,
    data jsonb NOT NULL,
    metadata jsonb NOT NULL,
    transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream_id, stream_version)
);

CREATE TABLE IF NOT EXISTS {{schema}}.snapshots (
    stream_id text PRIMARY KEY,
    version bigint NOT NULL,
    schema_version int NOT NULL,
    state jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS {{schema}}.checkpoints (
    subscriber text PRIMARY KEY,
    position bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS {{schema}}.dead_letters (
    id bigserial PRIMARY KEY,
    subscriber text NOT NULL,
    position bigint NOT NULL,
    event_id uuid,
    error text NOT NULL,
    attempts int NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (subscriber, position)
);

CREATE TABLE IF NOT EXISTS {{schema}}.idempotency_keys (
    key text PRIMARY KEY,
    request_hash text NOT NULL,
    response_status int,
    response_body text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS {{schema}}.unique_claims (
    scope text NOT NULL,
    key text NOT NULL,
    owner text NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

-- Long-running processes (sagas): their state and deadline, written in the same transaction
-- as the events they react to or cause.
CREATE TABLE IF NOT EXISTS {{schema}}.processes (
    name text NOT NULL,
    id text NOT NULL,
    state jsonb NOT NULL,
    deadline timestamptz,
    done boolean NOT NULL DEFAULT false,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, id)
);
CREATE INDEX IF NOT EXISTS processes_due ON {{schema}}.processes (name, deadline)
    WHERE NOT done;

-- Appends to one stream with an expected version, claiming and releasing unique keys in the
-- same transaction, and saving the state of the process (saga) it belongs to. Expected outcomes (version conflict, key taken, event id reused) are
-- returned, never raised, so one failing command does not abort the batch it is part of.
-- Every check runs before the first write: a non-ok answer leaves nothing behind. Writers
-- of a context are serialized by an advisory lock taken by the caller, which makes the
-- read-then-write checks race-free.
CREATE OR REPLACE FUNCTION {{schema}}.es_append(p_stream text, p_expected bigint,
                                               p_events jsonb, p_claims jsonb,
                                               p_releases jsonb,
                                               p_process jsonb DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_cur bigint;
    v_ver bigint;
    v_pos bigint;
    v_first bigint;
    v_last bigint;
    v_ev jsonb;
    v_claim record;
    v_dup uuid;
BEGIN
    SELECT coalesce(max(stream_version), 0) INTO v_cur
      FROM {{schema}}.events WHERE stream_id = p_stream;
    IF p_expected >= 0 AND v_cur <> p_expected THEN
        RETURN jsonb_build_object('status', 'conflict', 'version', v_cur);
    END IF;

    SELECT c.scope, c.key, u.owner INTO v_claim
      FROM jsonb_to_recordset(coalesce(p_claims, '[]'::jsonb)) AS c(scope text, key text)
      JOIN {{schema}}.unique_claims u ON u.scope = c.scope AND u.key = c.key
     WHERE u.owner <> p_stream
     LIMIT 1;
    IF FOUND THEN
        RETURN jsonb_build_object('status', 'duplicate', 'scope', v_claim.scope,
                                  'key', v_claim.key);
    END IF;

    SELECT e.id INTO v_dup
      FROM (SELECT (x->>'event_id')::uuid AS id
              FROM jsonb_array_elements(coalesce(p_events, '[]'::jsonb)) AS x) e
     WHERE EXISTS (SELECT 1 FROM {{schema}}.events ev WHERE ev.event_id = e.id)
     LIMIT 1;
    IF FOUND THEN
        RETURN jsonb_build_object('status', 'duplicate_event', 'event_id', v_dup);
    END IF;

    DELETE FROM {{schema}}.unique_claims u
     USING jsonb_to_recordset(coalesce(p_releases, '[]'::jsonb)) AS r(scope text, key text)
     WHERE u.scope = r.scope AND u.key = r.key AND u.owner = p_stream;

    INSERT INTO {{schema}}.unique_claims (scope, key, owner)
    SELECT c.scope, c.key, p_stream
      FROM jsonb_to_recordset(coalesce(p_claims, '[]'::jsonb)) AS c(scope text, key text)
    ON CONFLICT (scope, key) DO NOTHING;

    v_ver := v_cur;
    FOR v_ev IN
        SELECT x.value FROM jsonb_array_elements(coalesce(p_events, '[]'::jsonb))
                       WITH ORDINALITY AS x(value, n) ORDER BY x.n
    LOOP
        v_ver := v_ver + 1;
        INSERT INTO {{schema}}.events (stream_id, stream_version, event_id, event_type,
                                       schema_version, data, metadata)
        VALUES (p_stream, v_ver, (v_ev->>'event_id')::uuid, v_ev->>'type',
                (v_ev->>'schema_version')::int, v_ev->'data', v_ev->'metadata')
        RETURNING global_position INTO v_pos;
        v_first := coalesce(v_first, v_pos);
        v_last := v_pos;
    END LOOP;

    IF p_process IS NOT NULL THEN
        INSERT INTO {{schema}}.processes AS p (name, id, state, deadline, done)
        VALUES (p_process->>'name', p_process->>'id', p_process->'state',
                CASE WHEN (p_process->>'deadline_ms')::bigint > 0
                     THEN to_timestamp((p_process->>'deadline_ms')::bigint / 1000.0) END,
                (p_process->>'done')::boolean)
        ON CONFLICT (name, id) DO UPDATE
           SET state = excluded.state, deadline = excluded.deadline, done = excluded.done,
               updated_at = now();
    END IF;

    RETURN jsonb_build_object('status', 'ok', 'version', v_ver,
                              'first_position', coalesce(v_first, 0),
                              'last_position', coalesce(v_last, 0));
END
$fn$;
