//! A connect link (`/connect/s/{token}`: single use, 30 minutes): its page names the organisation
//! and whom the link is for and spends nothing; only its Continue button spends the link.

// Mail and chat scanners fetch every link they see: with the spending on a POST that carries a
// token only the page holds, a scanner's GET leaves the link for the person it was sent to.

use actix_web::{http::header, http::StatusCode, web, HttpRequest, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::result::link_problem_page;
use crate::{
    domain::OpaqueToken,
    error::AppError,
    state::AppState,
    store::{ConnectSession, SessionRejection},
    time::now_ms,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/connect/s/{token}", web::get().to(page)).route("/connect/s/{token}", web::post().to(spend));
}

#[derive(Template)]
#[template(path = "connect_link.html")]
struct LinkPage<'a> {
    heading: &'a str,
    reconnect: bool,
    who: Option<&'a str>,
    form_token: String,
    brand: &'a crate::brand::Brand,
}

#[derive(Deserialize)]
struct ContinueForm {
    form_token: String,
}

/// The Continue form's token: bound to this link, so a form posted from anywhere else is refused.
fn form_token(state: &AppState, token: &str) -> String {
    state.csrf.token(&format!("connect-link:{token}"))
}

/// The page a link, unknown, used or expired, gets instead.
fn refused(state: &AppState, rejection: SessionRejection) -> Result<HttpResponse, AppError> {
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
    link_problem_page(state, status, "This connect link cannot be used", reason)
}

#[tracing::instrument(skip_all)]
async fn page(token: web::Path<String>, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    if state.snapinspect.is_none() {
        return Err(super::not_configured());
    }
    let session: ConnectSession =
        match state.store.peek_connect_session(&OpaqueToken::hash_of(&token), now_ms()).await? {
            Ok(s) => s,
            Err(rejection) => return refused(&state, rejection),
        };
    let reconnect = session.connection_id.is_some();
    let who = session.end_user.display_name.as_deref().or(session.end_user.email.as_deref());
    let page = LinkPage {
        heading: if reconnect { "Reconnect SnapInspect" } else { "Connect SnapInspect" },
        reconnect,
        who,
        form_token: form_token(&state, &token),
        brand: &state.brand,
    };
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_SECURITY_POLICY, page_policy(&state)))
        .body(page.render().map_err(anyhow::Error::from)?))
}

/// The usual policy, but the Continue form may end at SnapInspect's authorize page: browsers
/// check `form-action` against where a form's answer redirects, not only where it posts.
fn page_policy(state: &AppState) -> String {
    let authorize = state.snapinspect.as_ref().map(|c| c.settings().authorize_url.origin().ascii_serialization());
    match authorize {
        Some(origin) => crate::routes::CSP.replace("form-action 'self'", &format!("form-action 'self' {origin}")),
        None => crate::routes::CSP.to_owned(),
    }
}

#[tracing::instrument(skip_all)]
async fn spend(
    req: HttpRequest,
    token: web::Path<String>,
    form: web::Form<ContinueForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    if state.snapinspect.is_none() {
        return Err(super::not_configured());
    }
    if !state.csrf.verify(&format!("connect-link:{token}"), &form.form_token) {
        return link_problem_page(
            &state,
            StatusCode::BAD_REQUEST,
            "This connect link cannot be used from here",
            "Open the link you were sent and press Continue on its page.",
        );
    }
    // Before the link is used up, so a person who is slowed down can still use it afterwards.
    super::check_connect_limit(&req, &state)?;
    let session = match state.store.open_connect_session(&OpaqueToken::hash_of(&token), now_ms()).await? {
        Ok(s) => s,
        Err(rejection) => return refused(&state, rejection),
    };
    tracing::info!(session_id = %session.id, reconnect = session.connection_id.is_some(), "connect link opened");
    super::flow::begin(&req, &state, Some(&session)).await
}
