//! Durable intake with group commit: one writer task takes every event waiting at that moment,
//! writes them in one transaction (one fsync), and only then answers each request. Concurrent
//! requests share a commit; none is answered before its own event is on disk.

use std::{sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot, Notify};

use crate::{
    domain::EventId,
    snapinspect::webhook::WebhookPayload,
    store::{Inserted, NewEvent, Store},
    time::now_ms,
};

/// The most events one transaction takes.
const MAX_BATCH: usize = 1024;
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
    let mut jobs: Vec<Job> = Vec::with_capacity(max);
    // Ends when every Ingestor is dropped and the queue is drained: in-flight events are written.
    while rx.recv_many(&mut jobs, max).await > 0 {
        let (events, replies): (Vec<NewEvent>, Vec<_>) = jobs.drain(..).map(|j| (j.event, j.reply)).unzip();
        let window_start = now_ms() - options.dedupe_window.as_millis() as i64;
        match store.insert_events(&events, window_start).await {
            Ok(outcomes) => {
                if outcomes.iter().any(|o| matches!(o, Inserted::Stored(_))) {
                    stored.notify_one();
                }
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error.chain = %format!("{e:#}"), events = events.len(), "storing webhook events failed; answering 503");
                for reply in replies {
                    let _ = reply.send(Err(Unavailable));
                }
            }
        }
    }
}
