//! The intake's side of the events table: the writer's own connection storing each batch in one
//! transaction (one commit, one fsync), the duplicate window's warm-up, checkpoints off that path.

use std::collections::HashMap;

use sqlx::{postgres::PgConnection, sqlite::SqliteConnection};

use super::{
    dialect::{self, Backend, WriterOptions},
    rows::NewEvent,
    Store,
};
use crate::domain::EventId;

/// What became of one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    Stored(EventId),
    /// The same payload for the same company arrived within the window: counted on this event.
    Duplicate(EventId),
}

/// The intake's own connection. Keeping one connection for every batch keeps its page cache warm
/// (another connection's commit would invalidate it); on SQLite automatic checkpoints are off on
/// it so a commit never waits for one: [`Store::checkpoint`] runs them beside it.
pub struct EventWriter {
    conn: WriterConn,
}

enum WriterConn {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl EventWriter {
    /// Store a batch of new events and count the duplicates that arrived with it, in one
    /// transaction (one commit, one fsync for all). Each event is matched to its company's
    /// SnapInspect connection; without one it waits as `unmatched`.
    ///
    /// Returns the events of `events` the database found to be duplicates (with the event each
    /// duplicates): on PostgreSQL other instances share the window (`window_ms`), so the database
    /// decides. SQLite has one instance, whose own window (the caller's) is complete: none.
    #[tracing::instrument(skip_all, fields(events = events.len(), duplicates = duplicates.len()))]
    pub async fn insert(
        &mut self,
        events: &[NewEvent],
        duplicates: &[(EventId, i64)],
        window_ms: i64,
    ) -> anyhow::Result<HashMap<EventId, EventId>> {
        match &mut self.conn {
            WriterConn::Sqlite(conn) => {
                dialect::sqlite::insert(conn, events, duplicates).await?;
                Ok(HashMap::new())
            }
            WriterConn::Postgres(conn) => dialect::postgres::insert(conn, events, duplicates, window_ms).await,
        }
    }

    /// Finish the checkpoint on the writer's own connection. The checkpointer beside it copies most
    /// frames, but under steady writes it never catches the last ones, and the WAL only starts
    /// over (instead of growing, which makes every fsync also write file metadata) once a
    /// checkpoint is complete when a write begins. Only this connection writes, so this one
    /// completes: it has just the frames since the checkpointer's last pass to copy.
    /// PostgreSQL checkpoints by itself: nothing to do there.
    pub async fn finish_checkpoint(&mut self) -> anyhow::Result<()> {
        if let WriterConn::Sqlite(conn) = &mut self.conn {
            sqlx::query(dialect::sqlite::CHECKPOINT_SQL).execute(conn).await?;
        }
        Ok(())
    }
}

impl Store {
    /// A dedicated connection for the intake writer (see [`EventWriter`]).
    pub async fn event_writer(&self) -> anyhow::Result<EventWriter> {
        let conn = match &self.writer {
            WriterOptions::Sqlite(options) => WriterConn::Sqlite(dialect::sqlite::writer(options).await?),
            WriterOptions::Postgres(options) => WriterConn::Postgres(dialect::postgres::writer(options).await?),
        };
        Ok(EventWriter { conn })
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

    /// Forget the shared duplicate window's rows received before `before` (PostgreSQL; SQLite
    /// keeps its window in the intake writer's memory). Returns how many went.
    pub async fn purge_duplicate_window(&self, before: i64) -> anyhow::Result<u64> {
        if self.backend != Backend::Postgres {
            return Ok(0);
        }
        Ok(sqlx::query(dialect::postgres::PURGE_DEDUPE_SQL).bind(before).execute(&self.pool).await?.rows_affected())
    }

    /// Copy committed WAL frames into the database file without blocking writers or readers
    /// (PASSIVE); the intake writer leaves this to a task beside it. Nothing to do on PostgreSQL.
    pub async fn checkpoint(&self) -> anyhow::Result<()> {
        if self.backend == Backend::Sqlite {
            sqlx::query(dialect::sqlite::CHECKPOINT_SQL).execute(&self.pool).await?;
        }
        Ok(())
    }
}
