-- Failed sign-ins, counted in the database so every process (and, later, every instance) shares
-- one count, and so `connect-hub admin create` can clear an account's throttle from outside.
-- Keys are SHA-256 hashes of bounded strings: `pair:<email>|<address>` (one account from one
-- address) and `address:<address>` (every account from one address). Rows are pruned once
-- expired, so anonymous failures cannot grow this table without bound.
create table sign_in_throttle (
    key_hash     blob primary key,
    account_hash blob,                                  -- sha256 of the email, on pair rows only
    address_hash blob,                                  -- the address row's key_hash, on pair rows only
    failures     integer not null,                      -- attempts counted in the current window
    window_start integer not null,
    locked_until integer not null,                      -- 0 when not locked
    lockouts     integer not null,                      -- locks so far: each one lasts twice as long
    expires_at   integer not null
);

create index sign_in_throttle_account on sign_in_throttle (account_hash);
create index sign_in_throttle_expires on sign_in_throttle (expires_at);
