//! `/api/v1/connections/{id}/proxy/{path}`: the app's request, as it came, handed to the proxy
//! with the body streamed in, and the upstream's answer streamed back out.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use actix_web::{
    http::{header, Method, StatusCode},
    web, HttpRequest, HttpResponse,
};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::ApiCaller;
use crate::{
    error::{ApiError, AppError},
    proxy::{ProxyRequest, RequestBody, REPLAYABLE, RETRY_HEADER},
    state::AppState,
};

/// The methods the proxy passes on; a read-only key may use the first two.
const METHODS: [Method; 6] = [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/connections/{id}/proxy{tail:.*}", web::route().to(forward));
}

/// Whether a request path is the proxy's (its body may be larger than the API's 64 KiB).
pub(super) fn is_proxy_path(path: &str) -> bool {
    split(path).is_some()
}

/// `/api/v1/connections/{id}/proxy[/{path}]`, raw: the id and the path below the base (still
/// percent-encoded, without its leading `/`).
fn split(path: &str) -> Option<(&str, &str)> {
    let (id, rest) = path.strip_prefix("/api/v1/connections/")?.split_once('/')?;
    let tail = rest.strip_prefix("proxy")?;
    match tail {
        "" => Some((id, "")),
        t => t.strip_prefix('/').map(|p| (id, p)),
    }
}

#[tracing::instrument(skip_all, fields(api_key = %caller.0.key_id))]
async fn forward(
    caller: ApiCaller,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let Some((raw_id, path)) = split(req.uri().path()) else {
        return Err(ApiError(AppError::not_found("no such API route: see /api/v1/openapi.json")));
    };
    let id = caller.connection(raw_id)?;
    if !METHODS.contains(req.method()) {
        // As for every path the API's document lists: 405 with `Allow`.
        return Ok(HttpResponse::MethodNotAllowed()
            .insert_header((header::ALLOW, "GET, HEAD, POST, PUT, PATCH, DELETE"))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((crate::error::ERROR_HEADER, "method_not_allowed"))
            .json(serde_json::json!({
                "error": "method_not_allowed",
                "message": format!("the proxy passes on GET, HEAD, POST, PUT, PATCH and DELETE, not {}", req.method()),
            })));
    }
    if caller.0.read_only && !matches!(*req.method(), Method::GET | Method::HEAD) {
        return Err(ApiError(AppError::Forbidden {
            code: "read_only_key",
            message: "this API key is read-only: it may proxy GET and HEAD requests only".into(),
        }));
    }
    let max = state.proxy.max_body();
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(ApiError(too_large(max)));
    }
    let body = read_body(payload, declared, max).await?;
    let request = ProxyRequest {
        connection: id,
        method: reqwest::Method::from_bytes(req.method().as_str().as_bytes()).expect("one of the six"),
        path: path.to_owned(),
        query: req.uri().query().map(str::to_owned),
        headers: to_reqwest(req.headers()),
        body,
        actor: caller.actor(),
    };
    let answer = state.proxy.forward(request).await.map_err(|e| ApiError(e.into()))?;
    let mut res = HttpResponse::build(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY));
    for (name, value) in &answer.headers {
        if name == reqwest::header::CONTENT_LENGTH {
            continue;
        }
        if let Ok(v) = header::HeaderValue::from_bytes(value.as_bytes()) {
            res.append_header((name.as_str(), v));
        }
    }
    if let Some(retry) = answer.retry {
        res.insert_header((RETRY_HEADER, retry));
    }
    if let Some(n) = answer.length {
        res.no_chunking(n);
    }
    Ok(res.streaming(answer.body))
}

fn too_large(max: u64) -> AppError {
    AppError::PayloadTooLarge {
        code: "body_too_large",
        message: format!("the body is larger than {max} bytes, the most the proxy passes on (PROXY_MAX_BODY)"),
    }
}

fn to_reqwest(headers: &header::HeaderMap) -> reqwest::header::HeaderMap {
    let mut out = reqwest::header::HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(name.as_str().as_bytes()),
            reqwest::header::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            out.append(n, v);
        }
    }
    out
}

/// The body, held whole when it ends within [`REPLAYABLE`] bytes; otherwise what was read so far
/// and the rest are pumped through a small channel as they arrive (the payload cannot leave this
/// thread), cut with an error past `max`.
async fn read_body(mut payload: web::Payload, declared: Option<u64>, max: u64) -> Result<RequestBody, ApiError> {
    let mut held = BytesMut::new();
    while held.len() <= REPLAYABLE {
        match payload.next().await {
            None => return Ok(RequestBody::Held(held.freeze())),
            Some(Ok(chunk)) => {
                if held.len() as u64 + chunk.len() as u64 > max {
                    return Err(ApiError(too_large(max)));
                }
                held.extend_from_slice(&chunk);
            }
            Some(Err(e)) => return Err(ApiError(AppError::bad_request(format!("the request body broke off: {e}")))),
        }
    }
    let (tx, chunks) = mpsc::channel::<std::io::Result<Bytes>>(8);
    let overflowed = Arc::new(AtomicBool::new(false));
    let flag = overflowed.clone();
    let mut sent = held.len() as u64;
    actix_web::rt::spawn(async move {
        if tx.send(Ok(held.freeze())).await.is_err() {
            return;
        }
        while let Some(item) = payload.next().await {
            let item = match item {
                Ok(chunk) => {
                    sent += chunk.len() as u64;
                    if sent > max {
                        flag.store(true, Ordering::Release);
                        Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "over PROXY_MAX_BODY"))
                    } else {
                        Ok(chunk)
                    }
                }
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                return;
            }
        }
    });
    Ok(RequestBody::Streamed { chunks, length: declared, overflowed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_path_is_split_raw() {
        assert_eq!(split("/api/v1/connections/con_1/proxy"), Some(("con_1", "")));
        assert_eq!(split("/api/v1/connections/con_1/proxy/"), Some(("con_1", "")));
        assert_eq!(split("/api/v1/connections/con_1/proxy/user"), Some(("con_1", "user")));
        assert_eq!(split("/api/v1/connections/con_1/proxy/a%2F..%2Fb"), Some(("con_1", "a%2F..%2Fb")));
        assert_eq!(split("/api/v1/connections/con_1/proxy//x"), Some(("con_1", "/x")), "left for the path check");
        assert_eq!(split("/api/v1/connections/con_1/proxyfoo"), None);
        assert_eq!(split("/api/v1/connections/con_1/token"), None);
        assert_eq!(split("/api/v1/connections"), None);
        assert!(is_proxy_path("/api/v1/connections/con_1/proxy/x"));
        assert!(!is_proxy_path("/api/v1/endpoints"));
    }
}
