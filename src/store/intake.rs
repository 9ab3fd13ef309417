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

/// An event of the duplicate window: its payload hash, id and arrival time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowEntry {
    pub hash: String,
    pub id: EventId,
    pub at: i64,
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
            Ok(written) => return Ok(written),
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
                Ok(alone) => {
                    written.taken.extend(alone.taken);
                    written.failed.extend(alone.failed);
                }
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

    /// One transaction for the batch.
    async fn insert_batch(
        &mut self,
        events: &[NewEvent],
        duplicates: &[(EventId, i64)],
        window_ms: i64,
    ) -> anyhow::Result<Written> {
        match &mut self.conn {
            WriterConn::Sqlite(conn) => {
                dialect::sqlite::insert(conn, events, duplicates).await?;
                Ok(Written::default())
            }
            WriterConn::Postgres(conn) => {
                let stored = dialect::postgres::insert(conn, events, duplicates, window_ms).await?;
                Ok(Written { taken: stored.taken, failed: stored.uncounted })
            }
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

    /// A page of the duplicate window, newest first: the payload hashes, ids and arrival times of
    /// events received since `since` and before `before` (an arrival time and a hash; none: from
    /// now). What the intake's duplicate detection is warmed with, a page at a time beside the
    /// intake. On SQLite it reads only the `events_window` index, not the rows.
    pub async fn window_page(&self, since: i64, before: Option<&(i64, String)>) -> anyhow::Result<Vec<WindowEntry>> {
        let (at, hash) = before.map_or((i64::MAX, ""), |(at, hash)| (*at, hash.as_str()));
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "select payload_hash, public_id, received_at from events where received_at >= $1 \
             and (received_at < $2 or (received_at = $2 and payload_hash < $3)) \
             order by received_at desc, payload_hash desc limit 5000",
        )
        .bind(since)
        .bind(at)
        .bind(hash)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|(hash, id, at)| Ok(WindowEntry { hash, id: EventId::parse(&id)?, at })).collect()
    }

    /// The events received from `since` to `until` (both included) with one of these payload
    /// hashes: the part of the duplicate window not yet loaded, for a batch that arrives while it
    /// loads (SQLite: the `events_window` index alone answers).
    pub async fn window_holders(&self, hashes: &[&str], since: i64, until: i64) -> anyhow::Result<Vec<WindowEntry>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(match self.backend {
            Backend::Sqlite => dialect::sqlite::WINDOW_HOLDERS_SQL,
            Backend::Postgres => dialect::postgres::WINDOW_HOLDERS_SQL,
        })
        .bind(since)
        .bind(until)
        .bind(serde_json::to_string(hashes)?)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|(hash, id, at)| Ok(WindowEntry { hash, id: EventId::parse(&id)?, at })).collect()
    }

    /// Wake every instance's worker (PostgreSQL `NOTIFY`): events were stored. Outside the
    /// events' transaction, so no commit waits for another's behind the notification lock (a
    /// statement with no write has nothing to flush). Nothing to do on SQLite, with one instance.
    pub async fn announce_events(&self) -> anyhow::Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query(dialect::postgres::ANNOUNCE_SQL).execute(&self.pool).await?;
        }
        Ok(())
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
