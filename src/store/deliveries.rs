//! Deliveries: an event's fan-out to its endpoints, operational events, and what the console, the
//! CLI and `/metrics` read about deliveries (the worker's claims and results: `delivery_claims.rs`).

use serde_json::Value;

use super::{audit::insert_audit, Store, Tx};
use crate::domain::EventId;

/// Fan an event out to every endpoint whose filter takes its type, disabled ones included (their
/// deliveries wait, so nothing is lost while an endpoint is off). `exclude` leaves one endpoint
/// out (the subject of an operational event is not told about itself). The deliveries are due
/// from `due_at`, the event's arrival, so each endpoint gets its events in the order they came
/// (however enrichment finished them), and a re-enabled endpoint resumes in that order.
pub(super) async fn fan_out(
    tx: &mut Tx,
    event_rowid: i64,
    kind: Option<&str>,
    due_at: i64,
    exclude: Option<&str>,
    now: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "insert into deliveries (event_id, endpoint_id, state, attempts, next_attempt_at, created_at) \
         select $1, e.id, 'pending', 0, $2, $5 from endpoints e \
         where ($4 is null or e.id <> $4) \
         and (not exists (select 1 from endpoint_event_types t where t.endpoint_id = e.id) \
              or exists (select 1 from endpoint_event_types t where t.endpoint_id = e.id and t.event_type = $3)) \
         on conflict (event_id, endpoint_id) do nothing",
    )
    .bind(event_rowid)
    .bind(due_at)
    .bind(kind)
    .bind(exclude)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

/// An event the hub itself raises (`connection.created`, `delivery.dead`, …).
#[derive(Debug, Clone)]
pub struct OperationalEvent {
    pub kind: &'static str,
    pub data: Value,
    pub connection_id: Option<String>,
    pub company_id: Option<i64>,
}

/// Store an operational event as a finished event of its own type (there is nothing to enrich)
/// and fan it out, inside the caller's transaction.
pub(super) async fn insert_operational(
    tx: &mut Tx,
    event: &OperationalEvent,
    now: i64,
    exclude: Option<&str>,
) -> Result<EventId, sqlx::Error> {
    let id = EventId::generate();
    let rowid: i64 = sqlx::query_scalar(
        "insert into events (public_id, received_at, event_type, company_id, payload, payload_hash, connection_id, \
         state, attempts, next_attempt_at, completed_at) values ($1, $2, $3, $4, $5, $6, $7, 'done', 0, $2, $2) \
         returning id",
    )
    .bind(id.as_str())
    .bind(now)
    .bind(event.kind)
    .bind(event.company_id)
    .bind(event.data.to_string())
    // Never a duplicate of a webhook: intake's window only compares payload hashes.
    .bind(format!("op:{id}"))
    .bind(event.connection_id.as_deref())
    .fetch_one(&mut **tx)
    .await?;
    fan_out(tx, rowid, Some(event.kind), now, exclude, now).await?;
    Ok(id)
}

/// One delivery, as `events show` and the console list it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub endpoint_id: String,
    pub url: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub last_error: Option<String>,
    pub last_status: Option<i64>,
    pub completed_at: Option<i64>,
}

/// One delivery attempt, as recorded.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryAttempt {
    pub started_at: i64,
    pub duration_ms: i64,
    pub outcome: String,
    pub http_status: Option<i64>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
}

/// Why deliveries cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryReplayRefusal {
    #[error("no event with id {0}")]
    NotFound(String),
    #[error("the event has no delivery to endpoint {0}")]
    NoDelivery(String),
    #[error("the event is not processed yet: its deliveries are made once it is")]
    NotEnriched,
}

