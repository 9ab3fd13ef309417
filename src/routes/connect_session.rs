//! A connect session's start (`GET /connect/s/{token}`: single use, 30 minutes), and the brand's
//! logo and colour for end-user pages.

use actix_web::{
    http::{header, StatusCode},
    web, HttpRequest, HttpResponse,
};

use super::connect_result::link_problem_page;
use crate::{error::AppError, state::AppState, store::SessionRejection, time::now_ms};

/// A logo holds no script and loads nothing: if a browser opens it directly, it still runs nothing.
const LOGO_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; sandbox";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/connect/s/{token}", web::get().to(open))
        .route("/brand/logo", web::get().to(logo))
        .route("/brand/style.css", web::get().to(style));
}

#[tracing::instrument(skip_all)]
async fn open(
    req: HttpRequest,
    token: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    if state.snapinspect.is_none() {
        return Err(super::connect::not_configured());
    }
    // Before the link is used up, so a person who is slowed down can still use it afterwards.
    super::connect::check_connect_limit(&req, &state)?;
    let opened = state.store.open_connect_session(&crate::domain::OpaqueToken::hash_of(&token), now_ms()).await?;
    let session = match opened {
        Ok(s) => s,
        Err(rejection) => {
            tracing::info!(?rejection, "connect link refused");
            let (status, reason) = match rejection {
                SessionRejection::Unknown => (
                    StatusCode::NOT_FOUND,
                    "This connect link is not one we issued. Please go back to the app that sent you and start again there.",
                ),
                SessionRejection::AlreadyUsed => (
                    StatusCode::GONE,
                    "This connect link has already been used: each link works once. Please go back to the app that sent you for a new one.",
                ),
                SessionRejection::Expired => (
                    StatusCode::GONE,
                    "This connect link has expired: links work for 30 minutes. Please go back to the app that sent you for a new one.",
                ),
            };
            return link_problem_page(&state, status, "This connect link cannot be used", reason);
        }
    };
    tracing::info!(session_id = %session.id, reconnect = session.connection_id.is_some(), "connect link opened");
    super::connect::begin(&req, &state, Some(&session.id)).await
}

async fn logo(state: web::Data<AppState>) -> HttpResponse {
    match &state.brand.logo {
        Some(logo) => HttpResponse::Ok()
            .content_type(logo.content_type)
            .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
            .insert_header((header::CONTENT_SECURITY_POLICY, LOGO_CSP))
            .body(logo.bytes.clone()),
        None => HttpResponse::NotFound().finish(),
    }
}

/// The brand colour as a stylesheet, because the CSP allows only our own stylesheets
/// (`style-src 'self'`), not inline styles. The colour was checked to be `#rrggbb`.
async fn style(state: web::Data<AppState>) -> HttpResponse {
    let css = match &state.brand.color {
        Some(c) => format!(
            ":root {{ --brand: {c}; }}\n.button.primary {{ background: {c}; border-color: {c}; }}\n\
             header.site {{ border-bottom: 4px solid {c}; }}\n"
        ),
        None => String::new(),
    };
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(css)
}
