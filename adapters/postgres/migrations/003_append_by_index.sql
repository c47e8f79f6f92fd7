-- es_append as in 001, with every check and write of claims and event ids done one key at a
-- time through the primary key or the unique index. The set-based joins of 001 let the
-- planner pick a hash join over a sequential scan of unique_claims (plans are cached for the
-- committer's long-lived session, made when the table was small), so each append read the
-- whole table and write throughput fell as users were added: 1,900 to 400 registrations/s
-- within 20,000 users. A point lookup has only one sensible plan.

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
    v_id uuid;
BEGIN
    SELECT coalesce(max(stream_version), 0) INTO v_cur
      FROM {{schema}}.events WHERE stream_id = p_stream;
    IF p_expected >= 0 AND v_cur <> p_expected THEN
        RETURN jsonb_build_object('status', 'conflict', 'version', v_cur);
    END IF;

    FOR v_item IN SELECT x FROM jsonb_array_elements(coalesce(p_claims, '[]'::jsonb)) AS x
    LOOP
        SELECT u.owner INTO v_owner FROM {{schema}}.unique_claims u
         WHERE u.scope = v_item->>'scope' AND u.key = v_item->>'key';
        IF FOUND AND v_owner <> p_stream THEN
            RETURN jsonb_build_object('status', 'duplicate', 'scope', v_item->>'scope',
                                      'key', v_item->>'key');
        END IF;
    END LOOP;

    FOR v_item IN SELECT x FROM jsonb_array_elements(coalesce(p_events, '[]'::jsonb)) AS x
    LOOP
        v_id := (v_item->>'event_id')::uuid;
        IF EXISTS (SELECT 1 FROM {{schema}}.events ev WHERE ev.event_id = v_id) THEN
            RETURN jsonb_build_object('status', 'duplicate_event', 'event_id', v_id);
        END IF;
    END LOOP;

    FOR v_item IN SELECT x FROM jsonb_array_elements(coalesce(p_releases, '[]'::jsonb)) AS x
    LOOP
        DELETE FROM {{schema}}.unique_claims u
         WHERE u.scope = v_item->>'scope' AND u.key = v_item->>'key' AND u.owner = p_stream;
    END LOOP;

    FOR v_item IN SELECT x FROM jsonb_array_elements(coalesce(p_claims, '[]'::jsonb)) AS x
    LOOP
        INSERT INTO {{schema}}.unique_claims (scope, key, owner)
        VALUES (v_item->>'scope', v_item->>'key', p_stream)
        ON CONFLICT (scope, key) DO NOTHING;
    END LOOP;

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
