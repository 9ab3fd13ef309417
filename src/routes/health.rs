//! Liveness, readiness and metrics: `/healthz` answers while the process runs, `/readyz` only when
//! the database answers and every migration is applied, `/metrics` in the Prometheus text format.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
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
    let queue = state.store.event_counts().await;
    let connections = state.store.connection_counts().await;
    let deliveries = state.store.delivery_counts().await;
    let oldest = state.store.oldest_due_delivery(now).await;
    match (queue, connections, deliveries, oldest) {
        (Ok(q), Ok(c), Ok(d), Ok(o)) => {
            let age = o.map_or(0.0, |due| (now - due).max(0) as f64 / 1000.0);
            let mut body = state.metrics.render(&q, &c);
            body.push_str(&state.metrics.render_deliveries(&d, age));
            state.proxy.stats.render(&mut body);
            HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(body)
        }
        (Err(e), ..) | (_, Err(e), ..) | (.., Err(e), _) | (.., Err(e)) => {
            tracing::warn!(error.chain = %format!("{e:#}"), "metrics: the store did not answer");
            HttpResponse::ServiceUnavailable().body("the database does not answer\n")
        }
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; charset=utf-8").body("ok\n")
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.store.ready().await {
        Ok(true) => HttpResponse::Ok().json(json!({ "status": "ready" })),
        Ok(false) => HttpResponse::ServiceUnavailable()
            .json(json!({ "status": "not_ready", "reason": "migrations are not applied: run `connect-hub migrate`" })),
        Err(e) => {
            tracing::warn!(error.chain = %format!("{e:#}"), "readiness check failed");
            HttpResponse::ServiceUnavailable()
                .json(json!({ "status": "not_ready", "reason": "the database does not answer" }))
        }
    }
}
