//! SnapInspect's side of the token manager: exchanging a refresh token (six form fields, both tokens rotate),
//! committing the new pair before anyone sees it, and what a refusal or an outage does to the connection.

use std::{sync::Arc, time::Duration};

use super::{backoff, AccessToken, TokenError, TokenManager};
use crate::{
    domain::{ConnectionId, ConnectionStatus, Provider},
    snapinspect::{ExchangeError, ExchangedTokens, SnapInspectClient},
    store::{ExchangeFailure, StoredTokens},
    time::{after, now_ms},
};

impl TokenManager {
    /// The exchange itself, with this process's slot lock held.
    pub(super) async fn exchange_locked(
        &self,
        id: &ConnectionId,
        stale_version: Option<i64>,
        actor: &str,
    ) -> Result<AccessToken, TokenError> {
        let client = self.snapinspect.as_ref().ok_or(TokenError::NotConfigured)?;
        let mut tokens = self.store.tokens(id).await?.ok_or_else(|| TokenError::NotFound(id.clone()))?;
        if tokens.provider != Provider::SnapInspect {
            return Err(TokenError::Provider(format!(
                "{} connections are not exchanged with SnapInspect",
                tokens.provider.label()
            )));
        }
        check_status(&tokens)?;
        if let Some(v) = stale_version {
            if tokens.version > v {
                return usable(id, &tokens);
            }
        }

        // Across processes: take the lease, or wait for the holder and use what it stored.
        if let Some(latest) = self.lease_or_latest(id, &tokens).await? {
            check_status(&latest)?;
            return usable(id, &latest);
        }
        // We hold the lease: from here every path releases it (commit and failure do so themselves).
        let result = self.exchange_with_lease(client, id, &mut tokens, actor).await;
        if result.is_err() {
            let _ = self.store.release_exchange_lease(id, &self.owner).await;
        }
        result
    }

    async fn exchange_with_lease(
        &self,
        client: &SnapInspectClient,
        id: &ConnectionId,
        tokens: &mut StoredTokens,
        actor: &str,
    ) -> Result<AccessToken, TokenError> {
        let latest = self.store.tokens(id).await?.ok_or_else(|| TokenError::NotFound(id.clone()))?;
        if latest.version != tokens.version {
            // Another process exchanged between our read and our lease.
            self.store.release_exchange_lease(id, &self.owner).await?;
            check_status(&latest)?;
            return usable(id, &latest);
        }
        *tokens = latest;

        // A pair SnapInspect already issued but we failed to store: store it instead of exchanging
        // again (the old refresh token is already dead at SnapInspect), unless the stored pair
        // changed since (then that one is newer and ours is stale).
        let pending = self.unsaved.lock().expect("unsaved poisoned").remove(id);
        if let Some((base, pair)) = pending.filter(|(base, _)| *base == tokens.version) {
            return self.commit(id, base, pair, actor).await;
        }

        let now = now_ms();
        if let Some(until) = tokens.retry_after.filter(|t| *t > now) {
            let last_error = self.store.connection(id).await?.and_then(|c| c.last_error).unwrap_or_default();
            return Err(TokenError::BackingOff { retry_in: Duration::from_millis((until - now) as u64), last_error });
        }
        let refresh =
            tokens.refresh.clone().ok_or_else(|| TokenError::NeedsReconnect("no refresh token is stored".into()))?;

        let result = client.exchange(&refresh).await;
        self.metrics.exchanges.inc(match &result {
            Ok(_) => "ok",
            Err(ExchangeError::Rejected { .. }) => "refused",
            Err(_) => "failed",
        });
        match result {
            Ok(pair) => self.commit(id, tokens.version, pair, actor).await,
            Err(ExchangeError::Rejected { status, detail }) => {
                let message = refusal_message(actor, status, &detail);
                tracing::warn!(%message, "exchange refused: connection needs reconnecting");
                let failure = ExchangeFailure::Dead { message: message.clone() };
                if !self.store.record_exchange_failure(id, &self.owner, &failure, now_ms(), actor).await? {
                    return Err(self.refused(id).await);
                }
                Err(TokenError::NeedsReconnect(message))
            }
            Err(e) => {
                let (message, hint) = match &e {
                    ExchangeError::Transient { retry_after, .. } => (e.to_string(), *retry_after),
                    _ => (e.to_string(), None),
                };
                let failures = self.store.failure_count(id).await? + 1;
                let wait = backoff(failures, hint);
                tracing::warn!(%message, failures, retry_in_secs = wait.as_secs(), "exchange failed; tokens unchanged");
                let failure =
                    ExchangeFailure::Transient { message: message.clone(), retry_after: after(now_ms(), wait) };
                if !self.store.record_exchange_failure(id, &self.owner, &failure, now_ms(), actor).await? {
                    return Err(self.refused(id).await);
                }
                Err(TokenError::Provider(message))
            }
        }
    }

