-- Mirrors migrations/sqlite/0003: duplicate detection moved into the intake writer's memory.
drop index events_payload_hash;
