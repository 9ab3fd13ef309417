//! Webhook events: the group-committed insert with duplicate detection, the worker's lease-based
//! claim, the outcome of each attempt, replay, listing and retention.

use anyhow::Context;
use serde_json::json;
use sqlx::{sqlite::SqliteConnection, ConnectOptions};

use super::Store;
use crate::{
    domain::{CompanyId, ConnectionId, EventId, EventState},
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

/// An event the worker has claimed.
#[derive(Debug, Clone)]
pub struct ClaimedEvent {
    pub rowid: i64,
    pub id: EventId,
    pub received_at: i64,
    pub kind: Option<String>,
    pub company_id: Option<CompanyId>,
    pub inspection_id: Option<i64>,
    pub connection_id: Option<ConnectionId>,
    pub payload: String,
    /// Including this one.
    pub attempts: i64,
}

/// What one attempt ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Done,
    Retry,
    Dead,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Done => "done",
            AttemptOutcome::Retry => "retry",
            AttemptOutcome::Dead => "dead",
        }
    }
}

/// One processing attempt, to record.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    pub started_at: i64,
    pub duration_ms: i64,
    pub outcome: AttemptOutcome,
    pub http_status: Option<i64>,
    pub error: Option<String>,
}

/// One processing attempt, as recorded.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Attempt {
    pub started_at: i64,
    pub duration_ms: i64,
    pub outcome: String,
    pub http_status: Option<i64>,
    pub error: Option<String>,
}

/// An event as the console and the CLI list it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub rowid: i64,
    pub public_id: String,
    pub received_at: i64,
    pub event_type: Option<String>,
    pub company_id: Option<i64>,
    pub inspection_id: Option<i64>,
    pub review_id: Option<i64>,
    pub status_text: Option<String>,
    pub connection_id: Option<String>,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub duplicates: i64,
    pub last_error: Option<String>,
    pub completed_at: Option<i64>,
    pub payload: String,
    pub inspection: Option<String>,
}

const EVENT_COLUMNS: &str = "id as rowid, public_id, received_at, event_type, company_id, inspection_id, review_id, \
    status_text, connection_id, state, attempts, next_attempt_at, duplicates, last_error, completed_at, payload, inspection";

/// Which events to list; every part is optional. `before` is the keyset cursor (a rowid).
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub state: Option<EventState>,
    pub kind: Option<String>,
    pub company: Option<CompanyId>,
    pub before: Option<i64>,
    /// The other keyset cursor: events newer than this rowid (the "newer" page).
    pub after: Option<i64>,
    pub since: Option<i64>,
}

impl EventFilter {
    /// The `where` clause and its arguments, numbered from `$1`: only the parts that are set, so
    /// SQLite can use the (state, id) and (company_id, id) indexes.
    fn clause(&self) -> (String, Vec<FilterArg>) {
        let mut parts = Vec::new();
        let mut args = Vec::new();
        let mut push = |sql: &str, arg: FilterArg| {
            args.push(arg);
            parts.push(sql.replace('?', &format!("${}", args.len())));
        };
        if let Some(s) = self.state {
            push("state = ?", FilterArg::Text(s.as_str().to_owned()));
        }
        if let Some(k) = &self.kind {
            push("event_type = ?", FilterArg::Text(k.clone()));
        }
        if let Some(c) = self.company {
            push("company_id = ?", FilterArg::Int(c.get()));
        }
        if let Some(b) = self.before {
            push("id < ?", FilterArg::Int(b));
        }
        if let Some(a) = self.after {
            push("id > ?", FilterArg::Int(a));
        }
        if let Some(s) = self.since {
            push("received_at >= ?", FilterArg::Int(s));
        }
        let clause = if parts.is_empty() { String::new() } else { format!("where {}", parts.join(" and ")) };
        (clause, args)
    }
}

enum FilterArg {
    Text(String),
    Int(i64),
}

macro_rules! bind_args {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                FilterArg::Text(t) => q.bind(t),
                FilterArg::Int(i) => q.bind(i),
            };
        }
        q
    }};
}

