//! Liveness, readiness and metrics: `/healthz` answers while the process runs, `/readyz` only when
//! the database answers (within a second) and every migration is applied, `/metrics` in Prometheus text.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::state::AppState;

/// How long `/readyz` waits for the database: a probe gets its 503 before it times out.
pub const READY_WITHIN: Duration = Duration::from_millis(800);
/// As `READY_WITHIN`, while the store is known not to answer.
const READY_WITHIN_WHILE_DOWN: Duration = Duration::from_millis(300);
/// How long `/metrics` waits for the queue's counts before it answers without them.
const COUNTS_WITHIN: Duration = Duration::from_millis(800);

pub fn configure(cfg: &mut web::ServiceConfig) {
    // HEAD answers like GET, without the body (actix-web drops a HEAD response's body).
    cfg.route("/healthz", web::get().to(healthz))
        .route("/healthz", web::head().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/readyz", web::head().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

/// Prometheus text. With `METRICS_TOKEN` set, only for `Authorization: Bearer <token>`.
async fn metrics(req: actix_web::HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Some(token) = &state.settings.metrics_token {
        let given =
            req.headers().get(actix_web::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
        let expected = format!("Bearer {}", secrecy::ExposeSecret::expose_secret(token));
        if !bool::from(subtle::ConstantTimeEq::ct_eq(given.as_bytes(), expected.as_bytes())) {
            return HttpResponse::Unauthorized()
                .insert_header((actix_web::http::header::WWW_AUTHENTICATE, "Bearer realm=\"metrics\""))
                .body("metrics need the METRICS_TOKEN\n");
        }
    }
    let now = crate::time::now_ms();
    let counts = async {
        let queue = state.store.event_counts().await?;
        let connections = state.store.connection_counts().await?;
        let deliveries = state.store.delivery_counts().await?;
        let oldest = state.store.oldest_due_delivery(now).await?;
        anyhow::Ok((queue, connections, deliveries, oldest))
    };
    let within = if state.store.health().is_up() { COUNTS_WITHIN } else { READY_WITHIN_WHILE_DOWN };
    let counts = match tokio::time::timeout(within, counts).await {
        Ok(Ok(c)) => {
            state.store.health().answered();
            Some(c)
        }
        Ok(Err(e)) => {
            tracing::debug!(error.chain = %format!("{e:#}"), "metrics: the store did not answer");
            state.store.health().failed("metrics");
            None
        }
        Err(_) => {
            state.store.health().failed("metrics");
            None
        }
    };
    // Without the database the counters held in memory still answer, with the store gauge at 0
    // (and the queue's gauges left out rather than shown as zeros).
    let mut body = match &counts {
        Some((q, c, d, o)) => {
            let age = o.map_or(0.0, |due| (now - due).max(0) as f64 / 1000.0);
            let mut body = state.metrics.render(q, c);
            body.push_str(&state.metrics.render_deliveries(d, age));
            body
        }
        None => state.metrics.render_memory(),
    };
    crate::metrics::render_store(&mut body, counts.is_some(), &state.store.health().errors());
    state.proxy.stats.render(&mut body);
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(body)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; charset=utf-8").body("ok\n")
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    // Known to be down: a shorter wait (a server back up answers in milliseconds).
    let within = if state.store.health().is_up() { READY_WITHIN } else { READY_WITHIN_WHILE_DOWN };
    match state.store.ready(within).await {
        Ok(true) => HttpResponse::Ok().json(json!({ "status": "ready" })),
        Ok(false) => HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "not_ready", "reason": "migrations are not applied: run `connect-hub migrate`" })),
        Err(e) => {
            // Debug: a probe asks every few seconds; the background loops log the outage once.
            tracing::debug!(error.chain = %format!("{e:#}"), "readiness check failed");
            HttpResponse::ServiceUnavailable()
                .json(json!({ "status": "not_ready", "reason": "the database does not answer" }))
        }
    }
}
