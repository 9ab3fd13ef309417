//! The delivery worker's side of the store: claiming an endpoint's due deliveries under a lease and
//! a random claim id, renewing a lease, and group-committing attempt results (many per
//! transaction). Only the current claim id may record: a worker paused past its lease cannot
//! overwrite the worker that took over. Also the endpoint's health and auto-disable.

use std::collections::HashMap;

use serde_json::json;

use super::{
    deliveries::{insert_operational, OperationalEvent},
    Store,
};
use crate::{
    delivery::types::DeliveryState,
    domain::{CompanyId, ConnectionId, EventId},
};

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

/// One finished attempt, to record.
#[derive(Debug, Clone)]
pub struct DeliveryResult {
    pub delivery_id: i64,
    pub endpoint_id: String,
    pub claim_id: String,
    pub started_at: i64,
    pub duration_ms: i64,
    /// Done, Retrying or Dead.
    pub state: DeliveryState,
    /// When to try again (Retrying).
    pub retry_at: i64,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
}

impl DeliveryResult {
    fn finished_at(&self) -> i64 {
        self.started_at + self.duration_ms
    }
}

/// How many results one statement group records (the rest go in smaller groups).
const RECORD_CHUNKS: [usize; 5] = [256, 64, 16, 4, 1];

/// One result: the attempt, inserted only while the claim is current, then the delivery moved on.
const RECORD_SQL: &str = "insert into delivery_attempts (delivery_id, started_at, duration_ms, outcome, http_status, \
    error, response_excerpt) select id, ?, ?, ?, ?, ?, ? from deliveries where id = ? and claim_id = ? \
    and state = 'processing';\n\
    update deliveries set state = ?, next_attempt_at = ?, lease_owner = null, last_error = ?, last_status = ?, \
    completed_at = ? where id = ? and claim_id = ? and state = 'processing';\n";

/// Events that report on deliveries are not themselves reported on, or two failing endpoints
/// would tell each other about each other forever.
const REPORTING_TYPES: [&str; 2] = ["delivery.dead", "endpoint.disabled"];

