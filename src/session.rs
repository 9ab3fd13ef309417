//! Server-side sessions for actix-session, kept in the database. The cookie carries a random
//! session key, encrypted and signed with `SESSION_KEY`; the store keeps only the key's hash, so a
//! session can really be ended (logout purges the row) and a database copy cannot revive one.

use std::collections::HashMap;

use actix_session::{
    config::{PersistentSession, TtlExtensionPolicy},
    storage::{LoadError, SaveError, SessionKey, SessionStore, UpdateError},
    SessionMiddleware,
};
use actix_web::cookie::{time::Duration, Key, SameSite};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};

use crate::{
    domain::{random_bytes, sha256},
    store::Store,
    time::now_ms,
};

/// The cookie that carries the session key.
pub const COOKIE_NAME: &str = "connect_hub_session";

/// actix-session storage backed by our database.
#[derive(Clone)]
pub struct DbSessionStore {
    store: Store,
}

impl DbSessionStore {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

fn key_hash(key: &SessionKey) -> Vec<u8> {
    sha256(key.as_ref().as_bytes())
}

fn expiry(ttl: &Duration) -> i64 {
    now_ms() + ttl.whole_milliseconds() as i64
}

impl SessionStore for DbSessionStore {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<HashMap<String, String>>, LoadError> {
        self.store.session_load(&key_hash(session_key), now_ms()).await.map_err(LoadError::Other)
    }

    async fn save(&self, state: HashMap<String, String>, ttl: &Duration) -> Result<SessionKey, SaveError> {
        let key: SessionKey = URL_SAFE_NO_PAD
            .encode(random_bytes::<32>())
            .try_into()
            .map_err(|e| SaveError::Other(anyhow::anyhow!("{e}")))?;
        self.store.session_insert(&key_hash(&key), &state, expiry(ttl)).await.map_err(SaveError::Other)?;
        Ok(key)
    }

    async fn update(
        &self,
        key: SessionKey,
        state: HashMap<String, String>,
        ttl: &Duration,
    ) -> Result<SessionKey, UpdateError> {
        let found =
            self.store.session_update(&key_hash(&key), &state, expiry(ttl)).await.map_err(UpdateError::Other)?;
        if found {
            Ok(key)
        } else {
            // The row expired or was purged meanwhile: start a fresh session rather than revive it.
            self.save(state, ttl).await.map_err(|e| UpdateError::Other(anyhow::anyhow!("{e}")))
        }
    }

    async fn update_ttl(&self, key: &SessionKey, ttl: &Duration) -> Result<(), anyhow::Error> {
        self.store.session_touch(&key_hash(key), expiry(ttl)).await
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), anyhow::Error> {
        self.store.session_delete(&key_hash(key)).await
    }
}

/// The session middleware: `HttpOnly`, `SameSite=Lax` (the SnapInspect redirect back is a top-level
/// GET, which Lax still carries), `Secure` when we are reached over https. The session lasts
/// `ttl` from its last use.
pub fn middleware(
    store: Store,
    session_key: &[u8],
    secure: bool,
    ttl: std::time::Duration,
) -> SessionMiddleware<DbSessionStore> {
    SessionMiddleware::builder(DbSessionStore::new(store), Key::from(session_key))
        .cookie_name(COOKIE_NAME.to_owned())
        .cookie_http_only(true)
        .cookie_secure(secure)
        .cookie_same_site(SameSite::Lax)
        .cookie_path("/".to_owned())
        .session_lifecycle(
            PersistentSession::default()
                .session_ttl(Duration::seconds(ttl.as_secs() as i64))
                .session_ttl_extension_policy(TtlExtensionPolicy::OnEveryRequest),
        )
        .build()
}
