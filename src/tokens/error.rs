//! The token manager's one error: why no token could be handed out, and the status each reason
//! is answered with (404, 409, 503 with `Retry-After`, 502, or an opaque 500).

use std::{sync::Arc, time::Duration};

use crate::{domain::ConnectionId, error::AppError};

/// Why no token could be handed out. Cloneable, so every caller that joined one exchange gets its
/// outcome.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error("no connection with id {0}")]
    NotFound(ConnectionId),
    #[error("the connection needs to be reconnected: {0}")]
    NeedsReconnect(String),
    #[error("the connection was disconnected; connect again to use it")]
    Disconnected,
    /// Our lease on the connection ran out or was taken while the exchange was in flight; the new
    /// pair was not stored and is not handed out.
    #[error("another exchange for this connection took over while this one was in flight; try again")]
    Superseded,
    /// Another process held the connection's exchange lease for its whole length without storing
    /// anything (a caller that reports its waits gives up then instead of taking it over).
    #[error("gave up after {} s: another process held this connection's exchange lease until its end without storing new tokens (it may have stopped mid-exchange); the lease has run out now, so try again", waited.as_secs())]
    LeaseHeld { waited: Duration },
    #[error("SnapInspect is not configured: set SNAPINSPECT_CLIENT_ID and SNAPINSPECT_CLIENT_SECRET")]
    NotConfigured,
    #[error("the last exchange failed ({last_error}); the next try is allowed in {} s", retry_in.as_secs().max(1))]
    BackingOff { retry_in: Duration, last_error: String },
    #[error("{0}")]
    Provider(String),
    #[error("internal error: {0}")]
    Internal(Arc<anyhow::Error>),
}

impl From<anyhow::Error> for TokenError {
    fn from(e: anyhow::Error) -> Self {
        Self::Internal(Arc::new(e))
    }
}

impl From<TokenError> for AppError {
    fn from(e: TokenError) -> Self {
        let message = e.to_string();
        match e {
            TokenError::NotFound(_) => AppError::NotFound { code: "connection_not_found", message },
            TokenError::NeedsReconnect(_) => AppError::conflict("needs_reconnect", message),
            TokenError::Disconnected => AppError::conflict("disconnected", message),
            TokenError::Superseded => AppError::conflict("exchange_superseded", message),
            TokenError::NotConfigured => AppError::unavailable("not_configured", message),
            TokenError::LeaseHeld { .. } => {
                AppError::Unavailable { code: "exchange_in_progress", message, retry_after_secs: Some(1) }
            }
            TokenError::BackingOff { retry_in, .. } => AppError::Unavailable {
                code: "backing_off",
                message,
                retry_after_secs: Some(retry_in.as_secs().max(1)),
            },
            TokenError::Provider(_) => AppError::upstream("provider_error", message),
            TokenError::Internal(e) => AppError::Internal(anyhow::anyhow!("{e:#}")),
        }
    }
}
