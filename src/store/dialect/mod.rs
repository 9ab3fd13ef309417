//! What differs between the two stores, in one place: opening each backend's connections, write
//! transactions, key locks, the workers' claims and batch writes, checkpoints and backups.

pub(super) mod postgres;
pub(super) mod sqlite;

use anyhow::bail;
use sqlx::{any::AnyPoolOptions, AnyPool};

/// Which database a `DATABASE_URL` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Read the backend off a `DATABASE_URL`, refusing anything else with a clear message.
    pub fn of_url(database_url: &str) -> anyhow::Result<Self> {
        if database_url.starts_with("postgres:") || database_url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else if database_url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else {
            bail!("DATABASE_URL must start with sqlite:// (e.g. sqlite://data/connect-hub.db) or postgres:// (e.g. postgres://hub@127.0.0.1/hub)")
        }
    }

    /// What a write transaction begins with. SQLite: `BEGIN IMMEDIATE` takes the write lock up
    /// front, so a transaction that reads before it writes cannot fail with a stale snapshot
    /// (SQLITE_BUSY) when another connection commits in between; the busy timeout makes it wait
    /// instead. PostgreSQL has row locks and no such upgrade, so a plain `begin`.
    pub(super) fn begin_write(self) -> &'static str {
        match self {
            Backend::Sqlite => "begin immediate",
            Backend::Postgres => "begin",
        }
    }

    /// Serialise write transactions on one key until they end. SQLite needs nothing: `begin
    /// immediate` already lets one writer in at a time. PostgreSQL's read committed does not, so a
    /// transaction that reads a row to decide what to write (the sign-in throttle) first takes a
    /// transaction-scoped advisory lock on the key (a row lock cannot cover a row not yet there).
    pub(super) fn key_lock_sql(self) -> Option<&'static str> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres => Some("select 1 from pg_advisory_xact_lock($1)"),
        }
    }

    /// The worker's claim: due events, oldest first, under a lease for owner `$1` and claim id `$5`
    /// until `$2`. SQLite has one writer, so a plain `update … where id in (select …)` is atomic.
    /// PostgreSQL runs many instances: `for update skip locked` lets each claim rows no other is
    /// claiming at that moment instead of queueing behind them (and the partial `events_claim`
    /// index keeps the scan to the rows it returns).
    pub(super) fn claim_events_sql(self) -> &'static str {
        match self {
            Backend::Sqlite => CLAIM_EVENTS_SQLITE,
            Backend::Postgres => CLAIM_EVENTS_POSTGRES,
        }
    }

    /// The health checker's claim: checks due at `$1`, oldest first, at most `$3`, their next check
    /// moved to `$2` (the lease) in the same statement. SQLite's one writer makes the plain form
    /// atomic; on PostgreSQL `for update skip locked` lets instances claim disjoint checks.
    pub(super) fn claim_checks_sql(self) -> &'static str {
        match self {
            Backend::Sqlite => CLAIM_CHECKS_SQLITE,
            Backend::Postgres => CLAIM_CHECKS_POSTGRES,
        }
    }

    /// The count of changes to endpoints, which the delivery worker reads before it sends to
    /// know whether its copy of them still holds. SQLite: a counter its triggers bump (another
    /// process may have changed them, the command line). PostgreSQL needs none: its triggers
    /// NOTIFY every instance (see `startup::notify`).
    pub(super) fn endpoint_changes_sql(self) -> Option<&'static str> {
        match self {
            Backend::Sqlite => Some("select version from endpoint_changes where id = 1"),
            Backend::Postgres => None,
        }
    }

    /// The delivery worker's claim, for every enabled endpoint at once (one statement, whatever
    /// their number): owner `$1`, claim id `$2`, lease end `$3`, now `$4`, at most `$5` in all, at
    /// most `$6` per endpoint except those `$7` names (a JSON array of `[endpoint, room]`), taken
    /// in turns (each endpoint's oldest, then each one's second, …) starting at endpoint id `$8`.
    /// Each endpoint's due deliveries are read from its own index range, so an endpoint with
    /// nothing due costs one index probe, and a disabled one (whose deliveries wait) none.
    /// SQLite has one writer and no `lateral`: a recursive walk, one step per delivery, that
    /// stops at `$5`. PostgreSQL: a `lateral` read per endpoint, skipping rows another instance
    /// is claiming (as above).
    pub(super) fn claim_deliveries_sql(self) -> &'static str {
        match self {
            Backend::Sqlite => CLAIM_DELIVERIES_SQLITE,
            Backend::Postgres => CLAIM_DELIVERIES_POSTGRES,
        }
    }
}

