//! Durable intake with group commit: one writer task takes every event waiting at that moment, writes
//! them in one transaction (one fsync; on PostgreSQL several at once), and only then answers each request.

// Concurrent requests share a commit; none is answered before its own event is on disk.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot, Notify};

use futures_util::{stream::FuturesUnordered, StreamExt};

pub use super::batch::Unavailable;
use super::{
    batch::{Batch, Job},
    dedupe::{Deduper, MAX_ENTRIES},
    reload::Reload,
};

use crate::{
    domain::EventId,
    snapinspect::webhook::WebhookPayload,
    store::{Backend, EventWriter, Inserted, NewEvent, Outage, Store, Written},
    time::now_ms,
};

/// The most events one transaction takes.
const MAX_BATCH: usize = 1024;
/// How often the writer finishes a checkpoint itself (see `EventWriter::finish_checkpoint`).
const FINISH_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// How often the shared duplicate window (PostgreSQL) drops rows older than the window.
const PURGE_WINDOW_EVERY: Duration = Duration::from_secs(600);
/// Requests waiting for the writer beyond this wait to be queued (backpressure).
const QUEUE_DEPTH: usize = 8192;

/// How many batches PostgreSQL writes at once, each on a connection of its own, so one batch's
/// round trip and commit overlap the next one's (SQLite has a single writer). Measured on 2 cores:
/// 1 and 2 alike, 4 and 8 slower (smaller batches, each with a statement's fixed cost).
const POSTGRES_WRITERS: usize = 2;

/// How the writer batches.
#[derive(Debug, Clone, Copy)]
pub struct IngestOptions {
    /// Off: one transaction per event (the benchmark's baseline).
    pub group_commit: bool,
    /// Identical payloads for one company within this window are one event.
    pub dedupe_window: Duration,
}

/// The handle requests use to hand events to the writer. Cheap to clone.
#[derive(Clone)]
pub struct Ingestor {
    tx: mpsc::Sender<Job>,
}

impl Ingestor {
    /// Start the writer task. `stored` is notified after each commit that queued something.
    pub fn spawn(store: Store, options: IngestOptions, stored: Arc<Notify>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(writer(store, options, rx, stored));
        Self { tx }
    }

    /// Store one event durably; returns once its transaction has committed.
    pub async fn submit(&self, payload: WebhookPayload) -> Result<Inserted, Unavailable> {
        let (reply, answer) = oneshot::channel();
        let event = NewEvent { id: EventId::generate(), received_at: now_ms(), payload };
        self.tx.send(Job { event, reply }).await.map_err(|_| Unavailable)?;
        answer.await.map_err(|_| Unavailable)?
    }
}

/// The intake's side of the store: what the writer keeps between batches.
struct Intake {
    store: Store,
    window_ms: i64,
    dedupe: Deduper,
    reload: Reload,
    /// A failing store is logged when it starts failing, once a minute, and when it answers again.
    outage: Outage,
    stored: Arc<Notify>,
    /// Tells the announcer that events were stored (PostgreSQL: other instances' workers).
    announce: Arc<Notify>,
    /// Set after each commit, for the checkpointer (SQLite).
    dirty: Arc<AtomicBool>,
    finish_checkpoint: Every,
    purge_window: Every,
}

/// A batch written on a writer's connection (none: to be opened), with what became of it.
type Done = (Option<EventWriter>, Batch, anyhow::Result<Written>);

