-- Endpoints scale (issue 18). Each instance's delivery worker keeps the endpoints' URLs and
-- signing secrets in memory and reads them again only when endpoints change, never on a timer:
-- tell every instance when one is added, removed, or gets a new URL, state or secret (see
-- src/startup/notify.rs). The worker's own writes of an endpoint's health do not count; its
-- automatic disable does (it changes `state`).
create function hub_notify_endpoint() returns trigger language plpgsql as $$
begin
    perform pg_notify('hub_forget', 'ep:' || coalesce(new.id, old.id));
    return null;
end $$;
create trigger endpoints_added after insert on endpoints for each row execute function hub_notify_endpoint();
create trigger endpoints_changed after update on endpoints for each row
    when (old.url is distinct from new.url or old.state is distinct from new.state
          or old.secret is distinct from new.secret or old.previous_secret is distinct from new.previous_secret
          or old.previous_until is distinct from new.previous_until)
    execute function hub_notify_endpoint();
create trigger endpoints_removed after delete on endpoints for each row execute function hub_notify_endpoint();
