//! A provider API for the fakes to answer through the proxy: `echo/…` says what arrived (never the
//! token), `files/{mib}` streams a large download; both want a token the fake issued.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde_json::json;

/// Whose tokens the API accepts, and its request counter.
#[derive(Clone)]
pub struct ApiRoutes {
    valid: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    calls: Arc<AtomicU64>,
}

impl ApiRoutes {
    pub fn new(valid: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        Self { valid: Arc::new(valid), calls: Arc::default() }
    }

    /// Requests that reached the API routes, with a valid token or not.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Mount `echo/{tail}` (any method) and `files/{mib}` (GET, HEAD) under `prefix` ("" or "/api").
    pub fn mount(&self, cfg: &mut web::ServiceConfig, prefix: &str) {
        let me = web::Data::new(self.clone());
        cfg.service(
            web::scope(prefix)
                .app_data(me)
                .route("/echo{tail:.*}", web::route().to(echo))
                .route("/files/{mib}", web::get().to(download))
                .route("/files/{mib}", web::head().to(download)),
        );
    }

    fn authorised(&self, req: &HttpRequest) -> bool {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let values: Vec<&str> = req.headers().get_all(header::AUTHORIZATION).filter_map(|v| v.to_str().ok()).collect();
        matches!(values.as_slice(), [one] if one.strip_prefix("Bearer ").is_some_and(|t| (self.valid)(t)))
    }
}

fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized().json(json!({ "error": "invalid_token" }))
}

/// What arrived: method, raw path and query, the headers (the `Authorization` header is only
/// counted), and the body's length. `?status=503&retry_after=7` answers that instead.
async fn echo(req: HttpRequest, mut body: web::Payload, api: web::Data<ApiRoutes>) -> HttpResponse {
    if !api.authorised(&req) {
        return unauthorized();
    }
    let asked = |key: &str| {
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    };
    if let Some(status) = asked("status").and_then(|s| actix_web::http::StatusCode::from_bytes(s.as_bytes()).ok()) {
        let mut res = HttpResponse::build(status);
        if let Some(after) = asked("retry_after") {
            res.insert_header((header::RETRY_AFTER, after));
        }
        return res.json(json!({ "error": "scripted", "status": status.as_u16() }));
    }
    let mut length = 0u64;
    while let Some(Ok(chunk)) = body.next().await {
        length += chunk.len() as u64;
    }
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .filter(|(n, _)| *n != header::AUTHORIZATION)
        .map(|(n, v)| (n.as_str().to_owned(), json!(String::from_utf8_lossy(v.as_bytes()))))
        .collect();
    HttpResponse::Ok()
        .insert_header(("set-cookie", "upstream_session=1"))
        .insert_header(("x-connect-hub-error", "pretend"))
        .insert_header(("x-upstream", "echo"))
        .json(json!({
            "method": req.method().as_str(),
            "path": req.uri().path(),
            "query": req.uri().query(),
            "headers": headers,
            "authorizations": req.headers().get_all(header::AUTHORIZATION).count(),
            "body_bytes": length,
        }))
}

/// `mib` MiB of zeros, streamed 64 KiB at a time, with its length declared. `?stall_ms=N` waits
/// that long after the first chunk (a stream that goes idle).
async fn download(req: HttpRequest, mib: web::Path<u64>, api: web::Data<ApiRoutes>) -> HttpResponse {
    if !api.authorised(&req) {
        return unauthorized();
    }
    let stall = url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "stall_ms")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .map(std::time::Duration::from_millis);
    let mib = mib.into_inner().min(1024);
    let chunk = web::Bytes::from(vec![0u8; 64 * 1024]);
    let chunks = mib * 16;
    let stream = futures_util::stream::iter(0..chunks).then(move |i| {
        let chunk = chunk.clone();
        async move {
            if let (1, Some(d)) = (i, stall) {
                tokio::time::sleep(d).await;
            }
            Ok::<_, std::io::Error>(chunk)
        }
    });
    HttpResponse::Ok().content_type("application/octet-stream").no_chunking(mib << 20).streaming(stream)
}
