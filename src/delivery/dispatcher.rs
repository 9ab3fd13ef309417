//! The delivery pipeline: claims due deliveries ahead of the free slots (per worker and per
//! endpoint; a hanging endpoint holds only its own), sends each, and group-commits the results.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, watch};

use super::{
    clients::DeliveryClients,
    forward::{deliver, envelope, Outcome},
    policy::{after_failure, disable_before, Next},
    targets::{Target, Targets},
};
use crate::{
    domain::{base32, endpoint::DeliveryState, random_bytes},
    metrics::Metrics,
    store::{ClaimedDelivery, DeliveryResult, Store},
    time::{after, now_ms},
};

/// Results waiting for the writer beyond this hold their slot (backpressure).
const WRITER_QUEUE: usize = 4096;
/// The most results one transaction records.
const MAX_BATCH: usize = 1024;
/// A delivery still waiting for its receiver after this long stops counting against
/// `WORKER_CONCURRENCY` (it still counts against its endpoint's `ENDPOINT_CONCURRENCY`).
const PARK_AFTER: Duration = Duration::from_secs(1);

/// What the pipeline needs from the configuration.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub retry_schedule: Vec<Duration>,
    /// Longer than the outbound timeout, so a claim outlives its request.
    pub lease: Duration,
    pub concurrency: usize,
    pub per_endpoint: usize,
    pub disable_after: Duration,
}

/// Deliveries in flight (each holds a slot) and claimed ones waiting for a slot of their
/// endpoint. Claiming ahead means a freed slot starts the next delivery at once, without waiting
/// for the database; so the rate does not depend on how many slots a slow endpoint holds.
#[derive(Default)]
struct Slots {
    total: usize,
    by_endpoint: HashMap<String, usize>,
    queued: HashMap<String, VecDeque<(Arc<Target>, ClaimedDelivery)>>,
    queued_total: usize,
    /// In flight past `PARK_AFTER`: no longer in `total`.
    parked: usize,
}

impl Slots {
    fn held(&self, endpoint: &str) -> usize {
        self.by_endpoint.get(endpoint).copied().unwrap_or(0) + self.queued.get(endpoint).map_or(0, VecDeque::len)
    }
}

pub struct Dispatcher {
    store: Store,
    clients: DeliveryClients,
    config: DeliveryConfig,
    owner: String,
    metrics: Arc<Metrics>,
    slots: Mutex<Slots>,
    /// Results handed to the writer and not yet committed.
    unwritten: AtomicUsize,
    /// Bumped whenever a slot frees or a batch commits: what the loop waits on.
    progress: watch::Sender<u64>,
    writer: mpsc::Sender<DeliveryResult>,
    targets: Targets,
    rotation: AtomicUsize,
}

impl Dispatcher {
    /// Build the dispatcher and start its writer task (needs a tokio runtime).
    pub fn spawn(
        store: Store,
        clients: DeliveryClients,
        config: DeliveryConfig,
        owner: String,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let (progress, _) = watch::channel(0);
        let me = Arc::new(Self {
            store,
            clients,
            config,
            owner,
            metrics,
            slots: Mutex::default(),
            unwritten: AtomicUsize::new(0),
            progress,
            writer: tx,
            targets: Targets::default(),
            rotation: AtomicUsize::new(0),
        });
        tokio::spawn(writer(Arc::downgrade(&me), rx));
        me
    }

    fn bump(&self) {
        self.progress.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().expect("slots poisoned")
    }

    /// Nothing in flight and every result committed.
    fn idle(&self) -> bool {
        let slots = self.slots();
        slots.total == 0 && slots.parked == 0 && slots.queued_total == 0 && self.unwritten.load(Ordering::SeqCst) == 0
    }

    /// Start queued deliveries while there are free slots, taking endpoints in turn.
    fn start_ready(self: &Arc<Self>) {
        let mut start = Vec::new();
        {
            let mut slots = self.slots();
            let endpoints: Vec<String> =
                slots.queued.iter().filter(|(_, q)| !q.is_empty()).map(|(e, _)| e.clone()).collect();
            let mut progressed = true;
            while progressed && slots.total < self.config.concurrency {
                progressed = false;
                for e in &endpoints {
                    if slots.total >= self.config.concurrency {
                        break;
                    }
                    if slots.by_endpoint.get(e).copied().unwrap_or(0) >= self.config.per_endpoint {
                        continue;
                    }
                    let Some(next) = slots.queued.get_mut(e).and_then(VecDeque::pop_front) else { continue };
                    slots.queued_total -= 1;
                    slots.total += 1;
                    *slots.by_endpoint.entry(e.clone()).or_default() += 1;
                    start.push(next);
                    progressed = true;
                }
            }
        }
        for (target, d) in start {
            tokio::spawn(self.clone().attempt(target, d));
        }
    }

