-- Mirrors migrations/sqlite/0020: the duplicate window is reloaded at start by arrival time, then
-- hash, with the id carried in the index (an index-only scan once the table is vacuumed).
drop index events_received;
create index events_window on events (received_at, payload_hash) include (public_id);

-- Other instances' workers are woken by the intake itself (`Store::announce_events`), once per
-- batch at most and outside the batch's transaction: a NOTIFY in a transaction takes one lock for
-- the whole database until that transaction's commit is on disk, so with it every intake commit
-- (of every instance) waited for the one before it to reach the disk.
drop trigger events_stored on events;
drop function hub_notify_events();
