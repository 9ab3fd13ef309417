-- The duplicate window is reloaded at start from this index alone (and a webhook that arrives while
-- it loads is checked against it), without reading the rows: arrival time, then the hash and the
-- id it covers. It still serves the dashboard's counts by time range. Appended to in order of
-- arrival, as the index it replaces.
drop index events_received;
create index events_window on events (received_at, payload_hash, public_id);
