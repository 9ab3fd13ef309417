//! The API's one answer to a body over the limit: a JSON 413 `body_too_large`, whether the length
//! was declared or found while an extractor read the body, on every route of the group but the proxy.

use actix_web::{
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    error::{JsonPayloadError, PayloadError},
    http::header,
    middleware::Next,
    web, Error, ResponseError,
};

use crate::{
    error::{ApiError, AppError},
    routes::BODY_LIMIT,
};

pub(super) fn too_large() -> ApiError {
    ApiError(AppError::PayloadTooLarge {
        code: "body_too_large",
        message: format!("the body is larger than {} KiB, the most any API request may send", BODY_LIMIT / 1024),
    })
}

/// JSON bodies: past the limit the same 413, anything else a 400 `bad_json` with serde's words.
pub(super) fn json_config() -> web::JsonConfig {
    web::JsonConfig::default().limit(BODY_LIMIT).error_handler(|e, _| match e {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => too_large().into(),
        e => ApiError(AppError::BadRequest { code: "bad_json", title: "Bad JSON", message: e.to_string() }).into(),
    })
}

/// Middleware: a declared length over the limit is refused before the caller is even looked up,
/// on routes that read no body too; a body without a length that grows past it (actix's own
/// `PayloadError::Overflow`, a plain-text 413) gets the same JSON answer.
pub(super) async fn limit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    // The proxy has its own limit (PROXY_MAX_BODY) and streams the body instead of holding it.
    if super::proxy::is_proxy_path(req.path()) {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Ok(req.into_response(too_large().error_response()).map_into_right_body());
    }
    let res = next.call(req).await?;
    let overflowed = res.response().error().and_then(|e| e.as_error::<PayloadError>());
    if matches!(overflowed, Some(PayloadError::Overflow)) {
        return Ok(res.into_response(too_large().error_response()).map_into_right_body());
    }
    Ok(res.map_into_left_body())
}
