//! PostgreSQL's side: the pool with `synchronous_commit` on, the intake's batch as array-bound
//! statements deciding duplicates across instances, delivery results as one JSON-bound statement.

use std::{
    collections::{HashMap, HashSet},
    str::FromStr,
};

use anyhow::Context;
use sqlx::{
    any::AnyPoolOptions,
    postgres::{PgConnectOptions, PgConnection},
    AnyPool, ConnectOptions, Executor,
};

use crate::{
    domain::{CompanyId, EventId},
    store::{
        rows::{outcome_of, DeliveryResult, NewEvent},
        Tx,
    },
};

/// Open the pool; returns it and the options the intake writer opens its own connection with.
pub(crate) async fn connect(database_url: &str, pool: AnyPoolOptions) -> anyhow::Result<(AnyPool, PgConnectOptions)> {
    let options = PgConnectOptions::from_str(database_url)
        .context("DATABASE_URL is not a valid postgres:// URL")?
        // Durability first, whatever the server's default: a commit returns once it is on disk.
        .options([("synchronous_commit", "on")]);
    let pool = pool
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute("set synchronous_commit = on").await?;
                Ok(())
            })
        })
        .connect(database_url)
        .await
        .context("cannot connect to the PostgreSQL database in DATABASE_URL")?;
    Ok((pool, options))
}

/// The intake writer's own connection. Its statements find every row they touch by a unique
/// index; with sequential scans off, a plan made while `events` looked small (a new database, or
/// before autovacuum's first `analyze`) cannot scan the whole table for each batch's counts, a
/// cost that grows with the table.
pub(crate) async fn writer(options: &PgConnectOptions) -> anyhow::Result<PgConnection> {
    let options = options.clone().options([("enable_seqscan", "off")]);
    options.connect().await.context("opening the intake writer's connection")
}

/// The whole batch in one statement, so one round trip and one commit (an implicit transaction):
///
/// - `t`: the batch, each column bound as one array and `unnest`ed, so the statement is the same (and
///   prepared once) whatever the batch size; `dups` is how many duplicates of each event arrived
///   with it.
/// - `d`: the shared duplicate window. Each event's hash is inserted, or taken over if the row there
///   is older than the window (`$12` ms); a row within the window is kept and returned as it is, so
///   every event gets the id that owns its hash. On a conflict with a transaction still open
///   PostgreSQL waits for it, so two instances cannot both win. Sorted by hash, so two batches lock
///   their hashes in the same order (no deadlock between instances).
/// - `ins`: the events that own their hash, each matched to its company's SnapInspect connection
///   on the way in (a connect committed before the statement is seen; one committed after it
///   matches these events itself: `match_unmatched`), so no row is written twice.
/// - `cnt`: duplicates of events stored by earlier batches (`$13`, `$14`).
///
/// Returns the events another instance holds the hash of, with the holder's id.
const INTAKE_SQL: &str = "with t as (select * from unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], \
    $5::bigint[], $6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[]) \
    as t(id, at, kind, company, inspection, review, status, payload, hash, state, dups)), \
    d as (insert into event_dedupe (payload_hash, public_id, received_at) select hash, id, at from t order by hash \
    on conflict (payload_hash) do update set \
    public_id = case when event_dedupe.received_at < excluded.received_at - $12 \
    then excluded.public_id else event_dedupe.public_id end, \
    received_at = case when event_dedupe.received_at < excluded.received_at - $12 \
    then excluded.received_at else event_dedupe.received_at end \
    returning payload_hash, public_id), \
    ins as (insert into events (public_id, received_at, event_type, company_id, inspection_id, review_id, \
    status_text, payload, payload_hash, connection_id, state, next_attempt_at, duplicates) \
    select t.id, t.at, t.kind, t.company, t.inspection, t.review, t.status, t.payload, t.hash, c.id, \
    case when c.id is null then t.state else 'pending' end, t.at, t.dups \
    from t join d on d.public_id = t.id \
    left join connections c on c.provider = 'snapinspect' and c.company_id = t.company \
    and c.status <> 'disconnected'), \
    cnt as (update events set duplicates = events.duplicates + u.n \
    from (select * from unnest($13::text[], $14::bigint[]) as u(id, n) order by id) u where events.public_id = u.id) \
    select t.id, d.public_id from t join d on d.payload_hash = t.hash where d.public_id <> t.id";

/// Counts on events another instance stored. The ids come sorted, so two instances counting on
/// the same events lock them in the same order.
const DUPLICATES_SQL: &str = "update events set duplicates = events.duplicates + d.n \
    from (select * from unnest($1::text[], $2::bigint[]) as d(id, n) order by id) d where events.public_id = d.id";

/// What became of a batch on PostgreSQL.
#[derive(Debug, Default)]
pub(crate) struct Stored {
    /// The events another instance had stored within the window, each with that one's id.
    pub taken: HashMap<EventId, EventId>,
    /// Of those, the ones whose original's count could not grow (the batch itself is committed).
    pub uncounted: HashSet<EventId>,
}

