//! API keys for `/api/v1`: made from 256 random bits, shown once, stored as SHA-256, checked in
//! memory on the hot path. A check is trusted for two seconds, so a key revoked by another process
//! (the CLI) stops working within two seconds; one revoked in this process stops at once.

use std::{collections::HashMap, sync::RwLock};

use secrecy::{ExposeSecret, SecretString};

use crate::{
    domain::{base32, random_bytes, sha256},
    limits::AtMostEvery,
    store::{ApiKey, Store},
    time::now_ms,
};

const KEY_PREFIX: &str = "chk_";
const TRUST_MS: i64 = 2_000;
const TOUCH_EVERY_MS: i64 = 60_000;

/// The key that made a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub name: String,
}

#[derive(Clone)]
struct Checked {
    caller: Option<Caller>,
    at: i64,
}

pub struct ApiKeys {
    store: Store,
    checked: RwLock<HashMap<Vec<u8>, Checked>>,
    touched: AtMostEvery,
}

impl ApiKeys {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            checked: RwLock::new(HashMap::new()),
            touched: AtMostEvery::new(std::time::Duration::from_millis(TOUCH_EVERY_MS as u64)),
        }
    }

    /// Make a key: returns its record and the key itself, which is never shown again.
    pub async fn create(&self, name: &str, actor: &str) -> anyhow::Result<(String, SecretString)> {
        let name = name.trim();
        anyhow::ensure!(!name.is_empty() && name.len() <= 100, "an API key needs a name of 1 to 100 characters");
        let key = format!("{KEY_PREFIX}{}", base32(&random_bytes::<32>()));
        let id = format!("key_{}", base32(&random_bytes::<16>()));
        let prefix: String = key.chars().take(12).collect();
        self.store.create_api_key(&id, name, &sha256(key.as_bytes()), &prefix, now_ms(), actor).await?;
        Ok((id, SecretString::from(key)))
    }

    pub async fn revoke(&self, id: &str, actor: &str) -> anyhow::Result<bool> {
        let revoked = self.store.revoke_api_key(id, now_ms(), actor).await?;
        self.checked
            .write()
            .expect("key cache poisoned")
            .retain(|_, c| c.caller.as_ref().is_none_or(|k| k.key_id != id));
        Ok(revoked)
    }

    pub async fn list(&self) -> anyhow::Result<Vec<ApiKey>> {
        self.store.api_keys().await
    }

    /// Who holds this key, or `None` if it is unknown or revoked.
    pub async fn verify(&self, presented: &SecretString) -> anyhow::Result<Option<Caller>> {
        let hash = sha256(presented.expose_secret().as_bytes());
        let now = now_ms();
        let hit =
            self.checked.read().expect("key cache poisoned").get(&hash).filter(|c| now - c.at < TRUST_MS).cloned();
        let caller = match hit {
            Some(c) => c.caller,
            None => {
                let record = self.store.api_key_by_hash(&hash).await?;
                let caller = record.filter(|k| k.revoked_at.is_none()).map(|k| Caller { key_id: k.id, name: k.name });
                let mut checked = self.checked.write().expect("key cache poisoned");
                if checked.len() > 10_000 {
                    checked.retain(|_, c| now - c.at < TRUST_MS);
                }
                checked.insert(hash, Checked { caller: caller.clone(), at: now });
                caller
            }
        };
        if let Some(c) = &caller {
            self.touch(&c.key_id, now);
        }
        Ok(caller)
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
