//! Durable intake with group commit: one writer task takes every event waiting at that moment, writes
//! them in one transaction (one fsync), and only then answers each request.

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

use super::dedupe::{Deduper, MAX_ENTRIES};

use crate::{
    domain::EventId,
    snapinspect::webhook::WebhookPayload,
    store::{EventWriter, Inserted, NewEvent, Outage, Store, Written},
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

/// The event could not be stored: the caller answers 503 so SnapInspect retries.
#[derive(Debug, thiserror::Error)]
#[error("the event store is unavailable right now")]
pub struct Unavailable;

struct Job {
    event: NewEvent,
    reply: oneshot::Sender<Result<Inserted, Unavailable>>,
}

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

async fn writer(store: Store, options: IngestOptions, mut rx: mpsc::Receiver<Job>, stored: Arc<Notify>) {
    let max = if options.group_commit { MAX_BATCH } else { 1 };
    let window_ms = options.dedupe_window.as_millis() as i64;
    let mut dedupe = Deduper::new(window_ms, MAX_ENTRIES);
    match store.recent_event_hashes(window_start(now_ms(), window_ms), MAX_ENTRIES).await {
        Ok(recent) => {
            for (hash, id, at) in recent.into_iter().rev() {
                dedupe.remember(hash, id, at);
            }
        }
        Err(e) => {
            tracing::warn!(error.chain = %format!("{e:#}"), "could not load recent events for duplicate detection")
        }
    }
    let mut jobs: Vec<Job> = Vec::with_capacity(max);
    let mut conn: Option<EventWriter> = None;
    // A failing store is logged when it starts failing, once a minute, and when it answers again.
    let mut outage = Outage::new("storing webhook events", "intake", store.health().clone());
    let dirty = Arc::new(AtomicBool::new(false));
    let checkpointer = tokio::spawn(checkpointer(store.clone(), dirty.clone()));
    let mut finish_checkpoint = Every::new(FINISH_CHECKPOINT_EVERY);
    let mut purge_window = Every::new(PURGE_WINDOW_EVERY);
    // Ends when every Ingestor is dropped and the queue is drained: in-flight events are written.
    while rx.recv_many(&mut jobs, max).await > 0 {
        dedupe.expire(now_ms());
        // Split the batch into new events and duplicates (of earlier events, or of one in this batch).
        let mut fresh: Vec<NewEvent> = Vec::with_capacity(jobs.len());
        let mut outcomes = Vec::with_capacity(jobs.len());
        let mut in_batch: HashMap<String, EventId> = HashMap::new();
        let mut duplicates: HashMap<EventId, i64> = HashMap::new();
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs.drain(..) {
            let hash = &job.event.payload.dedupe_hash;
            match dedupe.original(hash).or_else(|| in_batch.get(hash)).cloned() {
                Some(original) => {
                    *duplicates.entry(original.clone()).or_default() += 1;
                    outcomes.push(Inserted::Duplicate(original));
                }
                None => {
                    in_batch.insert(hash.clone(), job.event.id.clone());
                    outcomes.push(Inserted::Stored(job.event.id.clone()));
                    fresh.push(job.event);
                }
            }
            replies.push(job.reply);
        }
        let duplicates: Vec<(EventId, i64)> = duplicates.into_iter().collect();
        let result = match conn.as_mut() {
            Some(w) => w.insert(&fresh, &duplicates, window_ms).await,
            None => match store.event_writer().await {
                Ok(w) => conn.insert(w).insert(&fresh, &duplicates, window_ms).await,
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(written) => {
                outage.answered();
                dirty.store(true, Ordering::Relaxed);
                if fresh.iter().any(|e| !written.taken.contains_key(&e.id) && !written.failed.contains(&e.id)) {
                    stored.notify_one();
                }
                // Events another instance had already stored are duplicates of its event; one the
                // store refused is not remembered, so its sender's retry is not taken for a duplicate.
                for e in fresh.into_iter().filter(|e| !written.failed.contains(&e.id)) {
                    let id = written.taken.get(&e.id).cloned().unwrap_or(e.id);
                    dedupe.remember(e.payload.dedupe_hash, id, e.received_at);
                }
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(answer(outcome, &written));
                }
                if !written.failed.is_empty() {
                    // Start the next batch on a fresh connection, in case this one is broken.
                    conn = None;
                }
                if purge_window.due(Instant::now()) {
                    if let Err(e) = store.purge_duplicate_window(window_start(now_ms(), window_ms)).await {
                        tracing::warn!(error.chain = %format!("{e:#}"), "purging the duplicate window failed");
                    }
                }
                // After the replies are out, so no answer waits for it.
                if finish_checkpoint.due(Instant::now()) {
                    if let Some(w) = conn.as_mut() {
                        if let Err(e) = w.finish_checkpoint().await {
                            tracing::warn!(error.chain = %format!("{e:#}"), "WAL checkpoint failed");
                        }
                    }
                }
            }
            Err(e) => {
                // Each request is answered 503 at once: the backoff is for loops, not for intake.
                let _ = outage.failed(&e.context(format!("{} events answered 503", replies.len())));
                // Start the next batch on a fresh connection, in case this one is broken.
                conn = None;
                for reply in replies {
                    let _ = reply.send(Err(Unavailable));
                }
            }
        }
    }
    checkpointer.abort();
    if let Err(e) = store.checkpoint().await {
        tracing::debug!(error.chain = %format!("{e:#}"), "final checkpoint skipped");
    }
}

/// What a request of a written batch is told: its event (or, if another instance stored it first,
/// that one), or 503 when the store refused its event, or the original it duplicates.
fn answer(outcome: Inserted, written: &Written) -> Result<Inserted, Unavailable> {
    let id = match &outcome {
        Inserted::Stored(id) | Inserted::Duplicate(id) => id,
    };
    if written.failed.contains(id) {
        return Err(Unavailable);
    }
    Ok(match written.taken.get(id) {
        Some(original) => Inserted::Duplicate(original.clone()),
        None => outcome,
    })
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

    #[test]
    fn a_request_is_told_of_its_event_the_one_stored_first_or_that_the_store_refused_it() {
        let [a, b, c, d] = [(); 4].map(|_| EventId::generate());
        let written = Written { taken: [(b.clone(), c.clone())].into(), failed: [d.clone()].into() };
        assert_eq!(answer(Inserted::Stored(a.clone()), &written).unwrap(), Inserted::Stored(a.clone()));
        assert_eq!(answer(Inserted::Duplicate(a.clone()), &written).unwrap(), Inserted::Duplicate(a));
        assert_eq!(answer(Inserted::Stored(b.clone()), &written).unwrap(), Inserted::Duplicate(c.clone()));
        assert_eq!(answer(Inserted::Duplicate(b), &written).unwrap(), Inserted::Duplicate(c));
        assert!(answer(Inserted::Stored(d.clone()), &written).is_err(), "refused: 503");
        assert!(answer(Inserted::Duplicate(d), &written).is_err(), "a duplicate of a refused one too");
    }

    #[test]
    fn the_duplicate_window_reaches_back_from_now() {
        assert_eq!(window_start(1_000_000, 7_200), 992_800);
    }
}
