-- Admin accounts for the console. Passwords are Argon2id PHC strings (salted, parameters inside);
-- session_epoch goes up when a password is reset, which ends every session of that admin.
create table admins (
    id            integer primary key autoincrement,
    email         text not null unique,                -- stored lower-case
    password_hash text not null,
    session_epoch integer not null default 0,
    created_at    integer not null,
    updated_at    integer not null,
    last_login_at integer
);

-- The dashboard's "events in the last 24 hours" counts by status over a time range.
create index events_received on events (received_at);
