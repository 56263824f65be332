-- Published outbox rows are deleted since this version (OutboxDeleteSent);
-- before, they were marked sent and kept for good. Remove those.
DELETE FROM outbox WHERE sent_at IS NOT NULL;
