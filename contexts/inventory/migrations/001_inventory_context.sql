-- The inventory context keeps its state in the event store's tables (events, checkpoints);
-- this migration only documents the schema it owns.
COMMENT ON SCHEMA inventory_ctx IS 'inventory bounded context: products, stock, reservations';
