//! The intake's side of the events table: the writer's own connection storing each batch in one
//! transaction (row by row if that fails), the duplicate window's warm-up, checkpoints beside it.

use std::collections::{HashMap, HashSet};

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

/// What became of a batch (see [`EventWriter::insert`]).
#[derive(Debug, Default)]
pub struct Written {
    /// The events another instance had already stored within the window, each with the id of the
    /// one it stored (they are counted there, not stored).
    pub taken: HashMap<EventId, EventId>,
    /// The events the store refused even alone: new ones not stored, or originals whose duplicate
    /// count could not grow. Their senders are answered 503, and send again.
    pub failed: HashSet<EventId>,
}

impl EventWriter {
    /// Store a batch of new events and count the duplicates that arrived with it, in one
    /// transaction (one commit, one fsync for all). Each event is matched to its company's
    /// SnapInspect connection; without one it waits as `unmatched`.
    ///
    /// The database decides which events of `events` are duplicates of one another instance
    /// stored: on PostgreSQL other instances share the window (`window_ms`). SQLite has one
    /// instance, whose own window (the caller's) is complete: none.
    ///
    /// Should the batch fail, each event (and each count) is tried again alone, so one the store
    /// refuses fails alone: [`Written::failed`]. An error means none could be stored.
    #[tracing::instrument(skip_all, fields(events = events.len(), duplicates = duplicates.len()))]
    pub async fn insert(
        &mut self,
        events: &[NewEvent],
        duplicates: &[(EventId, i64)],
        window_ms: i64,
    ) -> anyhow::Result<Written> {
        let error = match self.insert_batch(events, duplicates, window_ms).await {
            Ok(taken) => return Ok(Written { taken, failed: HashSet::new() }),
            Err(e) if events.len() + duplicates.len() <= 1 => return Err(e),
            Err(e) => e,
        };
        tracing::warn!(error.chain = %format!("{error:#}"), "storing a batch of webhook events failed; storing each alone");
        let mut counts: HashMap<&EventId, i64> = duplicates.iter().map(|(id, n)| (id, *n)).collect();
        let mut written = Written::default();
        for e in events {
            // An event goes with the duplicates of it that arrived in the same batch.
            let counted: Vec<(EventId, i64)> = counts.remove(&e.id).map(|n| (e.id.clone(), n)).into_iter().collect();
            match self.insert_batch(std::slice::from_ref(e), &counted, window_ms).await {
                Ok(taken) => written.taken.extend(taken),
                Err(err) => {
                    tracing::error!(event_id = %e.id, error.chain = %format!("{err:#}"), "a webhook event cannot be stored; answering 503");
                    written.failed.insert(e.id.clone());
                }
            }
        }
        let tries = events.len() + counts.len();
        for (id, n) in counts {
            if let Err(err) = self.insert_batch(&[], &[(id.clone(), n)], window_ms).await {
                tracing::error!(event_id = %id, error.chain = %format!("{err:#}"), "duplicates of a webhook event cannot be counted; answering 503");
                written.failed.insert(id.clone());
            }
        }
        if written.failed.len() == tries {
            return Err(error);
        }
        Ok(written)
    }

    /// One transaction for the batch; returns the events another instance had stored.
    async fn insert_batch(
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
