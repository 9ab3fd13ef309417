//! The client-credentials side of the token manager: a token is fetched only when the stored one
//! is missing or within its refresh margin, one request at a time per connection, with a backoff.

use std::time::Duration;

use super::{backoff, refresh_margin_ms, AccessToken, TokenError, TokenManager};
use crate::{
    client_credentials::{fetch_token, FetchError},
    domain::{ConnectionId, ConnectionStatus},
    store::{ExchangeFailure, StoredTokens},
    time::{after, now_ms},
};

impl TokenManager {
    /// Fetch a client-credentials token, with this process's slot lock held.
    pub(super) async fn fetch_locked(
        &self,
        id: &ConnectionId,
        force: bool,
        actor: &str,
    ) -> Result<AccessToken, TokenError> {
        let mut tokens = self.store.tokens(id).await?.ok_or_else(|| TokenError::NotFound(id.clone()))?;
        let mut force = force;
        loop {
            let now = now_ms();
            if tokens.status == ConnectionStatus::Disconnected {
                return Err(TokenError::Disconnected);
            }
            // Someone (another caller, another process) may have fetched while we waited.
            if let (false, Some(t)) = (force, fresh_credentials_token(id, &tokens, now)) {
                return Ok(t);
            }
            if let Some(until) = tokens.retry_after.filter(|t| *t > now) {
                // Backing off: a token that has not expired yet is still better than none.
                if let Some(t) = still_or_unexpired(id, &tokens, now) {
                    return Ok(t);
                }
                let last_error = self.store.connection(id).await?.and_then(|c| c.last_error).unwrap_or_default();
                return Err(TokenError::BackingOff {
                    retry_in: Duration::from_millis((until - now) as u64),
                    last_error,
                });
            }
            match self.lease_or_latest(id, &tokens).await? {
                None => break,
                // Another process got there first: judge what it stored as if we had just read it
                // (a forced refresh is satisfied by its new token too).
                Some(latest) => {
                    tokens = latest;
                    force = false;
                }
            }
        }
        let result = self.fetch_with_lease(id, &tokens, actor).await;
        if result.is_err() {
            let _ = self.store.release_exchange_lease(id, &self.owner).await;
        }
        result
    }

    async fn fetch_with_lease(
        &self,
        id: &ConnectionId,
        tokens: &StoredTokens,
        actor: &str,
    ) -> Result<AccessToken, TokenError> {
        let creds = self.store.credentials(id).await?.ok_or_else(|| TokenError::NotFound(id.clone()))?;
        let started = now_ms();
        let result = fetch_token(&self.http, &creds.settings, &creds.secret).await;
        self.metrics.fetches.inc(if result.is_ok() { "ok" } else { "failed" });
        match result {
            Ok(issued) => {
                let mut lifetime = issued.expires_in.map(Duration::from_secs).unwrap_or(self.default_lifetime);
                if let Some(max) = creds.settings.max_lifetime_secs() {
                    lifetime = lifetime.min(Duration::from_secs(max));
                }
                let expires_at = after(started, lifetime);
                let stored = self
                    .store
                    .store_issued_token(id, &self.owner, &issued.access_token, expires_at, now_ms(), actor)
                    .await?;
                let Some(version) = stored else {
                    tracing::warn!("the fetched token was not stored: the connection was disconnected, deleted or taken over meanwhile");
                    return Err(self.refused(id).await);
                };
                tracing::info!(version, lifetime_secs = lifetime.as_secs(), "fetched a new client-credentials token");
                Ok(AccessToken {
                    connection_id: id.clone(),
                    provider: creds.settings.provider,
                    token: issued.access_token,
                    version,
                    expires_at: Some(expires_at),
                })
            }
            Err(e) => {
                let hint = match &e {
                    FetchError::Transient { retry_after, .. } => *retry_after,
                    _ => None,
                };
                let failures = self.store.failure_count(id).await? + 1;
                let wait = backoff(failures, hint);
                let message = e.to_string();
                tracing::warn!(%message, failures, retry_in_secs = wait.as_secs(), "client-credentials token request failed");
                let failure = ExchangeFailure::Failing { message: message.clone(), retry_after: after(now_ms(), wait) };
                if !self.store.record_exchange_failure(id, &self.owner, &failure, now_ms(), actor).await? {
                    return Err(self.refused(id).await);
                }
                // The old token, if it has not expired yet, still works.
                if let Some(t) = still_or_unexpired(id, tokens, now_ms()) {
                    return Ok(t);
                }
                Err(TokenError::Provider(message))
            }
        }
    }
}

/// A stored client-credentials token that is still fresh (not within its refresh margin).
pub(super) fn fresh_credentials_token(id: &ConnectionId, tokens: &StoredTokens, now: i64) -> Option<AccessToken> {
    let (access, expires_at) = (tokens.access.clone()?, tokens.expires_at?);
    let lifetime = expires_at - tokens.obtained_at.unwrap_or(expires_at);
    if tokens.status == ConnectionStatus::Disconnected || now >= expires_at - refresh_margin_ms(lifetime) {
        return None;
    }
    Some(AccessToken {
        connection_id: id.clone(),
        provider: tokens.provider,
        token: access,
        version: tokens.version,
        expires_at: Some(expires_at),
    })
}

/// A stored client-credentials token that has not expired, even if it is within its margin.
fn still_or_unexpired(id: &ConnectionId, tokens: &StoredTokens, now: i64) -> Option<AccessToken> {
    let (access, expires_at) = (tokens.access.clone()?, tokens.expires_at?);
    (expires_at > now + 1_000).then(|| AccessToken {
        connection_id: id.clone(),
        provider: tokens.provider,
        token: access,
        version: tokens.version,
        expires_at: Some(expires_at),
    })
}