async fn writer(store: Store, options: IngestOptions, mut rx: mpsc::Receiver<Job>, stored: Arc<Notify>) {
    let max = if options.group_commit { MAX_BATCH } else { 1 };
    let window_ms = options.dedupe_window.as_millis() as i64;
    let writers = if options.group_commit && store.backend() == Backend::Postgres { POSTGRES_WRITERS } else { 1 };
    let mut intake = Intake {
        // The window reloads beside the intake, which serves from the first moment.
        reload: Reload::start(store.clone(), window_start(now_ms(), window_ms)),
        dedupe: Deduper::new(window_ms, MAX_ENTRIES),
        outage: Outage::new("storing webhook events", "intake", store.health().clone()),
        window_ms,
        stored,
        announce: Arc::new(Notify::new()),
        dirty: Arc::new(AtomicBool::new(false)),
        finish_checkpoint: Every::new(FINISH_CHECKPOINT_EVERY),
        purge_window: Every::new(PURGE_WINDOW_EVERY),
        store,
    };
    let checkpointer = tokio::spawn(checkpointer(intake.store.clone(), intake.dirty.clone()));
    let announcer = tokio::spawn(announcer(intake.store.clone(), intake.announce.clone()));
    let mut idle: Vec<Option<EventWriter>> = (0..writers).map(|_| None).collect();
    let mut writing = FuturesUnordered::new();
    let mut jobs: Vec<Job> = Vec::with_capacity(max);
    loop {
        // A batch written goes first, then the next batch (while a writer is idle), then a page of
        // the window's reload. Ends when every Ingestor is dropped and the queue is drained.
        tokio::select! {
            biased;
            Some((conn, batch, result)) = writing.next(), if !writing.is_empty() => {
                idle.push(intake.finish(conn, batch, result).await);
                continue;
            }
            n = rx.recv_many(&mut jobs, max), if !idle.is_empty() => if n == 0 { break },
            page = intake.reload.next_page(), if intake.reload.is_loading() => {
                intake.reload.take(page, &mut intake.dedupe);
                continue;
            }
        }
        let Some(batch) = intake.split(&mut jobs).await else { continue };
        let conn = idle.pop().expect("a writer is idle");
        writing.push(write(intake.store.clone(), conn, batch, window_ms));
    }
    // In-flight batches are written and answered.
    while let Some((conn, batch, result)) = writing.next().await {
        intake.finish(conn, batch, result).await;
    }
    checkpointer.abort();
    announcer.abort();
    if let Err(e) = intake.store.checkpoint().await {
        tracing::debug!(error.chain = %format!("{e:#}"), "final checkpoint skipped");
    }
}

/// Write a batch on a writer's connection, opening it first if need be.
async fn write(store: Store, mut conn: Option<EventWriter>, batch: Batch, window_ms: i64) -> Done {
    if conn.is_none() {
        match store.event_writer().await {
            Ok(w) => conn = Some(w),
            Err(e) => return (None, batch, Err(e)),
        }
    }
    let result = conn.as_mut().expect("opened above").insert(&batch.fresh, &batch.duplicates, window_ms).await;
    (conn, batch, result)
}

impl Intake {
    /// The waiting jobs as a batch, once the window (and while it loads, its part not loaded yet)
    /// has been asked about them; none if the store could not be asked (every job is told).
    async fn split(&mut self, jobs: &mut Vec<Job>) -> Option<Batch> {
        self.reload.merge_into(&mut self.dedupe);
        self.dedupe.expire(now_ms());
        let hashes = jobs.iter().map(|j| j.event.payload.dedupe_hash.as_str());
        match self.reload.holders(&self.store, hashes, &self.dedupe).await {
            Ok(unloaded) => Some(Batch::split(jobs, &self.dedupe, &unloaded)),
            Err(e) => {
                let _ = self.outage.failed(&e.context(format!("{} events answered 503", jobs.len())));
                Batch::split(jobs, &self.dedupe, &HashMap::new()).refuse();
                None
            }
        }
    }

    /// Answer a written batch, and do the chores due; returns the writer's connection (none if it
    /// is to be opened again).
    async fn finish(
        &mut self,
        mut conn: Option<EventWriter>,
        batch: Batch,
        result: anyhow::Result<Written>,
    ) -> Option<EventWriter> {
        let written = match result {
            Ok(written) => written,
            Err(e) => {
                // Each request is answered 503 at once: the backoff is for loops, not for intake.
                let _ = self.outage.failed(&e.context(format!("{} events answered 503", batch.len())));
                batch.refuse();
                // The next batch on a fresh connection, in case this one is broken.
                return None;
            }
        };
        self.outage.answered();
        self.dirty.store(true, Ordering::Relaxed);
        if batch.stored_any(&written) {
            self.stored.notify_one();
            self.announce.notify_one();
        }
        batch.answer(&written, &mut self.dedupe);
        if !written.failed.is_empty() {
            conn = None;
        }
        // After the replies are out, so no answer waits for them.
        if self.purge_window.due(Instant::now()) {
            if let Err(e) = self.store.purge_duplicate_window(window_start(now_ms(), self.window_ms)).await {
                tracing::warn!(error.chain = %format!("{e:#}"), "purging the duplicate window failed");
            }
        }
        if self.finish_checkpoint.due(Instant::now()) {
            if let Some(w) = conn.as_mut() {
                if let Err(e) = w.finish_checkpoint().await {
                    tracing::warn!(error.chain = %format!("{e:#}"), "WAL checkpoint failed");
                }
            }
        }
        conn
    }
}

