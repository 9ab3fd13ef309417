//! Failed sign-ins, throttled per account-and-address and per address with growing locks, counted
//! in the database before the password is checked; and the cap on concurrent password hashing.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    domain::sha256,
    metrics::Metrics,
    store::{account_hash, Store, ThrottleKey, ThrottleRow},
};

/// After `limit` counted attempts within `window_ms` a key is locked: for `base_lock_ms` the
/// first time, twice as long each time after, at most `max_lock_ms`.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub limit: i64,
    pub window_ms: i64,
    pub base_lock_ms: i64,
    pub max_lock_ms: i64,
}

impl Policy {
    /// Five attempts in 15 minutes; locks of 1, 2, 4, 8 then 15 minutes.
    pub const DEFAULT: Policy =
        Policy { limit: 5, window_ms: 15 * 60_000, base_lock_ms: 60_000, max_lock_ms: 15 * 60_000 };

    /// How long the lock after `lockouts` earlier ones lasts.
    pub fn lock_ms(&self, lockouts: i64) -> i64 {
        self.base_lock_ms.saturating_mul(1 << lockouts.clamp(0, 20)).min(self.max_lock_ms)
    }

    /// Count one attempt on a key at `now`. `Err(wait_ms)` while the key is locked (nothing is
    /// counted); otherwise the row to store and, if this attempt used up the allowance, the
    /// length of the lock it started. The attempt that starts a lock is still evaluated.
    pub fn reserve(&self, row: Option<ThrottleRow>, now: i64) -> Result<(ThrottleRow, Option<i64>), i64> {
        let mut r =
            row.unwrap_or(ThrottleRow { failures: 0, window_start: now, locked_until: 0, lockouts: 0, expires_at: 0 });
        if r.locked_until > now {
            return Err(r.locked_until - now);
        }
        if now - r.window_start >= self.window_ms {
            r.failures = 0;
            r.window_start = now;
        }
        r.failures += 1;
        let mut started = None;
        if r.failures >= self.limit {
            let lock = self.lock_ms(r.lockouts);
            r.locked_until = now + lock;
            r.lockouts += 1;
            r.failures = 0;
            r.window_start = now;
            started = Some(lock);
        }
        // Kept past its window and lock for one longest lock, so the next lock still doubles.
        r.expires_at = (r.window_start + self.window_ms).max(r.locked_until) + self.max_lock_ms;
        Ok((r, started))
    }
}

/// The throttle keys for a sign-in of `account` (a normalised email, or the raw field capped)
/// from `address` (a limit key: an IPv4 address or an IPv6 /64).
pub fn keys(account: &str, address: &str) -> [ThrottleKey; 2] {
    let account: String = account.chars().take(254).collect();
    let address: String = address.chars().take(64).collect();
    let address_hash = sha256(format!("address:{address}").as_bytes());
    [
        ThrottleKey {
            key_hash: sha256(format!("pair:{account}|{address}").as_bytes()),
            account_hash: Some(account_hash(&account)),
            address_hash: Some(address_hash.clone()),
        },
        ThrottleKey { key_hash: address_hash, account_hash: None, address_hash: None },
    ]
}

/// The sign-in throttle over the store.
pub struct SignInThrottle {
    store: Store,
    policy: Policy,
}

/// A reserved attempt: which lock (if any) it started, for the answer if the password is wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct Reserved {
    pub locked: Option<Duration>,
}

impl SignInThrottle {
    pub fn new(store: Store, policy: Policy) -> Self {
        Self { store, policy }
    }

    /// Count this attempt on both keys before the password is checked. `Err(wait)` if either key
    /// is locked (then nothing is counted).
    pub async fn reserve(&self, account: &str, address: &str, now: i64) -> anyhow::Result<Result<Reserved, Duration>> {
        let mut longest = None::<i64>;
        let policy = self.policy;
        let outcome = self
            .store
            .throttle_reserve(&keys(account, address), |_, row| {
                let (row, started) = policy.reserve(row, now)?;
                longest = longest.max(started);
                Ok(row)
            })
            .await?;
        Ok(match outcome {
            Ok(()) => Ok(Reserved { locked: longest.map(ms) }),
            Err(wait) => Err(ms(wait)),
        })
    }

    /// A right password: the account-and-address count starts over and the address gets its
    /// attempt back.
    pub async fn success(&self, account: &str, address: &str) -> anyhow::Result<()> {
        let [pair, addr] = keys(account, address);
        self.store.throttle_clear(&pair.key_hash).await?;
        self.store.throttle_refund(&addr.key_hash).await
    }
}

fn ms(n: i64) -> Duration {
    Duration::from_millis(n.max(0) as u64)
}

/// How many password hashes may run at once: one per core, since each holds ~19 MiB and a core
/// for its whole run. Past that a sign-in is turned away at once, not queued. Counted in metrics.
pub struct HashGate {
    permits: Arc<Semaphore>,
    cap: usize,
    metrics: Arc<Metrics>,
}

/// Held while one hash runs.
pub struct HashPermit {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Drop for HashPermit {
    fn drop(&mut self) {
        self.metrics.hashing_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl HashGate {
    pub fn new(cap: usize, metrics: Arc<Metrics>) -> Self {
        let cap = cap.max(1);
        Self { permits: Arc::new(Semaphore::new(cap)), cap, metrics }
    }

    /// Sized to the machine's cores.
    pub fn per_core(metrics: Arc<Metrics>) -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, |n| n.get()), metrics)
    }

