//! `POST /api/v1/connect-sessions` and `POST /api/v1/connections/{id}/reconnect-session`: the
//! organisation's app asks for a single-use connect link for one of its end users.

use actix_web::{http::header, web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::{
    body::{parse_json, parse_json_or_default},
    invalid_value, iso, ApiCaller,
};
use crate::{
    domain::connect_session::{Issued, ReturnUrl, SessionRequest},
    error::{ApiError, AppError},
    state::AppState,
};

fn created(issued: &Issued) -> HttpResponse {
    HttpResponse::Created().insert_header((header::CACHE_CONTROL, "no-store")).json(json!({
        "id": issued.id,
        "connect_url": issued.connect_url,
        "expires_at": iso(Some(issued.expires_at)),
    }))
}

impl ApiCaller {
    /// Connect links create or change connections: not for read-only keys, and a new connection
    /// would fall outside a key limited to some connections.
    fn check_may_connect(&self, new_connection: bool) -> Result<(), ApiError> {
        if self.0.read_only {
            return Err(ApiError(AppError::Forbidden {
                code: "read_only_key",
                message: "this API key is read-only: it cannot issue connect links".into(),
            }));
        }
        if new_connection && self.0.connections.is_some() {
            return Err(ApiError(AppError::Forbidden {
                code: "scoped_key",
                message: "this API key is limited to some connections, so it cannot start new ones".into(),
            }));
        }
        Ok(())
    }
}

#[tracing::instrument(skip_all, fields(api_key = %caller.0.key_id))]
pub(super) async fn create(
    caller: ApiCaller,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.check_may_connect(true)?;
    let request: SessionRequest = parse_json(&body)?;
    let (end_user, return_url) = request.check(&state.settings.connect_return_origins).map_err(invalid_value)?;
    let issued = state
        .store
        .issue_connect_session(&state.settings.public_url, &end_user, return_url.as_ref(), None, &caller.actor())
        .await?;
    Ok(created(&issued))
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconnectRequest {
    return_url: Option<String>,
}

#[tracing::instrument(skip_all, fields(api_key = %caller.0.key_id, connection_id = %id))]
pub(super) async fn reconnect(
    caller: ApiCaller,
    id: web::Path<String>,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = caller.connection(&id)?;
    caller.check_may_connect(false)?;
    let request: ReconnectRequest = parse_json_or_default(&body)?;
    let return_url = request
        .return_url
        .map(|r| ReturnUrl::parse(&r, &state.settings.connect_return_origins))
        .transpose()
        .map_err(invalid_value)?;
    let connection = state.store.connection(&id).await?.ok_or_else(|| super::not_found(id.as_str()))?;
    if let Some(why) = connection.reconnect_refusal() {
        return Err(ApiError(AppError::conflict("cannot_reconnect", why)));
    }
    let end_user = connection.end_user();
    let issued = state
        .store
        .issue_connect_session(&state.settings.public_url, &end_user, return_url.as_ref(), Some(&id), &caller.actor())
        .await?;
    Ok(created(&issued))
}
