-- Mirrors migrations/sqlite/0007 (on main): callback tokens pending their first exchange, and API
-- keys limited to some connections or to reading. Real booleans here as there; read them as
-- `case when col then 1 else 0 end` (SQLite's `boolean` has no type in sqlx's Any driver).
alter table connections add column callback_tokens_pending boolean not null default false;

create index connections_callback_pending on connections (callback_tokens_pending) where callback_tokens_pending;

alter table api_keys add column connection_scope text;
alter table api_keys add column read_only boolean not null default false;
