-- Endpoints scale (issue 18). The delivery worker keeps each endpoint's URL and signing secrets in
-- memory and reads them again only when endpoints change, never on a timer. This counter is how
-- it learns that they did: every change a delivery depends on (an endpoint added or removed, its
-- URL, state or secrets) bumps it, by trigger, so every path counts, the command line in another
-- process included. The worker reads it before each request it sends. (PostgreSQL NOTIFYs.)
create table endpoint_changes (
    id      integer primary key check (id = 1),
    version integer not null
);
insert into endpoint_changes (id, version) values (1, 0);

create trigger endpoints_added after insert on endpoints
begin
    update endpoint_changes set version = version + 1 where id = 1;
end;

-- `update of`: the worker's own writes of an endpoint's health (last success, failure streak) do
-- not count; its automatic disable does (it sets `state`).
create trigger endpoints_changed after update of url, state, secret, previous_secret, previous_until on endpoints
begin
    update endpoint_changes set version = version + 1 where id = 1;
end;

create trigger endpoints_removed after delete on endpoints
begin
    update endpoint_changes set version = version + 1 where id = 1;
end;
