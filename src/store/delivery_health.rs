//! What a batch of delivery results does to endpoints: each one's failure streak, auto-disable
//! after `ENDPOINT_DISABLE_AFTER` without a success, and `delivery.dead` / `endpoint.disabled`.

use serde_json::json;

use super::{
    deliveries::{insert_operational, OperationalEvent},
    rows::DeliveryResult,
    Tx,
};
use crate::domain::endpoint::DeliveryState;

/// Events that report on deliveries are not themselves reported on, or two failing endpoints
/// would tell each other about each other forever.
const REPORTING_TYPES: [&str; 2] = ["delivery.dead", "endpoint.disabled"];

/// Inside the transaction that records `results`.
pub(super) async fn after_results(
    tx: &mut Tx,
    results: &[DeliveryResult],
    now: i64,
    disable_before: i64,
) -> Result<(), sqlx::Error> {
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
        .execute(&mut **tx)
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
        .fetch_optional(&mut **tx)
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
            insert_operational(tx, &event, now, Some(endpoint)).await?;
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
        .fetch_optional(&mut **tx)
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
        insert_operational(tx, &event, now, Some(&r.endpoint_id)).await?;
    }
    Ok(())
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
