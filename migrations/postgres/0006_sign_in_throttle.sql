-- Mirrors migrations/sqlite/0006 (on main): failed sign-ins counted in the database, so every
-- process and every instance shares one count. Keys are SHA-256 hashes; rows are pruned once expired.
create table sign_in_throttle (
    key_hash     bytea primary key,
    account_hash bytea,                                 -- sha256 of the email, on pair rows only
    address_hash bytea,                                 -- the address row's key_hash, on pair rows only
    failures     bigint not null,
    window_start bigint not null,
    locked_until bigint not null,                       -- 0 when not locked
    lockouts     bigint not null,
    expires_at   bigint not null
);

create index sign_in_throttle_account on sign_in_throttle (account_hash);
create index sign_in_throttle_expires on sign_in_throttle (expires_at);
