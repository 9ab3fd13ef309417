//! `POST /webhooks/snapinspect/{secret}`: SnapInspect's webhook. A wrong secret is the same 404 as
//! any unknown page; the body must be a JSON object; the answer is 200 only once it is committed.

use actix_web::{http::header, web, HttpRequest, HttpResponse, ResponseError};
use futures_util::StreamExt;
use serde_json::json;

use crate::{
    error::{ApiError, AppError},
    snapinspect::webhook::{parse_payload, MAX_BODY},
    state::AppState,
    store::Inserted,
};

/// The secret is the rest of the path after this prefix. Matching the prefix and splitting the
/// path by hand keeps the router's regex engine off the hottest route.
const PREFIX: &str = "/webhooks/snapinspect";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::scope(PREFIX).default_service(web::to(intake)));
}

fn too_large() -> ApiError {
    ApiError(AppError::PayloadTooLarge {
        code: "payload_too_large",
        message: format!("the body is larger than {} KiB, the most a SnapInspect webhook can be", MAX_BODY / 1024),
    })
}

#[tracing::instrument(skip_all)]
async fn intake(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let secret = req.path().strip_prefix(PREFIX).and_then(|s| s.strip_prefix('/')).unwrap_or_default();
    if secret.is_empty() || secret.contains('/') || !state.webhook_secrets.matches(secret) {
        state.metrics.webhooks_rejected.inc("secret");
        return Ok(crate::routes::not_found().error_response());
    }
    if req.method() != actix_web::http::Method::POST {
        return Err(ApiError(AppError::BadRequest {
            code: "method_not_allowed",
            title: "Wrong method",
            message: "webhooks are delivered with POST".into(),
        }));
    }
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        state.metrics.webhooks_rejected.inc("too_large");
        return Err(too_large());
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(512).min(MAX_BODY));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError(AppError::bad_request(format!("the body could not be read: {e}"))))?;
        if body.len() + chunk.len() > MAX_BODY {
            state.metrics.webhooks_rejected.inc("too_large");
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    let parsed = parse_payload(&body).map_err(|e| {
        state.metrics.webhooks_rejected.inc("invalid");
        ApiError(AppError::BadRequest { code: "invalid_payload", title: "Invalid webhook", message: e.to_string() })
    })?;
    let company = parsed.company_id;
    match state.ingestor.submit(parsed).await {
        Ok(Inserted::Stored(id)) => {
            state.metrics.webhooks_received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(event_id = %id, company_id = ?company, "webhook stored");
            Ok(HttpResponse::Ok().json(json!({ "received": true, "id": id.as_str() })))
        }
        Ok(Inserted::Duplicate(id)) => {
            state.metrics.webhooks_duplicate.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(event_id = %id, company_id = ?company, "duplicate webhook: counted, not queued again");
            Ok(HttpResponse::Ok().json(json!({ "received": true, "id": id.as_str(), "duplicate": true })))
        }
        Err(e) => Err({
            state.metrics.webhooks_rejected.inc("unavailable");
            ApiError(AppError::Unavailable {
                code: "store_unavailable",
                message: format!("{e}; the event was not stored, please retry"),
                retry_after_secs: Some(5),
            })
        }),
    }
}
