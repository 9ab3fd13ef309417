//! The delivery pipeline: claims due deliveries ahead of the free slots (per worker and per
//! endpoint; a hanging endpoint holds only its own), sends each, and group-commits the results.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, watch};

use super::{
    clients::DeliveryClients,
    forward::{deliver, envelope, not_sent, Outcome, Sent},
    policy::{after_failure, disable_before, Next},
    slots::Slots,
    targets::{Target, Targets},
};
use crate::{
    domain::{
        base32,
        endpoint::{DeliveryState, EndpointId},
        random_bytes,
    },
    metrics::Metrics,
    store::{ClaimAsk, ClaimedDelivery, DeliveryResult, Outage, Store},
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
        self.slots().empty() && self.unwritten.load(Ordering::SeqCst) == 0
    }

    /// Start queued deliveries while there are free slots, taking endpoints in turn.
    fn start_ready(self: &Arc<Self>) {
        let start = self.slots().take_ready(self.config.concurrency, self.config.per_endpoint);
        for d in start {
            tokio::spawn(self.clone().attempt(d));
        }
    }

    /// The clients deliveries go out with (the console's test send uses them too).
    pub fn clients(&self) -> &DeliveryClients {
        &self.clients
    }

    /// Endpoints changed (here, or on another instance): each delivery from now on reads its
    /// endpoint again before it is sent.
    pub fn forget_targets(&self) {
        self.targets.forget();
    }

    /// The URL a delivery to this endpoint would be sent to now; `None` when it would wait (the
    /// endpoint is disabled) or never go (it is gone). What `attempt` sees (tests use this to
    /// know that a change made elsewhere has been heard).
    pub async fn endpoint_url(&self, id: &str) -> anyhow::Result<Option<String>> {
        Ok(self.targets.get(&self.store, id).await?.map(|t| t.url.to_string()))
    }

    /// Claim what the free slots allow, for every enabled endpoint in one query (each one up to
    /// its room, taking turns from a random one, so none is always last), and start each delivery.
    /// Returns how many were claimed.
    pub async fn fill(self: &Arc<Self>) -> anyhow::Result<usize> {
        let (budget, room) = {
            let slots = self.slots();
            (slots.budget(self.config.concurrency), slots.room(self.config.per_endpoint))
        };
        if budget == 0 {
            return Ok(0);
        }
        let room: Vec<(&str, i64)> = room.iter().map(|(e, n)| (e.as_str(), *n)).collect();
        let now = now_ms();
        let claim_id = format!("clm_{}", base32(&random_bytes::<10>()));
        let start_at = EndpointId::generate();
        let ask = ClaimAsk {
            owner: &self.owner,
            claim_id: &claim_id,
            now,
            lease_until: after(now, self.config.lease),
            budget: budget as i64,
            per_endpoint: 2 * self.config.per_endpoint as i64,
            room: &room,
            start_at: start_at.as_str(),
        };
        let claimed = self.store.claim_deliveries(&ask).await?;
        let n = claimed.len();
        self.slots().queue(claimed);
        self.start_ready();
        Ok(n)
    }

    /// Give back what was claimed but not started (on shutdown), so another worker need not wait
    /// for the leases to end.
    async fn release_queued(&self) {
        let waiting: Vec<(i64, String)> = self.slots().take_queued().into_iter().map(|d| (d.id, d.claim_id)).collect();
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
    async fn attempt(self: Arc<Self>, d: ClaimedDelivery) {
        let started_at = now_ms();
        let clock = Instant::now();
        // The endpoint as it is now, not as it was at the claim: a delivery that waited for its
        // slot goes to the URL set since, and not at all to an endpoint disabled since.
        let (sent, parked) = match self.targets.get(&self.store, &d.endpoint_id).await {
            Ok(Some(target)) => self.send(&target, &d, started_at).await,
            Ok(None) => {
                self.give_back(&d).await;
                self.slots().finish(&d.endpoint_id, false);
                self.start_ready();
                self.bump();
                return;
            }
            Err(e) => (not_sent(format!("not delivered: the endpoint could not be read: {e:#}")), false),
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
        self.slots().finish(&d.endpoint_id, parked);
        // The freed slot takes the next waiting delivery at once.
        self.start_ready();
        self.bump();
    }

    /// Send one delivery, signed with the endpoint's current secret (and the previous one during
    /// its overlap). Returns how it went, and whether it gave its worker slot back meanwhile.
    async fn send(self: &Arc<Self>, target: &Target, d: &ClaimedDelivery, started_at: i64) -> (Sent, bool) {
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
        tokio::select! {
            sent = &mut send => (sent, false),
            _ = tokio::time::sleep(PARK_AFTER) => {
                self.slots().park();
                self.start_ready();
                self.bump();
                (send.await, true)
            }
        }
    }

    /// Give a claimed delivery back unsent: its endpoint was disabled (it waits, and goes out
    /// when the endpoint is enabled again) or removed (it went with it) since the claim.
    async fn give_back(&self, d: &ClaimedDelivery) {
        match self.store.release_deliveries(&[(d.id, d.claim_id.clone())], now_ms()).await {
            Ok(_) => tracing::info!("the endpoint was disabled or removed since the claim; the delivery was not sent"),
            Err(e) => tracing::warn!(
                error.chain = %format!("{e:#}"),
                "giving back a delivery to a disabled endpoint failed; its lease will end"
            ),
        }
    }

    /// Deliver until nothing is due, every attempt is recorded and nothing is in flight (tests).
    /// Returns how many attempts were made.
    pub async fn drain(self: &Arc<Self>) -> anyhow::Result<usize> {
        self.forget_targets();
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
        let mut outage = Outage::new("claiming deliveries", "claim_deliveries", self.store.health().clone());
        while !*shutdown.borrow() {
            progress.borrow_and_update();
            match self.fill().await {
                Ok(n) => {
                    outage.answered();
                    if n > 0 {
                        continue;
                    }
                }
                Err(e) => {
                    // In an outage only the backoff ends the wait (or shutdown).
                    let wait = outage.failed(&e);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
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
            Ok(recorded) => {
                if let Some(unrecorded) = unrecorded(recorded, batch.len()) {
                    tracing::warn!(
                        unrecorded,
                        "some results came after their claim was taken over (the new claim decides) or were refused (see above)"
                    );
                }
            }
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

/// How many of `results` results the store did not record, if any.
fn unrecorded(recorded: u64, results: usize) -> Option<usize> {
    let missing = results.saturating_sub(usize::try_from(recorded).unwrap_or(usize::MAX));
    (missing > 0).then_some(missing)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_results_the_store_did_not_record_are_counted_as_unrecorded() {
        assert_eq!(super::unrecorded(3, 5), Some(2));
        assert_eq!(super::unrecorded(0, 1), Some(1));
        assert_eq!(super::unrecorded(5, 5), None);
        assert_eq!(super::unrecorded(0, 0), None);
    }
}
