//! The token manager's memory: fresh tokens served without touching the database, each only as long
//! as another process cannot have replaced it unseen (one second for SnapInspect, two at most else).

use std::{collections::HashMap, sync::RwLock};

use super::AccessToken;
use crate::domain::{ConnectionId, Provider};

/// A SnapInspect token may be exchanged by another process at any time, so it is trusted from
/// memory only this long.
const SNAPINSPECT_CACHE_MS: i64 = 1_000;
/// A client-credentials token stays valid until its own expiry, but another process (the CLI) may
/// disconnect or delete its connection: memory is trusted at most this long, so such a change
/// reaches this process within two seconds (one made in this process `forget`s at once).
const CREDENTIALS_CACHE_MS: i64 = 2_000;

/// Refresh a token this long before it expires: a tenth of its lifetime, between 5 s and 5 min,
/// but never more than half of it, so even a short-lived token is reused.
pub fn refresh_margin_ms(lifetime_ms: i64) -> i64 {
    (lifetime_ms / 10).clamp(5_000, 300_000).min(lifetime_ms / 2)
}

/// Until when a token obtained at `obtained_at` (default: now) may be served from memory.
fn cache_until(provider: Provider, expires_at: Option<i64>, obtained_at: Option<i64>, now: i64) -> i64 {
    match (provider, expires_at) {
        (Provider::SnapInspect, _) | (_, None) => now + SNAPINSPECT_CACHE_MS,
        (_, Some(exp)) => (exp - refresh_margin_ms(exp - obtained_at.unwrap_or(now))).min(now + CREDENTIALS_CACHE_MS),
    }
}

#[derive(Clone)]
struct Cached {
    token: AccessToken,
    /// Served from memory until then.
    use_until: i64,
}

/// The tokens in memory, by connection.
#[derive(Default)]
pub(super) struct TokenCache(RwLock<HashMap<ConnectionId, Cached>>);

impl TokenCache {
    /// The connection's token, if memory may still serve it at `now`.
    pub(super) fn get(&self, id: &ConnectionId, now: i64) -> Option<AccessToken> {
        let cache = self.0.read().expect("token cache poisoned");
        cache.get(id).filter(|c| c.use_until > now).map(|c| c.token.clone())
    }

    /// Keep a token obtained at `obtained_at` (default: now), for as long as [`cache_until`] says.
    pub(super) fn remember(&self, token: &AccessToken, obtained_at: Option<i64>, now: i64) {
        let use_until = cache_until(token.provider, token.expires_at, obtained_at, now);
        if use_until > now {
            self.0
                .write()
                .expect("token cache poisoned")
                .insert(token.connection_id.clone(), Cached { token: token.clone(), use_until });
        }
    }

    pub(super) fn forget(&self, id: &ConnectionId) {
        self.0.write().expect("token cache poisoned").remove(id);
    }

    pub(super) fn clear(&self) {
        self.0.write().expect("token cache poisoned").clear();
    }

    pub(super) fn contains(&self, id: &ConnectionId) -> bool {
        self.0.read().expect("token cache poisoned").contains_key(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refresh_margin_is_a_tenth_clamped_and_never_more_than_half() {
        assert_eq!(refresh_margin_ms(3_600_000), 300_000, "an hour: five minutes");
        assert_eq!(refresh_margin_ms(600_000), 60_000, "ten minutes: one");
        assert_eq!(refresh_margin_ms(20_000), 5_000, "twenty seconds: the five-second floor");
        assert_eq!(refresh_margin_ms(2_000), 1_000, "two seconds: half, so it is still reused");
    }

    #[test]
    fn a_snapinspect_token_is_trusted_from_memory_for_one_second() {
        assert_eq!(cache_until(Provider::SnapInspect, None, Some(0), 10_000), 11_000);
        assert_eq!(cache_until(Provider::SnapInspect, Some(99_000_000), Some(0), 10_000), 11_000);
        assert_eq!(cache_until(Provider::Snapdocs, None, Some(0), 10_000), 11_000);
    }

    #[test]
    fn a_credentials_token_is_trusted_from_memory_until_its_margin_but_two_seconds_at_most() {
        // An hour-long token obtained at 0: its margin starts at 55 min, but memory trusts it 2 s.
        assert_eq!(cache_until(Provider::Snapdocs, Some(3_600_000), Some(0), 10_000), 12_000);
        // A 20 s token obtained at 0, asked at 14 s: the margin (5 s) starts at 15 s.
        assert_eq!(cache_until(Provider::Snapdocs, Some(20_000), Some(0), 14_000), 15_000);
        // Without `obtained_at` the lifetime is counted from now: 3 s left, so half of it, 1.5 s.
        assert_eq!(cache_until(Provider::Snapdocs, Some(13_000), None, 10_000), 11_500);
        assert_eq!(cache_until(Provider::Snapdocs, Some(13_000), Some(0), 10_000), 8_000, "already in its margin");
    }

    fn token(provider: Provider, expires_at: Option<i64>) -> AccessToken {
        AccessToken {
            connection_id: ConnectionId::generate(),
            provider,
            token: secrecy::SecretString::from("t".to_owned()),
            version: 1,
            expires_at,
        }
    }

    #[test]
    fn memory_serves_a_token_until_its_moment_and_not_at_it() {
        let cache = TokenCache::default();
        let t = token(Provider::SnapInspect, None);
        cache.remember(&t, None, 10_000);
        assert!(cache.contains(&t.connection_id));
        assert!(cache.get(&t.connection_id, 10_999).is_some(), "within its second");
        assert!(cache.get(&t.connection_id, 11_000).is_none(), "at its end it is read again");
    }

    #[test]
    fn a_token_already_at_its_margin_is_not_kept() {
        let cache = TokenCache::default();
        // Obtained at 0, expires at 20 s: its margin (5 s) starts at 15 s, which is now.
        let t = token(Provider::Snapdocs, Some(20_000));
        cache.remember(&t, Some(0), 15_000);
        assert!(!cache.contains(&t.connection_id));
    }

    #[test]
    fn forget_and_clear_drop_what_memory_holds() {
        let cache = TokenCache::default();
        let (a, b) = (token(Provider::SnapInspect, None), token(Provider::SnapInspect, None));
        cache.remember(&a, None, 0);
        cache.remember(&b, None, 0);
        cache.forget(&a.connection_id);
        assert!(!cache.contains(&a.connection_id) && cache.contains(&b.connection_id));
        cache.clear();
        assert!(!cache.contains(&b.connection_id));
        assert!(cache.get(&b.connection_id, 1).is_none());
    }
}