/// Store a batch and count its duplicates (see `EventWriter::insert`): one statement, committed
/// on its own. The database decides what is a duplicate across instances: an event of `events`
/// that another instance already stored within `window_ms` is counted on that one instead, by a
/// second statement (only then).
pub(crate) async fn insert(
    conn: &mut PgConnection,
    events: &[NewEvent],
    duplicates: &[(EventId, i64)],
    window_ms: i64,
) -> anyhow::Result<Stored> {
    let mut carried: HashMap<&str, i64> = duplicates.iter().map(|(id, n)| (id.as_str(), *n)).collect();
    // Duplicates of events in this batch go in with them; the rest are counts on earlier events.
    let dups: Vec<i64> = events.iter().map(|e| carried.remove(e.id.as_str()).unwrap_or(0)).collect();
    let mut earlier: Vec<(&str, i64)> = carried.into_iter().collect();
    earlier.sort_unstable();
    let p = |f: fn(&NewEvent) -> Option<i64>| events.iter().map(f).collect::<Vec<_>>();
    let lost: Vec<(String, String)> = sqlx::query_as(INTAKE_SQL)
        .bind(events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.received_at).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.payload.kind.as_deref()).collect::<Vec<_>>())
        .bind(p(|e| e.payload.company_id.map(CompanyId::get)))
        .bind(p(|e| e.payload.inspection_id))
        .bind(p(|e| e.payload.review_id))
        .bind(events.iter().map(|e| e.payload.status.as_deref()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.payload.raw.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.payload.dedupe_hash.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.initial_state().as_str()).collect::<Vec<_>>())
        .bind(&dups)
        .bind(window_ms)
        .bind(earlier.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(earlier.iter().map(|(_, n)| *n).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await
        .context("storing webhook events")?;
    let mut stored = Stored::default();
    if lost.is_empty() {
        return Ok(stored);
    }
    let index: HashMap<&str, usize> = events.iter().enumerate().map(|(i, e)| (e.id.as_str(), i)).collect();
    let mut counts: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
    for (id, holder) in lost {
        let i = *index.get(id.as_str()).context("the store answered for an event not in the batch")?;
        // The event itself, and the duplicates of it that arrived with it.
        *counts.entry(holder.clone()).or_default() += 1 + dups[i];
        stored.taken.insert(events[i].id.clone(), EventId::parse(&holder)?);
    }
    let counted = sqlx::query(DUPLICATES_SQL)
        .bind(counts.keys().map(String::as_str).collect::<Vec<_>>())
        .bind(counts.values().copied().collect::<Vec<_>>())
        .execute(&mut *conn)
        .await;
    if let Err(e) = counted {
        tracing::error!(error.chain = %format!("{e:#}"), "duplicates of webhook events another instance stored cannot be counted; answering 503");
        stored.uncounted = stored.taken.keys().cloned().collect();
    }
    Ok(stored)
}

/// Events of the window with one of a JSON array of hashes (see `Store::window_holders`).
pub(crate) const WINDOW_HOLDERS_SQL: &str = "select payload_hash, public_id, received_at from events \
    where received_at >= $1 and received_at <= $2 and payload_hash in (select json_array_elements_text($3::json))";

/// Wake the workers listening on the events channel (`startup::notify::EVENTS_CHANNEL`).
pub(crate) const ANNOUNCE_SQL: &str = "select pg_notify('hub_events', '')";

/// Forget duplicate-window rows received before `before`.
pub(crate) const PURGE_DEDUPE_SQL: &str = "delete from event_dedupe where received_at < $1";

/// A batch of delivery results in one statement: the `Any` driver binds no arrays, so the batch
/// travels as one JSON array. The attempt is inserted only for a delivery whose claim is current.
const RECORD_SQL: &str = "with r as (select * from json_to_recordset($1::json) as r(id bigint, claim text, \
    started bigint, duration bigint, outcome text, state text, next bigint, status bigint, error text, \
    excerpt text, completed bigint)), \
    u as (update deliveries d set state = r.state, next_attempt_at = r.next, lease_owner = null, \
    last_error = r.error, last_status = r.status, completed_at = r.completed \
    from r where d.id = r.id and d.claim_id = r.claim and d.state = 'processing' returning d.id) \
    insert into delivery_attempts (delivery_id, started_at, duration_ms, outcome, http_status, error, response_excerpt) \
    select r.id, r.started, r.duration, r.outcome, r.status, r.error, r.excerpt from r join u on u.id = r.id";

/// Record delivery results whose claim is still current; returns how many were.
pub(crate) async fn record_delivery_results(tx: &mut Tx, results: &[DeliveryResult]) -> Result<u64, sqlx::Error> {
    let rows: Vec<serde_json::Value> = results
        .iter()
        .map(|r| {
            let (outcome, next, completed) = outcome_of(r);
            serde_json::json!({
                "id": r.delivery_id, "claim": r.claim_id, "started": r.started_at, "duration": r.duration_ms,
                "outcome": outcome, "state": r.state.as_str(), "next": next,
                "status": r.http_status.map(i64::from), "error": r.error, "excerpt": r.response_excerpt,
                "completed": completed,
            })
        })
        .collect();
    let json = serde_json::Value::Array(rows).to_string();
    Ok(sqlx::query(RECORD_SQL).bind(json).execute(&mut **tx).await?.rows_affected())
}