    /// A permit, or `None` when `cap` hashes are running already.
    pub fn try_enter(&self) -> Option<HashPermit> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            self.metrics.hashing_refused.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let m = &self.metrics;
        let now = m.hashing_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        m.hashing_max_in_flight.fetch_max(now, Ordering::SeqCst);
        Some(HashPermit { _permit: permit, metrics: self.metrics.clone() })
    }

    pub fn cap(&self) -> usize {
        self.cap
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    const P: Policy = Policy { limit: 3, window_ms: 1_000, base_lock_ms: 100, max_lock_ms: 350 };

    fn row(failures: i64, window_start: i64, locked_until: i64, lockouts: i64) -> ThrottleRow {
        ThrottleRow { failures, window_start, locked_until, lockouts, expires_at: 0 }
    }

    #[test]
    fn locks_double_up_to_the_maximum() {
        assert_eq!(P.lock_ms(0), 100);
        assert_eq!(P.lock_ms(1), 200);
        assert_eq!(P.lock_ms(2), 350);
        assert_eq!(P.lock_ms(40), 350);
        assert_eq!(Policy::DEFAULT.lock_ms(0), 60_000);
        assert_eq!(Policy::DEFAULT.lock_ms(3), 480_000);
        assert_eq!(Policy::DEFAULT.lock_ms(4), 900_000);
    }

    #[test]
    fn the_attempt_that_reaches_the_limit_starts_a_lock() {
        let (r, started) = P.reserve(None, 5_000).unwrap();
        assert_eq!(
            (r, started),
            (ThrottleRow { failures: 1, window_start: 5_000, locked_until: 0, lockouts: 0, expires_at: 6_350 }, None)
        );
        let (r, started) = P.reserve(Some(r), 5_010).unwrap();
        assert_eq!((r.failures, started), (2, None));
        let (r, started) = P.reserve(Some(r), 5_020).unwrap();
        assert_eq!(started, Some(100));
        assert_eq!(
            r,
            ThrottleRow { failures: 0, window_start: 5_020, locked_until: 5_120, lockouts: 1, expires_at: 6_370 }
        );
        assert_eq!(P.reserve(Some(r), 5_020), Err(100));
        assert_eq!(P.reserve(Some(r), 5_119), Err(1));
        // At the lock's end the key may try again; the next lock is twice as long.
        let (r, _) = P.reserve(Some(r), 5_120).unwrap();
        let (r, _) = P.reserve(Some(r), 5_121).unwrap();
        let (r, started) = P.reserve(Some(r), 5_122).unwrap();
        assert_eq!((started, r.locked_until, r.lockouts), (Some(200), 5_322, 2));
    }

    #[test]
    fn the_count_starts_over_after_the_window() {
        let before = row(2, 1_000, 0, 1);
        let (r, started) = P.reserve(Some(before), 1_999).unwrap();
        assert_eq!((r.failures, started), (0, Some(200)), "still in the window: this one locks");
        let (r, started) = P.reserve(Some(before), 2_000).unwrap();
        assert_eq!((r.failures, r.window_start, started), (1, 2_000, None), "a new window");
        assert_eq!(r.expires_at, 2_000 + 1_000 + 350);
    }

    #[test]
    fn keys_are_hashes_of_bounded_strings_and_pairs_carry_the_account() {
        let [pair, addr] = keys("a@example.com", "127.0.0.1");
        assert_eq!(pair.key_hash, sha256(b"pair:a@example.com|127.0.0.1"));
        assert_eq!(pair.account_hash, Some(account_hash("a@example.com")));
        assert_eq!(pair.address_hash.as_ref(), Some(&addr.key_hash));
        assert_eq!(addr.key_hash, sha256(b"address:127.0.0.1"));
        assert_eq!((addr.account_hash, addr.address_hash), (None, None));
        let long = "x".repeat(10_000);
        let [p1, _] = keys(&long, "1");
        let [p2, _] = keys(&long[..254], "1");
        assert_eq!(p1.key_hash, p2.key_hash, "capped at 254 characters");
        assert_ne!(keys(&long[..253], "1")[0].key_hash, p2.key_hash);
    }

    #[test]
    fn the_hash_gate_admits_up_to_its_cap_and_counts() {
        let m = Arc::new(Metrics::default());
        let load = |a: &AtomicU64| a.load(Ordering::SeqCst);
        let gate = HashGate::new(2, m.clone());
        let a = gate.try_enter().unwrap();
        let b = gate.try_enter().unwrap();
        assert!(gate.try_enter().is_none(), "a third is turned away");
        assert_eq!((load(&m.hashing_in_flight), load(&m.hashing_max_in_flight)), (2, 2));
        assert_eq!(load(&m.hashing_refused), 1);
        drop(a);
        assert_eq!(load(&m.hashing_in_flight), 1);
        let _c = gate.try_enter().unwrap();
        drop(b);
        assert_eq!((load(&m.hashing_in_flight), load(&m.hashing_max_in_flight), gate.cap()), (1, 2, 2));
        assert_eq!(HashGate::new(0, m).cap(), 1);
    }
}
