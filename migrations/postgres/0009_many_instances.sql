-- Many instances on one database (issue 11).

-- Claims across instances: an event's claim carries a random claim id, and only the current claim
-- may record its attempt (a worker paused past its lease cannot overwrite the one that took over).
alter table events add column claim_id text;

-- The claim reads this index in order and stops after its limit, however many rows are queued or
-- done: partial, so finished events leave it. Matches the claim's predicate exactly.
create index events_claim on events (next_attempt_at, id) where state in ('pending', 'retrying', 'processing');

-- The duplicate window, shared by every instance: one row per payload hash (which covers the
-- company) with the event it belongs to. Intake inserts-or-returns here under the unique key, so
-- the same webhook sent to two instances at once gets one event id. A row older than the window is
-- replaced by the next event with its hash; older rows are purged by `received_at`.
create table event_dedupe (
    payload_hash text primary key,
    public_id    text not null,
    received_at  bigint not null
);
create index event_dedupe_received on event_dedupe (received_at);

-- Wake every instance's worker when events are stored (polling stays as the backstop). Once per
-- statement: PostgreSQL folds identical notifications of one transaction into one, sent on commit.
create function hub_notify_events() returns trigger language plpgsql as $$
begin
    perform pg_notify('hub_events', '');
    return null;
end $$;
create trigger events_stored after insert on events for each statement execute function hub_notify_events();

-- Tell every instance to drop what its memory holds for a connection whose token or status
-- changed, or which went, and for an API key that was revoked or deleted (see src/notify.rs).
create function hub_notify_connection() returns trigger language plpgsql as $$
begin
    perform pg_notify('hub_forget', 'con:' || coalesce(new.id, old.id));
    return null;
end $$;
create trigger connections_changed after update on connections for each row
    when (old.access_token is distinct from new.access_token or old.refresh_token is distinct from new.refresh_token
          or old.status is distinct from new.status or old.company_id is distinct from new.company_id)
    execute function hub_notify_connection();
create trigger connections_deleted after delete on connections for each row execute function hub_notify_connection();

create function hub_notify_api_key() returns trigger language plpgsql as $$
begin
    perform pg_notify('hub_forget', 'key:' || coalesce(new.id, old.id));
    return null;
end $$;
create trigger api_keys_changed after update on api_keys for each row
    when (old.revoked_at is distinct from new.revoked_at) execute function hub_notify_api_key();
create trigger api_keys_deleted after delete on api_keys for each row execute function hub_notify_api_key();
