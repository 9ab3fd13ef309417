//! `/api/v1` for the organisation's own applications, each call within its API key's scope: JSON
//! errors with a stable `error` code, and the answers its own OpenAPI document promises.

mod body;
mod caller;
mod connections;
mod contract;
mod endpoints;
mod proxy;
mod sessions;

use actix_web::web;
use serde_json::json;

use caller::ApiCaller;

use crate::{
    domain::ConnectionId,
    error::{ApiError, AppError},
    time::rfc3339,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
            .wrap(actix_web::middleware::from_fn(body::limit))
            // Strict: a parameter that breaks the document's schema is a 400, never a default.
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                let message = match e {
                    actix_web::error::QueryPayloadError::Deserialize(cause) => {
                        format!("the query string does not fit the API: {cause}")
                    }
                    other => other.to_string(),
                };
                ApiError(AppError::BadRequest { code: "bad_query", title: "Bad query", message }).into()
            }))
            .route("/openapi.json", web::get().to(contract::openapi))
            // First: the router tries routes in order, and the proxy's are the many requests.
            .configure(proxy::configure)
            .configure(connections::configure)
            .configure(endpoints::configure)
            // Connect sessions (issue 13): single-use connect links for the app's end users.
            .route("/connect-sessions", web::post().to(sessions::create))
            .route("/connections/{id}/reconnect-session", web::post().to(sessions::reconnect))
            .default_service(web::to(contract::fallback)),
    );
}

/// A time for JSON: RFC 3339, or null.
fn iso(ms: Option<i64>) -> serde_json::Value {
    ms.map_or(serde_json::Value::Null, |ms| json!(rfc3339(ms)))
}

/// The 404 for a connection id this key cannot see (unknown, or outside its scope).
fn not_found(raw: &str) -> ApiError {
    let shown: String = raw.chars().take(40).collect();
    ApiError(AppError::NotFound { code: "connection_not_found", message: format!("no connection with id {shown}") })
}

fn parse_id(raw: &str) -> Result<ConnectionId, ApiError> {
    ConnectionId::parse(raw).map_err(|_| not_found(raw))
}

/// A 400 for a value the JSON carried but this operation refuses, in the words given (the body
/// itself was the JSON asked for: that is [`body::parse_json`]'s `bad_json`).
fn invalid_value(message: impl Into<String>) -> ApiError {
    ApiError(AppError::BadRequest { code: "invalid_value", title: "Invalid value", message: message.into() })
}
