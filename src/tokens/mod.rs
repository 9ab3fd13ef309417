//! The token manager: hands out a connection's valid access token. SnapInspect refresh tokens are
//! exchanged on demand; client-credentials tokens are fetched when the cached one is near its expiry.

// Either way one request at a time per connection (in this process a per-connection lock that later
// callers join, across processes a lease row), the new token committed before anyone uses it, and a
// backoff after failures so a broken provider or a wrong secret is not hammered. Fresh tokens are also
// kept in memory (`cache`), so handing out a cached token touches no database.

mod cache;
mod credentials;
mod error;
mod exchange;
mod flight;

pub use cache::refresh_margin_ms;
pub use error::TokenError;

use cache::TokenCache;
use credentials::fresh_credentials_token;
use exchange::usable;
pub use exchange::CHECK_ACTOR;
use flight::Slot;

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use rand::Rng;
use secrecy::SecretString;

use crate::{
    domain::{base32, random_bytes, ConnectionId, Provider},
    limits::AtMostEvery,
    metrics::Metrics,
    snapinspect::{ExchangedTokens, SnapInspectClient},
    store::Store,
    time::now_ms,
};

/// How long a process may hold a connection's exchange lease: well above the client's total
/// timeout, so a lease never lapses while its exchange is still in flight.
const LEASE_MS: i64 = 60_000;
const BACKOFF_FLOOR: Duration = Duration::from_secs(2);
const BACKOFF_CAP: Duration = Duration::from_secs(10 * 60);

/// A usable access token and the version it has (to ask for "newer than this" after a 401).
/// `Debug` shows the token as `[REDACTED]` (secrecy).
#[derive(Clone, Debug)]
pub struct AccessToken {
    pub connection_id: ConnectionId,
    pub provider: Provider,
    pub token: SecretString,
    pub version: i64,
    /// When it expires; SnapInspect access tokens live until they are exchanged.
    pub expires_at: Option<i64>,
}

/// A forced refresh within this long of the provider's last new token hands out that token instead
/// of rotating again: an API caller cannot rotate a connection's tokens many times a second.
pub const REFRESH_COOLDOWN_MS: i64 = 5_000;

/// Whether a token the provider issued at `issued` is too new to rotate again at `now`.
fn within_cooldown(issued: Option<i64>, now: i64) -> bool {
    issued.is_some_and(|at| now - at < REFRESH_COOLDOWN_MS)
}
/// How often `last_used_at` is written per connection, at most.
const TOUCH_EVERY_MS: i64 = 60_000;

pub struct TokenManager {
    store: Store,
    snapinspect: Option<SnapInspectClient>,
    /// For client-credentials token URLs, which come from the database.
    http: crate::outbound::GuardedClient,
    /// The lifetime assumed when a token response has no `expires_in`.
    default_lifetime: Duration,
    owner: String,
    slots: Mutex<HashMap<ConnectionId, Arc<Slot>>>,
    /// Pairs SnapInspect issued that could not be stored yet, with the token version they replace:
    /// committed before any new exchange, if the stored version is still that one.
    unsaved: Mutex<HashMap<ConnectionId, (i64, ExchangedTokens)>>,
    cache: TokenCache,
    touched: AtMostEvery,
    metrics: Arc<Metrics>,
    /// Where to say that this process waits for another's lease (the command line's stderr);
    /// with it set, a lease that runs out without a change is given up on (see `lease_or_latest`).
    lease_waits: Option<LeaseWaits>,
}

/// Told, once per wait, that a call waits for another process's exchange lease.
pub type LeaseWaits = Box<dyn Fn(&str) + Send + Sync>;

/// What a single flight does.
#[derive(Clone, Copy)]
enum Op {
    /// SnapInspect: exchange, unless the stored token is already newer than this version.
    Exchange(Option<i64>),
    /// Client credentials: fetch a new token (forced, or only if the stored one is not fresh).
    Fetch { force: bool },
    /// Client credentials: fetch a new token unless the stored one is already newer than this
    /// version (someone replaced the refused token meanwhile).
    FetchIfStill(i64),
}

