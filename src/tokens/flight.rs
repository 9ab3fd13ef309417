//! The token manager's single flight: one exchange or fetch at a time per connection in this
//! process (later callers join it), and across processes the lease row, waited on or taken over.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::Duration,
};

use super::{exchange::usable, AccessToken, Op, TokenError, TokenManager, LEASE_MS};
use crate::{
    domain::ConnectionId,
    store::{LeaseOutcome, StoredTokens},
    time::now_ms,
};

/// Per-connection single flight: the lock serialises exchanges; `generation` counts finished ones,
/// so a caller that waited behind an exchange takes its outcome instead of starting another.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) lock: tokio::sync::Mutex<()>,
    pub(super) generation: AtomicU64,
    pub(super) last: Mutex<Option<Result<(), TokenError>>>,
}

impl TokenManager {
    pub(super) async fn single_flight(
        &self,
        id: &ConnectionId,
        op: Op,
        actor: &str,
    ) -> Result<AccessToken, TokenError> {
        let seen = self.slot(id).generation.load(Ordering::Acquire);
        self.single_flight_since(id, op, actor, seen).await
    }

    /// As `single_flight`, for a caller that arrived when the slot's generation was `seen`: an
    /// exchange that finished since then (even before this call) is the one it joins.
    pub(super) async fn single_flight_since(
        &self,
        id: &ConnectionId,
        op: Op,
        actor: &str,
        seen: u64,
    ) -> Result<AccessToken, TokenError> {
        let slot = self.slot(id);
        let _guard = slot.lock.lock().await;
        if slot.generation.load(Ordering::Acquire) != seen {
            // An exchange finished while we waited: its outcome is ours.
            let last = slot.last.lock().expect("slot poisoned").clone();
            if let Some(Err(e)) = last {
                return Err(e);
            }
            return self.current(id).await;
        }
        let outcome = match op {
            Op::Exchange(stale_version) => self.exchange_locked(id, stale_version, actor).await,
            Op::Fetch { force } => self.fetch_locked(id, force, actor).await,
            Op::FetchIfStill(version) => match self.store.tokens(id).await {
                Ok(Some(t)) => self.fetch_locked(id, t.version <= version, actor).await,
                Ok(None) => Err(TokenError::NotFound(id.clone())),
                Err(e) => Err(e.into()),
            },
        };
        if let Ok(t) = &outcome {
            let now = now_ms();
            self.remember(t, Some(now), now);
        } else {
            // Only the cached token: a pair kept for the next try (see `commit`) must survive.
            self.forget_cached(id);
        }
        *slot.last.lock().expect("slot poisoned") = Some(outcome.as_ref().map(|_| ()).map_err(Clone::clone));
        slot.generation.fetch_add(1, Ordering::AcqRel);
        outcome
    }

    async fn current(&self, id: &ConnectionId) -> Result<AccessToken, TokenError> {
        let tokens = self.store.tokens(id).await?.ok_or_else(|| TokenError::NotFound(id.clone()))?;
        usable(id, &tokens)
    }

    /// Take the connection's lease (`None`: it is ours now), or wait while another process holds
    /// it and return what that process stored (`Some`: the version or status changed). While
    /// waiting, a lease given back without a change (the holder's exchange failed, or found the
    /// pair already replaced) is taken at once rather than at the lease's end. A lease that runs
    /// out without a change is taken over, or, for a caller that reports its waits (the command
    /// line, see `report_lease_waits`), is given up on with `LeaseHeld`.
    pub(super) async fn lease_or_latest(
        &self,
        id: &ConnectionId,
        seen: &StoredTokens,
    ) -> Result<Option<StoredTokens>, TokenError> {
        let (mut told, started) = (false, now_ms());
        loop {
            let now = now_ms();
            let until = match self.store.acquire_exchange_lease(id, &self.owner, now, now + LEASE_MS).await? {
                LeaseOutcome::Acquired => return Ok(None),
                LeaseOutcome::NotFound => return Err(TokenError::NotFound(id.clone())),
                LeaseOutcome::HeldElsewhere { until } => until,
            };
            let deadline = until.min(now + LEASE_MS);
            let wait_secs = ((deadline - now).max(0) as u64).div_ceil(1000);
            tracing::info!(wait_secs, "another process is refreshing this connection; waiting for it");
            if let (Some(say), false) = (&self.lease_waits, told) {
                say(&format!(
                    "another process is exchanging the tokens of connection {id} (it holds the connection's \
                     exchange lease for {wait_secs} s more); waiting for it to finish"
                ));
                told = true;
            }
            if let Some(latest) = self.wait_for_holder(id, seen, deadline).await? {
                return Ok(Some(latest));
            }
            if self.lease_waits.is_some() && now_ms() > deadline {
                return Err(TokenError::LeaseHeld {
                    waited: Duration::from_millis((now_ms() - started).max(0) as u64),
                });
            }
            // The lease was given back (or ran out): try to take it again.
        }
    }

    /// Poll until the holder stored something (`Some`), gave the lease back without a change, or
    /// `deadline` passed (`None` for both).
    async fn wait_for_holder(
        &self,
        id: &ConnectionId,
        seen: &StoredTokens,
        deadline: i64,
    ) -> Result<Option<StoredTokens>, TokenError> {
        while now_ms() <= deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let latest = self.store.tokens(id).await?.ok_or_else(|| TokenError::NotFound(id.clone()))?;
            if latest.version != seen.version || latest.status != seen.status {
                return Ok(Some(latest));
            }
            if !self.store.exchange_lease_held(id, now_ms()).await? {
                // Given back with nothing new: read once more (a commit clears the lease in the
                // same statement that bumps the version), then the caller takes the lease.
                let latest = self.store.tokens(id).await?.ok_or_else(|| TokenError::NotFound(id.clone()))?;
                if latest.version != seen.version || latest.status != seen.status {
                    return Ok(Some(latest));
                }
                return Ok(None);
            }
        }
        Ok(None)
    }
}
