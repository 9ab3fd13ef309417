//! One check of one connection: SnapInspect's `GET user` with the current token (a 401 leads to
//! one exchange and the call again), or a client-credentials token fetch.

use super::{CheckOutcome, Checker};
use crate::{
    domain::{ConnectionId, ConnectionStatus, Provider},
    snapinspect::ApiCallError,
    time::now_ms,
    tokens::CHECK_ACTOR,
};

impl Checker {
    /// Try the connection; `force`: a client-credentials connection fetches even if it did lately.
    pub(super) async fn probe(&self, id: &ConnectionId, provider: Provider, force: bool) -> CheckOutcome {
        match provider {
            Provider::SnapInspect => self.probe_snapinspect(id).await,
            _ => self.probe_credentials(id, force).await,
        }
    }

    async fn probe_snapinspect(&self, id: &ConnectionId) -> CheckOutcome {
        let Some(client) = &self.snapinspect else {
            return CheckOutcome::failed(
                "SnapInspect is not configured (SNAPINSPECT_CLIENT_ID, SNAPINSPECT_CLIENT_SECRET)",
            );
        };
        let token = match self.tokens.token(id).await {
            Ok(t) => t,
            Err(e) => return CheckOutcome::from_token_error(&e),
        };
        match client.user(&token.token).await {
            Ok(_) => CheckOutcome::ok(),
            Err(ApiCallError::Unauthorized) => {
                // Exchange only if that token is still the current one (or join the exchange in
                // flight, or take the pair someone just made); a refusal makes it needs_reconnect.
                let fresh = match self.tokens.refresh_if_still(id, token.version, CHECK_ACTOR).await {
                    Ok(t) => t,
                    Err(e) => return CheckOutcome::from_token_error(&e),
                };
                match client.user(&fresh.token).await {
                    Ok(_) => CheckOutcome::ok(),
                    Err(ApiCallError::Unauthorized) => {
                        CheckOutcome::failed("SnapInspect refused the access token again, right after an exchange")
                    }
                    Err(e) => CheckOutcome::failed(e.to_string()),
                }
            }
            Err(e) => CheckOutcome::failed(e.to_string()),
        }
    }

    /// Client credentials: a token fetched within the interval by an active connection is the
    /// check; otherwise (or when `force`d, or failing) a new one is fetched now. It passes only if a
    /// new token was stored: the manager may hand out an unexpired old one after a failed fetch.
    async fn probe_credentials(&self, id: &ConnectionId, force: bool) -> CheckOutcome {
        let c = match self.store.connection(id).await {
            Ok(Some(c)) => c,
            Ok(None) => return CheckOutcome::failed(format!("no connection with id {id}")),
            Err(e) => return CheckOutcome::failed(format!("reading the connection failed: {e}")),
        };
        let recent = c.token_obtained_at.is_some_and(|at| now_ms() - at < self.interval_ms());
        if !force && c.status == ConnectionStatus::Active && c.has_tokens && recent {
            return CheckOutcome::ok();
        }
        match self.tokens.refresh(id, CHECK_ACTOR).await {
            Ok(t) if t.version > c.token_version => CheckOutcome::ok(),
            Ok(_) => {
                let why = self.store.connection(id).await.ok().flatten().and_then(|c| c.last_error);
                CheckOutcome::failed(why.unwrap_or_else(|| "no new token could be fetched".into()))
            }
            Err(e) => CheckOutcome::from_token_error(&e),
        }
    }
}
