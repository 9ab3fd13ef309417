//! `/api/v1` for the organisation's own applications: list connections, get a valid access token
//! (refreshed only when needed, or forced), force a refresh; each within the key's scope.
//! `Authorization: Bearer <api key>`; JSON errors with a stable `error` code; OpenAPI document.

use std::{future::Future, pin::Pin};

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest, HttpResponse};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use crate::{
    api_keys::Caller,
    domain::ConnectionId,
    error::{ApiError, AppError},
    state::AppState,
    time::{now_ms, rfc3339},
    tokens::AccessToken,
};

mod sessions;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v1")
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
            .route("/openapi.json", web::get().to(openapi))
            .route("/connections", web::get().to(list))
            .route("/connections/{id}/token", web::get().to(token))
            .route("/connections/{id}/refresh", web::post().to(refresh))
            .configure(super::api_endpoints::configure)
            // Connect sessions (issue 13): single-use connect links for the app's end users.
            .route("/connect-sessions", web::post().to(sessions::create))
            .route("/connections/{id}/reconnect-session", web::post().to(sessions::reconnect))
            .default_service(web::to(super::api_contract::fallback)),
    );
}

/// The application calling, identified by its API key.
pub struct ApiCaller(Caller);

impl FromRequest for ApiCaller {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, key)| SecretString::from(key.trim().to_owned()));
        let state = req.app_data::<web::Data<AppState>>().expect("app state is registered").clone();
        let address = crate::routes::client_address(req);
        Box::pin(async move {
            let Some(key) = presented.filter(|k| !k.expose_secret().is_empty()) else {
                return Err(ApiError(AppError::Unauthorized {
                    code: "missing_api_key",
                    message: "send an API key as `Authorization: Bearer <key>` (create one with `connect-hub api-key create`)".into(),
                })
                .into());
            };
            match state.api_keys.verify(&key).await.map_err(|e| ApiError(AppError::Internal(e)))? {
                Some(caller) => match state.limits.api.check(&caller.key_id) {
                    Ok(()) => Ok(ApiCaller(caller)),
                    Err(wait) => {
                        state.metrics.rate_limited.inc("api");
                        Err(ApiError(crate::routes::too_many(
                            "rate_limited",
                            "This API key is over its rate limit",
                            wait,
                        ))
                        .into())
                    }
                },
                None => {
                    if let Err(wait) = state.limits.api_guessing.check(&address) {
                        state.metrics.rate_limited.inc("api_key_guessing");
                        return Err(ApiError(crate::routes::too_many(
                            "rate_limited",
                            "Too many requests with unknown API keys",
                            wait,
                        ))
                        .into());
                    }
                    Err(ApiError(AppError::Unauthorized {
                        code: "invalid_api_key",
                        message: "this API key is unknown or revoked".into(),
                    })
                    .into())
                }
            }
        })
    }
}

impl ApiCaller {
    pub(super) fn caller(&self) -> &Caller {
        &self.0
    }

    pub(super) fn actor(&self) -> String {
        format!("api:{}", self.0.name)
    }

    /// The connection, if this key may use it; one outside its scope is answered like an unknown
    /// one, so a limited key learns nothing about the others.
    fn connection(&self, raw: &str) -> Result<ConnectionId, ApiError> {
        let id = parse_id(raw)?;
        if !self.0.may_use(&id) {
            return Err(not_found(raw));
        }
        Ok(id)
    }

    fn check_may_refresh(&self) -> Result<(), ApiError> {
        if self.0.read_only {
            return Err(ApiError(AppError::Forbidden {
                code: "read_only_key",
                message: "this API key is read-only: it can get tokens but not force a refresh".into(),
            }));
        }
        Ok(())
    }
}

async fn openapi(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(super::api_contract::document(&state.settings.connect_return_origins))
}

fn iso(ms: Option<i64>) -> serde_json::Value {
    ms.map_or(serde_json::Value::Null, |ms| json!(rfc3339(ms)))
}

#[derive(Deserialize)]
struct ListQuery {
    end_user_id: Option<String>,
}

#[tracing::instrument(skip_all, fields(api_key = %caller.0.key_id))]
async fn list(
    caller: ApiCaller,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let all = match query.end_user_id.as_deref() {
        Some(u) => state.store.connections_for_end_user(u).await?,
        None => state.store.connections().await?,
    };
    let connections: Vec<serde_json::Value> = all
        .into_iter()
        .filter(|c| caller.0.may_use(&c.id))
        .map(|c| {
            json!({
                "id": c.id.as_str(),
                "provider": c.provider.as_str(),
                "name": c.name,
                "company_id": c.company_id.map(|c| c.get()),
                "status": c.status.as_str(),
                "connected_at": iso(Some(c.connected_at)),
                "last_refresh_at": iso(c.last_exchange_at),
                "last_used_at": iso(c.last_used_at),
                "token_expires_at": iso(c.token_expires_at),
                "last_error": c.last_error,
                "end_user_id": c.end_user_id,
                "tags": c.tags,
            })
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "connections": connections })))
}

fn not_found(raw: &str) -> ApiError {
    let shown: String = raw.chars().take(40).collect();
    ApiError(AppError::NotFound { code: "connection_not_found", message: format!("no connection with id {shown}") })
}

fn parse_id(raw: &str) -> Result<ConnectionId, ApiError> {
    ConnectionId::parse(raw).map_err(|_| not_found(raw))
}

fn token_response(t: &AccessToken) -> HttpResponse {
    let expires_in = t.expires_at.map(|e| ((e - now_ms()) / 1000).max(0));
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(json!({
            "connection_id": t.connection_id.as_str(),
            "provider": t.provider.as_str(),
            "access_token": t.token.expose_secret(),
            "token_type": "Bearer",
            "expires_at": iso(t.expires_at),
            "expires_in": expires_in,
        }))
}

#[derive(Deserialize)]
struct TokenQuery {
    /// Only `true` or `false`, as the document's boolean says; anything else is a 400.
    #[serde(default)]
    force_refresh: Option<bool>,
}

#[tracing::instrument(skip_all, fields(api_key = %caller.0.key_id, connection_id = %id))]
async fn token(
    caller: ApiCaller,
    id: web::Path<String>,
    query: web::Query<TokenQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = caller.connection(&id)?;
    let force = query.force_refresh.unwrap_or(false);
    let t = if force {
        caller.check_may_refresh()?;
        state.tokens.refresh_unless_fresh(&id, &caller.actor()).await
    } else {
        state.tokens.token(&id).await
    }
    .map_err(AppError::from)?;
    Ok(token_response(&t))
}

#[tracing::instrument(skip_all, fields(api_key = %caller.0.key_id, connection_id = %id))]
async fn refresh(
    caller: ApiCaller,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = caller.connection(&id)?;
    caller.check_may_refresh()?;
    // Within a few seconds of the last new token, that token is handed out instead of rotating
    // again (see `REFRESH_COOLDOWN_MS`).
    let t = state.tokens.refresh_unless_fresh(&id, &caller.actor()).await.map_err(AppError::from)?;
    Ok(token_response(&t))
}
