-- Mirrors migrations/sqlite/0005: client-credentials settings on connections, and API keys.
alter table connections add column client_id text;
alter table connections add column client_secret bytea;           -- encrypted
alter table connections add column scope text;
alter table connections add column audience text;
alter table connections add column domain text;
alter table connections add column environment text;
alter table connections add column token_url text;
alter table connections add column auth_style text;
alter table connections add column token_expires_at bigint;

create table api_keys (
    id           text primary key,                  -- key_ + 26 base32 chars
    name         text not null,
    key_hash     bytea not null unique,
    prefix       text not null,
    created_at   bigint not null,
    last_used_at bigint,
    revoked_at   bigint
);