impl TokenManager {
    pub fn new(
        store: Store,
        snapinspect: Option<SnapInspectClient>,
        http: crate::outbound::GuardedClient,
        default_lifetime: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            snapinspect,
            http,
            default_lifetime,
            owner: format!("proc_{}", base32(&random_bytes::<10>())),
            slots: Mutex::new(HashMap::new()),
            unsaved: Mutex::new(HashMap::new()),
            cache: TokenCache::default(),
            touched: AtMostEvery::new(Duration::from_millis(TOUCH_EVERY_MS as u64)),
            metrics,
            lease_waits: None,
        }
    }

    /// Say at once, through `say`, when a call must wait for another process's lease, and give up
    /// at the lease's end (`TokenError::LeaseHeld`) instead of taking it over: for a command that
    /// someone is watching.
    pub fn report_lease_waits(mut self, say: LeaseWaits) -> Self {
        self.lease_waits = Some(say);
        self
    }

    /// The health of the store this manager reads (for a loop's `Outage`).
    pub fn store_health(&self) -> Arc<crate::store::StoreHealth> {
        self.store.health().clone()
    }

    /// Drop what memory holds for a connection (after a reconnect, an edit, a disconnect, a
    /// delete): its cached token and any pair still waiting to be stored.
    pub fn forget(&self, id: &ConnectionId) {
        self.forget_cached(id);
        self.unsaved.lock().expect("unsaved poisoned").remove(id);
    }

    /// Drop every cached token (pairs waiting to be stored stay: they are this process's own).
    pub fn forget_all(&self) {
        self.cache.clear();
    }

    /// Whether a token for the connection is in memory (tests of the invalidation).
    pub fn remembers(&self, id: &ConnectionId) -> bool {
        self.cache.contains(id)
    }

    /// Drop only the cached token (another instance changed the connection: see `notify`). A
    /// pair still waiting to be stored stays: its commit checks the stored version itself.
    pub fn forget_cached(&self, id: &ConnectionId) {
        self.cache.forget(id);
    }

    /// Why a commit was refused, read back from the store: the connection is gone (404), was
    /// disconnected (409), or our lease was lost (409). The refused token is never handed out.
    async fn refused(&self, id: &ConnectionId) -> TokenError {
        self.forget(id);
        match self.store.tokens(id).await {
            Ok(None) => TokenError::NotFound(id.clone()),
            Ok(Some(t)) if t.status == crate::domain::ConnectionStatus::Disconnected => TokenError::Disconnected,
            Ok(Some(_)) => TokenError::Superseded,
            Err(e) => TokenError::from(e),
        }
    }

    fn cached(&self, id: &ConnectionId, now: i64) -> Option<AccessToken> {
        self.cache.get(id, now)
    }

    fn remember(&self, token: &AccessToken, obtained_at: Option<i64>, now: i64) {
        self.cache.remember(token, obtained_at, now);
    }

    /// Note the use, at most once a minute per connection, off the request's path.
    fn touch(&self, id: &ConnectionId, now: i64) {
        if self.touched.due(id.as_str(), now) {
            let (store, id) = (self.store.clone(), id.clone());
            tokio::spawn(async move {
                if let Err(e) = store.touch_last_used(&id, now).await {
                    tracing::debug!(error.chain = %format!("{e:#}"), "recording last use failed");
                }
            });
        }
    }

    fn slot(&self, id: &ConnectionId) -> Arc<Slot> {
        let mut slots = self.slots.lock().expect("slot map poisoned");
        slots.entry(id.clone()).or_default().clone()
    }

    /// A valid access token. SnapInspect access tokens do not expire until they are exchanged, so
    /// for them this never calls SnapInspect; a client-credentials token is fetched only when the
    /// stored one is missing or near its expiry.
    #[tracing::instrument(skip_all, fields(connection_id = %id))]
    pub async fn token(&self, id: &ConnectionId) -> Result<AccessToken, TokenError> {
        let now = now_ms();
        if let Some(t) = self.cached(id, now) {
            self.touch(id, now);
            return Ok(t);
        }
        let tokens = self.store.tokens(id).await?.ok_or_else(|| TokenError::NotFound(id.clone()))?;
        let token = match tokens.provider {
            Provider::SnapInspect => usable(id, &tokens)?,
            _ => match fresh_credentials_token(id, &tokens, now) {
                Some(t) => t,
                None => self.single_flight(id, Op::Fetch { force: false }, "token manager").await?,
            },
        };
        self.remember(&token, tokens.obtained_at, now);
        self.touch(id, now);
        Ok(token)
    }

    /// Exchange (SnapInspect) or fetch (client credentials) now. Callers that arrive while one is
    /// running for this connection wait for it and share its outcome: 100 concurrent calls make
    /// one request to the provider.
    #[tracing::instrument(skip_all, fields(connection_id = %id, actor))]
    pub async fn refresh(&self, id: &ConnectionId, actor: &str) -> Result<AccessToken, TokenError> {
        // Arrival is now, before the read below: a caller whose read is slow still joins an
        // exchange that started (and even finished) meanwhile, instead of starting another.
        let seen = self.slot(id).generation.load(Ordering::Acquire);
        let op = match self.store.tokens(id).await?.ok_or_else(|| TokenError::NotFound(id.clone()))?.provider {
            Provider::SnapInspect => Op::Exchange(None),
            _ => Op::Fetch { force: true },
        };
        self.single_flight_since(id, op, actor, seen).await
    }

    /// A forced refresh for an API caller: if the provider issued the stored token less than
    /// `REFRESH_COOLDOWN_MS` ago (in any process), that token is handed out instead of rotating
    /// again. It is as fresh as a forced refresh could make it, and callers that all saw the same
    /// 401 each get the one new token, as they would by joining a single flight, rather than a 429
    /// to handle. Otherwise as `refresh`, but rotating only the pair it read: one that another
    /// caller replaced meanwhile is not rotated again.
    #[tracing::instrument(skip_all, fields(connection_id = %id, actor))]
    pub async fn refresh_unless_fresh(&self, id: &ConnectionId, actor: &str) -> Result<AccessToken, TokenError> {
        // Arrival is before the read, as in `refresh`.
        let seen = self.slot(id).generation.load(Ordering::Acquire);
        let tokens = self.store.tokens(id).await?.ok_or_else(|| TokenError::NotFound(id.clone()))?;
        let now = now_ms();
        if within_cooldown(tokens.last_exchange_at, now) {
            if let Ok(t) = usable(id, &tokens) {
                tracing::info!("forced refresh within the cooldown: handing out the token just made");
                return Ok(t);
            }
        }
        // Rotate only the pair this read saw: if an exchange in any process replaced it since
        // (after the read, before our turn), that exchange's token is the one handed out.
        let op = match tokens.provider {
            Provider::SnapInspect => Op::Exchange(Some(tokens.version)),
            _ => Op::FetchIfStill(tokens.version),
        };
        self.single_flight_since(id, op, actor, seen).await
    }

    /// Exchange the pair that arrived in the connect callback's URL, if it has not been exchanged
    /// yet (those tokens may linger in browser history and proxy logs, and live until exchanged).
    /// Returns whether an exchange happened.
    #[tracing::instrument(skip_all, fields(connection_id = %id))]
    pub async fn exchange_callback_tokens(&self, id: &ConnectionId) -> Result<bool, TokenError> {
        let tokens = self.store.tokens(id).await?.ok_or_else(|| TokenError::NotFound(id.clone()))?;
        if !tokens.callback_pending || tokens.provider != Provider::SnapInspect {
            return Ok(false);
        }
        let t = self.refresh_if_still(id, tokens.version, "system").await?;
        Ok(t.version > tokens.version)
    }

    /// One sweep: exchange every connection's pending callback tokens whose backoff has run out.
    /// Returns how many were exchanged; failures are recorded on the connection (and its backoff).
    pub async fn sweep_callback_tokens(&self) -> anyhow::Result<usize> {
        let mut exchanged = 0;
        for id in self.store.callback_tokens_due(now_ms(), 100).await? {
            match self.exchange_callback_tokens(&id).await {
                Ok(true) => exchanged += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(connection_id = %id, error = %e, "exchanging the connect link's tokens failed; retried later")
                }
            }
        }
        Ok(exchanged)
    }

    /// Exchange only if the stored token is still `stale_version` (the one that just got a 401);
    /// if someone already exchanged, hand out the newer token instead.
    #[tracing::instrument(skip_all, fields(connection_id = %id, stale_version))]
    pub async fn refresh_if_still(
        &self,
        id: &ConnectionId,
        stale_version: i64,
        actor: &str,
    ) -> Result<AccessToken, TokenError> {
        self.single_flight(id, Op::Exchange(Some(stale_version)), actor).await
    }

    /// The token an upstream just refused (a 401 on a proxied request or a health check) is
    /// replaced, once for all who saw it refused: SnapInspect exchanges only if it is still the
    /// stored pair (else the newer one is handed out), client credentials fetch a new one the same
    /// way. Callers arriving while that runs join it; 100 callers with one refused token make one
    /// request to the provider.
    #[tracing::instrument(skip_all, fields(connection_id = %refused.connection_id, actor))]
    pub async fn replace_refused(&self, refused: &AccessToken, actor: &str) -> Result<AccessToken, TokenError> {
        let id = &refused.connection_id;
        match refused.provider {
            Provider::SnapInspect => self.refresh_if_still(id, refused.version, actor).await,
            _ => self.single_flight(id, Op::FetchIfStill(refused.version), actor).await,
        }
    }
}

