//! API keys for `/api/v1`: made from 256 random bits, shown once, stored as SHA-256 with a scope (some
//! connections or all, read-only or not), checked in memory on the hot path.

// A check is trusted for two seconds, so a key revoked by another process stops working within two
// seconds. A check that read the store before a key was forgotten (a revoke here, or its NOTIFY from
// another instance) must not put the key back afterwards: every forget bumps a generation, and a read
// that began under an older generation is answered but not kept.

use std::{collections::HashMap, sync::RwLock, time::Duration};

use secrecy::{ExposeSecret, SecretString};

use crate::{
    domain::{base32, random_bytes, sha256, ConnectionId},
    limits::AtMostEvery,
    store::{ApiKey, Store},
    time::now_ms,
};

const KEY_PREFIX: &str = "chk_";
const TRUST_MS: i64 = 2_000;
const TOUCH_EVERY_MS: i64 = 60_000;

/// The key that made a request, and what it may do.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub name: String,
    /// The connections it is limited to; `None`: every connection.
    pub connections: Option<Vec<ConnectionId>>,
    /// It may read tokens but not force a refresh.
    pub read_only: bool,
}

impl Caller {
    /// Whether this key may see the connection at all (the API answers 404 when not).
    pub fn may_use(&self, id: &ConnectionId) -> bool {
        self.connections.as_ref().is_none_or(|ids| ids.contains(id))
    }
}

/// What a new key may do: every connection or some, and whether it may force a refresh.
#[derive(Debug, Clone, Default)]
pub struct KeyScope {
    pub connections: Option<Vec<ConnectionId>>,
    pub read_only: bool,
}

impl KeyScope {
    /// Parse `--connections ID,ID` (blank: every connection).
    pub fn parse_connections(raw: &str) -> anyhow::Result<Option<Vec<ConnectionId>>> {
        if raw.trim().is_empty() {
            return Ok(None);
        }
        let mut ids = Vec::new();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let id = ConnectionId::parse(part).map_err(|_| {
                anyhow::anyhow!("`{}` is not a connection id (con_…)", part.chars().take(40).collect::<String>())
            })?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        anyhow::ensure!(
            !ids.is_empty(),
            "list at least one connection id, or leave the list empty for every connection"
        );
        Ok(Some(ids))
    }
}

/// Whether a check made at `at` still answers at `now` without the database.
fn trusted(at: i64, now: i64) -> bool {
    now - at < TRUST_MS
}

fn parse_scope(raw: Option<&str>) -> Option<Vec<ConnectionId>> {
    // Written by `create` from parsed ids, so every part parses; anything else grants nothing.
    raw.map(|r| r.split(',').filter_map(|p| ConnectionId::parse(p.trim()).ok()).collect())
}

/// What a presented key turned out to be.
#[derive(Debug)]
pub enum Verdict {
    Valid(Caller),
    /// Unknown or revoked.
    Unknown,
    /// Not looked up, as `may_look_up` asked: come back after this long.
    NotLookedUp(Duration),
}

/// What one read of the store said about a presented key, until [`ApiKeys::remember`] keeps it.
pub struct Lookup {
    hash: Vec<u8>,
    caller: Option<Caller>,
    at: i64,
    /// The cache's generation when the read began.
    generation: u64,
}

#[derive(Clone)]
struct Checked {
    caller: Option<Caller>,
    at: i64,
}

/// Remembered checks, and how many times memory was told to forget (under one lock, so a forget
/// and a remember are never half-seen by each other).
#[derive(Default)]
struct Cache {
    checked: HashMap<Vec<u8>, Checked>,
    generation: u64,
}

pub struct ApiKeys {
    store: Store,
    cache: RwLock<Cache>,
    touched: AtMostEvery,
}

