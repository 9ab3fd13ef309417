//! The delivery worker's deliveries: claims under a lease, renewals, and group-committed results
//! (row by row if that fails), which only the current claim id records (no stale overwrite).

use std::collections::HashMap;

use super::{dialect, rows::DeliveryResult, Backend, Store};
use crate::domain::{CompanyId, ConnectionId, EventId};

/// A delivery the worker holds, with what it needs to build the message.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub endpoint_id: String,
    /// Including this one.
    pub attempts: i64,
    pub claim_id: String,
    pub event: DeliveryEvent,
}

/// What one claim takes: at most `budget` deliveries in all, and at most `per_endpoint` of each
/// enabled endpoint's, except for the endpoints in `room`, which may take their own number (this
/// worker already holds some of theirs). Endpoints take turns, starting at the first id from
/// `start_at` on (a different one each time, so none is always last).
#[derive(Debug, Clone, Copy)]
pub struct ClaimAsk<'a> {
    /// The worker claiming, and this claim's random id (only it may record the attempts).
    pub owner: &'a str,
    pub claim_id: &'a str,
    pub now: i64,
    pub lease_until: i64,
    pub budget: i64,
    pub per_endpoint: i64,
    pub room: &'a [(&'a str, i64)],
    pub start_at: &'a str,
}

/// The event a delivery carries.
#[derive(Debug, Clone)]
pub struct DeliveryEvent {
    pub id: EventId,
    pub received_at: i64,
    pub kind: Option<String>,
    pub company_id: Option<CompanyId>,
    pub connection_id: Option<ConnectionId>,
    pub payload: String,
    pub inspection: Option<String>,
}

impl Store {
    /// Claim due deliveries of every enabled endpoint in one statement, in due order within each
    /// endpoint, and in turns across them (see [`ClaimAsk`]): pending and retrying ones whose
    /// time has come, and processing ones whose lease ran out. While processing,
    /// `next_attempt_at` holds the lease end. A disabled endpoint's deliveries are not claimed
    /// (they wait).
    #[tracing::instrument(skip_all, fields(budget = ask.budget))]
    pub async fn claim_deliveries(&self, ask: &ClaimAsk<'_>) -> anyhow::Result<Vec<ClaimedDelivery>> {
        let room = serde_json::Value::from(
            ask.room.iter().map(|(endpoint, n)| serde_json::json!([endpoint, n])).collect::<Vec<_>>(),
        );
        let mut rows: Vec<(i64, i64, String, i64)> = sqlx::query_as(self.backend.claim_deliveries_sql())
            .bind(ask.owner)
            .bind(ask.claim_id)
            .bind(ask.lease_until)
            .bind(ask.now)
            .bind(ask.budget)
            .bind(ask.per_endpoint)
            .bind(room.to_string())
            .bind(ask.start_at)
            .fetch_all(&self.pool)
            .await?;
        // Due order: a delivery is due from its event's arrival, and events are numbered as they
        // arrive, so within an endpoint the oldest event goes first.
        rows.sort_by_key(|r| (r.1, r.0));
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids: Vec<i64> = rows.iter().map(|r| r.1).collect();
        ids.sort_unstable();
        ids.dedup();
        let placeholders = (1..=ids.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "select id, public_id, received_at, event_type, company_id, connection_id, payload, inspection \
             from events where id in ({placeholders})"
        );
        type EventRow = (i64, String, i64, Option<String>, Option<i64>, Option<String>, String, Option<String>);
        let mut q = sqlx::query_as::<_, EventRow>(&sql);
        for id in &ids {
            q = q.bind(id);
        }
        let mut events = HashMap::new();
        for (rowid, id, received_at, kind, company, connection, payload, inspection) in q.fetch_all(&self.pool).await? {
            let event = DeliveryEvent {
                id: EventId::parse(&id)?,
                received_at,
                kind,
                company_id: company.and_then(|c| CompanyId::new(c).ok()),
                connection_id: connection.map(|c| ConnectionId::parse(&c)).transpose()?,
                payload,
                inspection,
            };
            events.insert(rowid, event);
        }
        Ok(rows
            .into_iter()
            .filter_map(|(id, event_id, endpoint_id, attempts)| {
                let event = events.get(&event_id)?.clone();
                Some(ClaimedDelivery { id, endpoint_id, attempts, claim_id: ask.claim_id.to_owned(), event })
            })
            .collect())
    }

