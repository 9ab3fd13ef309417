-- connect-hub schema, part 2: SnapInspect webhook events. The event row IS the queue row: intake
-- inserts it and commits before answering 200; the worker claims it under a lease, and every
-- processing attempt is recorded.

create table events (
    id              integer primary key autoincrement, -- order of arrival; keyset pagination
    public_id       text not null unique,              -- evt_ + 26 base32 chars: our answer, and webhook-id when forwarded
    received_at     integer not null,
    event_type      text,                              -- sType as sent; unknown types are kept
    company_id      integer,                           -- iCompanyID
    inspection_id   integer,                           -- iInspectionID
    review_id       integer,                           -- iInsReviewID
    status_text     text,                              -- sStatus
    payload         text not null,                     -- the body exactly as received
    payload_hash    text not null,                     -- sha256(company, canonical JSON): duplicates within the window are one event
    connection_id   text references connections (id) on delete set null,
    state           text not null,                     -- pending, processing, retrying, done, dead, unmatched
    attempts        integer not null default 0,        -- processing attempts since the last (re)queue
    next_attempt_at integer not null,                  -- when a worker may take it; while processing, when its lease ends
    lease_owner     text,
    duplicates      integer not null default 0,        -- identical deliveries answered 200 but not queued again
    last_error      text,
    inspection      text,                              -- the inspection as read from the API, JSON
    completed_at    integer
);

-- The worker's claim query: due events by state.
create index events_due on events (state, next_attempt_at);
-- Duplicate detection within the window.
create index events_payload_hash on events (payload_hash, received_at);
-- Per-company lists (newest first) and matching unmatched events when their company connects.
create index events_company on events (company_id, id);
-- The admin list filtered by status, newest first, paginated by id (keyset).
create index events_state on events (state, id);

-- Every processing attempt: when, how long, what happened.
create table event_attempts (
    id          integer primary key autoincrement,
    event_id    integer not null references events (id) on delete cascade,
    started_at  integer not null,
    duration_ms integer not null,
    outcome     text not null,                         -- done, retry, dead
    http_status integer,                               -- the status of the call that decided the outcome
    error       text
);

create index event_attempts_event on event_attempts (event_id, id);
