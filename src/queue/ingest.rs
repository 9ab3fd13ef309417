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
    store::{Backend, EventWriter, Inserted, NewEvent, Outage, Store, WindowEntry, Written},
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
    // The window reloads beside the intake, which serves from the first moment.
    let mut reload = Reload::start(store.clone(), window_start(now_ms(), window_ms));
    let mut jobs: Vec<Job> = Vec::with_capacity(max);
    let mut conn: Option<EventWriter> = None;
    // A failing store is logged when it starts failing, once a minute, and when it answers again.
    let mut outage = Outage::new("storing webhook events", "intake", store.health().clone());
    let dirty = Arc::new(AtomicBool::new(false));
    let checkpointer = tokio::spawn(checkpointer(store.clone(), dirty.clone()));
    let mut finish_checkpoint = Every::new(FINISH_CHECKPOINT_EVERY);
    let mut purge_window = Every::new(PURGE_WINDOW_EVERY);
    loop {
        // Pages of the reload are taken in as they come, between batches; a batch goes first. Ends
        // when every Ingestor is dropped and the queue is drained: in-flight events are written.
        tokio::select! {
            biased;
            n = rx.recv_many(&mut jobs, max) => if n == 0 { break },
            page = reload.next_page(), if reload.is_loading() => {
                reload.take(page, &mut dedupe);
                continue;
            }
        }
        reload.merge_into(&mut dedupe);
        dedupe.expire(now_ms());
        let unloaded = match reload.holders(&store, &jobs, &dedupe).await {
            Ok(holders) => holders,
            Err(e) => {
                tracing::error!(error.chain = %format!("{e:#}"), events = jobs.len(), "checking webhook events against the duplicate window failed; answering 503");
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(Unavailable));
                }
                continue;
            }
        };
        // Split the batch into new events and duplicates (of earlier events, or of one in this batch).
        let mut fresh: Vec<NewEvent> = Vec::with_capacity(jobs.len());
        let mut outcomes = Vec::with_capacity(jobs.len());
        let mut in_batch: HashMap<String, EventId> = HashMap::new();
        let mut duplicates: HashMap<EventId, i64> = HashMap::new();
        let mut replies = Vec::with_capacity(jobs.len());
        for job in jobs.drain(..) {
            let hash = &job.event.payload.dedupe_hash;
            let known = dedupe.original(hash).or_else(|| unloaded.get(hash).cloned());
            match known.or_else(|| in_batch.get(hash).cloned()) {
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
                    let id = written.taken.get(&e.id).unwrap_or(&e.id);
                    dedupe.remember(&e.payload.dedupe_hash, id, e.received_at);
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

/// The duplicate window's reload: a task reads it a page at a time, newest first, and the writer
/// takes in each page between batches. Until it is done, a batch's hashes that the loaded part does
/// not know are looked up in the part not loaded yet (on SQLite; PostgreSQL's shared window decides
/// for every event anyway), so a webhook that arrives during the reload is answered as after it.
struct Reload {
    pages: Option<mpsc::Receiver<Vec<WindowEntry>>>,
    since: i64,
    /// The oldest arrival merged so far: from `since` to here is not loaded yet.
    until: i64,
}

/// How long the reload waits after a failed page, at first and at most.
const RELOAD_RETRY: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(5));

impl Reload {
    fn start(store: Store, since: i64) -> Self {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let started = Instant::now();
            let (mut before, mut loaded, mut wait) = (None, 0usize, RELOAD_RETRY.0);
            loop {
                let page = match store.window_page(since, before.as_ref()).await {
                    Ok(page) => page,
                    Err(e) => {
                        tracing::warn!(error.chain = %format!("{e:#}"), retry_in_ms = wait.as_millis() as u64, "loading the duplicate window failed");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(RELOAD_RETRY.1);
                        continue;
                    }
                };
                let Some(last) = page.last() else { break };
                before = Some((last.at, last.hash.clone()));
                loaded += page.len();
                if tx.send(page).await.is_err() {
                    break; // the window is full, or the writer is gone
                }
            }
            tracing::info!(events = loaded, ms = started.elapsed().as_millis() as u64, "duplicate window loaded");
        });
        Self { pages: Some(rx), since, until: i64::MAX }
    }

    fn is_loading(&self) -> bool {
        self.pages.is_some()
    }

    /// The next page read (none: the reload is over). Only while loading.
    async fn next_page(&mut self) -> Option<Vec<WindowEntry>> {
        match self.pages.as_mut() {
            Some(pages) => pages.recv().await,
            None => None,
        }
    }

    /// Take in a page (none: the reload is over).
    fn take(&mut self, page: Option<Vec<WindowEntry>>, dedupe: &mut Deduper) {
        let Some(page) = page else {
            self.pages = None;
            return;
        };
        for e in page {
            if !dedupe.remember_older(&e.hash, &e.id, e.at) {
                self.pages = None; // full: older events are not wanted
                return;
            }
            self.until = e.at;
        }
    }

    /// Take in every page read so far.
    fn merge_into(&mut self, dedupe: &mut Deduper) {
        while let Some(pages) = self.pages.as_mut() {
            match pages.try_recv() {
                Ok(page) => self.take(Some(page), dedupe),
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => self.take(None, dedupe),
            }
        }
    }

    /// While the window loads (SQLite): the events of the part not loaded yet that the batch's
    /// unknown hashes duplicate, by hash.
    async fn holders(&self, store: &Store, jobs: &[Job], dedupe: &Deduper) -> anyhow::Result<HashMap<String, EventId>> {
        if self.pages.is_none() || store.backend() != Backend::Sqlite {
            return Ok(HashMap::new());
        }
        let unknown: Vec<&str> = jobs
            .iter()
            .map(|j| j.event.payload.dedupe_hash.as_str())
            .filter(|h| dedupe.original(h).is_none())
            .collect();
        if unknown.is_empty() {
            return Ok(HashMap::new());
        }
        let mut found: Vec<WindowEntry> = store.window_holders(&unknown, self.since, self.until).await?;
        found.sort_by_key(|e| e.at); // the newest holder of a hash wins
        Ok(found.into_iter().map(|e| (e.hash, e.id)).collect())
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

    /// A store in a SQLite file of its own, with `n` events received at `at` (hashes `bench1`…).
    async fn store_with_events(n: i64, at: i64) -> (tempfile::TempDir, Store) {
        let keys = Arc::new(crate::crypto::KeyRing::new(&[7u8; 32], &[]));
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("hub.db").display());
        let store = Store::open(&url, None, keys).await.unwrap();
        assert_eq!(store.bench_queue_events(n, at).await.unwrap(), n as u64);
        (dir, store)
    }

    fn job(hash: &str) -> Job {
        let mut payload = crate::snapinspect::webhook::parse_payload(br#"{"company_id":1}"#).unwrap();
        payload.dedupe_hash = hash.into();
        let event = NewEvent { id: EventId::generate(), received_at: now_ms(), payload };
        Job { event, reply: oneshot::channel().0 }
    }

    #[tokio::test]
    async fn while_the_window_loads_a_hash_it_does_not_know_is_looked_up_in_the_part_not_loaded() {
        let now = now_ms();
        let (_dir, store) = store_with_events(3, now - 1000).await;
        let (pages, rx) = mpsc::channel(4);
        let mut reload = Reload { pages: Some(rx), since: now - 10_000, until: i64::MAX };
        let mut dedupe = Deduper::new(10_000, 100);
        let jobs = [job("bench2"), job("never-seen")];
        let found = reload.holders(&store, &jobs, &dedupe).await.unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found["bench2"].as_str(), "evt_bench000001000000000000002");

        // Once that part is loaded (the page down to it), only what is older is looked up.
        let page = store.window_page(now - 10_000, None).await.unwrap();
        assert_eq!(page.len(), 3);
        pages.send(page[..1].to_vec()).await.unwrap();
        reload.merge_into(&mut dedupe);
        assert_eq!(dedupe.len(), 1);
        assert_eq!(reload.until, now - 1000);
        assert!(reload.holders(&store, &jobs, &dedupe).await.unwrap().contains_key("bench2"), "same time, lower hash");
        let outside = Reload { pages: reload.pages.take(), since: now - 10_000, until: now - 1001 };
        assert!(
            outside.holders(&store, &jobs, &dedupe).await.unwrap().is_empty(),
            "the range not loaded is all it asks"
        );
        reload.pages = outside.pages;

        // Loaded: the window alone answers, and nothing is looked up.
        pages.send(page[1..].to_vec()).await.unwrap();
        drop(pages);
        reload.merge_into(&mut dedupe);
        assert_eq!(dedupe.len(), 3);
        assert!(reload.pages.is_none(), "the reload is done when its task ends");
        assert!(dedupe.original("bench2").is_some());
        assert!(reload.holders(&store, &jobs, &dedupe).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_writer_tells_a_duplicate_of_an_event_stored_before_it_started_whether_or_not_the_reload_is_done() {
        let now = now_ms();
        let (_dir, store) = store_with_events(12_000, now - 1000).await; // more than two pages
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

    #[tokio::test]
    async fn the_window_is_read_a_page_at_a_time_newest_first_within_the_window() {
        let now = now_ms();
        let (_dir, store) = store_with_events(3, now - 1000).await;
        let page = store.window_page(now - 10_000, None).await.unwrap();
        let hashes: Vec<&str> = page.iter().map(|e| e.hash.as_str()).collect();
        assert_eq!(hashes, ["bench3", "bench2", "bench1"], "newest first; at one time, by hash");
        let rest = store.window_page(now - 10_000, Some(&(page[0].at, page[0].hash.clone()))).await.unwrap();
        assert_eq!(rest, page[1..], "the next page starts after the cursor");
        assert!(store.window_page(now - 999, None).await.unwrap().is_empty(), "older than the window");
        assert_eq!(store.window_page(now - 1000, None).await.unwrap().len(), 3, "the window's edge is in it");
    }

    #[tokio::test]
    async fn the_reload_stops_taking_pages_once_the_window_is_full() {
        let (pages, rx) = mpsc::channel(4);
        let mut reload = Reload { pages: Some(rx), since: 0, until: i64::MAX };
        let mut dedupe = Deduper::new(10_000, 2);
        let entry = |hash: &str, at| WindowEntry { hash: hash.into(), id: EventId::generate(), at };
        pages.send(vec![entry("a", 30), entry("b", 20), entry("c", 10)]).await.unwrap();
        reload.merge_into(&mut dedupe);
        assert_eq!(dedupe.len(), 2);
        assert!(reload.pages.is_none(), "full: the reload is over");
        assert_eq!(reload.until, 20);
    }

    #[test]
    fn the_duplicate_window_reaches_back_from_now() {
        assert_eq!(window_start(1_000_000, 7_200), 992_800);
    }
}
