//! The delivery pipeline: claims due deliveries as slots free up (at most `concurrency` in flight,
//! at most `per_endpoint` to one endpoint, so a slow or hanging endpoint uses only its own slots),
//! sends each on its own task, and hands results to one writer task that records many per
//! transaction. Claims carry a lease longer than the outbound timeout and a random claim id.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, watch};
use url::Url;

use super::{
    clients::DeliveryClients,
    policy::{after_failure, disable_before, Next},
    types::DeliveryState,
};
use crate::{
    domain::{base32, random_bytes},
    metrics::Metrics,
    queue::forward::{deliver, envelope, Outcome, Signer},
    store::{ClaimedDelivery, DeliveryResult, Store},
    time::now_ms,
};

/// How long the worker keeps its list of endpoints (and their secrets) before reading it again.
const TARGETS_TTL: Duration = Duration::from_millis(500);
/// Results waiting for the writer beyond this hold their slot (backpressure).
const WRITER_QUEUE: usize = 4096;
/// The most results one transaction records.
const MAX_BATCH: usize = 1024;

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

/// One enabled endpoint, ready to sign for.
struct Target {
    id: String,
    url: Url,
    current: Signer,
    /// The previous secret and when its overlap ends.
    previous: Option<(Signer, i64)>,
}

/// The enabled endpoints as last read, and when.
type TargetCache = Option<(Instant, Arc<Vec<Arc<Target>>>)>;

#[derive(Default)]
struct Slots {
    total: usize,
    by_endpoint: HashMap<String, usize>,
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
    targets: tokio::sync::Mutex<TargetCache>,
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
            targets: tokio::sync::Mutex::new(None),
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
        self.slots().total == 0 && self.unwritten.load(Ordering::SeqCst) == 0
    }

    /// The clients deliveries go out with (the console's test send uses them too).
    pub fn clients(&self) -> &DeliveryClients {
        &self.clients
    }

    /// Read the endpoints again at the next claim (after an enable, a rotation, …).
    pub async fn forget_targets(&self) {
        *self.targets.lock().await = None;
    }

    async fn targets(&self) -> anyhow::Result<Arc<Vec<Arc<Target>>>> {
        let mut cache = self.targets.lock().await;
        if let Some((at, t)) = cache.as_ref() {
            if at.elapsed() < TARGETS_TTL {
                return Ok(t.clone());
            }
        }
        let now = now_ms();
        let mut out = Vec::new();
        for e in self.store.endpoints().await?.into_iter().filter(|e| e.enabled) {
            let Some(secrets) = self.store.endpoint_secrets(&e.id, now).await? else { continue };
            let url = match Url::parse(&e.url) {
                Ok(u) => u,
                Err(err) => {
                    tracing::warn!(endpoint_id = %e.id, error = %err, "endpoint URL does not parse; skipped");
                    continue;
                }
            };
            use secrecy::ExposeSecret;
            let current = Signer::from_secret(secrets.current.expose_secret())?;
            let previous = match (secrets.previous, e.previous_until) {
                (Some(p), Some(until)) => Some((Signer::from_secret(p.expose_secret())?, until)),
                _ => None,
            };
            out.push(Arc::new(Target { id: e.id.as_str().to_owned(), url, current, previous }));
        }
        let t = Arc::new(out);
        *cache = Some((Instant::now(), t.clone()));
        Ok(t)
    }

    /// Claim what the free slots allow, endpoint by endpoint (starting with a different one each
    /// time, so none is always last), and start each delivery. Returns how many started.
    pub async fn fill(self: &Arc<Self>) -> anyhow::Result<usize> {
        let free = self.config.concurrency.saturating_sub(self.slots().total);
        if free == 0 {
            return Ok(0);
        }
        let targets = self.targets().await?;
        if targets.is_empty() {
            return Ok(0);
        }
        // Every endpoint with room asks for up to its room; the free slots are the budget they
        // share, in turn (so an endpoint with nothing due leaves its share to the next).
        let mut wanted = Vec::new();
        {
            let slots = self.slots();
            let start = self.rotation.fetch_add(1, Ordering::Relaxed) % targets.len();
            for i in 0..targets.len() {
                let t = &targets[(start + i) % targets.len()];
                let busy = slots.by_endpoint.get(&t.id).copied().unwrap_or(0);
                let n = self.config.per_endpoint.saturating_sub(busy).min(free);
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
        let claimed = self
            .store
            .claim_deliveries(
                &asks,
                free as i64,
                &self.owner,
                &claim_id,
                now,
                now + self.config.lease.as_millis() as i64,
            )
            .await?;
        let n = claimed.len();
        if n > 0 {
            let mut slots = self.slots();
            for d in &claimed {
                slots.total += 1;
                *slots.by_endpoint.entry(d.endpoint_id.clone()).or_default() += 1;
            }
        }
        for d in claimed {
            let Some(target) = wanted.iter().find(|(t, _)| t.id == d.endpoint_id).map(|(t, _)| t.clone()) else {
                continue;
            };
            tokio::spawn(self.clone().attempt(target, d));
        }
        Ok(n)
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
        let sent = deliver(post, &signers, d.event.id.as_str(), envelope(&d.event)).await;
        let duration = clock.elapsed();
        let (state, retry_at, error) = match sent.outcome {
            Outcome::Delivered => (DeliveryState::Done, 0, None),
            Outcome::Gone => (DeliveryState::Dead, 0, Some("the receiver answered 410 Gone: not retrying".to_owned())),
            Outcome::Failed { error, retry_after } => {
                match after_failure(d.attempts, &self.config.retry_schedule, false, retry_after) {
                    Next::RetryIn(wait) => {
                        tracing::info!(%error, retry_in_ms = wait.as_millis() as u64, "delivery failed; will retry");
                        (DeliveryState::Retrying, now_ms() + wait.as_millis() as i64, Some(error))
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
            slots.total -= 1;
            if let Some(n) = slots.by_endpoint.get_mut(&d.endpoint_id) {
                *n -= 1;
            }
        }
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
                stale = batch.len() - recorded as usize,
                "some results came after their claim was taken over; the new claim decides"
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
