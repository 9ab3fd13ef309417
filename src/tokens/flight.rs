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
    /// it and return what that process stored (`Some`: the version or status changed). A lease
    /// that runs out without a change is taken over.
    pub(super) async fn lease_or_latest(
        &self,
        id: &ConnectionId,
        seen: &StoredTokens,
    ) -> Result<Option<StoredTokens>, TokenError> {
        loop {
            let now = now_ms();
            match self.store.acquire_exchange_lease(id, &self.owner, now, now + LEASE_MS).await? {
                LeaseOutcome::Acquired => return Ok(None),
                LeaseOutcome::NotFound => return Err(TokenError::NotFound(id.clone())),
                LeaseOutcome::HeldElsewhere { until } => {
                    tracing::info!("another process is refreshing this connection; waiting for it");
                    let deadline = until.min(now + LEASE_MS);
                    while now_ms() <= deadline {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let latest = self.store.tokens(id).await?.ok_or_else(|| TokenError::NotFound(id.clone()))?;
                        if latest.version != seen.version || latest.status != seen.status {
                            return Ok(Some(latest));
                        }
                    }
                }
            }
        }
    }
}
