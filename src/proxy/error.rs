//! The proxy's one error: every answer the hub makes itself instead of passing the upstream's on,
//! each with a stable code (also sent as `x-connect-hub-error`) and the status it is answered with.

use crate::{error::AppError, tokens::TokenError};

use super::path::BadPath;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no connection with id {0}")]
    NotFound(String),
    #[error("the connection was disconnected; connect again to use it")]
    Disconnected,
    #[error("the connection needs to be reconnected: {0}")]
    NeedsReconnect(String),
    #[error("this connection has no API URL to send requests to; set one with `--api-url` or in the console")]
    NoApiUrl,
    #[error("bad path: {0}")]
    BadPath(#[from] BadPath),
    #[error("{0} requests are already in flight for this connection; try again in a moment")]
    TooManyInFlight(usize),
    #[error("the body is larger than {} bytes, the most the proxy passes on (PROXY_MAX_BODY)", .0)]
    BodyTooLarge(u64),
    #[error("the provider's API could not be reached: {0}")]
    Unreachable(String),
    #[error("the provider's API did not answer within {0} s")]
    Timeout(u64),
    /// No token could be had (backing off, not configured, a store failure).
    #[error(transparent)]
    Token(TokenError),
}

impl From<TokenError> for ProxyError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::NotFound(id) => Self::NotFound(id.to_string()),
            TokenError::NeedsReconnect(m) => Self::NeedsReconnect(m),
            TokenError::Disconnected => Self::Disconnected,
            other => Self::Token(other),
        }
    }
}

impl ProxyError {
    /// The status the caller gets.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound(_) => 404,
            Self::Disconnected | Self::NeedsReconnect(_) | Self::NoApiUrl => 409,
            Self::BadPath(_) => 400,
            Self::TooManyInFlight(_) => 429,
            Self::BodyTooLarge(_) => 413,
            Self::Unreachable(_) => 502,
            Self::Timeout(_) => 504,
            Self::Token(e) => actix_web::ResponseError::status_code(&AppError::from(e.clone())).as_u16(),
        }
    }
}

impl From<ProxyError> for AppError {
    fn from(e: ProxyError) -> Self {
        let message = e.to_string();
        match e {
            ProxyError::NotFound(_) => AppError::NotFound { code: "connection_not_found", message },
            ProxyError::Disconnected => AppError::conflict("disconnected", message),
            ProxyError::NeedsReconnect(_) => AppError::conflict("needs_reconnect", message),
            ProxyError::NoApiUrl => AppError::conflict("no_api_url", message),
            ProxyError::BadPath(_) => AppError::BadRequest { code: "bad_path", title: "Bad path", message },
            ProxyError::TooManyInFlight(_) => {
                AppError::TooManyRequests { code: "too_many_in_flight", message, retry_after_secs: 1 }
            }
            ProxyError::BodyTooLarge(_) => AppError::PayloadTooLarge { code: "body_too_large", message },
            ProxyError::Unreachable(_) => AppError::upstream("upstream_unreachable", message),
            ProxyError::Timeout(_) => AppError::GatewayTimeout { code: "upstream_timeout", message },
            ProxyError::Token(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_counted_is_the_status_answered() {
        let all: Vec<fn() -> ProxyError> = vec![
            || ProxyError::NotFound("con_x".into()),
            || ProxyError::Disconnected,
            || ProxyError::NeedsReconnect("gone".into()),
            || ProxyError::NoApiUrl,
            || ProxyError::BadPath(BadPath("..")),
            || ProxyError::TooManyInFlight(32),
            || ProxyError::BodyTooLarge(10),
            || ProxyError::Unreachable("down".into()),
            || ProxyError::Timeout(20),
            || ProxyError::Token(TokenError::NotConfigured),
            || ProxyError::Token(TokenError::Provider("refused".into())),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for make in all {
            let answered = actix_web::ResponseError::status_code(&AppError::from(make())).as_u16();
            assert_eq!(make().status(), answered, "{}", make());
            seen.insert(answered);
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), [400, 404, 409, 413, 429, 502, 503, 504]);
    }
}
