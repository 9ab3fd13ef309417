//! One error type for every handler. People get a page, machines get JSON (wrap in [`ApiError`]); both
//! say what went wrong and what to do.

// Unexpected errors are an opaque 500 whose whole cause chain goes to the log, never to the response.

use actix_web::{
    http::{header, StatusCode},
    HttpResponse, ResponseError,
};
use askama::Template;

/// An error a handler returns. Each variant's doc says its status code; `code` is the stable
/// machine-readable name the JSON form carries.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400: the request is malformed; the message says what to fix.
    #[error("{message}")]
    BadRequest { code: &'static str, title: &'static str, message: String },
    /// 400 `bad_json`: a machine's body is not JSON, or not the JSON this operation takes; the
    /// problem says where (field, line, column), in our words rather than the parser's.
    #[error("{}", .0.message)]
    BadJson(JsonProblem),
    /// 401: not signed in, or the credential is missing or wrong.
    #[error("{message}")]
    Unauthorized { code: &'static str, message: String },
    /// 403: signed in, but this is not allowed (e.g. a bad CSRF token).
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// 404: nothing here, and nothing more is revealed.
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// 409: the thing is not in a state that allows this.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// 413: the body is larger than this route accepts.
    #[error("{message}")]
    PayloadTooLarge { code: &'static str, message: String },
    /// 429: slow down; `retry_after_secs` says for how long.
    #[error("{message}")]
    TooManyRequests { code: &'static str, message: String, retry_after_secs: u64 },
    /// 502: a provider we called failed or refused; the message says which and how.
    #[error("{message}")]
    Upstream { code: &'static str, message: String },
    /// 504: a provider we called did not answer in time.
    #[error("{message}")]
    GatewayTimeout { code: &'static str, message: String },
    /// 503: we cannot do this right now (not configured, or the store is unavailable).
    #[error("{message}")]
    Unavailable { code: &'static str, message: String, retry_after_secs: Option<u64> },
    /// 500: a bug or an unexpected failure; details go to the log only.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

/// What is wrong with a JSON body, and where, when that is known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonProblem {
    pub message: String,
    /// The field, as a path (`tags.region`, `events[1]`).
    pub field: Option<String>,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

impl AppError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::BadRequest { code: "bad_request", title: "That request could not be used", message: message.into() }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound { code: "not_found", message: message.into() }
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::Unauthorized { code: "unauthorized", message: message.into() }
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden { code: "forbidden", message: message.into() }
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::Conflict { code, message: message.into() }
    }
    pub fn upstream(code: &'static str, message: impl Into<String>) -> Self {
        Self::Upstream { code, message: message.into() }
    }
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::Unavailable { code, message: message.into(), retry_after_secs: None }
    }

    /// The stable machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. }
            | Self::Unauthorized { code, .. }
            | Self::Forbidden { code, .. }
            | Self::NotFound { code, .. }
            | Self::Conflict { code, .. }
            | Self::TooManyRequests { code, .. }
            | Self::Upstream { code, .. }
            | Self::GatewayTimeout { code, .. }
            | Self::Unavailable { code, .. }
            | Self::PayloadTooLarge { code, .. } => code,
            Self::BadJson(_) => "bad_json",
            Self::Internal(_) => "internal",
        }
    }

    /// What the person or program is told: never the internals of a 500.
    pub fn public_message(&self) -> String {
        match self {
            Self::Internal(_) => {
                "Something went wrong on our side. It has been logged; please try again in a moment.".into()
            }
            other => other.to_string(),
        }
    }

    pub fn title(&self) -> &'static str {
        match self {
            Self::BadRequest { title, .. } => title,
            Self::BadJson(_) => "Bad JSON",
            Self::Unauthorized { .. } => "Please sign in",
            Self::Forbidden { .. } => "Not allowed",
            Self::NotFound { .. } => "Not found",
            Self::Conflict { .. } => "That cannot be done right now",
            Self::PayloadTooLarge { .. } => "Too large",
            Self::TooManyRequests { .. } => "Too many attempts",
            Self::Upstream { .. } => "The provider did not cooperate",
            Self::GatewayTimeout { .. } => "The provider did not answer in time",
            Self::Unavailable { .. } => "Not available",
            Self::Internal(_) => "Something went wrong",
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::TooManyRequests { retry_after_secs, .. } => Some(*retry_after_secs),
            Self::Unavailable { retry_after_secs, .. } => *retry_after_secs,
            _ => None,
        }
    }

    fn log_if_internal(&self) {
        if let Self::Internal(e) = self {
            tracing::error!(error.chain = %format!("{e:#}"), "request failed");
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(anyhow::Error::new(e).context("database error"))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } | Self::BadJson(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The page form, for people.
    fn error_response(&self) -> HttpResponse {
        self.log_if_internal();
        let status = self.status_code();
        // People read this page: no status numbers, no code-style backticks.
        let message = self.public_message().replace('`', "\"");
        let body = ErrorPage { title: self.title(), message: &message }.render().unwrap_or_else(|_| message.clone());
        let mut res = HttpResponse::build(status);
        res.insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
            .insert_header((header::CACHE_CONTROL, "no-store"));
        if let Some(secs) = self.retry_after() {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        res.body(body)
    }
}

/// The header on every JSON error the hub makes itself: its code.
pub const ERROR_HEADER: &str = "x-connect-hub-error";

/// The JSON form of [`AppError`], for machines: `{"error": code, "message": text}` (and, for
/// `bad_json`, `field`, `line` and `column` when known).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ApiError(#[from] pub AppError);

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self(AppError::Internal(e))
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self(e.into())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        self.0.log_if_internal();
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header((header::CACHE_CONTROL, "no-store"));
        if self.status_code() == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3: say which scheme is expected.
            res.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"connect-hub\""));
        }
        if let Some(secs) = self.0.retry_after() {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        // Says the hub answered (not a provider behind the proxy, whose answers never carry it).
        res.insert_header((ERROR_HEADER, self.0.code()));
        let mut body = serde_json::json!({ "error": self.0.code(), "message": self.0.public_message() });
        // The one shape, with where a JSON body went wrong when that is known.
        if let AppError::BadJson(p) = &self.0 {
            for (key, value) in [
                ("field", p.field.clone().map(serde_json::Value::from)),
                ("line", p.line.map(serde_json::Value::from)),
                ("column", p.column.map(serde_json::Value::from)),
            ] {
                if let Some(v) = value {
                    body[key] = v;
                }
            }
        }
        res.json(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_reveal_nothing() {
        let e = AppError::Internal(anyhow::anyhow!("token abc123 leaked"));
        assert!(!e.public_message().contains("abc123"));
        assert_eq!(e.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(ApiError(e).status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn json_errors_carry_a_stable_code() {
        let e = ApiError(AppError::conflict("needs_reconnect", "reconnect"));
        assert_eq!(e.0.code(), "needs_reconnect");
        assert_eq!(e.status_code(), StatusCode::CONFLICT);
        let res = e.error_response();
        assert_eq!(res.headers().get(ERROR_HEADER).unwrap(), "needs_reconnect", "the code is also a header");
        let timeout = ApiError(AppError::GatewayTimeout { code: "upstream_timeout", message: "slow".into() });
        assert_eq!(timeout.status_code(), StatusCode::GATEWAY_TIMEOUT);
        let page = AppError::GatewayTimeout { code: "upstream_timeout", message: "slow".into() };
        assert_eq!(page.title(), "The provider did not answer in time");
        assert_eq!(AppError::conflict("x", "y").title(), "That cannot be done right now");
    }
}
