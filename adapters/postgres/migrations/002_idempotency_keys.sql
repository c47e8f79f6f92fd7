-- Idempotency keys, per caller: the first answer to a request, recorded in the transaction
-- that stored its events. 001 created an unused placeholder table; it is replaced.

DROP TABLE IF EXISTS {{schema}}.idempotency_keys;

CREATE TABLE {{schema}}.idempotency_keys (
    actor text NOT NULL,
    key text NOT NULL,
    command text NOT NULL,
    request_hash text NOT NULL,
    response text NOT NULL, -- text, not jsonb: a retry gets the very bytes of the first reply
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (actor, key)
);
CREATE INDEX idempotency_keys_created ON {{schema}}.idempotency_keys (created_at);

-- Records p_idem ({"actor","key","command","request_hash","response","ttl_seconds"}, where
-- response is a JSON string holding the reply's text) unless a live record of (actor, key)
-- exists; an expired one is replaced. Returns whether it recorded.
CREATE OR REPLACE FUNCTION {{schema}}.es_idempotency_record(p_idem jsonb)
RETURNS boolean
LANGUAGE plpgsql
AS $fn$
BEGIN
    INSERT INTO {{schema}}.idempotency_keys AS k (actor, key, command, request_hash, response)
    VALUES (p_idem->>'actor', p_idem->>'key', p_idem->>'command', p_idem->>'request_hash',
            p_idem->>'response')
    ON CONFLICT (actor, key) DO UPDATE
       SET command = excluded.command, request_hash = excluded.request_hash,
           response = excluded.response, created_at = now()
     WHERE k.created_at < now() - make_interval(secs => (p_idem->>'ttl_seconds')::int);
    RETURN FOUND;
END
$fn$;

-- es_append with an idempotency record: the key is recorded first (a live key answers
-- 'idempotent' having written nothing), and taken back when the append itself does not
-- succeed, so it exists exactly when the events do, in the same transaction.
CREATE OR REPLACE FUNCTION {{schema}}.es_append_keyed(p_idem jsonb, p_stream text,
                                                     p_expected bigint, p_events jsonb,
                                                     p_claims jsonb, p_releases jsonb,
                                                     p_process jsonb DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_out jsonb;
BEGIN
    IF NOT {{schema}}.es_idempotency_record(p_idem) THEN
        RETURN jsonb_build_object('status', 'idempotent');
    END IF;
    v_out := {{schema}}.es_append(p_stream, p_expected, p_events, p_claims, p_releases,
                                  p_process);
    IF v_out->>'status' <> 'ok' THEN
        DELETE FROM {{schema}}.idempotency_keys
         WHERE actor = p_idem->>'actor' AND key = p_idem->>'key';
    END IF;
    RETURN v_out;
END
$fn$;
