//! Webhook events as the console and the CLI see them: listing by keyset page, counting, replay
//! (one, or every dead one of a filter), retention, and queuing a company's waiting events.

use super::Store;
use crate::domain::{endpoint::DeliveryState, status::Status, CompanyId, ConnectionId, EventId, EventState};

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
    /// The state of its delivery that needs attention first (dead, retrying, processing, pending,
    /// done), or none without deliveries: what [`EventRow::status`] shows besides its own state.
    pub worst_delivery: Option<String>,
}

impl EventRow {
    /// Its status as every screen and the CLI show it (`domain::status`): a processed event whose
    /// delivery is retrying is not shown `done`.
    pub fn status(&self) -> Status {
        let delivery = self.worst_delivery.as_deref().and_then(|d| DeliveryState::parse(d).ok());
        match EventState::parse(&self.state) {
            Ok(state) => Status::of_event(state, delivery),
            // A state this version does not know is shown as pending, never as done.
            Err(_) => Status::Pending,
        }
    }
}

const EVENT_COLUMNS: &str = "id as rowid, public_id, received_at, event_type, company_id, inspection_id, review_id, \
    status_text, connection_id, state, attempts, next_attempt_at, duplicates, last_error, completed_at, payload, inspection, \
    (select d.state from deliveries d where d.event_id = events.id order by case d.state when 'dead' then 4 \
     when 'retrying' then 3 when 'processing' then 2 when 'pending' then 1 else 0 end desc limit 1) as worst_delivery";

/// The shown status (`domain::status`) in SQL, for filtering and counting by it: a processed
/// event is `delivery_dead`, `delivery_retrying` or `delivering` while one of its deliveries is.
/// Keep in step with [`Status::of_event`] and [`crate::domain::status::delivery_rank`].
const SHOWN_STATUS: &str = "case when state <> 'done' then state \
    when exists (select 1 from deliveries d where d.event_id = events.id and d.state = 'dead') then 'delivery_dead' \
    when exists (select 1 from deliveries d where d.event_id = events.id and d.state = 'retrying') then 'delivery_retrying' \
    when exists (select 1 from deliveries d where d.event_id = events.id and d.state in ('pending', 'processing')) \
    then 'delivering' else 'done' end";

/// Which events to list; every part is optional. `before` is the keyset cursor (a rowid).
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// The shown status (`domain::status`), not only the stored state: `done` lists only events
    /// whose deliveries are all done, `delivery_retrying` those with a delivery retrying.
    pub status: Option<Status>,
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
        if let Some(s) = self.status {
            // The stored state first, so SQLite can use the (state, id) index.
            let stored = s.stored_event_state().unwrap_or(EventState::Done);
            push("state = ?", FilterArg::Text(stored.as_str().to_owned()));
            if stored == EventState::Done {
                push(&format!("{SHOWN_STATUS} = ?"), FilterArg::Text(s.as_str().to_owned()));
            }
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

impl Store {
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

    /// Replay every dead event matching the filter, or with `chunk` only the oldest that many of
    /// them (the CLI replays in chunks to show progress; each chunk is one transaction, audited);
    /// returns how many.
    pub async fn replay_dead(
        &self,
        filter: &EventFilter,
        chunk: Option<i64>,
        now: i64,
        actor: &str,
    ) -> anyhow::Result<u64> {
        let filter = EventFilter { status: Some(Status::Dead), before: None, ..filter.clone() };
        let (clause, args) = filter.clause();
        let n = args.len();
        let limit = chunk.map(|_| format!(" order by id limit ${}", n + 2)).unwrap_or_default();
        let sql = format!(
            "update events set state = 'pending', attempts = 0, next_attempt_at = ${}, lease_owner = null \
             where id in (select id from events {clause}{limit})",
            n + 1
        );
        let mut tx = self.write_tx().await?;
        let mut q = bind_args!(sqlx::query(&sql), args).bind(now);
        if let Some(c) = chunk {
            q = q.bind(c);
        }
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
        // An integer, not a boolean: SQLite has no boolean type for the `Any` driver to decode.
        let sql = format!("select case when exists (select 1 from events {clause}) then 1 else 0 end");
        let q = bind_args!(sqlx::query_scalar::<_, i64>(&sql), args);
        Ok(q.fetch_one(&self.pool).await? != 0)
    }

    /// How many events match the filter.
    pub async fn count_events(&self, filter: &EventFilter) -> anyhow::Result<i64> {
        let (clause, args) = filter.clause();
        let sql = format!("select count(*) from events {clause}");
        Ok(bind_args!(sqlx::query_scalar::<_, i64>(&sql), args).fetch_one(&self.pool).await?)
    }

    /// How many events arrived since `since`, by shown status (the dashboard's last 24 hours), so
    /// each count is what its link to the filtered list shows.
    pub async fn event_counts_since(&self, since: i64) -> anyhow::Result<Vec<(String, i64)>> {
        let sql = format!(
            "select {SHOWN_STATUS} as shown, count(*) from events where received_at >= $1 group by 1 order by 1"
        );
        Ok(sqlx::query_as(&sql).bind(since).fetch_all(&self.pool).await?)
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

    /// How many events are in each state.
    pub async fn event_counts(&self) -> anyhow::Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as("select state, count(*) from events group by state").fetch_all(&self.pool).await?)
    }

    /// Delete done events completed before `before` (their attempts go with them), once every
    /// delivery of theirs is done: a delivery waiting for a disabled endpoint, or dead and
    /// waiting for a replay, keeps its event.
    pub async fn purge_done_events(&self, before: i64) -> anyhow::Result<u64> {
        Ok(sqlx::query(
            "delete from events where state = 'done' and completed_at < $1 \
             and not exists (select 1 from deliveries d where d.event_id = events.id and d.state <> 'done')",
        )
        .bind(before)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }
}

impl Store {
    /// Dismiss an event that waits for a company (`unmatched`) or never will match (`rejected`):
    /// it is deleted, and the audit log says so. False if there is no such waiting event.
    pub async fn dismiss_event(&self, id: &EventId, now: i64, actor: &str) -> anyhow::Result<bool> {
        let mut tx = self.write_tx().await?;
        let gone: Option<(String,)> = sqlx::query_as(
            "delete from events where public_id = $1 and state in ('unmatched', 'rejected') returning state",
        )
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some((state,)) = gone else { return Ok(false) };
        super::audit::insert_audit(&mut tx, now, actor, "event_dismissed", None, &format!("event {id} (was {state})"))
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Delete `unmatched` and `rejected` events received before `before`: a company that has not
    /// connected within `EVENT_RETENTION` is not waited for any longer.
    pub async fn purge_waiting_events(&self, before: i64) -> anyhow::Result<u64> {
        Ok(sqlx::query("delete from events where state in ('unmatched', 'rejected') and received_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }
}

/// Inside a connect transaction: the company's waiting events now belong to the connection.
pub(super) async fn match_unmatched(
    tx: &mut super::Tx,
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
