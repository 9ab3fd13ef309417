//! PostgreSQL's side: the pool with `synchronous_commit` on (a 200 only after the commit is
//! durable), and the intake's batch as array-bound statements in one transaction.

use std::str::FromStr;

use anyhow::Context;
use sqlx::{
    any::AnyPoolOptions,
    postgres::{PgConnectOptions, PgConnection},
    AnyPool, ConnectOptions, Connection, Executor,
};

use crate::{
    domain::{CompanyId, EventId},
    store::intake::NewEvent,
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

/// Store a batch and count its duplicates in one transaction (see `EventWriter::insert`).
pub(crate) async fn insert(
    conn: &mut PgConnection,
    events: &[NewEvent],
    duplicates: &[(EventId, i64)],
) -> anyhow::Result<()> {
    let mut tx = conn.begin().await.context("storing webhook events")?;
    if !events.is_empty() {
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        let p = |f: fn(&NewEvent) -> Option<i64>| events.iter().map(f).collect::<Vec<_>>();
        sqlx::query(INSERT_SQL)
            .bind(&ids)
            .bind(events.iter().map(|e| e.received_at).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.payload.kind.as_deref()).collect::<Vec<_>>())
            .bind(p(|e| e.payload.company_id.map(CompanyId::get)))
            .bind(p(|e| e.payload.inspection_id))
            .bind(p(|e| e.payload.review_id))
            .bind(events.iter().map(|e| e.payload.status.as_deref()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.payload.raw.as_str()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.payload.dedupe_hash.as_str()).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.initial_state().as_str()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .context("storing webhook events")?;
        // Under the same transaction: a connect committed before it is seen, one committed after
        // it matches these events itself (`match_unmatched`).
        sqlx::query(MATCH_SQL).bind(&ids).execute(&mut *tx).await.context("matching webhook events")?;
    }
    if !duplicates.is_empty() {
        sqlx::query(DUPLICATES_SQL)
            .bind(duplicates.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>())
            .bind(duplicates.iter().map(|(_, n)| *n).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .context("counting duplicate webhook events")?;
    }
    tx.commit().await.context("committing webhook events")?;
    Ok(())
}

/// The types of a delivery result's fifteen binds (see `Backend::record_results_sql`).
const RESULT_TYPES: [&str; 15] = [
    "bigint", "bigint", "text", "bigint", "text", "text", "bigint", "text", // the attempt
    "text", "bigint", "text", "bigint", "bigint", "bigint", "text", // the delivery
];

/// `n` delivery results in one statement: typed `values` rows, the rows whose claim is current,
/// their attempts inserted, their deliveries moved on.
pub(super) fn record_results_sql(n: usize) -> String {
    let rows: Vec<String> = (0..n)
        .map(|i| {
            let cells: Vec<String> =
                RESULT_TYPES.iter().enumerate().map(|(j, t)| format!("${}::{t}", i * 15 + j + 1)).collect();
            format!("({})", cells.join(", "))
        })
        .collect();
    format!(
        "with r (started_at, duration_ms, outcome, http_status, error, response_excerpt, delivery_id, claim_id, \
         state, next_attempt_at, last_error, last_status, completed_at, delivery_id2, claim_id2) as (values {}), \
         current as (select r.* from r join deliveries d on d.id = r.delivery_id and d.claim_id = r.claim_id \
         and d.state = 'processing'), \
         attempts as (insert into delivery_attempts (delivery_id, started_at, duration_ms, outcome, http_status, \
         error, response_excerpt) select delivery_id, started_at, duration_ms, outcome, http_status, error, \
         response_excerpt from current) \
         update deliveries d set state = c.state, next_attempt_at = c.next_attempt_at, lease_owner = null, \
         last_error = c.last_error, last_status = c.last_status, completed_at = c.completed_at \
         from current c where d.id = c.delivery_id",
        rows.join(", ")
    )
}
