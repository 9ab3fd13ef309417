-- Claims across instances: an event's claim carries a random claim id, and only the current claim
-- may record its attempt (a worker paused past its lease cannot overwrite the one that took over).
-- SQLite has one instance; it keeps the same column so both stores share one set of queries.
alter table events add column claim_id text;
