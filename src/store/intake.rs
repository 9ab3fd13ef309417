//! The intake's side of the events table: the writer's own connection, one multi-row insert per
//! batch in one transaction (one commit, one fsync), matching events to their company's connection,
//! the duplicate window's warm-up, and checkpoints kept off the commit path.

use anyhow::Context;
use serde_json::json;
use sqlx::{sqlite::SqliteConnection, ConnectOptions};

use super::Store;
use crate::{
    domain::{CompanyId, EventId},
    snapinspect::webhook::WebhookPayload,
};

/// An event as intake hands it to the store.
pub struct NewEvent {
    pub id: EventId,
    pub received_at: i64,
    pub payload: WebhookPayload,
}

/// What became of one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    Stored(EventId),
    /// The same payload for the same company arrived within the window: counted on this event.
    Duplicate(EventId),
}

const INSERT_CHUNKS: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// `insert into events … values (…), (…)` for `rows` rows (one of `INSERT_CHUNKS`), built once.
fn insert_sql(rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        INSERT_CHUNKS
            .iter()
            .map(|&n| {
                // Anonymous `?` parameters: sqlx looks a named one up by name, which SQLite does
                // by a linear walk, so 700 `$N` would cost more than the insert. Events start
                // unmatched; MATCH_SQL then gives those of connected companies their connection.
                let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, null, 'unmatched', ?)"; n];
                format!(
                    "insert into events (public_id, received_at, event_type, company_id, inspection_id, review_id, \
                     status_text, payload, payload_hash, connection_id, state, next_attempt_at) values {}",
                    values.join(", ")
                )
            })
            .collect()
    });
    let i = INSERT_CHUNKS.iter().position(|n| *n == rows).expect("a chunk size");
    &all[i]
}

/// The intake's own connection. Keeping one connection for every batch keeps its page cache warm
/// (another connection's commit would invalidate it), and automatic checkpoints are off on it so
/// a commit never waits for one: [`Store::checkpoint`] runs them beside it.
pub struct EventWriter {
    conn: SqliteConnection,
}

impl EventWriter {
    /// Store a batch of new events and count the duplicates that arrived with it, in one
    /// transaction (one commit, one fsync for all). Each event is matched to its company's
    /// SnapInspect connection; without one it waits as `unmatched`.
    #[tracing::instrument(skip_all, fields(events = events.len(), duplicates = duplicates.len()))]
    pub async fn insert(&mut self, events: &[NewEvent], duplicates: &[(EventId, i64)]) -> anyhow::Result<()> {
        // The whole batch is one multi-statement query: one round trip to SQLite's thread instead
        // of one per statement, which under load is what a batch mostly waits for.
        let mut sql = String::from("begin immediate;\n");
        let mut rest = events.len();
        while rest > 0 {
            let size = INSERT_CHUNKS.iter().copied().find(|n| *n <= rest).unwrap_or(1);
            sql.push_str(insert_sql(size));
            sql.push_str(";\n");
            rest -= size;
        }
        let ids = json!(events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>()).to_string();
        if !events.is_empty() {
            // Events whose company is connected belong to that connection. The write lock is held
            // since `begin immediate`, so this sees exactly the connections a connect has committed.
            sql.push_str(MATCH_SQL);
            sql.push_str(";\n");
        }
        for _ in duplicates {
            sql.push_str("update events set duplicates = duplicates + ? where public_id = ?;\n");
        }
        sql.push_str("commit");

        let mut q = sqlx::query(&sql);
        for e in events {
            let p = &e.payload;
            q = q
                .bind(e.id.as_str())
                .bind(e.received_at)
                .bind(p.kind.as_deref())
                .bind(p.company_id.map(CompanyId::get))
                .bind(p.inspection_id)
                .bind(p.review_id)
                .bind(p.status.as_deref())
                .bind(p.raw.as_str())
                .bind(p.dedupe_hash.as_str())
                // A new event is due at once.
                .bind(e.received_at);
        }
        if !events.is_empty() {
            q = q.bind(&ids);
        }
        for (id, count) in duplicates {
            q = q.bind(*count).bind(id.as_str());
        }
        if let Err(e) = q.execute(&mut self.conn).await {
            // A statement failed part-way: end the transaction it left open.
            let _ = sqlx::query("rollback").execute(&mut self.conn).await;
            return Err(anyhow::Error::new(e).context("storing webhook events"));
        }
        Ok(())
    }
}

impl EventWriter {
    /// Finish the checkpoint on the writer's own connection. The checkpointer beside it copies most
    /// frames, but under steady writes it never catches the last ones, and the WAL only starts
    /// over (instead of growing, which makes every fsync also write file metadata) once a
    /// checkpoint is complete when a write begins. Only this connection writes, so this one
    /// completes: it has just the frames since the checkpointer's last pass to copy.
    pub async fn finish_checkpoint(&mut self) -> anyhow::Result<()> {
        sqlx::query("pragma wal_checkpoint(passive)").execute(&mut self.conn).await?;
        Ok(())
    }
}

/// Match the batch's events (their ids bound as a JSON array) to their companies' connections.
const MATCH_SQL: &str = "update events set state = 'pending', connection_id = (select c.id from connections c \
    where c.provider = 'snapinspect' and c.company_id = events.company_id and c.status <> 'disconnected') \
    where public_id in (select value from json_each(?)) and company_id in (select company_id from connections \
    where provider = 'snapinspect' and status <> 'disconnected' and company_id is not null)";

impl Store {
    /// A dedicated connection for the intake writer (see [`EventWriter`]).
    pub async fn event_writer(&self) -> anyhow::Result<EventWriter> {
        let options = (*self.pool.connect_options())
            .clone()
            .pragma("wal_autocheckpoint", "0")
            // When the WAL restarts, a file that grew past this is cut back.
            .pragma("journal_size_limit", "67108864");
        Ok(EventWriter { conn: options.connect().await.context("opening the intake writer's connection")? })
    }

    /// The payload hashes of events received since `since`, newest first, at most `limit`: what
    /// the intake's duplicate detection is warmed with. Walks back by id (ids follow arrival), so
    /// it reads only the window, without an index on the hash or the time.
    pub async fn recent_event_hashes(&self, since: i64, limit: usize) -> anyhow::Result<Vec<(String, EventId, i64)>> {
        let mut out = Vec::new();
        let mut cursor = i64::MAX;
        loop {
            let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
                "select id, payload_hash, public_id, received_at from events where id < $1 order by id desc limit 5000",
            )
            .bind(cursor)
            .fetch_all(&self.pool)
            .await?;
            let Some(last) = rows.last() else { return Ok(out) };
            cursor = last.0;
            for (_, hash, id, at) in rows {
                if at < since || out.len() >= limit {
                    return Ok(out);
                }
                out.push((hash, EventId::parse(&id)?, at));
            }
        }
    }

    /// Copy committed WAL frames into the database file without blocking writers or readers
    /// (PASSIVE); the intake writer leaves this to a task beside it.
    pub async fn checkpoint(&self) -> anyhow::Result<()> {
        sqlx::query("pragma wal_checkpoint(passive)").execute(&self.pool).await?;
        Ok(())
    }
}