impl ApiKeys {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            cache: RwLock::new(Cache::default()),
            touched: AtMostEvery::new(Duration::from_millis(TOUCH_EVERY_MS as u64)),
        }
    }

    /// Make a key with full access: returns its id and the key itself, which is never shown again.
    pub async fn create(&self, name: &str, actor: &str) -> anyhow::Result<(String, SecretString)> {
        self.create_scoped(name, &KeyScope::default(), actor).await
    }

    /// Make a key limited to `scope`. Every listed connection must exist.
    pub async fn create_scoped(
        &self,
        name: &str,
        scope: &KeyScope,
        actor: &str,
    ) -> anyhow::Result<(String, SecretString)> {
        let name = crate::domain::limits::api_key_name(name)?;
        if let Some(ids) = &scope.connections {
            anyhow::ensure!(!ids.is_empty(), "a key limited to connections needs at least one");
            for id in ids {
                anyhow::ensure!(self.store.connection(id).await?.is_some(), "there is no connection with id {id}");
            }
        }
        let connection_scope =
            scope.connections.as_ref().map(|ids| ids.iter().map(ConnectionId::as_str).collect::<Vec<_>>().join(","));
        let key = format!("{KEY_PREFIX}{}", base32(&random_bytes::<32>()));
        let id = format!("key_{}", base32(&random_bytes::<16>()));
        let prefix: String = key.chars().take(12).collect();
        self.store
            .create_api_key(
                &id,
                name,
                &sha256(key.as_bytes()),
                &prefix,
                connection_scope.as_deref(),
                scope.read_only,
                now_ms(),
                actor,
            )
            .await?;
        Ok((id, SecretString::from(key)))
    }

    pub async fn revoke(&self, id: &str, actor: &str) -> anyhow::Result<bool> {
        let revoked = self.store.revoke_api_key(id, now_ms(), actor).await?;
        self.forget(id);
        Ok(revoked)
    }

    /// Drop what memory holds for a key (revoked here, or by another instance: see `notify`).
    pub fn forget(&self, id: &str) {
        let mut cache = self.cache.write().expect("key cache poisoned");
        cache.generation += 1;
        cache.checked.retain(|_, c| c.caller.as_ref().is_none_or(|k| k.key_id != id));
    }

    /// Drop every remembered check (the next request of each key reads the database).
    pub fn forget_all(&self) {
        let mut cache = self.cache.write().expect("key cache poisoned");
        cache.generation += 1;
        cache.checked.clear();
    }

    /// Whether a check of the key with this id is remembered (tests of the invalidation).
    pub fn remembers(&self, id: &str) -> bool {
        self.cache
            .read()
            .expect("key cache poisoned")
            .checked
            .values()
            .any(|c| c.caller.as_ref().is_some_and(|k| k.key_id == id))
    }

    pub async fn list(&self) -> anyhow::Result<Vec<ApiKey>> {
        self.store.api_keys().await
    }

    /// Who holds this key (`Unknown`: unknown or revoked). A key memory cannot answer for is looked
    /// up in the database only if `may_look_up` allows it (the guessing limit of the caller's address), so a guesser
    /// already refused costs no query. A key this process has seen valid before is always looked up:
    /// a guesser at the same address does not lock its holder out.
    pub async fn verify_unless_refused(
        &self,
        presented: &SecretString,
        may_look_up: impl FnOnce() -> Result<(), Duration>,
    ) -> anyhow::Result<Verdict> {
        let hash = sha256(presented.expose_secret().as_bytes());
        let now = now_ms();
        let (hit, known) = {
            let cache = self.cache.read().expect("key cache poisoned");
            let seen = cache.checked.get(&hash);
            (seen.filter(|c| trusted(c.at, now)).cloned(), seen.is_some_and(|c| c.caller.is_some()))
        };
        let caller = match hit {
            Some(c) => c.caller,
            None => {
                if !known {
                    if let Err(wait) = may_look_up() {
                        return Ok(Verdict::NotLookedUp(wait));
                    }
                }
                self.remember(self.look_up(presented).await?)
            }
        };
        Ok(match caller {
            Some(c) => {
                self.touch(&c.key_id, now);
                Verdict::Valid(c)
            }
            None => Verdict::Unknown,
        })
    }

    /// Read the key from the store (the first half of a check that memory could not answer).
    pub async fn look_up(&self, presented: &SecretString) -> anyhow::Result<Lookup> {
        let hash = sha256(presented.expose_secret().as_bytes());
        let at = now_ms();
        // Taken before the read: a forget that lands while it runs makes the read stale.
        let generation = self.cache.read().expect("key cache poisoned").generation;
        let record = self.store.api_key_by_hash(&hash).await?;
        let caller = record.filter(|k| k.revoked_at.is_none()).map(|k| Caller {
            connections: parse_scope(k.connection_scope.as_deref()),
            read_only: k.read_only,
            key_id: k.id,
            name: k.name,
        });
        Ok(Lookup { hash, caller, at, generation })
    }

    /// Keep what a look-up read for the next requests (the second half), unless memory was told
    /// to forget since the read began; either way, return who it found (the request that raced
    /// the revoke is answered as of its read, the ones after it read again).
    pub fn remember(&self, lookup: Lookup) -> Option<Caller> {
        let Lookup { hash, caller, at, generation } = lookup;
        let mut cache = self.cache.write().expect("key cache poisoned");
        if cache.generation != generation {
            return caller;
        }
        if cache.checked.len() > 10_000 {
            cache.checked.retain(|_, c| trusted(c.at, at));
        }
        cache.checked.insert(hash, Checked { caller: caller.clone(), at });
        caller
    }

    fn touch(&self, id: &str, now: i64) {
        if self.touched.due(id, now) {
            let (store, id) = (self.store.clone(), id.to_owned());
            tokio::spawn(async move {
                let _ = store.touch_api_key(&id, now).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_connection_list_parses_trims_and_drops_repeats() {
        let (a, b) = (ConnectionId::generate(), ConnectionId::generate());
        let ids = KeyScope::parse_connections(&format!(" {a}, {b},{a},")).unwrap().unwrap();
        assert_eq!(ids, vec![a, b]);
        assert!(KeyScope::parse_connections("  ").unwrap().is_none(), "blank: every connection");
        assert!(KeyScope::parse_connections(",").is_err());
        assert!(KeyScope::parse_connections("con_nope").is_err());
    }

    /// A store in a SQLite file of its own; the directory (returned) is removed on drop, also when
    /// an assertion fails.
    async fn temp_store() -> (tempfile::TempDir, Store) {
        let keys = Arc::new(crate::crypto::KeyRing::new(&[7u8; 32], &[]));
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("hub.db").display());
        let store = Store::open(&url, None, keys).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_refused_guesser_costs_no_lookup_but_a_key_seen_valid_before_is_still_looked_up() {
        let (_dir, store) = temp_store().await;
        let api_keys = ApiKeys::new(store.clone());
        let (_, key) = api_keys.create("app", "test").await.unwrap();
        let refuse = || Err(Duration::from_secs(9));
        let verdict = api_keys.verify_unless_refused(&key, refuse).await.unwrap();
        assert!(matches!(verdict, Verdict::NotLookedUp(w) if w == Duration::from_secs(9)), "{verdict:?}");
        assert!(matches!(api_keys.verify_unless_refused(&key, || Ok(())).await.unwrap(), Verdict::Valid(_)));
        // Its check has since expired: a lookup even for a refused address, which sees a revoke.
        let expire = || api_keys.cache.write().unwrap().checked.values_mut().for_each(|c| c.at -= TRUST_MS);
        expire();
        assert!(matches!(api_keys.verify_unless_refused(&key, refuse).await.unwrap(), Verdict::Valid(_)));
        let id = api_keys.list().await.unwrap()[0].id.clone();
        store.revoke_api_key(&id, now_ms(), "test").await.unwrap();
        expire();
        assert!(matches!(api_keys.verify_unless_refused(&key, refuse).await.unwrap(), Verdict::Unknown));
        store.close().await;
    }

    #[tokio::test]
    async fn a_check_answers_from_memory_for_two_seconds_and_no_longer() {
        let (_dir, store) = temp_store().await;
        let api_keys = ApiKeys::new(store.clone());
        let (id, key) = api_keys.create("app", "test").await.unwrap();
        assert!(matches!(api_keys.verify_unless_refused(&key, || Ok(())).await.unwrap(), Verdict::Valid(_)));
        // Revoked behind memory's back (as by another process, before its NOTIFY arrives).
        store.revoke_api_key(&id, now_ms(), "test").await.unwrap();
        assert!(
            matches!(api_keys.verify_unless_refused(&key, || Ok(())).await.unwrap(), Verdict::Valid(_)),
            "within the window memory answers"
        );
        assert!(trusted(1_000, 1_000) && trusted(1_000, 1_000 + TRUST_MS - 1));
        assert!(!trusted(1_000, 1_000 + TRUST_MS) && !trusted(1_000, 1_000 + 10 * TRUST_MS));
        store.close().await;
    }

    #[tokio::test]
    async fn memory_drops_expired_checks_only_once_it_holds_more_than_ten_thousand() {
        let (_dir, store) = temp_store().await;
        let api_keys = ApiKeys::new(store.clone());
        let now = now_ms();
        let lookup = |n: u32, at: i64| Lookup { hash: n.to_be_bytes().to_vec(), caller: None, at, generation: 0 };
        for n in 0..9_999 {
            api_keys.remember(lookup(n, now - 10 * TRUST_MS));
        }
        let len = || api_keys.cache.read().unwrap().checked.len();
        api_keys.remember(lookup(10_000, now));
        assert_eq!(len(), 10_000, "not more than ten thousand: nothing dropped");
        api_keys.remember(lookup(10_001, now));
        assert_eq!(len(), 10_001, "ten thousand before: nothing dropped");
        api_keys.remember(lookup(10_002, now));
        assert_eq!(len(), 3, "more than ten thousand before: the expired ones are dropped");
        store.close().await;
    }

    #[tokio::test]
    async fn forgetting_everything_drops_every_check_and_any_read_begun_before() {
        let (_dir, store) = temp_store().await;
        let api_keys = ApiKeys::new(store.clone());
        let (id, key) = api_keys.create("app", "test").await.unwrap();
        assert!(matches!(api_keys.verify_unless_refused(&key, || Ok(())).await.unwrap(), Verdict::Valid(_)));
        assert!(api_keys.remembers(&id));
        let before = api_keys.look_up(&key).await.unwrap();
        api_keys.forget_all();
        assert!(!api_keys.remembers(&id));
        assert!(api_keys.remember(before).is_some(), "the racing request is answered as of its read");
        assert!(!api_keys.remembers(&id), "but what it read is not kept");
        store.close().await;
    }

    #[test]
    fn a_scoped_caller_may_use_only_its_connections() {
        let (a, b) = (ConnectionId::generate(), ConnectionId::generate());
        let caller =
            Caller { key_id: "k".into(), name: "n".into(), connections: Some(vec![a.clone()]), read_only: false };
        assert!(caller.may_use(&a));
        assert!(!caller.may_use(&b));
        let all = Caller { connections: None, ..caller };
        assert!(all.may_use(&b));
        assert_eq!(parse_scope(Some(&format!("{a},{b}"))), Some(vec![a, b]));
        assert_eq!(parse_scope(None), None);
    }
}
