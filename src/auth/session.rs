//! Server-side sessions for signed-in admins, kept in the database: the cookie carries a random key
//! sealed with `SESSION_KEY`, the store only its hash, and a session that is gone stays gone.

use std::collections::HashMap;

use actix_session::{
    config::{BrowserSession, TtlExtensionPolicy},
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

/// The session value that marks a signed-in admin. Only such a session is ever stored.
pub const SIGNED_IN: &str = "admin_id";

/// A session's expiry moves forward at most this often: an active admin's requests do not each
/// write to the database.
pub const EXTEND_EVERY_MS: i64 = 60_000;

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

fn ttl_ms(ttl: &Duration) -> i64 {
    ttl.whole_milliseconds() as i64
}

impl SessionStore for DbSessionStore {
    async fn load(&self, session_key: &SessionKey) -> Result<Option<HashMap<String, String>>, LoadError> {
        self.store.session_load(&key_hash(session_key), now_ms()).await.map_err(LoadError::Other)
    }

    /// Only a signed-in session gets a row. Anything else (which no handler should produce) gets a
    /// key with no row behind it, so a visitor who is not signed in never makes the server write.
    async fn save(&self, state: HashMap<String, String>, ttl: &Duration) -> Result<SessionKey, SaveError> {
        let key: SessionKey = URL_SAFE_NO_PAD
            .encode(random_bytes::<32>())
            .try_into()
            .map_err(|e| SaveError::Other(anyhow::anyhow!("{e}")))?;
        if !state.contains_key(SIGNED_IN) {
            tracing::debug!("not storing a session without a signed-in admin");
            return Ok(key);
        }
        self.store.session_insert(&key_hash(&key), &state, now_ms() + ttl_ms(ttl)).await.map_err(SaveError::Other)?;
        Ok(key)
    }

    /// A missing row (signed out, expired, reset meanwhile) is not brought back: the key stays
    /// pointing at nothing, so the next request finds an empty, signed-out session.
    async fn update(
        &self,
        key: SessionKey,
        state: HashMap<String, String>,
        ttl: &Duration,
    ) -> Result<SessionKey, UpdateError> {
        let found = self
            .store
            .session_update(&key_hash(&key), &state, now_ms() + ttl_ms(ttl))
            .await
            .map_err(UpdateError::Other)?;
        if !found {
            tracing::debug!("the session ended during this request; not re-creating it");
        }
        Ok(key)
    }

    /// Called for every request that leaves the session unchanged: the row is rewritten only when
    /// its expiry is a minute or more behind (the check is in the statement, so it holds across
    /// processes too).
    async fn update_ttl(&self, key: &SessionKey, ttl: &Duration) -> Result<(), anyhow::Error> {
        let new_expiry = now_ms() + ttl_ms(ttl);
        self.store.session_extend(&key_hash(key), new_expiry, new_expiry - EXTEND_EVERY_MS).await?;
        Ok(())
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), anyhow::Error> {
        self.store.session_delete(&key_hash(key)).await
    }
}

/// The session middleware: `HttpOnly`, `SameSite=Lax`, `Secure` when we are reached over https.
/// The cookie lasts as long as the browser; the row decides: it ends `ttl` after the last request
/// (give or take the minute by which extensions are batched).
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
            BrowserSession::default()
                .state_ttl(Duration::seconds(ttl.as_secs() as i64))
                .state_ttl_extension_policy(TtlExtensionPolicy::OnEveryRequest),
        )
        .build()
}