/// SQLite's scan of due events: one ordered walk of the `(state, next_attempt_at)` index per
/// claimable state, merged, so a claim reads about `3 x $4` index entries however many events are
/// queued (one `state in (…)` scan would sort every due event first).
macro_rules! sqlite_claim_scan {
    () => {
        "select id from (\
         select id, next_attempt_at from (select id, next_attempt_at from events where state = 'pending' \
         and next_attempt_at <= $3 order by next_attempt_at, id limit $4) \
         union all select id, next_attempt_at from (select id, next_attempt_at from events where state = 'retrying' \
         and next_attempt_at <= $3 order by next_attempt_at, id limit $4) \
         union all select id, next_attempt_at from (select id, next_attempt_at from events where state = 'processing' \
         and next_attempt_at <= $3 order by next_attempt_at, id limit $4)) \
         order by next_attempt_at, id limit $4"
    };
}

/// The scan alone (the claim benchmark prints its plan).
pub(super) const CLAIM_SCAN_SQLITE: &str = sqlite_claim_scan!();

const CLAIM_EVENTS_SQLITE: &str = concat!(
    "update events set state = 'processing', lease_owner = $1, claim_id = $5, next_attempt_at = $2, \
     attempts = attempts + 1 where id in (",
    sqlite_claim_scan!(),
    ") returning id, public_id, received_at, event_type, company_id, inspection_id, connection_id, payload, attempts"
);

const CLAIM_EVENTS_POSTGRES: &str =
    "with due as (select id from events where state in ('pending', 'retrying', 'processing') \
    and next_attempt_at <= $3 order by next_attempt_at, id limit $4 for update skip locked) \
    update events set state = 'processing', lease_owner = $1, claim_id = $5, next_attempt_at = $2, \
    attempts = events.attempts + 1 from due where events.id = due.id \
    returning events.id, events.public_id, events.received_at, events.event_type, events.company_id, \
    events.inspection_id, events.connection_id, events.payload, events.attempts";

const CLAIM_DELIVERIES_SQLITE: &str = "with recursive \
    held(ep, room) as materialized (select json_extract(value, '$[0]'), json_extract(value, '$[1]') \
    from json_each($7)), \
    asks(ep, room, turn) as (select e.id, coalesce(h.room, $6), \
    case when e.id >= $8 then '0' || e.id else '1' || e.id end \
    from endpoints e left join held h on h.ep = e.id where e.state = 'enabled'), \
    walk(ep, room, turn, k, due, id) as ( \
    select a.ep, a.room, a.turn, 1, d.next_attempt_at, d.id from asks a join deliveries d on d.id = \
    (select x.id from deliveries x where x.endpoint_id = a.ep and x.next_attempt_at is not null \
    and x.next_attempt_at <= $4 order by x.next_attempt_at, x.id limit 1) where a.room > 0 \
    union all \
    select w.ep, w.room, w.turn, w.k + 1, d.next_attempt_at, d.id from walk w join deliveries d on d.id = \
    (select x.id from deliveries x where x.endpoint_id = w.ep and x.next_attempt_at is not null \
    and x.next_attempt_at <= $4 and (x.next_attempt_at, x.id) > (w.due, w.id) \
    order by x.next_attempt_at, x.id limit 1) where w.k < w.room \
    order by 4, 3 limit $5) \
    update deliveries set state = 'processing', lease_owner = $1, claim_id = $2, next_attempt_at = $3, \
    attempts = attempts + 1 where id in (select id from walk) \
    returning id, event_id, endpoint_id, attempts";

const CLAIM_DELIVERIES_POSTGRES: &str = "with held as (select h ->> 0 as ep, (h ->> 1)::bigint as room \
    from json_array_elements($7::json) as h), \
    asks as (select e.id as ep, coalesce(h.room, $6) as room, \
    case when e.id >= $8 then '0' || e.id else '1' || e.id end as turn \
    from endpoints e left join held h on h.ep = e.id where e.state = 'enabled'), \
    due as (select d.id, a.turn, row_number() over (partition by a.ep order by d.next_attempt_at, d.id) as k \
    from asks a cross join lateral (select x.id, x.next_attempt_at from deliveries x \
    where x.endpoint_id = a.ep and x.next_attempt_at is not null and x.next_attempt_at <= $4 \
    order by x.next_attempt_at, x.id limit greatest(a.room, 0) for update skip locked) d), \
    picked as (select id from due order by k, turn limit $5) \
    update deliveries set state = 'processing', lease_owner = $1, claim_id = $2, next_attempt_at = $3, \
    attempts = deliveries.attempts + 1 from picked where deliveries.id = picked.id \
    returning deliveries.id, deliveries.event_id, deliveries.endpoint_id, deliveries.attempts";

