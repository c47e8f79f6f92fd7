-- The order context keeps its state in the event store's tables (events, checkpoints, the
-- saga's process state and deadlines); this migration only documents the schema it owns.
COMMENT ON SCHEMA order_ctx IS 'order bounded context: orders and the placement saga';
