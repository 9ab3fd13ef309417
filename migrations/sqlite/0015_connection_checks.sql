-- Connection health checks (issue 19 item 6): each connection that is checked carries when its
-- next check is due. Claiming a check moves `next_check_at` forward (a lease), so on a shared
-- PostgreSQL database one instance checks a connection per round; null until the checker first
-- sees the connection and gives it a random point within the interval (checks spread out).
alter table connections add column next_check_at integer;
-- The last check people see: when, its outcome (ok, refused or failed) and, unless ok, why.
alter table connections add column last_checked_at integer;
alter table connections add column last_check text;
alter table connections add column last_check_error text;
-- Failed checks in a row: the retry after a failed check backs off with it (capped at the interval).
alter table connections add column check_failures integer not null default 0;
create index connections_next_check on connections (next_check_at) where next_check_at is not null;
