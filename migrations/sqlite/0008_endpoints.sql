-- Delivery to endpoints: every receiving application is an endpoint with its own URL, filter,
-- signing secret and state; each enriched event fans out to one delivery per matching endpoint,
-- and each delivery has its own retry schedule, lease and attempts. Disabled endpoints still get
-- their deliveries (they wait), so nothing is dropped while a receiver is switched off.

create table endpoints (
    id              text primary key,                  -- ep_ + 26 base32 chars, or ep_forward for FORWARD_URL
    url             text not null,                     -- http(s), no credentials in it
    description     text not null default '',
    secret          blob not null,                     -- sealed whsec_ secret (AAD endpoints/secret/id)
    previous_secret blob,                              -- sealed; also signs until previous_until (rotation overlap)
    previous_until  integer,
    state           text not null,                     -- enabled, disabled
    disabled_reason text,
    disabled_at     integer,
    failing_since   integer,                           -- first failure since the last success; null when healthy
    last_success_at integer,
    last_failure_at integer,
    last_status     integer,                           -- HTTP status of the last attempt, if any
    created_at      integer not null,
    updated_at      integer not null
);

-- The event types an endpoint wants; none means every type. A table, not a list in a column, so
-- the fan-out is one portable join.
create table endpoint_event_types (
    endpoint_id text not null references endpoints (id) on delete cascade,
    event_type  text not null,
    primary key (endpoint_id, event_type)
);

create table deliveries (
    id              integer primary key autoincrement,
    event_id        integer not null references events (id) on delete cascade,
    endpoint_id     text not null references endpoints (id) on delete cascade,
    state           text not null,                     -- pending, processing, retrying, done, dead
    attempts        integer not null default 0,        -- since the last (re)queue
    next_attempt_at integer,                           -- when due; while processing, the lease end; null when done or dead
    lease_owner     text,
    claim_id        text,                              -- random per claim: only the current claim may record
    last_error      text,
    last_status     integer,
    created_at      integer not null,
    completed_at    integer
);

-- One delivery per event and endpoint (replay re-queues it rather than adding another).
create unique index deliveries_event_endpoint on deliveries (event_id, endpoint_id);
-- The claim: an endpoint's due deliveries, oldest first. Partial, so finished deliveries leave it.
create index deliveries_due on deliveries (endpoint_id, next_attempt_at, id) where next_attempt_at is not null;
-- Queue depth by state.
create index deliveries_state on deliveries (state);

create table delivery_attempts (
    id               integer primary key autoincrement,
    delivery_id      integer not null references deliveries (id) on delete cascade,
    started_at       integer not null,
    duration_ms      integer not null,
    outcome          text not null,                    -- done, retry, dead
    http_status      integer,
    error            text,
    response_excerpt text                              -- the first 1 KiB of the response body
);

create index delivery_attempts_delivery on delivery_attempts (delivery_id, id);
