//! Liveness and readiness: `/healthz` answers while the process runs, `/readyz` only when the
//! database answers and every migration is applied.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::startup::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz)).route("/readyz", web::get().to(readyz));
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