/// Exponential backoff with ±20 % jitter: 2 s, 4 s, 8 s … capped at 10 min; a provider's
/// `Retry-After` wins when it asks for longer, up to the same cap (a provider cannot park a
/// connection for longer than our own backoff would).
pub fn backoff(failures: i64, retry_after: Option<Duration>) -> Duration {
    let exp = (failures.clamp(1, 20) - 1) as u32;
    let base = BACKOFF_FLOOR.saturating_mul(2u32.saturating_pow(exp)).min(BACKOFF_CAP);
    let jitter = rand::thread_rng().gen_range(0.8..1.2);
    let jittered = base.mul_f64(jitter).max(BACKOFF_FLOOR);
    retry_after.map_or(jittered, |r| r.min(BACKOFF_CAP).max(jittered))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forced_refresh_is_held_back_for_exactly_the_cooldown() {
        assert!(!within_cooldown(None, 10_000), "never exchanged");
        assert!(within_cooldown(Some(10_000), 10_000));
        assert!(within_cooldown(Some(10_000), 14_999));
        assert!(!within_cooldown(Some(10_000), 15_000), "five seconds later it may rotate again");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1, None) >= BACKOFF_FLOOR);
        assert!(backoff(1, None) <= Duration::from_millis(2400));
        assert!(backoff(4, None) >= Duration::from_millis(12_800));
        assert!(backoff(50, None) <= BACKOFF_CAP.mul_f64(1.2));
        assert_eq!(backoff(1, Some(Duration::from_secs(600))), Duration::from_secs(600));
        assert!(backoff(2, None) >= Duration::from_millis(3_200), "the second failure waits about 4 s");
        assert!(backoff(2, None) <= Duration::from_millis(4_800));
        assert!(backoff(1, Some(Duration::from_secs(1))) >= BACKOFF_FLOOR, "a short Retry-After keeps the floor");
        assert_eq!(backoff(1, Some(Duration::from_secs(601))), BACKOFF_CAP, "a long one is capped");
        assert_eq!(backoff(1, Some(Duration::from_secs(u64::MAX))), BACKOFF_CAP);
    }
}
