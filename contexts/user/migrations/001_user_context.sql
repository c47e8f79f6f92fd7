-- The user context keeps its state in the event store's tables (events, claims,
-- checkpoints); this migration only documents the schema it owns.
COMMENT ON SCHEMA user_ctx IS 'user bounded context: users, their emails and status';
