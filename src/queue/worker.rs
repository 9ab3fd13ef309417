//! The event worker: claims due events under a lease, reads the inspection with the company's token
//! (one exchange on a 401), retries on the schedule, and hands each event to the dispatcher.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use serde_json::Value;
use tokio::sync::{watch, Notify};

use crate::{
    delivery::{
        dispatcher::{DeliveryConfig, Dispatcher},
        policy::{after_failure, Next},
    },
    domain::{base32, random_bytes},
    metrics::Metrics,
    snapinspect::{ApiCallError, SnapInspectClient},
    store::{AttemptOutcome, ClaimedEvent, FinishedEvent, NewAttempt, Outage, Store},
    time::{after, now_ms},
    tokens::TokenManager,
};

/// How many events one worker enriches at once.
const CONCURRENCY: i64 = 16;
const IDLE_POLL: Duration = Duration::from_millis(250);

/// What the worker needs from the configuration.
pub struct WorkerConfig {
    pub retry_schedule: Vec<Duration>,
    pub lease: Duration,
    pub delivery: DeliveryConfig,
}

pub struct Worker {
    store: Store,
    /// SnapInspect's API, to read inspections (none when SnapInspect is not configured).
    snapinspect: Option<SnapInspectClient>,
    tokens: Arc<TokenManager>,
    config: WorkerConfig,
    owner: String,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    dispatcher: Arc<Dispatcher>,
}

/// Why an attempt failed.
struct Failure {
    http_status: Option<u16>,
    error: String,
    retry_after: Option<Duration>,
}

impl Failure {
    fn retry(error: String) -> Self {
        Self { http_status: None, error, retry_after: None }
    }
}

impl Worker {
    /// `clients`: what deliveries go out with (endpoint URLs from the database through the guard).
    pub fn new(
        store: Store,
        snapinspect: Option<SnapInspectClient>,
        tokens: Arc<TokenManager>,
        clients: crate::delivery::clients::DeliveryClients,
        config: WorkerConfig,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let owner = format!("worker_{}", base32(&random_bytes::<10>()));
        let dispatcher =
            Dispatcher::spawn(store.clone(), clients, config.delivery.clone(), owner.clone(), metrics.clone());
        Self { store, snapinspect, tokens, config, owner, wake, metrics, dispatcher }
    }

