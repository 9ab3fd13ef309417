//! Connections through the API: list them (optionally one end user's), get a valid access token
//! (refreshed only when needed, or forced), force a refresh, and give one to an end user.

use actix_web::{http::header, web, HttpResponse};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;

use std::collections::BTreeMap;

use super::{body::parse_json, invalid_value, iso, ApiCaller};
use crate::{
    domain::connect_session::EndUser,
    error::{ApiError, AppError},
    state::AppState,
    store::Connection,
    time::now_ms,
    tokens::AccessToken,
};

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/connections", web::get().to(list))
        .route("/connections/{id}/token", web::get().to(token))
        .route("/connections/{id}/refresh", web::post().to(refresh))
        .route("/connections/{id}/end-user", web::put().to(assign_end_user));
}

/// A connection as the API shows it (everything but its secrets). `api_url` is where the proxy
/// sends its requests (`SNAPINSPECT_API_URL` for SnapInspect), or null when it has none.
fn connection_json(c: &Connection, snapinspect_api: &url::Url) -> serde_json::Value {
    let api_url = crate::proxy::api_base(c.provider, c.api_url.as_deref(), c.domain.as_deref(), snapinspect_api)
        .map(String::from);
    json!({
        "id": c.id.as_str(),
        "provider": c.provider.as_str(),
        "name": c.name,
        "company_id": c.company_id.map(|c| c.get()),
        // The shown status (`domain::status`), as the console and the CLI show it.
        "status": c.shown_status().as_str(),
        "connected_at": iso(Some(c.connected_at)),
        "last_refresh_at": iso(c.last_exchange_at),
        "last_used_at": iso(c.last_used_at),
        "token_expires_at": iso(c.token_expires_at),
        "last_error": c.last_error,
        "end_user_id": c.end_user_id,
        "tags": c.tags,
        "api_url": api_url,
        "last_checked_at": iso(c.last_checked_at),
        "last_check": c.last_check,
        "last_check_error": c.last_check_error,
    })
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
        // A stored end user id never holds a control character (the session API refuses them),
        // and PostgreSQL cannot even compare one with a NUL: say so, rather than fail.
        Some(u) if u.chars().any(char::is_control) => {
            return Err(ApiError(AppError::bad_request(
                "end_user_id holds a control character; no end user id can, so none matches",
            )))
        }
        Some(u) => state.store.connections_for_end_user(u).await?,
        None => state.store.connections().await?,
    };
    let connections: Vec<serde_json::Value> = all
        .into_iter()
        .filter(|c| caller.0.may_use(&c.id))
        .map(|c| connection_json(&c, &state.settings.snapinspect.api_url))
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "connections": connections })))
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

/// The body of `PUT /api/v1/connections/{id}/end-user`.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndUserBody {
    end_user_id: Option<String>,
    end_user_email: Option<String>,
    display_name: Option<String>,
    tags: Option<BTreeMap<String, String>>,
}

/// Give a connection to an end user: only a key for every connection that may write, because it
/// decides whom a connection belongs to. Audited.
#[tracing::instrument(skip_all, fields(api_key = %caller.0.key_id, connection_id = %id))]
async fn assign_end_user(
    caller: ApiCaller,
    id: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = caller.connection(&id)?;
    if caller.0.read_only || caller.0.connections.is_some() {
        return Err(ApiError(AppError::Forbidden {
            code: "full_scope_required",
            message: "only an API key for every connection, not read-only, may give a connection to an end user".into(),
        }));
    }
    let body: EndUserBody = parse_json(&body)?;
    let user = EndUser::parse(body.end_user_id.unwrap_or_default(), body.end_user_email, body.display_name, body.tags)
        .map_err(invalid_value)?;
    if !state.store.assign_end_user(&id, &user, now_ms(), &caller.actor()).await? {
        return Err(super::not_found(id.as_str()));
    }
    let c = state.store.connection(&id).await?.ok_or_else(|| super::not_found(id.as_str()))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(connection_json(&c, &state.settings.snapinspect.api_url)))
}
