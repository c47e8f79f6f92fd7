-- A dead letter can be asked to be delivered again to its subscriber (`app dlq redrive`): the
-- process that runs the subscriber sees the request, hands the event to it, and forgets the
-- dead letter when it succeeds (or records the new error and clears the request).
ALTER TABLE {{schema}}.dead_letters
    ADD COLUMN IF NOT EXISTS redrive_requested boolean NOT NULL DEFAULT false;