    /// The clients deliveries go out with (the console's test send uses them too).
    pub fn clients(&self) -> &DeliveryClients {
        &self.clients
    }

    /// Read the endpoints again at the next claim (after an enable, a rotation, …).
    pub async fn forget_targets(&self) {
        self.targets.forget().await;
    }

    /// Claim what the free slots allow, endpoint by endpoint (starting with a different one each
    /// time, so none is always last), and start each delivery. Returns how many started.
    pub async fn fill(self: &Arc<Self>) -> anyhow::Result<usize> {
        // Claim up to twice the slots: what is in flight, and as much again waiting.
        let budget = {
            let slots = self.slots();
            (2 * self.config.concurrency).saturating_sub(slots.total + slots.queued_total)
        };
        if budget == 0 {
            return Ok(0);
        }
        let targets = self.targets.get(&self.store).await?;
        if targets.is_empty() {
            return Ok(0);
        }
        // Every endpoint with room asks for up to its room (twice its cap, less what it holds);
        // the budget is shared in turn, so an endpoint with nothing due leaves its share to the next.
        let mut wanted = Vec::new();
        {
            let slots = self.slots();
            let start = self.rotation.fetch_add(1, Ordering::Relaxed) % targets.len();
            for i in 0..targets.len() {
                let t = &targets[(start + i) % targets.len()];
                let n = (2 * self.config.per_endpoint).saturating_sub(slots.held(&t.id)).min(budget);
                if n > 0 {
                    wanted.push((t.clone(), n as i64));
                }
            }
        }
        if wanted.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        let claim_id = format!("clm_{}", base32(&random_bytes::<10>()));
        let asks: Vec<(&str, i64)> = wanted.iter().map(|(t, n)| (t.id.as_str(), *n)).collect();
        let lease_until = after(now, self.config.lease);
        let claimed =
            self.store.claim_deliveries(&asks, budget as i64, &self.owner, &claim_id, now, lease_until).await?;
        let n = claimed.len();
        {
            let mut slots = self.slots();
            for d in claimed {
                let Some(target) = wanted.iter().find(|(t, _)| t.id == d.endpoint_id).map(|(t, _)| t.clone()) else {
                    continue;
                };
                slots.queued_total += 1;
                slots.queued.entry(d.endpoint_id.clone()).or_default().push_back((target, d));
            }
        }
        self.start_ready();
        Ok(n)
    }

    /// Give back what was claimed but not started (on shutdown), so another worker need not wait
    /// for the leases to end.
    async fn release_queued(&self) {
        let waiting: Vec<(i64, String)> = {
            let mut slots = self.slots();
            slots.queued_total = 0;
            slots.queued.drain().flat_map(|(_, q)| q.into_iter().map(|(_, d)| (d.id, d.claim_id))).collect()
        };
        if waiting.is_empty() {
            return;
        }
        match self.store.release_deliveries(&waiting, now_ms()).await {
            Ok(n) => tracing::info!(deliveries = n, "gave back the deliveries claimed but not started"),
            Err(e) => {
                tracing::warn!(error.chain = %format!("{e:#}"), "giving back claimed deliveries failed; their leases will end")
            }
        }
    }

