-- Tokens that arrived in the connect callback's URL may sit in browser history and proxy logs, and
-- SnapInspect keeps them alive until they are exchanged: a connect marks them pending, and they are
-- exchanged in the background (retried with the usual backoff) until a first exchange clears it.
alter table connections add column callback_tokens_pending boolean not null default false;

-- The background sweep looks only at connections whose callback tokens are still pending.
create index connections_callback_pending on connections (callback_tokens_pending) where callback_tokens_pending;

-- API keys may be limited to some connections (a comma-separated list of connection ids; null:
-- every connection) and to reading (no forced refresh). Keys made before this keep full access.
alter table api_keys add column connection_scope text;
alter table api_keys add column read_only boolean not null default false;