/// Where the duplicate window now begins.
fn window_start(now_ms: i64, window_ms: i64) -> i64 {
    now_ms - window_ms
}

/// A chore the writer does between batches, at most once per period.
struct Every {
    period: Duration,
    last: Instant,
}

impl Every {
    fn new(period: Duration) -> Self {
        Self { period, last: Instant::now() }
    }

    /// Whether `period` has passed since the chore was last due (which is now, if so).
    fn due(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.last) < self.period {
            return false;
        }
        self.last = now;
        true
    }
}

/// Tells every instance's worker that events were stored (see `Store::announce_events`): one
/// announcement at a time, each covering every batch stored while the one before was on its way.
async fn announcer(store: Store, due: Arc<Notify>) {
    if store.backend() != Backend::Postgres {
        return;
    }
    let mut outage = Outage::new("announcing stored events to other instances", "announce", store.health().clone());
    loop {
        due.notified().await;
        match store.announce_events().await {
            Ok(()) => outage.answered(),
            Err(e) => {
                // Their workers poll as well: an announcement missed only delays them.
                let _ = outage.failed(&e);
            }
        }
    }
}

/// The intake writer's connection does not checkpoint (so no commit waits for one); this does,
/// on another connection, every 100 ms while events are arriving.
async fn checkpointer(store: Store, dirty: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        if dirty.swap(false, Ordering::Relaxed) {
            if let Err(e) = store.checkpoint().await {
                tracing::warn!(error.chain = %format!("{e:#}"), "WAL checkpoint failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chore_is_due_once_per_period_counted_from_when_it_was_last_due() {
        let start = Instant::now();
        let mut every = Every { period: Duration::from_secs(10), last: start };
        assert!(!every.due(start + Duration::from_secs(9)));
        assert!(every.due(start + Duration::from_secs(10)));
        assert!(!every.due(start + Duration::from_secs(19)), "the period starts again when it was due");
        assert!(every.due(start + Duration::from_secs(45)), "and a long quiet spell does not stop it");
        assert!(!every.due(start), "a clock read before the last time is not a period later");
    }

    #[tokio::test]
    async fn the_writer_tells_a_duplicate_of_an_event_stored_before_it_started_whether_or_not_the_reload_is_done() {
        let now = now_ms();
        let (_dir, store) = super::super::reload::tests::store_with_events(12_000, now - 1000).await; // more than two pages
        let options = IngestOptions { group_commit: true, dedupe_window: Duration::from_secs(7200) };
        let ingestor = Ingestor::spawn(store.clone(), options, Arc::new(Notify::new()));
        let payload = |hash: &str| {
            let mut p = crate::snapinspect::webhook::parse_payload(br#"{"company_id":1}"#).unwrap();
            p.dedupe_hash = hash.into();
            p
        };
        let first = ingestor.submit(payload("bench1")).await.unwrap();
        assert_eq!(first, Inserted::Duplicate(EventId::parse("evt_bench000001000000000000001").unwrap()));
        let fresh = ingestor.submit(payload("never-seen")).await.unwrap();
        assert!(matches!(fresh, Inserted::Stored(_)), "{fresh:?}");
        let again = ingestor.submit(payload("never-seen")).await.unwrap();
        assert_eq!(
            again,
            Inserted::Duplicate(match fresh {
                Inserted::Stored(id) => id,
                _ => unreachable!(),
            })
        );
    }

    #[test]
    fn the_duplicate_window_reaches_back_from_now() {
        assert_eq!(window_start(1_000_000, 7_200), 992_800);
    }
}
