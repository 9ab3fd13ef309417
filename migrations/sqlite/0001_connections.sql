-- connect-hub schema, part 1: connections, the connect flow's states, sessions and the audit log.
-- Times are integer unix milliseconds; every secret column holds an encrypted envelope
-- (see src/crypto.rs), never plaintext.

-- One row per linked account. SnapInspect connections are unique per company once identified;
-- reconnecting a company replaces its tokens and keeps the row (and so its id and history).
create table connections (
    id                   text primary key,            -- con_ + 26 base32 chars
    provider             text not null,               -- snapinspect, snapdocs, ...
    name                 text not null,               -- what admins see
    company_id           integer,                     -- SnapInspect iCompanyID; null while unidentified
    status               text not null,               -- active, needs_reconnect, unidentified, failing, disconnected
    access_token         blob,                        -- encrypted
    refresh_token        blob,                        -- encrypted
    token_fingerprint    text,                        -- first hex digits of sha256(access token): tells tokens apart, reveals nothing
    token_version        integer not null default 0,  -- +1 on every stored pair, so callers can tell "newer than the one that failed"
    token_obtained_at    integer,
    user_info            text,                        -- raw JSON of SnapInspect's /user, kept as received
    created_at           integer not null,
    updated_at           integer not null,
    connected_at         integer not null,
    last_exchange_at     integer,
    last_used_at         integer,
    last_error           text,
    last_error_at        integer,
    failure_count        integer not null default 0,  -- consecutive failed exchanges, for backoff
    retry_after          integer,                     -- no provider call before this time (backoff)
    exchange_lease_until integer,                     -- one exchange at a time per connection, across processes
    exchange_lease_owner text
);

create unique index connections_one_per_company on connections (provider, company_id)
    where company_id is not null;
create index connections_status on connections (status);

-- The connect flow's `state` values, stored only as sha256 hashes, bound to the browser that
-- started the flow (the hash of a random id kept in that browser's session).
create table oauth_states (
    state_hash   blob primary key,
    browser_hash blob not null,
    created_at   integer not null,
    expires_at   integer not null,
    used_at      integer                               -- set once, atomically: a state works once
);

create index oauth_states_expires on oauth_states (expires_at);

-- Server-side sessions (actix-session's store). The cookie holds a random key; we keep its hash,
-- so a copy of the database cannot be used to take over a session.
create table sessions (
    key_hash   blob primary key,
    state      text not null,                          -- JSON object of session values
    expires_at integer not null
);

create index sessions_expires on sessions (expires_at);

-- Who did what, when: every admin action and every connect, disconnect, exchange and failure.
create table audit_log (
    id            integer primary key autoincrement,
    at            integer not null,
    actor         text not null,                       -- system, end-user, cli, admin:<email>
    action        text not null,                       -- connect, reconnect, exchange, exchange_failed, ...
    connection_id text references connections (id) on delete set null,
    detail        text
);

create index audit_log_connection on audit_log (connection_id, id);
