//! How each endpoint's deliveries went over a recent window (attempts, successes, median and p95
//! latency), computed in one query per window, and an endpoint's last failed attempt.

use std::collections::HashMap;

use super::Store;
use crate::domain::endpoint::EndpointId;

/// One endpoint's attempts since some time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    pub attempts: i64,
    pub succeeded: i64,
    /// Nearest-rank percentiles of the attempts' durations; `None` without attempts.
    pub p50_ms: Option<i64>,
    pub p95_ms: Option<i64>,
}

impl EndpointStats {
    /// Successes per hundred attempts, rounded down; `None` without attempts.
    pub fn success_percent(&self) -> Option<i64> {
        (self.attempts > 0).then(|| self.succeeded * 100 / self.attempts)
    }
}

/// An endpoint's most recent failed attempt.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FailedAttempt {
    pub started_at: i64,
    pub http_status: Option<i64>,
    pub error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct StatsRow {
    endpoint_id: String,
    attempts: i64,
    succeeded: i64,
    p50_ms: Option<i64>,
    p95_ms: Option<i64>,
}

impl Store {
    /// Every endpoint's attempts that started at or after `since`, by endpoint id (endpoints
    /// without attempts are absent). The percentiles are nearest-rank: the value at rank
    /// ceil(n·p/100) of the sorted durations, written with integer arithmetic and window
    /// functions that SQLite and PostgreSQL share.
    #[tracing::instrument(skip_all)]
    pub async fn endpoint_stats(&self, since: i64) -> anyhow::Result<HashMap<String, EndpointStats>> {
        let rows: Vec<StatsRow> = sqlx::query_as(
            "with ranked as ( \
                 select d.endpoint_id, a.duration_ms, a.outcome, \
                        row_number() over (partition by d.endpoint_id order by a.duration_ms) as pos, \
                        count(*) over (partition by d.endpoint_id) as n \
                 from delivery_attempts a join deliveries d on d.id = a.delivery_id \
                 where a.started_at >= $1 \
             ) \
             select endpoint_id, count(*) as attempts, \
                    sum(case when outcome = 'done' then 1 else 0 end) as succeeded, \
                    max(case when pos = (n * 50 + 99) / 100 then duration_ms end) as p50_ms, \
                    max(case when pos = (n * 95 + 99) / 100 then duration_ms end) as p95_ms \
             from ranked group by endpoint_id",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let stats =
                    EndpointStats { attempts: r.attempts, succeeded: r.succeeded, p50_ms: r.p50_ms, p95_ms: r.p95_ms };
                (r.endpoint_id, stats)
            })
            .collect())
    }

    /// The endpoint's most recent attempt that did not succeed, among those that started in
    /// `[from, to]` (the caller bounds it by the endpoint's `last_failure_at`, so the started-at
    /// index reads a few rows rather than every attempt ever made).
    pub async fn last_failed_attempt(
        &self,
        id: &EndpointId,
        from: i64,
        to: i64,
    ) -> anyhow::Result<Option<FailedAttempt>> {
        Ok(sqlx::query_as(
            "select a.started_at, a.http_status, a.error from delivery_attempts a \
             join deliveries d on d.id = a.delivery_id \
             where a.started_at >= $2 and a.started_at <= $3 and d.endpoint_id = $1 and a.outcome <> 'done' \
             order by a.started_at desc, a.id desc limit 1",
        )
        .bind(id.as_str())
        .bind(from)
        .bind(to)
        .fetch_optional(&self.pool)
        .await?)
    }
}
