-- Mirrors migrations/sqlite/0020: the duplicate window is reloaded at start by arrival time, then
-- hash, with the id carried in the index (an index-only scan once the table is vacuumed).
drop index events_received;
create index events_window on events (received_at, payload_hash) include (public_id);