    /// Store a new pair (replacing version `base`) before anyone sees it, retrying a failing store
    /// a few times; if it still fails, keep the pair in memory so the next call stores it rather
    /// than losing it. A commit the store refuses (the connection was disconnected or deleted, or
    /// our lease is gone) hands nothing out.
    async fn commit(
        &self,
        id: &ConnectionId,
        base: i64,
        pair: ExchangedTokens,
        actor: &str,
    ) -> Result<AccessToken, TokenError> {
        let mut delay = Duration::from_millis(100);
        let mut last_err = None;
        for _ in 0..5 {
            match self
                .store
                .commit_exchange(id, &self.owner, &pair.access, pair.refresh.as_ref(), now_ms(), actor)
                .await
            {
                Ok(None) => {
                    tracing::warn!("the exchanged pair was not stored: the connection was disconnected, deleted or taken over meanwhile");
                    let refusal = self.refused(id).await;
                    if matches!(refusal, TokenError::Superseded) {
                        // Only our lease was lost: SnapInspect has already rotated, so keep the
                        // pair for the next exchange under a lease (stored then if nothing newer was).
                        self.unsaved.lock().expect("unsaved poisoned").insert(id.clone(), (base, pair));
                    }
                    return Err(refusal);
                }
                Ok(Some(version)) => {
                    tracing::info!(version, "exchanged and stored a new token pair");
                    return Ok(AccessToken {
                        connection_id: id.clone(),
                        provider: Provider::SnapInspect,
                        token: pair.access,
                        version,
                        expires_at: None,
                    });
                }
                Err(e) => {
                    tracing::error!(error.chain = %format!("{e:#}"), "storing the exchanged tokens failed; retrying");
                    last_err = Some(e);
                    tokio::time::sleep(delay).await;
                    delay *= 3;
                }
            }
        }
        self.unsaved.lock().expect("unsaved poisoned").insert(id.clone(), (base, pair));
        let e = last_err.expect("at least one attempt");
        Err(TokenError::Internal(Arc::new(
            e.context("the exchanged tokens could not be stored; they are kept in memory and stored on the next try"),
        )))
    }
}

/// The actor the periodic health check exchanges as: its refusals say the check found them.
pub const CHECK_ACTOR: &str = "connection check";

/// Why the connection needs reconnecting, as `last_error` and `connection.needs_reconnect`'s
/// `reason` say it: a refusal the periodic check ran into says so.
fn refusal_message(actor: &str, status: u16, detail: &str) -> String {
    let refused = format!("SnapInspect refused the refresh token (HTTP {status}: {detail})");
    if actor == CHECK_ACTOR {
        format!("the periodic connection check found its access revoked: {refused}")
    } else {
        refused
    }
}

pub(super) fn check_status(tokens: &StoredTokens) -> Result<(), TokenError> {
    match tokens.status {
        ConnectionStatus::NeedsReconnect => Err(TokenError::NeedsReconnect(
            "SnapInspect refused the last refresh token; an end user has to connect again".into(),
        )),
        ConnectionStatus::Disconnected => Err(TokenError::Disconnected),
        _ => Ok(()),
    }
}

pub(super) fn usable(id: &ConnectionId, tokens: &StoredTokens) -> Result<AccessToken, TokenError> {
    check_status(tokens)?;
    let token = tokens.access.clone().ok_or_else(|| TokenError::NeedsReconnect("no access token is stored".into()))?;
    Ok(AccessToken {
        connection_id: id.clone(),
        provider: tokens.provider,
        token,
        version: tokens.version,
        expires_at: tokens.expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(status: ConnectionStatus) -> StoredTokens {
        StoredTokens {
            provider: Provider::SnapInspect,
            status,
            access: Some("at".to_owned().into()),
            refresh: Some("rt".to_owned().into()),
            version: 3,
            retry_after: None,
            expires_at: None,
            obtained_at: None,
            callback_pending: false,
            last_exchange_at: None,
        }
    }

    #[test]
    fn a_refusal_the_check_found_says_so() {
        let by_check = refusal_message(CHECK_ACTOR, 400, "invalid_grant");
        assert_eq!(
            by_check,
            "the periodic connection check found its access revoked: SnapInspect refused the refresh token (HTTP 400: invalid_grant)"
        );
        assert_eq!(
            refusal_message("cli", 400, "invalid_grant"),
            "SnapInspect refused the refresh token (HTTP 400: invalid_grant)"
        );
    }

    #[test]
    fn a_disconnected_connection_says_so_rather_than_handing_out_a_token() {
        assert!(matches!(check_status(&stored(ConnectionStatus::Disconnected)), Err(TokenError::Disconnected)));
        let id = ConnectionId::generate();
        assert!(matches!(usable(&id, &stored(ConnectionStatus::Disconnected)), Err(TokenError::Disconnected)));
    }

    #[test]
    fn an_active_or_unidentified_connection_hands_out_its_token() {
        let id = ConnectionId::generate();
        for status in [ConnectionStatus::Active, ConnectionStatus::Unidentified, ConnectionStatus::Failing] {
            let t = usable(&id, &stored(status)).expect("usable");
            assert_eq!(t.version, 3);
        }
        assert!(matches!(check_status(&stored(ConnectionStatus::NeedsReconnect)), Err(TokenError::NeedsReconnect(_))));
    }
}