impl Store {
    /// Claim, for each `(endpoint, limit)` in turn, up to `limit` of that endpoint's due
    /// deliveries (and at most `budget` in all), oldest first: pending and retrying ones whose time has come, and processing ones whose
    /// lease ran out. One transaction (one commit) for all. While processing, `next_attempt_at`
    /// holds the lease end. A disabled endpoint's deliveries are not claimed (they wait).
    #[tracing::instrument(skip_all, fields(endpoints = asks.len()))]
    pub async fn claim_deliveries(
        &self,
        asks: &[(&str, i64)],
        budget: i64,
        owner: &str,
        claim_id: &str,
        now: i64,
        lease_until: i64,
    ) -> anyhow::Result<Vec<ClaimedDelivery>> {
        let mut rows: Vec<(i64, i64, String, i64)> = Vec::new();
        let mut tx = self.write_tx().await?;
        let mut left = budget;
        for (endpoint, limit) in asks {
            let limit = (*limit).min(left);
            if limit <= 0 {
                break;
            }
            let claimed: Vec<(i64, i64, String, i64)> = sqlx::query_as(
                "update deliveries set state = 'processing', lease_owner = $1, claim_id = $2, next_attempt_at = $3, \
                 attempts = attempts + 1 \
                 where id in (select id from deliveries where endpoint_id = $4 and next_attempt_at is not null \
                 and next_attempt_at <= $5 order by next_attempt_at, id limit $6) \
                 and exists (select 1 from endpoints where id = $4 and state = 'enabled') \
                 returning id, event_id, endpoint_id, attempts",
            )
            .bind(owner)
            .bind(claim_id)
            .bind(lease_until)
            .bind(endpoint)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
            left -= claimed.len() as i64;
            rows.extend(claimed);
        }
        tx.commit().await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        rows.sort_by_key(|r| r.0);
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
                Some(ClaimedDelivery { id, endpoint_id, attempts, claim_id: claim_id.to_owned(), event })
            })
            .collect())
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
    #[tracing::instrument(skip_all, fields(results = results.len()))]
    pub async fn record_delivery_results(
        &self,
        results: &[DeliveryResult],
        now: i64,
        disable_before: i64,
    ) -> anyhow::Result<u64> {
        if results.is_empty() {
            return Ok(0);
        }
        let mut tx = self.write_tx().await?;
        // Multi-statement queries: one round trip to SQLite's thread per group, as in intake.
        let mut recorded = 0;
        let mut rest = results;
        while !rest.is_empty() {
            // A few fixed chunk sizes, so the prepared statements are reused from sqlx's cache.
            let size = RECORD_CHUNKS.iter().copied().find(|n| *n <= rest.len()).unwrap_or(1);
            let (chunk, tail) = rest.split_at(size);
            rest = tail;
            let sql = RECORD_SQL.repeat(size);
            let mut q = sqlx::query(&sql);
            for r in chunk {
                let outcome = match r.state {
                    DeliveryState::Done => "done",
                    DeliveryState::Dead => "dead",
                    _ => "retry",
                };
                let (next, completed) = match r.state {
                    DeliveryState::Done | DeliveryState::Dead => (None, Some(r.finished_at())),
                    _ => (Some(r.retry_at), None),
                };
                q = q
                    .bind(r.started_at)
                    .bind(r.duration_ms)
                    .bind(outcome)
                    .bind(r.http_status.map(i64::from))
                    .bind(r.error.as_deref())
                    .bind(r.response_excerpt.as_deref())
                    .bind(r.delivery_id)
                    .bind(&r.claim_id)
                    .bind(r.state.as_str())
                    .bind(next)
                    .bind(r.error.as_deref())
                    .bind(r.http_status.map(i64::from))
                    .bind(completed)
                    .bind(r.delivery_id)
                    .bind(&r.claim_id);
            }
            // Each recorded result changes two rows (its attempt and its delivery).
            recorded += q.execute(&mut *tx).await?.rows_affected() / 2;
        }

        for (endpoint, health) in health_by_endpoint(results) {
            sqlx::query(
                "update endpoints set failing_since = case when $2 then $3 else coalesce(failing_since, $3) end, \
                 last_success_at = coalesce($4, last_success_at), last_failure_at = coalesce($5, last_failure_at), \
                 last_status = $6 where id = $1",
            )
            .bind(endpoint)
            .bind(health.last_success.is_some())
            .bind(health.streak_start)
            .bind(health.last_success)
            .bind(health.last_failure)
            .bind(health.last_status)
            .execute(&mut *tx)
            .await?;
            if health.streak_start.is_none() {
                continue;
            }
            let disabled: Option<(String, i64)> = sqlx::query_as(
                "update endpoints set state = 'disabled', disabled_at = $2, updated_at = $2, disabled_reason = \
                 'every delivery failed for ENDPOINT_DISABLE_AFTER' where id = $1 and state = 'enabled' \
                 and failing_since is not null and failing_since <= $3 returning url, failing_since",
            )
            .bind(endpoint)
            .bind(now)
            .bind(disable_before)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((url, since)) = disabled {
                tracing::warn!(
                    endpoint_id = endpoint,
                    "endpoint disabled: its deliveries failed without a success; they wait for `endpoints enable`"
                );
                let event = OperationalEvent {
                    kind: "endpoint.disabled",
                    data: json!({
                        "endpoint_id": endpoint,
                        "url": url,
                        "failing_since": crate::time::rfc3339(since),
                        "reason": "every delivery failed for ENDPOINT_DISABLE_AFTER",
                    }),
                    connection_id: None,
                    company_id: None,
                };
                insert_operational(&mut tx, &event, now, Some(endpoint)).await?;
            }
        }

        for r in results.iter().filter(|r| r.state == DeliveryState::Dead) {
            // Only if this claim's result is the one that made it dead.
            type Row = (String, Option<String>, Option<i64>, Option<String>, i64);
            let row: Option<Row> = sqlx::query_as(
                "select e.public_id, e.event_type, e.company_id, e.connection_id, d.attempts from deliveries d \
                 join events e on e.id = d.event_id where d.id = $1 and d.claim_id = $2 and d.state = 'dead'",
            )
            .bind(r.delivery_id)
            .bind(&r.claim_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some((event_id, kind, company, connection, attempts)) = row else { continue };
            if kind.as_deref().is_some_and(|k| REPORTING_TYPES.contains(&k)) {
                continue;
            }
            let event = OperationalEvent {
                kind: "delivery.dead",
                data: json!({
                    "endpoint_id": r.endpoint_id,
                    "event_id": event_id,
                    "event_type": kind,
                    "attempts": attempts,
                    "last_status": r.http_status,
                    "last_error": r.error,
                    "connection_id": connection,
                    "company_id": company,
                }),
                connection_id: connection,
                company_id: company,
            };
            insert_operational(&mut tx, &event, now, Some(&r.endpoint_id)).await?;
        }
        tx.commit().await?;
        Ok(recorded)
    }
}