    /// Give claimed deliveries back (not attempted): due again at `now`, the claim's attempt
    /// not counted. Only for the current claims; returns how many.
    pub async fn release_deliveries(&self, claims: &[(i64, String)], now: i64) -> anyhow::Result<u64> {
        let mut tx = self.write_tx().await?;
        let mut n = 0;
        for (id, claim) in claims {
            n += sqlx::query(
                "update deliveries set state = case when attempts > 1 then 'retrying' else 'pending' end, \
                 attempts = attempts - 1, next_attempt_at = $3, lease_owner = null \
                 where id = $1 and claim_id = $2 and state = 'processing'",
            )
            .bind(id)
            .bind(claim)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    /// Extend a claim's lease; false if the claim is no longer current.
    pub async fn renew_delivery_lease(&self, delivery_id: i64, claim_id: &str, until: i64) -> anyhow::Result<bool> {
        let n = sqlx::query(
            "update deliveries set next_attempt_at = $3 where id = $1 and claim_id = $2 and state = 'processing'",
        )
        .bind(delivery_id)
        .bind(claim_id)
        .bind(until)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Record a batch of attempt results in one transaction (one commit for all), update each
    /// endpoint's health, disable endpoints that failed without a success since `disable_before`,
    /// and raise `delivery.dead` and `endpoint.disabled`. Returns how many results were recorded
    /// (a result whose claim is no longer current is dropped, attempt and all).
    ///
    /// Should the batch fail, each result is recorded alone, so one the store refuses fails alone
    /// (its lease ends and it is tried again) and is not counted. An error means none could be.
    #[tracing::instrument(skip_all, fields(results = results.len()))]
    pub async fn record_delivery_results(
        &self,
        results: &[DeliveryResult],
        now: i64,
        disable_before: i64,
    ) -> anyhow::Result<u64> {
        let error = match self.record_results_batch(results, now, disable_before).await {
            Ok(recorded) => return Ok(recorded),
            Err(e) if results.len() <= 1 => return Err(e),
            Err(e) => e,
        };
        tracing::warn!(error.chain = %format!("{error:#}"), "recording a batch of delivery results failed; recording each alone");
        let (mut recorded, mut failed) = (0, 0);
        for r in results {
            match self.record_results_batch(std::slice::from_ref(r), now, disable_before).await {
                Ok(n) => recorded += n,
                Err(e) => {
                    failed += 1;
                    tracing::error!(
                        delivery_id = r.delivery_id, endpoint_id = %r.endpoint_id, error.chain = %format!("{e:#}"),
                        "a delivery result cannot be recorded; its lease ends and it is tried again"
                    );
                }
            }
        }
        if failed == results.len() {
            return Err(error);
        }
        Ok(recorded)
    }

    /// One transaction for the batch.
    async fn record_results_batch(
        &self,
        results: &[DeliveryResult],
        now: i64,
        disable_before: i64,
    ) -> anyhow::Result<u64> {
        if results.is_empty() {
            return Ok(0);
        }
        let mut tx = self.write_tx().await?;
        let recorded = match self.backend {
            Backend::Sqlite => dialect::sqlite::record_delivery_results(&mut tx, results).await?,
            Backend::Postgres => dialect::postgres::record_delivery_results(&mut tx, results).await?,
        };
        super::delivery_health::after_results(&mut tx, results, now, disable_before).await?;
        tx.commit().await?;
        Ok(recorded)
    }
}
