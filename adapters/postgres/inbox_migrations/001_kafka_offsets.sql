-- The inbox of a context mirrored from Kafka ({{schema}} is <context>_inbox; the event store's
-- own tables come first, so its log reads like any context's): where each consumer group
-- stands in each partition of the topic. The offset moves in the transaction that stores
-- the events it covers, so a crash can neither lose an event nor store one twice.
CREATE TABLE IF NOT EXISTS {{schema}}.kafka_offsets (
    group_id text NOT NULL,
    topic text NOT NULL,
    partition int NOT NULL,
    next_offset bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);
