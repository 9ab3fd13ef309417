//! The claim benchmark's side of the store: a backlog of due events made in one statement, and
//! the plan the claim's scan gets (`explain`), so a run shows the claim reads an index.

use super::{Backend, Store};

/// PostgreSQL's claim scan (its `for update skip locked` aside; see `dialect`).
const CLAIM_SCAN_POSTGRES: &str = "select id from events where state in ('pending', 'retrying', 'processing') \
    and next_attempt_at <= $1 order by next_attempt_at, id limit 16";

impl Store {
    /// Queue `count` due events (pending, for no connection) in one statement; returns how many.
    pub async fn bench_queue_events(&self, count: i64, now: i64) -> anyhow::Result<u64> {
        let mut tx = self.write_tx().await?;
        // A recursive series (portable; PostgreSQL also has generate_series). Ids are `evt_bench…`
        // with 26 characters, so they parse as event ids.
        let n = sqlx::query(
            "with recursive s(i) as (select 1 union all select i + 1 from s where i < $1) \
             insert into events (public_id, received_at, event_type, company_id, payload, payload_hash, state, \
             attempts, next_attempt_at) \
             select 'evt_bench00000' || cast(i + 1000000000000000 as text), $2, 'Bench', 1, '{}', \
             'bench' || cast(i as text), 'pending', 0, $2 + i from s",
        )
        .bind(count)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        if self.backend == Backend::Postgres {
            // Fresh statistics, as autovacuum would have them after a while.
            sqlx::query("analyze events").execute(&self.pool).await?;
        }
        Ok(n)
    }

    /// The plan of the claim's scan, one line per step.
    pub async fn explain_claim(&self) -> anyhow::Result<Vec<String>> {
        Ok(match self.backend {
            Backend::Postgres => {
                sqlx::query_scalar(&format!("explain {CLAIM_SCAN_POSTGRES}"))
                    .bind(i64::MAX)
                    .fetch_all(&self.pool)
                    .await?
            }
            Backend::Sqlite => {
                let sql = format!("explain query plan {}", super::dialect::CLAIM_SCAN_SQLITE);
                let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(&sql)
                    .bind(i64::MAX)
                    .bind(i64::MAX)
                    .bind(i64::MAX)
                    .bind(16_i64)
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map(|r| r.3).collect()
            }
        })
    }
}
