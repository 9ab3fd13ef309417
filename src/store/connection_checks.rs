//! Connection health checks in the store: giving new connections their first check time, claiming
//! due checks under a lease (one instance per check), and recording each check's outcome.

use rand::Rng;

use super::Store;
use crate::domain::{ConnectionId, Provider};

/// The connections the checker looks at (keep in step with the claim in `dialect`): active
/// SnapInspect connections, and client-credentials ones that are active or failing (a failing
/// one that works again turns active).
const CHECKED: &str = "((provider = 'snapinspect' and status = 'active') \
    or (provider <> 'snapinspect' and status in ('active', 'failing')))";

/// A check this instance claimed: the connection, its provider, and its failed checks in a row.
#[derive(Debug, Clone)]
pub struct ClaimedCheck {
    pub id: ConnectionId,
    pub provider: Provider,
    pub failures: i64,
}

impl Store {
    /// Give up to `limit` checked connections that have no check time yet a random one within
    /// `interval_ms` from `now`, so their checks spread over the interval instead of all running
    /// at once. Returns how many were given one.
    #[tracing::instrument(skip_all)]
    pub async fn schedule_first_checks(&self, now: i64, interval_ms: i64, limit: i64) -> anyhow::Result<usize> {
        let ids: Vec<String> = sqlx::query_scalar(&format!(
            "select id from connections where next_check_at is null and {CHECKED} order by created_at, id limit $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut scheduled = 0;
        for id in ids {
            let at = now + rand::thread_rng().gen_range(0..interval_ms.max(1));
            scheduled +=
                sqlx::query("update connections set next_check_at = $2 where id = $1 and next_check_at is null")
                    .bind(&id)
                    .bind(at)
                    .execute(&self.pool)
                    .await?
                    .rows_affected() as usize;
        }
        Ok(scheduled)
    }

    /// Claim up to `limit` checks due at `now`: their `next_check_at` moves to `lease_until` in the
    /// same statement, so no other instance claims them this round (PostgreSQL: `for update skip
    /// locked`; SQLite has one writer). A claim whose check never finishes is due again then.
    #[tracing::instrument(skip_all)]
    pub async fn claim_checks(&self, now: i64, lease_until: i64, limit: i64) -> anyhow::Result<Vec<ClaimedCheck>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(self.backend().claim_checks_sql())
            .bind(now)
            .bind(lease_until)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|(id, provider, failures)| {
                Ok(ClaimedCheck { id: ConnectionId::parse(&id)?, provider: Provider::parse(&provider)?, failures })
            })
            .collect()
    }

    /// Failed checks in a row for one connection (a check run at once, not claimed), or `None`
    /// when there is no such connection.
    pub async fn check_failures(&self, id: &ConnectionId) -> anyhow::Result<Option<i64>> {
        Ok(sqlx::query_scalar("select check_failures from connections where id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Record a finished check: its outcome (`ok`, `refused`, `failed`), why unless ok, when, and
    /// when the next one is due (`None`: not scheduled, checks are off). An ok check clears the failures in a row; any other adds one.
    #[tracing::instrument(skip_all, fields(connection_id = %id, outcome))]
    pub async fn record_check(
        &self,
        id: &ConnectionId,
        outcome: &str,
        error: Option<&str>,
        now: i64,
        next_check_at: Option<i64>,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "update connections set last_checked_at = $2, last_check = $3, last_check_error = $4, next_check_at = $5, \
             check_failures = case when $3 = 'ok' then 0 else check_failures + 1 end where id = $1",
        )
        .bind(id.as_str())
        .bind(now)
        .bind(outcome)
        .bind(error)
        .bind(next_check_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// When a connection's next check is due (tests, and the console).
    pub async fn next_check_at(&self, id: &ConnectionId) -> anyhow::Result<Option<i64>> {
        Ok(sqlx::query_scalar::<_, Option<i64>>("select next_check_at from connections where id = $1")
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?
            .flatten())
    }
}