/// What a batch says about one endpoint.
#[derive(Debug, Default, PartialEq, Eq)]
struct Health {
    last_success: Option<i64>,
    last_failure: Option<i64>,
    /// The first failure after the batch's last success (or of the batch, if none succeeded).
    streak_start: Option<i64>,
    last_status: Option<i64>,
}

fn health_by_endpoint(results: &[DeliveryResult]) -> Vec<(&str, Health)> {
    let mut sorted: Vec<&DeliveryResult> = results.iter().collect();
    sorted.sort_by_key(|r| r.finished_at());
    let mut out: Vec<(&str, Health)> = Vec::new();
    for r in sorted {
        let i = match out.iter().position(|(e, _)| *e == r.endpoint_id) {
            Some(i) => i,
            None => {
                out.push((&r.endpoint_id, Health::default()));
                out.len() - 1
            }
        };
        let h = &mut out[i].1;
        let at = r.finished_at();
        h.last_status = r.http_status.map(i64::from);
        if r.state == DeliveryState::Done {
            h.last_success = Some(at);
            h.streak_start = None;
        } else {
            h.last_failure = Some(at);
            h.streak_start.get_or_insert(at);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(endpoint: &str, at: i64, state: DeliveryState) -> DeliveryResult {
        DeliveryResult {
            delivery_id: 1,
            endpoint_id: endpoint.into(),
            claim_id: "c".into(),
            started_at: at,
            duration_ms: 0,
            state,
            retry_at: 0,
            http_status: Some(if state == DeliveryState::Done { 200 } else { 500 }),
            error: None,
            response_excerpt: None,
        }
    }

    #[test]
    fn health_tracks_the_failure_streak_after_the_last_success() {
        use DeliveryState::*;
        let batch = [result("a", 30, Retrying), result("a", 10, Retrying), result("a", 20, Done), result("b", 5, Dead)];
        let h = health_by_endpoint(&batch);
        assert_eq!(h.len(), 2);
        assert_eq!(
            h.iter().find(|(e, _)| *e == "a").unwrap().1,
            Health { last_success: Some(20), last_failure: Some(30), streak_start: Some(30), last_status: Some(500) }
        );
        assert_eq!(
            h.iter().find(|(e, _)| *e == "b").unwrap().1,
            Health { last_success: None, last_failure: Some(5), streak_start: Some(5), last_status: Some(500) }
        );
        let recovered = [result("a", 1, Retrying), result("a", 2, Retrying), result("a", 3, Done)];
        let ok = health_by_endpoint(&recovered);
        assert_eq!(ok[0].1.streak_start, None);
        assert_eq!(ok[0].1.last_status, Some(200));
        let streak = [result("a", 1, Retrying), result("a", 2, Retrying)];
        let failing = health_by_endpoint(&streak);
        assert_eq!(failing[0].1.streak_start, Some(1), "the streak starts at its first failure");
    }
}
