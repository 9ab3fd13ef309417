-- Duplicate detection moved into the intake writer's memory (warmed from this table at start, see
-- src/queue/dedupe.rs). The payload_hash index made every insert a random B-tree write and was the
-- largest cost of durable intake; payload_hash stays, unindexed, for the warm-up scan.
drop index events_payload_hash;