/// Why an event cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayRefusal {
    #[error("no event with id {0}")]
    NotFound(String),
    #[error("the event is waiting for SnapInspect company {0} to connect; it is processed as soon as it does")]
    Unmatched(String),
    #[error("the event is being processed right now")]
    Processing,
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

    /// Claim up to `limit` due events for `owner` until `lease_until`: pending and retrying events
    /// whose time has come, and processing events whose lease ran out (their worker died). While
    /// an event is processing, `next_attempt_at` holds its lease end.
    #[tracing::instrument(skip_all)]
    pub async fn claim_events(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
    ) -> anyhow::Result<Vec<ClaimedEvent>> {
        type Row = (i64, String, i64, Option<String>, Option<i64>, Option<i64>, Option<String>, String, i64);
        let rows: Vec<Row> = sqlx::query_as(
            "update events set state = 'processing', lease_owner = $1, next_attempt_at = $2, attempts = attempts + 1 \
             where id in (select id from events where state in ('pending', 'retrying', 'processing') \
             and next_attempt_at <= $3 order by next_attempt_at, id limit $4) \
             returning id, public_id, received_at, event_type, company_id, inspection_id, connection_id, payload, attempts",
        )
        .bind(owner)
        .bind(lease_until)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(rowid, id, received_at, kind, company, inspection_id, connection, payload, attempts)| {
                Ok(ClaimedEvent {
                    rowid,
                    id: EventId::parse(&id)?,
                    received_at,
                    kind,
                    company_id: company.and_then(|c| CompanyId::new(c).ok()),
                    inspection_id,
                    connection_id: connection.map(|c| ConnectionId::parse(&c)).transpose()?,
                    payload,
                    attempts,
                })
            })
            .collect()
    }

    /// Record an attempt and move the event on, in one transaction. `retry_at` is used for
    /// `Retry`; `inspection` is kept on `Done`. Returns false if the lease was lost meanwhile (the
    /// attempt is still recorded; the new owner decides the state).
    #[tracing::instrument(skip_all, fields(event_id = %event.id, outcome = attempt.outcome.as_str()))]
    pub async fn finish_attempt(
        &self,
        event: &ClaimedEvent,
        owner: &str,
        attempt: &NewAttempt,
        retry_at: i64,
        inspection: Option<&str>,
    ) -> anyhow::Result<bool> {
        let attempt_outcome = attempt.outcome;
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "insert into event_attempts (event_id, started_at, duration_ms, outcome, http_status, error) \
             values ($1, $2, $3, $4, $5, $6)",
        )
        .bind(event.rowid)
        .bind(attempt.started_at)
        .bind(attempt.duration_ms)
        .bind(attempt_outcome.as_str())
        .bind(attempt.http_status)
        .bind(&attempt.error)
        .execute(&mut *tx)
        .await?;
        let now = attempt.started_at + attempt.duration_ms;
        let updated = match attempt_outcome {
            AttemptOutcome::Done => sqlx::query(
                "update events set state = 'done', completed_at = $3, last_error = null, lease_owner = null, \
                 inspection = coalesce($4, inspection) where id = $1 and lease_owner = $2 and state = 'processing'",
            )
            .bind(event.rowid)
            .bind(owner)
            .bind(now)
            .bind(inspection),
            AttemptOutcome::Retry | AttemptOutcome::Dead => sqlx::query(
                "update events set state = $3, next_attempt_at = $4, last_error = $5, lease_owner = null, \
                 inspection = coalesce($6, inspection) where id = $1 and lease_owner = $2 and state = 'processing'",
            )
            .bind(event.rowid)
            .bind(owner)
            .bind(if attempt_outcome == AttemptOutcome::Dead { "dead" } else { "retrying" })
            .bind(if attempt_outcome == AttemptOutcome::Dead { now } else { retry_at })
            .bind(&attempt.error)
            .bind(inspection),
        }
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(updated == 1)
    }

    /// Put one event back to be processed now, with a fresh retry schedule.
    pub async fn replay_event(
        &self,
        id: &EventId,
        now: i64,
        actor: &str,
    ) -> anyhow::Result<Result<EventState, ReplayRefusal>> {
        let mut tx = self.write_tx().await?;
        let row: Option<(i64, String, Option<i64>)> =
            sqlx::query_as("select id, state, company_id from events where public_id = $1")
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let Some((rowid, state, company)) = row else {
            return Ok(Err(ReplayRefusal::NotFound(id.to_string())));
        };
        let state = EventState::parse(&state)?;
        match state {
            EventState::Unmatched => {
                return Ok(Err(ReplayRefusal::Unmatched(
                    company.map(|c| c.to_string()).unwrap_or_else(|| "(none)".into()),
                )))
            }
            EventState::Processing => return Ok(Err(ReplayRefusal::Processing)),
            _ => {}
        }
        sqlx::query(
            "update events set state = 'pending', attempts = 0, next_attempt_at = $2, lease_owner = null where id = $1",
        )
        .bind(rowid)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        super::audit::insert_audit(&mut tx, now, actor, "event_replay", None, &format!("event {id} (was {state})"))
            .await?;
        tx.commit().await?;
        Ok(Ok(state))
    }

    /// Replay every dead event matching the filter; returns how many.
    pub async fn replay_dead(&self, filter: &EventFilter, now: i64, actor: &str) -> anyhow::Result<u64> {
        let filter = EventFilter { state: Some(EventState::Dead), before: None, ..filter.clone() };
        let (clause, args) = filter.clause();
        let n = args.len();
        let sql = format!(
            "update events set state = 'pending', attempts = 0, next_attempt_at = ${}, lease_owner = null \
             where id in (select id from events {clause})",
            n + 1
        );
        let mut tx = self.write_tx().await?;
        let q = bind_args!(sqlx::query(&sql), args).bind(now);
        let count = q.execute(&mut *tx).await?.rows_affected();
        super::audit::insert_audit(&mut tx, now, actor, "event_replay", None, &format!("{count} dead events replayed"))
            .await?;
        tx.commit().await?;
        Ok(count)
    }

    /// Events matching the filter, newest first: a keyset page. With `after`, the page just newer
    /// than that rowid (read oldest first, then turned around).
    pub async fn events(&self, filter: &EventFilter, limit: i64) -> anyhow::Result<Vec<EventRow>> {
        let (clause, args) = filter.clause();
        let order = if filter.after.is_some() && filter.before.is_none() { "asc" } else { "desc" };
        let sql = format!("select {EVENT_COLUMNS} from events {clause} order by id {order} limit ${}", args.len() + 1);
        let q = bind_args!(sqlx::query_as::<_, EventRow>(&sql), args).bind(limit);
        let mut rows = q.fetch_all(&self.pool).await?;
        if order == "asc" {
            rows.reverse();
        }
        Ok(rows)
    }

    /// Whether any event matching the filter (without its cursors) lies beyond `rowid` in the
    /// given direction: tells the console whether to offer an "older" / "newer" link.
    pub async fn events_beyond(&self, filter: &EventFilter, rowid: i64, older: bool) -> anyhow::Result<bool> {
        let f = EventFilter { before: older.then_some(rowid), after: (!older).then_some(rowid), ..filter.clone() };
        let (clause, args) = f.clause();
        let sql = format!("select exists (select 1 from events {clause})");
        let q = bind_args!(sqlx::query_scalar::<_, bool>(&sql), args);
        Ok(q.fetch_one(&self.pool).await?)
    }

    /// How many events match the filter.
    pub async fn count_events(&self, filter: &EventFilter) -> anyhow::Result<i64> {
        let (clause, args) = filter.clause();
        let sql = format!("select count(*) from events {clause}");
        Ok(bind_args!(sqlx::query_scalar::<_, i64>(&sql), args).fetch_one(&self.pool).await?)
    }

    /// How many events arrived since `since`, by state (the dashboard's last 24 hours).
    pub async fn event_counts_since(&self, since: i64) -> anyhow::Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as("select state, count(*) from events where received_at >= $1 group by state order by state")
            .bind(since)
            .fetch_all(&self.pool)
            .await?)
    }

    /// How many events are in one state (served by the (state, id) index).
    pub async fn event_count_in(&self, state: EventState) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("select count(*) from events where state = $1")
            .bind(state.as_str())
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn event(&self, id: &EventId) -> anyhow::Result<Option<EventRow>> {
        let sql = format!("select {EVENT_COLUMNS} from events where public_id = $1");
        Ok(sqlx::query_as(&sql).bind(id.as_str()).fetch_optional(&self.pool).await?)
    }

    /// Every attempt of an event, oldest first.
    pub async fn event_attempts(&self, rowid: i64) -> anyhow::Result<Vec<Attempt>> {
        Ok(sqlx::query_as(
            "select started_at, duration_ms, outcome, http_status, error from event_attempts where event_id = $1 order by id",
        )
        .bind(rowid)
        .fetch_all(&self.pool)
        .await?)
    }

    /// How many events are in each state.
    pub async fn event_counts(&self) -> anyhow::Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as("select state, count(*) from events group by state").fetch_all(&self.pool).await?)
    }

    /// Delete done events completed before `before` (their attempts go with them).
    pub async fn purge_done_events(&self, before: i64) -> anyhow::Result<u64> {
        Ok(sqlx::query("delete from events where state = 'done' and completed_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}

/// Inside a connect transaction: the company's waiting events now belong to the connection.
pub(super) async fn match_unmatched(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    connection: &ConnectionId,
    company: CompanyId,
    now: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "update events set connection_id = $1, state = 'pending', next_attempt_at = $3 \
         where company_id = $2 and state = 'unmatched'",
    )
    .bind(connection.as_str())
    .bind(company.get())
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}
