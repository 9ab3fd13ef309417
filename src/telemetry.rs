//! Logging: a `tracing` subscriber (pretty or JSON), and the access log, which gives every request
//! an id and logs its route pattern, never its query string or secret path segments.

use std::time::Instant;

use actix_web::{
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header::{HeaderName, HeaderValue},
    middleware::Next,
    Error,
};
use tracing::Instrument;
use tracing_subscriber::{fmt, EnvFilter};

use crate::{
    config::LogFormat,
    domain::{base32, unique_bytes},
    state::AppState,
};

/// Install the global subscriber, writing to stderr (stdout is for command output such as
/// `connections token`); a second call (tests) is a no-op.
pub fn init(rust_log: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(rust_log).unwrap_or_else(|_| EnvFilter::new("info"));
    let result = match format {
        LogFormat::Pretty => fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr).try_init(),
        LogFormat::Json => fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            // Every span around the event, outermost first: a line logged while handling a request
            // carries the request span's id, however deep the code that logged it.
            .with_current_span(false)
            .with_span_list(true)
            .flatten_event(true)
            .try_init(),
    };
    let _ = result;
}

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
        if status >= 500 {
            tracing::warn!(status, route = %loggable_route(&res, pattern.as_deref()), latency_ms, "request");
        } else if tracing::enabled!(tracing::Level::INFO) {
            tracing::info!(status, route = %loggable_route(&res, pattern.as_deref()), latency_ms, "request");
        }
    });
    Ok(res)
}
