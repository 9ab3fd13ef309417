//! The worker's side of the events table: claiming due events under a lease, and recording each
//! attempt with what it did to the event.

use super::{Store, Tx};
use crate::domain::{CompanyId, ConnectionId, EventId};

/// An event the worker has claimed.
#[derive(Debug, Clone)]
pub struct ClaimedEvent {
    pub rowid: i64,
    pub id: EventId,
    pub received_at: i64,
    pub kind: Option<String>,
    pub company_id: Option<CompanyId>,
    pub inspection_id: Option<i64>,
    pub connection_id: Option<ConnectionId>,
    pub payload: String,
    /// Including this one.
    pub attempts: i64,
    /// This claim's random id: only it may record the attempt.
    pub claim_id: String,
}

/// What one attempt ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Done,
    Retry,
    Dead,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Done => "done",
            AttemptOutcome::Retry => "retry",
            AttemptOutcome::Dead => "dead",
        }
    }
}

/// An enrichment attempt, finished, to record.
#[derive(Debug, Clone)]
pub struct FinishedEvent {
    pub event: ClaimedEvent,
    pub attempt: NewAttempt,
    pub retry_at: i64,
    pub inspection: Option<String>,
}

/// One processing attempt, to record.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub started_at: i64,
    pub duration_ms: i64,
    pub outcome: AttemptOutcome,
    pub http_status: Option<i64>,
    pub error: Option<String>,
}

/// One processing attempt, as recorded.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Attempt {
    pub started_at: i64,
    pub duration_ms: i64,
    pub outcome: String,
    pub http_status: Option<i64>,
    pub error: Option<String>,
}

impl Store {
    /// Claim up to `limit` due events for `owner` until `lease_until`: pending and retrying events
    /// whose time has come, and processing events whose lease ran out (their worker died). While
    /// an event is processing, `next_attempt_at` holds its lease end. The claim gets a random id
    /// (`claim_id`): only it may record the attempt. On PostgreSQL instances claim side by side,
    /// each skipping the rows another is claiming (see `Backend::claim_events_sql`).
    #[tracing::instrument(skip_all)]
    pub async fn claim_events(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> anyhow::Result<Vec<ClaimedEvent>> {
        type Row = (i64, String, i64, Option<String>, Option<i64>, Option<i64>, Option<String>, String, i64);
        let claim_id = format!("clm_{}", crate::domain::base32(&crate::domain::random_bytes::<10>()));
        let rows: Vec<Row> = sqlx::query_as(self.backend.claim_events_sql())
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(limit)
            .bind(&claim_id)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|(rowid, id, received_at, kind, company, inspection_id, connection, payload, attempts)| {
                Ok(ClaimedEvent {
                    rowid,
                    id: EventId::parse(&id)?,
                    received_at,
                    kind,
                    company_id: company.and_then(|c| CompanyId::new(c).ok()),
                    inspection_id,
                    connection_id: connection.map(|c| ConnectionId::parse(&c)).transpose()?,
                    payload,
                    attempts,
                    claim_id: claim_id.clone(),
                })
            })
            .collect()
    }

    /// Record a batch of attempts and move each event on, in one transaction (one commit for
    /// all). `retry_at` is used for `Retry`; `inspection` is kept on `Done`. Returns, per attempt,
    /// whether its claim was still current (if not, the attempt is still recorded as history, but
    /// the event is left to the claim that took over).
    #[tracing::instrument(skip_all, fields(events = batch.len()))]
    pub async fn finish_attempts(&self, batch: &[FinishedEvent]) -> anyhow::Result<Vec<bool>> {
        let mut tx = self.write_tx().await?;
        let mut out = Vec::with_capacity(batch.len());
        for f in batch {
            out.push(finish_in(&mut tx, &f.event, &f.attempt, f.retry_at, f.inspection.as_deref()).await?);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Every attempt of an event, oldest first.
    pub async fn event_attempts(&self, rowid: i64) -> anyhow::Result<Vec<Attempt>> {
        Ok(sqlx::query_as(
            "select started_at, duration_ms, outcome, http_status, error from event_attempts where event_id = $1 order by id",
        )
        .bind(rowid)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// One enrichment attempt inside the caller's transaction: record it, move the event on, and on
/// success fan it out to its endpoints.
async fn finish_in(
    tx: &mut Tx,
    event: &ClaimedEvent,
    attempt: &NewAttempt,
    retry_at: i64,
    inspection: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let attempt_outcome = attempt.outcome;
    sqlx::query(
        "insert into event_attempts (event_id, started_at, duration_ms, outcome, http_status, error) \
             values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(event.rowid)
    .bind(attempt.started_at)
    .bind(attempt.duration_ms)
    .bind(attempt_outcome.as_str())
    .bind(attempt.http_status)
    .bind(&attempt.error)
    .execute(&mut **tx)
    .await?;
    let now = attempt.started_at + attempt.duration_ms;
    let updated = match attempt_outcome {
        AttemptOutcome::Done => sqlx::query(
            "update events set state = 'done', completed_at = $3, last_error = null, lease_owner = null, \
                 inspection = coalesce($4, inspection) where id = $1 and claim_id = $2 and state = 'processing'",
        )
        .bind(event.rowid)
        .bind(&event.claim_id)
        .bind(now)
        .bind(inspection),
        AttemptOutcome::Retry | AttemptOutcome::Dead => sqlx::query(
            "update events set state = $3, next_attempt_at = $4, last_error = $5, lease_owner = null, \
                 inspection = coalesce($6, inspection) where id = $1 and claim_id = $2 and state = 'processing'",
        )
        .bind(event.rowid)
        .bind(&event.claim_id)
        .bind(if attempt_outcome == AttemptOutcome::Dead { "dead" } else { "retrying" })
        .bind(if attempt_outcome == AttemptOutcome::Dead { now } else { retry_at })
        .bind(&attempt.error)
        .bind(inspection),
    }
    .execute(&mut **tx)
    .await?
    .rows_affected();
    // Enriched: fan out to the endpoints in the same transaction, so an event is never done
    // without its deliveries.
    if updated == 1 && attempt_outcome == AttemptOutcome::Done {
        let kind = event.kind.as_deref();
        super::deliveries::fan_out(tx, event.rowid, kind, event.received_at, None, now).await?;
    }
    Ok(updated == 1)
}
