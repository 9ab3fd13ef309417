//! The end user's side of SnapInspect Connect: the flow (landing page, start, callback), its result
//! pages, and connect links; here, the routes and what the three share (cookies, limits, pages).

mod flow;
mod result;
mod session;

use actix_web::{
    http::header::{self, HeaderValue},
    middleware::DefaultHeaders,
    web, HttpRequest, HttpResponse,
};

use crate::{error::AppError, snapinspect::connect::STATE_TTL_MS, state::AppState};

/// The flow's cookies are only sent to the connect flow's pages.
const FLOW_PATH: &str = "/connect/snapinspect";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(flow::index))
        .route("/connect/snapinspect", web::get().to(flow::start))
        .service(
            web::resource("/connect/snapinspect/callback")
                // The callback URL carries tokens: never let it leak through a Referer, never cache.
                .wrap(
                    DefaultHeaders::new()
                        .add((header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
                        .add((header::CACHE_CONTROL, HeaderValue::from_static("no-store"))),
                )
                .route(web::get().to(flow::callback)),
        )
        .configure(result::configure)
        .configure(session::configure);
}

fn html(body: String) -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(body)
}

pub(super) fn not_configured() -> AppError {
    AppError::unavailable(
        "not_configured",
        "SnapInspect Connect is not set up on this server yet: an operator has to set SNAPINSPECT_CLIENT_ID and SNAPINSPECT_CLIENT_SECRET.",
    )
}

pub(super) fn cookie_error(e: impl std::fmt::Display) -> AppError {
    AppError::Internal(anyhow::anyhow!("cookie: {e}"))
}

/// A connect flow's cookie: as long as a `state` lives.
pub(super) fn flow_cookie(state: &AppState, name: &str, value: &str) -> actix_web::cookie::Cookie<'static> {
    let max_age = actix_web::cookie::time::Duration::milliseconds(STATE_TTL_MS);
    state.cookies.seal(name, value, FLOW_PATH, max_age, state.settings.is_https())
}

/// The per-address limit on starting a connect (checked before a connect link is used up).
pub(super) fn check_connect_limit(req: &HttpRequest, state: &AppState) -> Result<(), AppError> {
    if let Err(wait) = state.limits.connect.check(&crate::routes::client_limit_key(req)) {
        state.metrics.rate_limited.inc("connect");
        return Err(crate::routes::too_many("rate_limited", "Too many connection attempts from your address", wait));
    }
    Ok(())
}
