//! The access log: every request gets an id (in a span around it and in `x-request-id`), one log
//! line and its metrics, by route pattern, never its query string or secret path segments.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        LazyLock,
    },
    time::{Duration, Instant},
};

use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header::{HeaderName, HeaderValue},
    middleware::Next,
    Error,
};
use tracing::Instrument;

use crate::{
    domain::{base32, unique_bytes},
    limits::AtMostEvery,
    state::AppState,
};

/// Requests answered 503 since the last line that said so.
static UNAVAILABLE: AtomicU64 = AtomicU64::new(0);
static UNAVAILABLE_LINES: LazyLock<AtMostEvery> = LazyLock::new(|| AtMostEvery::new(Duration::from_secs(10)));

/// Where a request went, safe to log: the matched route pattern (`/webhooks/snapinspect/{secret}`),
/// or for unrouted requests only the first path segment.
fn loggable_route<B>(res: &ServiceResponse<B>, pattern: Option<&str>) -> String {
    if let Some(pattern) = pattern {
        return pattern.to_owned();
    }
    let path = res.request().path();
    match path.trim_start_matches('/').split_once('/') {
        Some((first, _)) => format!("/{}/…", first.chars().take(40).collect::<String>()),
        None => format!("/{}", path.trim_start_matches('/').chars().take(40).collect::<String>()),
    }
}

/// Access-log middleware: a request id in a span around the request (so every line logged while
/// handling it carries the id), an `x-request-id` response header, and one line per request.
pub async fn access_log(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let request_id = base32(&unique_bytes::<8>());
    let span = tracing::info_span!("request", request_id = %request_id, method = %req.method());
    let started = Instant::now();
    let metrics = req.app_data::<actix_web::web::Data<AppState>>().map(|s| s.metrics.clone());
    let mut res = next.call(req).instrument(span.clone()).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let latency_ms = elapsed * 1000.0;
    let status = res.status().as_u16();
    let pattern = res.request().match_pattern();
    if let Some(m) = metrics {
        // Only route patterns are labels: a raw path would let anyone grow the metrics without bound.
        m.observe_request(pattern.as_deref().unwrap_or("unmatched"), status, elapsed);
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(HeaderName::from_static("x-request-id"), v);
    }
    span.in_scope(|| {
        if status == 503 {
            // A deliberate answer (the store is away, a cap was reached): one line every ten
            // seconds with the count, not one per request (the outage itself is logged where it
            // is met). Every one is counted in the metrics.
            let unlogged = UNAVAILABLE.fetch_add(1, Ordering::Relaxed) + 1;
            if UNAVAILABLE_LINES.due("503", crate::time::now_ms()) {
                UNAVAILABLE.fetch_sub(unlogged, Ordering::Relaxed);
                tracing::warn!(status, route = %loggable_route(&res, pattern.as_deref()), latency_ms, answered_503_since_last_line = unlogged, "request");
            } else {
                tracing::info!(status, route = %loggable_route(&res, pattern.as_deref()), latency_ms, "request");
            }
        } else if status >= 500 {
            tracing::warn!(status, route = %loggable_route(&res, pattern.as_deref()), latency_ms, "request");
        } else if tracing::enabled!(tracing::Level::INFO) {
            tracing::info!(status, route = %loggable_route(&res, pattern.as_deref()), latency_ms, "request");
        }
    });
    Ok(res)
}