impl Store {
    /// Raise an operational event (in its own transaction).
    pub async fn emit_event(&self, event: &OperationalEvent, now: i64) -> anyhow::Result<EventId> {
        let mut tx = self.write_tx().await?;
        let id = insert_operational(&mut tx, event, now, None).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// The deliveries of an event (by its row id), oldest first.
    pub async fn event_deliveries(&self, event_rowid: i64) -> anyhow::Result<Vec<DeliveryRow>> {
        Ok(sqlx::query_as(
            "select d.id, d.endpoint_id, e.url, d.state, d.attempts, d.next_attempt_at, d.last_error, d.last_status, \
             d.completed_at from deliveries d join endpoints e on e.id = d.endpoint_id where d.event_id = $1 order by d.id",
        )
        .bind(event_rowid)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every attempt of a delivery, oldest first.
    pub async fn delivery_attempts(&self, delivery_id: i64) -> anyhow::Result<Vec<DeliveryAttempt>> {
        Ok(sqlx::query_as(
            "select started_at, duration_ms, outcome, http_status, error, response_excerpt from delivery_attempts \
             where delivery_id = $1 order by id",
        )
        .bind(delivery_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Put an enriched event's deliveries back in the queue with a fresh schedule: the one to
    /// `endpoint` if given; else its dead and retrying ones; else (none failed) all of them, to
    /// send again; and an event that had no delivery is fanned out to today's endpoints. Returns
    /// how many deliveries are queued. A delivery in flight is left alone.
    pub async fn replay_deliveries(
        &self,
        event: &EventId,
        endpoint: Option<&str>,
        now: i64,
        actor: &str,
    ) -> anyhow::Result<Result<u64, DeliveryReplayRefusal>> {
        let mut tx = self.write_tx().await?;
        let row: Option<(i64, String, Option<String>)> =
            sqlx::query_as("select id, state, event_type from events where public_id = $1")
                .bind(event.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let Some((rowid, state, kind)) = row else {
            return Ok(Err(DeliveryReplayRefusal::NotFound(event.to_string())));
        };
        if state != "done" {
            return Ok(Err(DeliveryReplayRefusal::NotEnriched));
        }
        let requeue =
            "update deliveries set state = 'pending', attempts = 0, next_attempt_at = $2, lease_owner = null, \
                       claim_id = null, completed_at = null where event_id = $1 and state <> 'processing'";
        let n = if let Some(ep) = endpoint {
            let n = sqlx::query(&format!("{requeue} and endpoint_id = $3"))
                .bind(rowid)
                .bind(now)
                .bind(ep)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Ok(Err(DeliveryReplayRefusal::NoDelivery(ep.to_owned())));
            }
            n
        } else {
            let failed = sqlx::query(&format!("{requeue} and state in ('dead', 'retrying')"))
                .bind(rowid)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            match failed {
                0 => match sqlx::query(requeue).bind(rowid).bind(now).execute(&mut *tx).await?.rows_affected() {
                    0 => fan_out(&mut tx, rowid, kind.as_deref(), now, None, now).await?,
                    n => n,
                },
                n => n,
            }
        };
        insert_audit(&mut tx, now, actor, "delivery_replay", None, &format!("event {event}: {n} deliveries")).await?;
        tx.commit().await?;
        Ok(Ok(n))
    }

    /// How many deliveries are in each state (states without any are left out; see `/metrics`).
    pub async fn delivery_counts(&self) -> anyhow::Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as("select state, count(*) from deliveries group by state").fetch_all(&self.pool).await?)
    }

    /// When the oldest delivery that is due now to an enabled endpoint became due (none: `None`).
    pub async fn oldest_due_delivery(&self, now: i64) -> anyhow::Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "select min(d.next_attempt_at) from deliveries d join endpoints e on e.id = d.endpoint_id \
             where e.state = 'enabled' and d.state in ('pending', 'retrying') and d.next_attempt_at <= $1",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?)
    }
}

impl Store {
    /// The delivery benchmark's backlog: `count` finished events (types used in turn), fanned
    /// out to today's endpoints, in one transaction. Returns how many deliveries were queued.
    pub async fn bench_preload(&self, count: u64, types: &[&str], now: i64) -> anyhow::Result<u64> {
        let mut tx = self.write_tx().await?;
        let first: i64 = sqlx::query_scalar("select coalesce(max(id), 0) from events").fetch_one(&mut *tx).await?;
        for i in 0..count {
            let id = EventId::generate();
            let kind = types[i as usize % types.len()];
            let payload = serde_json::json!({ "sType": kind, "iCompanyID": 1, "iInspectionID": i }).to_string();
            sqlx::query(
                "insert into events (public_id, received_at, event_type, company_id, payload, payload_hash, state, \
                 attempts, next_attempt_at, completed_at) values ($1, $2, $3, 1, $4, $5, 'done', 0, $2, $2)",
            )
            .bind(id.as_str())
            .bind(now)
            .bind(kind)
            .bind(payload)
            .bind(format!("bench:{id}"))
            .execute(&mut *tx)
            .await?;
        }
        let n = sqlx::query(
            "insert into deliveries (event_id, endpoint_id, state, attempts, next_attempt_at, created_at) \
             select ev.id, e.id, 'pending', 0, $2, $2 from events ev cross join endpoints e where ev.id > $1 \
             and (not exists (select 1 from endpoint_event_types t where t.endpoint_id = e.id) \
                  or exists (select 1 from endpoint_event_types t where t.endpoint_id = e.id and t.event_type = ev.event_type))",
        )
        .bind(first)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }
}
