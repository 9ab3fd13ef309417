-- Client-credentials connections (Snapdocs, SmartDocumentor, Signicat, Docplanner, custom) live in
-- the same connections table: their settings below, their current access token in access_token
-- (sealed) with its expiry, and the client secret sealed like every other secret.
alter table connections add column client_id text;
alter table connections add column client_secret blob;            -- encrypted
alter table connections add column scope text;                    -- space-separated, as sent
alter table connections add column audience text;
alter table connections add column domain text;                   -- Docplanner's per-country domain
alter table connections add column environment text;              -- Snapdocs: demo or production
alter table connections add column token_url text;                -- may hold {domain}
alter table connections add column auth_style text;               -- basic, basic-raw or post
alter table connections add column token_expires_at integer;

-- API keys for /api/v1: shown once, stored as sha256 (they carry 256 random bits, so a slow hash
-- adds nothing), revoked rather than deleted so the audit trail keeps its subject.
create table api_keys (
    id           text primary key,                  -- key_ + 26 base32 chars
    name         text not null,
    key_hash     blob not null unique,
    prefix       text not null,                     -- the first characters, to recognise a key
    created_at   integer not null,
    last_used_at integer,
    revoked_at   integer
);
