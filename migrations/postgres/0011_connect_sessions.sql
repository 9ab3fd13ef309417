-- Mirrors migrations/sqlite/0011: connect sessions, the state that names one, and the end-user columns.
-- Connect sessions (issue 13): the organisation's app asks for a single-use connect link for one of
-- its own end users; the link's token is stored only as its sha256. A session with a
-- `connection_id` is a reconnect link: its completion updates that connection in place.
create table connect_sessions (
    id             text primary key,              -- cs_ + 26 base32 chars
    token_hash     bytea not null unique,
    end_user_id    text not null,
    end_user_email text,
    display_name   text,
    tags           text,                          -- JSON object of string to string
    return_url     text,                          -- checked against CONNECT_RETURN_ORIGINS at creation
    connection_id  text references connections (id) on delete cascade,
    created_by     text not null,                 -- api:<key name>, cli, admin:<email>
    created_at     bigint  not null,
    expires_at     bigint  not null,
    opened_at      bigint                         -- set once, atomically: a link works once
);

create index connect_sessions_expires on connect_sessions (expires_at);

-- The state a session's start issues names the session, so the callback knows whose connect it is.
alter table oauth_states add column session_id text references connect_sessions (id) on delete set null;

-- Which of the organisation's end users a connection belongs to (from its connect session).
alter table connections add column end_user_id text;
alter table connections add column end_user_email text;
alter table connections add column end_user_display_name text;
alter table connections add column tags text;

create index connections_end_user on connections (end_user_id);
