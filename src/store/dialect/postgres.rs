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
    AnyPool, ConnectOptions, Connection, Executor,
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

/// The intake writer's own connection.
pub(crate) async fn writer(options: &PgConnectOptions) -> anyhow::Result<PgConnection> {
    options.connect().await.context("opening the intake writer's connection")
}

/// One statement inserts the whole batch: each column bound as one array and `unnest`ed, so the
/// statement is the same (and prepared once) whatever the batch size.
const INSERT_SQL: &str = "insert into events (public_id, received_at, event_type, company_id, inspection_id, \
    review_id, status_text, payload, payload_hash, connection_id, state, next_attempt_at) \
    select id, at, kind, company, inspection, review, status, payload, hash, null, state, at \
    from unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::text[], \
    $8::text[], $9::text[], $10::text[]) as t(id, at, kind, company, inspection, review, status, payload, hash, state)";

/// Match the batch's events to their companies' connections (see the SQLite version).
const MATCH_SQL: &str = "update events set state = 'pending', connection_id = (select c.id from connections c \
    where c.provider = 'snapinspect' and c.company_id = events.company_id and c.status <> 'disconnected') \
    where public_id = any($1) and company_id in (select company_id from connections \
    where provider = 'snapinspect' and status <> 'disconnected' and company_id is not null)";

const DUPLICATES_SQL: &str = "update events set duplicates = events.duplicates + d.n \
    from unnest($1::text[], $2::bigint[]) as d(id, n) where events.public_id = d.id";

/// The shared duplicate window: insert each new event's hash, or take it over if the row there is
/// older than the window (`$4` ms). Returns the ids of the events that now own their hash; an event
/// whose hash another instance holds within the window is a duplicate of that one. On a conflict
/// with a transaction still open PostgreSQL waits for it, so two instances cannot both win. Sorted
/// by hash, so two batches lock their hashes in the same order (no deadlock between instances).
const DEDUPE_SQL: &str = "insert into event_dedupe (payload_hash, public_id, received_at) \
    select hash, id, at from unnest($1::text[], $2::text[], $3::bigint[]) as t(hash, id, at) order by hash \
    on conflict (payload_hash) do update set public_id = excluded.public_id, received_at = excluded.received_at \
    where event_dedupe.received_at < excluded.received_at - $4 \
    returning public_id";

/// Who holds these hashes (read after `DEDUPE_SQL`, which locked them for this transaction).
const HOLDERS_SQL: &str = "select payload_hash, public_id from event_dedupe where payload_hash = any($1)";

/// Store a batch and count its duplicates in one transaction (see `EventWriter::insert`). The
/// database decides what is a duplicate across instances: returns the events of `events` that
/// another instance already stored within `window_ms`, each with the id of the one it stored
/// (they are counted there, not stored).
pub(crate) async fn insert(
    conn: &mut PgConnection,
    events: &[NewEvent],
    duplicates: &[(EventId, i64)],
    window_ms: i64,
) -> anyhow::Result<HashMap<EventId, EventId>> {
    let mut tx = conn.begin().await.context("storing webhook events")?;
    let mut taken: HashMap<EventId, EventId> = HashMap::new();
    let mut counts: HashMap<EventId, i64> = duplicates.iter().cloned().collect();
    let mut owned: Vec<&NewEvent> = events.iter().collect();
    if !events.is_empty() {
        let ours: Vec<String> = sqlx::query_scalar(DEDUPE_SQL)
            .bind(events.iter().map(|e| e.payload.dedupe_hash.as_str()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.received_at).collect::<Vec<_>>())
            .bind(window_ms)
            .fetch_all(&mut *tx)
            .await
            .context("checking the duplicate window")?;
        let ours: HashSet<&str> = ours.iter().map(String::as_str).collect();
        let lost: Vec<&NewEvent> = events.iter().filter(|e| !ours.contains(e.id.as_str())).collect();
        if !lost.is_empty() {
            let holders: HashMap<String, String> = sqlx::query_as::<_, (String, String)>(HOLDERS_SQL)
                .bind(lost.iter().map(|e| e.payload.dedupe_hash.as_str()).collect::<Vec<_>>())
                .fetch_all(&mut *tx)
                .await
                .context("reading the duplicate window")?
                .into_iter()
                .collect();
            for e in lost {
                let holder =
                    holders.get(&e.payload.dedupe_hash).context("a duplicate's original is not in the window")?;
                let original = EventId::parse(holder)?;
                // The event itself, and the duplicates of it this batch already counted.
                let carried = counts.remove(&e.id).unwrap_or(0);
                *counts.entry(original.clone()).or_default() += 1 + carried;
                taken.insert(e.id.clone(), original);
            }
            owned.retain(|e| !taken.contains_key(&e.id));
        }
    }
    if !owned.is_empty() {
        let ids: Vec<&str> = owned.iter().map(|e| e.id.as_str()).collect();
        let p = |f: fn(&NewEvent) -> Option<i64>| owned.iter().map(|e| f(e)).collect::<Vec<_>>();
        sqlx::query(INSERT_SQL)
            .bind(&ids)
            .bind(owned.iter().map(|e| e.received_at).collect::<Vec<_>>())
            .bind(owned.iter().map(|e| e.payload.kind.as_deref()).collect::<Vec<_>>())
            .bind(p(|e| e.payload.company_id.map(CompanyId::get)))
            .bind(p(|e| e.payload.inspection_id))
            .bind(p(|e| e.payload.review_id))
            .bind(owned.iter().map(|e| e.payload.status.as_deref()).collect::<Vec<_>>())
            .bind(owned.iter().map(|e| e.payload.raw.as_str()).collect::<Vec<_>>())
            .bind(owned.iter().map(|e| e.payload.dedupe_hash.as_str()).collect::<Vec<_>>())
            .bind(owned.iter().map(|e| e.initial_state().as_str()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .context("storing webhook events")?;
        // Under the same transaction: a connect committed before it is seen, one committed after
        // it matches these events itself (`match_unmatched`).
        sqlx::query(MATCH_SQL).bind(&ids).execute(&mut *tx).await.context("matching webhook events")?;
    }
    if !counts.is_empty() {
        sqlx::query(DUPLICATES_SQL)
            .bind(counts.keys().map(|id| id.as_str()).collect::<Vec<_>>())
            .bind(counts.values().copied().collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .context("counting duplicate webhook events")?;
    }
    tx.commit().await.context("committing webhook events")?;
    Ok(taken)
}

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
