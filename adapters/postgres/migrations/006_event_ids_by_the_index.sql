-- es_append as in 005, without looking each new event id up first: the unique index on
-- event_id refuses a duplicate by itself, as it always did for a race. A refused append
-- raises unique_violation on events_event_id_key; the committer then runs its batch's
-- appends one by one, and answers the one that raised with the same conflict on event_id
-- that the lookup gave. The lookup was an index probe and a query per event, for a case that
-- only a client's mistake brings about.

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
    v_item jsonb;
    v_owner text;
    n_claims int := coalesce(jsonb_array_length(p_claims), 0);
    n_events int := coalesce(jsonb_array_length(p_events), 0);
    n_releases int := coalesce(jsonb_array_length(p_releases), 0);
BEGIN
    SELECT coalesce(max(stream_version), 0) INTO v_cur
      FROM {{schema}}.events WHERE stream_id = p_stream;
    IF p_expected >= 0 AND v_cur <> p_expected THEN
        RETURN jsonb_build_object('status', 'conflict', 'version', v_cur);
    END IF;

    FOR i IN 0 .. n_claims - 1 LOOP
        v_item := p_claims->i;
        SELECT u.owner INTO v_owner FROM {{schema}}.unique_claims u
         WHERE u.scope = v_item->>'scope' AND u.key = v_item->>'key';
        IF FOUND AND v_owner <> p_stream THEN
            RETURN jsonb_build_object('status', 'duplicate', 'scope', v_item->>'scope',
                                      'key', v_item->>'key');
        END IF;
    END LOOP;

    FOR i IN 0 .. n_releases - 1 LOOP
        v_item := p_releases->i;
        DELETE FROM {{schema}}.unique_claims u
         WHERE u.scope = v_item->>'scope' AND u.key = v_item->>'key' AND u.owner = p_stream;
    END LOOP;

    FOR i IN 0 .. n_claims - 1 LOOP
        v_item := p_claims->i;
        INSERT INTO {{schema}}.unique_claims (scope, key, owner)
        VALUES (v_item->>'scope', v_item->>'key', p_stream)
        ON CONFLICT (scope, key) DO NOTHING;
    END LOOP;

    v_ver := v_cur;
    FOR i IN 0 .. n_events - 1 LOOP
        v_ev := p_events->i;
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