    #[tracing::instrument(skip_all, fields(event_id = %d.event.id, endpoint_id = %d.endpoint_id, attempt = d.attempts))]
    async fn attempt(self: Arc<Self>, target: Arc<Target>, d: ClaimedDelivery) {
        let started_at = now_ms();
        let clock = Instant::now();
        let mut signers = vec![&target.current];
        if let Some((previous, until)) = &target.previous {
            if started_at < *until {
                signers.push(previous);
            }
        }
        let post = self.clients.post(&target.id, &target.url);
        let send = deliver(post, &signers, d.event.id.as_str(), envelope(&d.event));
        tokio::pin!(send);
        // A receiver that keeps us waiting past PARK_AFTER gives its slot back to the others; the
        // request goes on within its endpoint's own allowance (ENDPOINT_CONCURRENCY). So hanging
        // receivers cannot hold the worker's slots until the outbound timeout.
        let mut parked = false;
        let sent = tokio::select! {
            sent = &mut send => sent,
            _ = tokio::time::sleep(PARK_AFTER) => {
                parked = true;
                {
                    let mut slots = self.slots();
                    slots.total -= 1;
                    slots.parked += 1;
                }
                self.start_ready();
                self.bump();
                send.await
            }
        };
        let duration = clock.elapsed();
        let (state, retry_at, error) = match sent.outcome {
            Outcome::Delivered => (DeliveryState::Done, 0, None),
            Outcome::Gone => (DeliveryState::Dead, 0, Some("the receiver answered 410 Gone: not retrying".to_owned())),
            Outcome::Failed { error, retry_after } => {
                match after_failure(d.attempts, &self.config.retry_schedule, false, retry_after) {
                    Next::RetryIn(wait) => {
                        tracing::info!(%error, retry_in_ms = wait.as_millis() as u64, "delivery failed; will retry");
                        (DeliveryState::Retrying, after(now_ms(), wait), Some(error))
                    }
                    Next::Dead { .. } => {
                        let error = format!("{error} (attempt {} was the last one)", d.attempts);
                        tracing::warn!(%error, "delivery is dead");
                        (DeliveryState::Dead, 0, Some(error))
                    }
                }
            }
        };
        self.metrics.observe_delivery(&d.endpoint_id, state.as_str(), duration.as_secs_f64());
        let result = DeliveryResult {
            delivery_id: d.id,
            endpoint_id: d.endpoint_id.clone(),
            claim_id: d.claim_id,
            started_at,
            duration_ms: duration.as_millis() as i64,
            state,
            retry_at,
            http_status: sent.status,
            error,
            response_excerpt: sent.excerpt,
        };
        self.unwritten.fetch_add(1, Ordering::SeqCst);
        if self.writer.send(result).await.is_err() {
            // Shutting down: the lease runs out and the delivery is tried again.
            self.unwritten.fetch_sub(1, Ordering::SeqCst);
        }
        {
            let mut slots = self.slots();
            if parked {
                slots.parked -= 1;
            } else {
                slots.total -= 1;
            }
            if let Some(n) = slots.by_endpoint.get_mut(&d.endpoint_id) {
                *n -= 1;
            }
        }
        // The freed slot takes the next waiting delivery at once.
        self.start_ready();
        self.bump();
    }

    /// Deliver until nothing is due, every attempt is recorded and nothing is in flight (tests).
    /// Returns how many attempts were made.
    pub async fn drain(self: &Arc<Self>) -> anyhow::Result<usize> {
        self.forget_targets().await;
        let mut progress = self.progress.subscribe();
        let mut started = 0;
        loop {
            progress.borrow_and_update();
            let n = self.fill().await?;
            started += n;
            if n == 0 {
                if self.idle() {
                    return Ok(started);
                }
                let _ = progress.changed().await;
            }
        }
    }

    /// The loop: fill the free slots, then wait for a slot to free, a wake-up, or the next poll.
    /// On shutdown it stops claiming and waits for the attempts in flight to be recorded.
    pub async fn run(self: Arc<Self>, wake: Arc<tokio::sync::Notify>, mut shutdown: watch::Receiver<bool>) {
        let mut progress = self.progress.subscribe();
        while !*shutdown.borrow() {
            progress.borrow_and_update();
            match self.fill().await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error.chain = %format!("{e:#}"), "claiming deliveries failed"),
            }
            tokio::select! {
                _ = progress.changed() => {
                    // Let a few more slots free up, so one claim serves several.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = shutdown.changed() => {}
            }
        }
        self.release_queued().await;
        while !self.idle() {
            let _ = progress.changed().await;
        }
    }
}

/// Records results many per transaction. Ends when the dispatcher is gone.
async fn writer(me: std::sync::Weak<Dispatcher>, mut rx: mpsc::Receiver<DeliveryResult>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let Some(d) = me.upgrade() else { return };
        let now = now_ms();
        match d.store.record_delivery_results(&batch, now, disable_before(now, d.config.disable_after)).await {
            Ok(recorded) if (recorded as usize) < batch.len() => tracing::warn!(
                unrecorded = batch.len() - recorded as usize,
                "some results came after their claim was taken over (the new claim decides) or were refused (see above)"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(
                error.chain = %format!("{e:#}"), results = batch.len(),
                "recording delivery results failed; their leases expire and they are tried again"
            ),
        }
        d.unwritten.fetch_sub(batch.len(), Ordering::SeqCst);
        batch.clear();
        d.bump();
    }
}
