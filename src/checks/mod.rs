//! Connection health checks: every `CONNECTION_CHECK_INTERVAL` each active connection is tried
//! (SnapInspect: `GET user`; client credentials: a token fetch), spread over the interval.

// Each connection carries its next check time (`next_check_at`): first a random point within the
// interval, then 80 to 100 % of the interval after an ok check (so never longer than one interval
// between checks, and never all at once), or a short backoff after a failed one. A round claims
// the due checks in the store, which moves their time forward under a lease: with several
// instances on one PostgreSQL database, each check is done by one of them.

mod outcome;
mod probe;

pub use outcome::{CheckOutcome, Outcome};

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use rand::Rng;

use crate::{
    domain::{ConnectionId, Provider},
    metrics::Metrics,
    snapinspect::SnapInspectClient,
    store::Store,
    time::now_ms,
    tokens::TokenManager,
};

/// How long a claimed check may run before another instance may take it: above a check's
/// slowest path (`/user`, an exchange that may wait for another process's lease, `/user` again).
const LEASE_MS: i64 = 5 * 60_000;
/// Checks claimed per round, run at once.
const BATCH: i64 = 16;

pub struct Checker {
    store: Store,
    tokens: Arc<TokenManager>,
    snapinspect: Option<SnapInspectClient>,
    metrics: Arc<Metrics>,
    interval: Duration,
}

impl Checker {
    pub fn new(
        store: Store,
        tokens: Arc<TokenManager>,
        snapinspect: Option<SnapInspectClient>,
        metrics: Arc<Metrics>,
        interval: Duration,
    ) -> Self {
        Self { store, tokens, snapinspect, metrics, interval }
    }

    /// Whether periodic checks run (`CONNECTION_CHECK_INTERVAL` is not zero).
    pub fn enabled(&self) -> bool {
        !self.interval.is_zero()
    }

    fn interval_ms(&self) -> i64 {
        self.interval.as_millis().min(i64::MAX as u128) as i64
    }

    /// The periodic task: a round every quarter interval (between 250 ms and 5 s), until aborted.
    pub async fn run(self: Arc<Self>) {
        let tick = (self.interval / 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut outage =
            crate::store::Outage::new("a round of connection checks", "checks", self.store.health().clone());
        loop {
            ticker.tick().await;
            match self.round().await {
                Ok(_) => outage.answered(),
                // The tick (at least 250 ms) is already a wait; the backoff adds to it.
                Err(e) => tokio::time::sleep(outage.failed(&e)).await,
            }
        }
    }

    /// One round: give new connections their first check time, claim the due checks and run them.
    /// Returns how many ran.
    pub async fn round(&self) -> anyhow::Result<usize> {
        let now = now_ms();
        self.store.schedule_first_checks(now, self.interval_ms(), 500).await.context("scheduling first checks")?;
        let claimed = self.store.claim_checks(now, now + LEASE_MS, BATCH).await.context("claiming due checks")?;
        let runs = claimed.iter().map(|c| async move {
            let outcome = self.probe(&c.id, c.provider, false).await;
            if let Err(e) = self.finish(&c.id, c.provider, c.failures, &outcome).await {
                tracing::warn!(connection_id = %c.id, error.chain = %format!("{e:#}"), "recording a check failed");
            }
        });
        futures_util::future::join_all(runs).await;
        Ok(claimed.len())
    }

    /// Check one connection now (the command line, the console), record the outcome and return it.
    /// A client-credentials connection fetches a token even if one was fetched lately.
    #[tracing::instrument(skip_all, fields(connection_id = %id))]
    pub async fn check_now(&self, id: &ConnectionId) -> anyhow::Result<Option<CheckOutcome>> {
        let Some(c) = self.store.connection(id).await? else { return Ok(None) };
        let failures = self.store.check_failures(id).await?.unwrap_or(0);
        let outcome = self.probe(id, c.provider, true).await;
        self.finish(id, c.provider, failures, &outcome).await?;
        Ok(Some(outcome))
    }

    /// Count, log and record a check; schedule the next one.
    async fn finish(
        &self,
        id: &ConnectionId,
        provider: Provider,
        failures: i64,
        outcome: &CheckOutcome,
    ) -> anyhow::Result<()> {
        self.metrics.connection_checks.inc(provider, outcome.outcome.as_str());
        match &outcome.error {
            None => tracing::info!(connection_id = %id, provider = provider.as_str(), "connection check ok"),
            Some(error) => tracing::warn!(
                connection_id = %id,
                provider = provider.as_str(),
                outcome = outcome.outcome.as_str(),
                %error,
                "connection check did not pass"
            ),
        }
        let now = now_ms();
        let next = next_check(self.interval, now, outcome.outcome, failures + 1);
        self.store.record_check(id, outcome.outcome.as_str(), outcome.error.as_deref(), now, next).await
    }
}

/// When the next check is due: 80 to 100 % of the interval after one that passed (or was refused:
/// that connection is not checked again until it is reconnected), a backoff of 2 s, 4 s, 8 s …
/// capped at the interval after the `failures`-th failed one in a row; never (`None`) when periodic
/// checks are off.
fn next_check(interval: Duration, now: i64, outcome: Outcome, failures: i64) -> Option<i64> {
    if interval.is_zero() {
        return None;
    }
    let interval = interval.as_millis().min(i64::MAX as u128) as i64;
    let wait = match outcome {
        Outcome::Failed => (crate::tokens::backoff(failures, None).as_millis() as i64).min(interval),
        Outcome::Ok | Outcome::Refused => interval - rand::thread_rng().gen_range(0..=interval / 5),
    };
    Some(now.saturating_add(wait))
}

#[cfg(test)]
mod tests;