/// How the intake writer reaches its own connection (see `EventWriter`).
#[derive(Clone, Debug)]
pub(super) enum WriterOptions {
    Sqlite(sqlx::sqlite::SqliteConnectOptions),
    Postgres(sqlx::postgres::PgConnectOptions),
}

/// How long a PostgreSQL pool waits for a connection (see `connect`).
pub(super) const PG_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Open the shared pool for `database_url`. Everything but the intake writer goes through it, so
/// the store's queries are written once, against sqlx's `Any` driver.
pub(super) async fn connect(
    database_url: &str,
    max_pages: Option<u64>,
) -> anyhow::Result<(Backend, AnyPool, WriterOptions)> {
    sqlx::any::install_default_drivers();
    let backend = Backend::of_url(database_url)?;
    let options = AnyPoolOptions::new().max_connections(8).min_connections(1);
    Ok(match backend {
        Backend::Sqlite => {
            let (pool, writer) = sqlite::connect(database_url, max_pages, options).await?;
            (backend, pool, WriterOptions::Sqlite(writer))
        }
        Backend::Postgres => {
            if max_pages.is_some() {
                tracing::warn!("SQLITE_MAX_PAGE_COUNT is for SQLite; PostgreSQL ignores it (cap its disk instead)");
            }
            // A pool asked for a connection while the server is down retries until its acquire
            // timeout (30 s by default, with waits growing to a fifth of it): 5 s keeps a request
            // from hanging half a minute, and a loop's next try within a second of the server's return.
            // sqlx warns of every acquisition slower than 2 s: while the server comes back that is
            // each waiting query, one line apiece; the timeout itself is reported as an error.
            let options = options.acquire_timeout(PG_ACQUIRE_TIMEOUT).acquire_slow_threshold(PG_ACQUIRE_TIMEOUT);
            let (pool, writer) = postgres::connect(database_url, options).await?;
            (backend, pool, WriterOptions::Postgres(writer))
        }
    })
}

// The checked connections as in `connection_checks::CHECKED`.
const CLAIM_CHECKS_SQLITE: &str = "update connections set next_check_at = $2 where id in (select id from connections \
    where next_check_at <= $1 and ((provider = 'snapinspect' and status = 'active') \
    or (provider <> 'snapinspect' and status in ('active', 'failing'))) order by next_check_at, id limit $3) \
    returning id, provider, check_failures";

const CLAIM_CHECKS_POSTGRES: &str = "with due as (select id from connections \
    where next_check_at <= $1 and ((provider = 'snapinspect' and status = 'active') \
    or (provider <> 'snapinspect' and status in ('active', 'failing'))) order by next_check_at, id limit $3 \
    for update skip locked) update connections set next_check_at = $2 from due where connections.id = due.id \
    returning connections.id, connections.provider, connections.check_failures";

#[cfg(test)]
mod tests {
    use super::Backend;

    #[test]
    fn the_url_scheme_picks_the_store_and_anything_else_is_refused() {
        assert_eq!(Backend::of_url("sqlite://data/hub.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of_url("sqlite::memory:").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of_url("postgres://hub@127.0.0.1/hub").unwrap(), Backend::Postgres);
        assert_eq!(Backend::of_url("postgresql://hub@127.0.0.1/hub").unwrap(), Backend::Postgres);
        for url in ["mysql://hub@127.0.0.1/hub", "data/hub.db", ""] {
            let err = Backend::of_url(url).unwrap_err().to_string();
            assert!(err.contains("sqlite://") && err.contains("postgres://"), "{url}: {err}");
        }
    }

    #[test]
    fn only_sqlite_takes_the_write_lock_up_front() {
        assert_eq!(Backend::Sqlite.begin_write(), "begin immediate");
        assert_eq!(Backend::Postgres.begin_write(), "begin");
    }
}