    pub fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.dispatcher
    }

    /// Wake the worker now (new events, or events matched on connect).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Claim one batch of due events and process it; returns how many were processed.
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        let now = now_ms();
        let lease_until = after(now, self.config.lease);
        let events = self.store.claim_events(&self.owner, now, lease_until, CONCURRENCY).await?;
        let n = events.len();
        let finished = join_all(events.into_iter().map(|e| self.process(e))).await;
        // One transaction for the batch: one commit, not one per event.
        match self.store.finish_attempts(&finished).await {
            Ok(kept) => {
                for (f, kept) in finished.iter().zip(kept) {
                    if !kept {
                        tracing::warn!(event_id = %f.event.id, "the event's claim ran out during the attempt; another worker owns it now");
                    }
                }
            }
            Err(e) => tracing::error!(
                error.chain = %format!("{e:#}"), events = n,
                "recording the attempts failed; the leases will expire and the events be retried"
            ),
        }
        Ok(n)
    }

    /// Enrich and deliver until nothing is due (tests use this to drain the queue
    /// synchronously); returns how many events were enriched plus how many delivery attempts made.
    pub async fn drain(&self) -> anyhow::Result<usize> {
        let mut total = 0;
        loop {
            let mut round = 0;
            loop {
                match self.run_once().await? {
                    0 => break,
                    n => round += n,
                }
            }
            round += self.dispatcher.drain().await?;
            if round == 0 {
                return Ok(total);
            }
            total += round;
        }
    }

    /// The loops: enrichment works while there is work, otherwise waits for a wake-up or the next
    /// poll; the dispatcher beside it delivers. On shutdown both finish what they hold.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(owner = %self.owner, "event worker started");
        let delivery_wake = Arc::new(Notify::new());
        let deliveries = tokio::spawn(self.dispatcher.clone().run(delivery_wake.clone(), shutdown.clone()));
        let mut outage = Outage::new("claiming events", "claim_events", self.store.health().clone());
        while !*shutdown.borrow() {
            let wait = match self.run_once().await {
                Ok(n) => {
                    outage.answered();
                    if n > 0 {
                        // Enriched events have fanned out: their deliveries are due now.
                        delivery_wake.notify_one();
                        continue;
                    }
                    IDLE_POLL
                }
                Err(e) => outage.failed(&e),
            };
            // In an outage only the backoff ends the wait: a wake-up would be one more failure.
            let wake = async {
                if outage.ongoing() {
                    std::future::pending::<()>().await
                } else {
                    self.wake.notified().await
                }
            };
            tokio::select! {
                _ = wake => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
        let _ = deliveries.await;
        tracing::info!("event worker stopped");
    }

    #[tracing::instrument(skip_all, fields(event_id = %event.id, attempt = event.attempts, connection_id = ?event.connection_id.as_ref().map(|c| c.to_string())))]
    async fn process(&self, event: ClaimedEvent) -> FinishedEvent {
        let started_at = now_ms();
        let clock = Instant::now();
        let result = self.handle(&event).await;
        let duration_ms = clock.elapsed().as_millis() as i64;
        let (attempt, retry_at, inspection) = match result {
            Ok((status, inspection)) => (
                NewAttempt {
                    started_at,
                    duration_ms,
                    outcome: AttemptOutcome::Done,
                    http_status: status.map(i64::from),
                    error: None,
                },
                0,
                inspection,
            ),
            Err(f) => {
                let (outcome, wait, error) =
                    match after_failure(event.attempts, &self.config.retry_schedule, false, f.retry_after) {
                        Next::RetryIn(wait) => (AttemptOutcome::Retry, wait, f.error),
                        Next::Dead { .. } => (
                            AttemptOutcome::Dead,
                            Duration::ZERO,
                            format!("{} (attempt {} was the last one)", f.error, event.attempts),
                        ),
                    };
                match outcome {
                    AttemptOutcome::Dead => tracing::warn!(%error, "event is dead"),
                    _ => tracing::info!(%error, retry_in_ms = wait.as_millis() as u64, "attempt failed; will retry"),
                }
                (
                    NewAttempt {
                        started_at,
                        duration_ms,
                        outcome,
                        http_status: f.http_status.map(i64::from),
                        error: Some(error),
                    },
                    after(now_ms(), wait),
                    None,
                )
            }
        };
        self.metrics.attempts.inc(attempt.outcome.as_str());
        FinishedEvent { event, attempt, retry_at, inspection: inspection.map(|v| v.to_string()) }
    }

    /// Read the inspection, if the event names one and its company is connected. The status is
    /// the inspection read's (200), if one was made.
    async fn handle(&self, event: &ClaimedEvent) -> Result<(Option<u16>, Option<Value>), Failure> {
        match (event.inspection_id, &event.connection_id, &self.snapinspect) {
            (Some(inspection_id), Some(connection), Some(client)) => {
                Ok((Some(200), Some(self.read_inspection(client, connection, inspection_id).await?)))
            }
            _ => Ok((None, None)),
        }
    }

    /// GET the inspection with the connection's token; on a 401, exchange once (or take the token
    /// someone else just exchanged) and try again.
    async fn read_inspection(
        &self,
        client: &SnapInspectClient,
        connection: &crate::domain::ConnectionId,
        inspection_id: i64,
    ) -> Result<Value, Failure> {
        let token = self.tokens.token(connection).await.map_err(|e| Failure::retry(format!("no token: {e}")))?;
        let first = client.inspection(&token.token, inspection_id).await;
        let result = match first {
            Err(ApiCallError::Unauthorized) => {
                tracing::info!("SnapInspect answered 401: exchanging the token once");
                let fresh = self.tokens.refresh_if_still(connection, token.version, "worker").await.map_err(|e| {
                    Failure::retry(format!("SnapInspect refused the token and the exchange failed: {e}"))
                })?;
                client.inspection(&fresh.token, inspection_id).await
            }
            other => other,
        };
        result.map_err(|e| {
            let (status, retry_after) = match &e {
                ApiCallError::Unauthorized => (Some(401), None),
                ApiCallError::Status { status, retry_after, .. } => (Some(*status), *retry_after),
                _ => (None, None),
            };
            Failure { http_status: status, error: format!("reading inspection {inspection_id}: {e}"), retry_after }
        })
    }
}
