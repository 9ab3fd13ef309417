//! Where the callback sends the browser when there is no return URL: the clean result pages
//! (connected, or not and why), told what happened by a short-lived encrypted cookie.

use actix_web::{http::header, http::StatusCode, web, HttpRequest, HttpResponse};
use askama::Template;

use super::{cookie_error, flow_cookie};
use crate::{
    domain::{ConnectionId, ConnectionStatus},
    error::AppError,
    snapinspect::connect::CallbackError,
    state::AppState,
    store::StateRejection,
};

/// Encrypted cookie with the connection the last successful callback linked.
const LINKED: &str = "connect_hub_linked";
/// Encrypted cookie with the code of the last callback's failure.
const OUTCOME: &str = "connect_hub_outcome";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/connect/snapinspect/done", web::get().to(done))
        .route("/connect/snapinspect/result", web::get().to(result));
}

/// Why a callback did not connect anything.
#[derive(Debug)]
pub enum Problem {
    /// The person (or SnapInspect) said no; the code is one of [`denial_code`]'s.
    Denied(&'static str),
    /// A denial whose `state` we cannot vouch for: nothing it carried is shown.
    UnverifiedDenial,
    /// The callback's query was malformed; the code is one of [`bad_callback_code`]'s.
    BadCallback(&'static str),
    State(StateRejection),
    UserUnavailable,
    TokenRefused,
    CompanyMismatch,
    CompanyAlreadyConnected,
    ConnectionGone,
    NotConfigured,
    Internal(anyhow::Error),
}

/// The OAuth error codes (RFC 6749 §4.1.2.1) we have our own words for; anything else is `other`.
pub fn denial_code(error: &str) -> &'static str {
    match error {
        "access_denied" => "access_denied",
        "server_error" | "temporarily_unavailable" => "temporarily_unavailable",
        "invalid_request"
        | "unauthorized_client"
        | "unsupported_response_type"
        | "invalid_scope"
        | "invalid_client" => "setup",
        _ => "other",
    }
}

/// A stable code for what was wrong with the callback's query.
pub fn bad_callback_code(e: &CallbackError) -> &'static str {
    match e {
        CallbackError::MissingState => "missing_state",
        CallbackError::MissingAccessToken => "missing_access_token",
        CallbackError::MissingRefreshToken => "missing_refresh_token",
        CallbackError::MissingTokenType => "missing_token_type",
        CallbackError::WrongTokenType(_) => "wrong_token_type",
        CallbackError::Repeated(_) => "repeated",
        CallbackError::TooLong => "too_long",
    }
}

impl Problem {
    fn code(&self) -> String {
        match self {
            Problem::Denied(c) => format!("denied:{c}"),
            Problem::UnverifiedDenial => "unverified_denial".into(),
            Problem::BadCallback(c) => format!("bad_callback:{c}"),
            Problem::State(StateRejection::Unknown) => "state_unknown".into(),
            Problem::State(StateRejection::Expired) => "state_expired".into(),
            Problem::State(StateRejection::AlreadyUsed) => "state_used".into(),
            Problem::State(StateRejection::OtherBrowser) => "state_other_browser".into(),
            Problem::UserUnavailable => "user_unavailable".into(),
            Problem::TokenRefused => "token_refused".into(),
            Problem::CompanyMismatch => "company_mismatch".into(),
            Problem::CompanyAlreadyConnected => "company_already_connected".into(),
            Problem::ConnectionGone => "connection_gone".into(),
            Problem::NotConfigured => "not_configured".into(),
            Problem::Internal(_) => "internal".into(),
        }
    }
}

const START_AGAIN: &str = "SnapInspect did not connect your account. Please start again.";

/// The page for a failure code: status, heading and our own words.
fn page_for(code: &str) -> (StatusCode, &'static str) {
    match code {
        "denied:access_denied" => (StatusCode::OK, "You chose not to allow access, so nothing was connected."),
        "denied:temporarily_unavailable" => (
            StatusCode::OK,
            "SnapInspect had a temporary problem, so nothing was connected. Please try again in a few minutes.",
        ),
        "denied:setup" => (
            StatusCode::OK,
            "SnapInspect refused to start the connection because of a setup problem on our side, so nothing was connected. Please let the people who sent you here know.",
        ),
        "denied:other" | "unverified_denial" => (StatusCode::OK, START_AGAIN),
        "bad_callback:missing_state" => (
            StatusCode::BAD_REQUEST,
            "The link back from SnapInspect is incomplete: it has no state. Please start again.",
        ),
        "bad_callback:missing_access_token" => {
            (StatusCode::BAD_REQUEST, "SnapInspect sent no access token, so nothing was connected. Please start again.")
        }
        "bad_callback:missing_refresh_token" => {
            (StatusCode::BAD_REQUEST, "SnapInspect sent no refresh token, so nothing was connected. Please start again.")
        }
        "bad_callback:missing_token_type" => (
            StatusCode::BAD_REQUEST,
            "SnapInspect sent no token type; only Bearer tokens are accepted. Please start again.",
        ),
        "bad_callback:wrong_token_type" => (
            StatusCode::BAD_REQUEST,
            "SnapInspect sent a token of another type; only Bearer tokens are accepted. Please start again.",
        ),
        "bad_callback:repeated" => (
            StatusCode::BAD_REQUEST,
            "The link back from SnapInspect repeats a parameter, so it is ambiguous. Please start again.",
        ),
        "bad_callback:too_long" => {
            (StatusCode::BAD_REQUEST, "The link back from SnapInspect is too long to be genuine. Please start again.")
        }
        "state_unknown" => (
            StatusCode::BAD_REQUEST,
            "This link back from SnapInspect does not belong to a connection we started. Please start again.",
        ),
        "state_expired" => (
            StatusCode::BAD_REQUEST,
            "This connection attempt took longer than 10 minutes and has expired. Please start again.",
        ),
        "state_used" => (
            StatusCode::BAD_REQUEST,
            "This link back from SnapInspect has already been used. Please start again if you want to connect another account.",
        ),
        "state_other_browser" => (
            StatusCode::BAD_REQUEST,
            "This connection was started in a different browser. Please start again in the browser you want to use.",
        ),
        "user_unavailable" => (
            StatusCode::BAD_GATEWAY,
            "SnapInspect could not tell us which account you connected just now (it may be busy), so nothing was connected. Please try again in a few minutes.",
        ),
        "token_refused" => (
            StatusCode::BAD_GATEWAY,
            "SnapInspect did not accept the access token it just issued, so nothing was connected. Please try again in a moment.",
        ),
        "company_mismatch" => (
            StatusCode::CONFLICT,
            "You signed in to a different SnapInspect company than the one this reconnect link is for, so nothing changed. Sign in to SnapInspect as the company you want to reconnect, and ask for a new link.",
        ),
        "company_already_connected" => (
            StatusCode::CONFLICT,
            "This SnapInspect company is already connected for someone else, so nothing changed, and trying again would not change that. Ask your organisation's administrator: they can give the connection to you.",
        ),
        "connection_gone" => (
            StatusCode::GONE,
            "The connection this reconnect link was for no longer exists, so nothing changed. Ask for a new link.",
        ),
        "not_configured" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "SnapInspect Connect is not set up on this server yet, so nothing was connected.",
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong on our side, so nothing was connected. It has been logged; please try again in a moment.",
        ),
    }
}

/// After a successful callback: to the result page, remembering (in a cookie) what was linked.
pub fn linked_redirect(state: &AppState, id: &ConnectionId) -> Result<HttpResponse, AppError> {
    let mut res = HttpResponse::SeeOther().insert_header((header::LOCATION, "/connect/snapinspect/done")).finish();
    res.add_cookie(&flow_cookie(state, LINKED, id.as_str())).map_err(cookie_error)?;
    Ok(res)
}

/// After a failed callback: to the result page, remembering (in a cookie) why.
pub fn outcome_redirect(state: &AppState, problem: &Problem) -> Result<HttpResponse, AppError> {
    let mut res = HttpResponse::SeeOther().insert_header((header::LOCATION, "/connect/snapinspect/result")).finish();
    res.add_cookie(&flow_cookie(state, OUTCOME, &problem.code())).map_err(cookie_error)?;
    Ok(res)
}

#[derive(Template)]
#[template(path = "not_connected.html")]
struct NotConnectedPage<'a> {
    title: &'a str,
    reason: &'a str,
    try_again: bool,
    brand: &'a crate::brand::Brand,
}

fn to_start() -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, "/")).finish()
}

#[tracing::instrument(skip_all)]
async fn result(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let Some(code) = state.cookies.get(&req, OUTCOME) else { return Ok(to_start()) };
    let (status, reason) = page_for(&code);
    // A reconnect link's failures: only a new link can repair that connection, and "Try again"
    // would start a new public connect instead, so the page says to ask for one (its reason).
    let reconnect = code == "company_mismatch" || code == "connection_gone";
    // A company connected for someone else stays theirs however often one tries: only an
    // administrator can give it over, and the reason says to ask them.
    let only_an_admin_helps = reconnect || code == "company_already_connected";
    let title = if reconnect { "SnapInspect was not reconnected" } else { "SnapInspect was not connected" };
    let try_again = state.settings.connect_public_start && !only_an_admin_helps;
    let page = NotConnectedPage { title, reason, try_again, brand: &state.brand };
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(page.render().map_err(anyhow::Error::from)?))
}

/// A page about a connect link itself (unknown, used, expired, or public start off).
pub fn link_problem_page(
    state: &AppState,
    status: StatusCode,
    title: &str,
    reason: &str,
) -> Result<HttpResponse, AppError> {
    let page = NotConnectedPage { title, reason, try_again: false, brand: &state.brand };
    Ok(HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(page.render().map_err(anyhow::Error::from)?))
}

#[derive(Template)]
#[template(path = "connected.html")]
struct ConnectedPage<'a> {
    company_id: Option<String>,
    name: &'a str,
    identified: bool,
    brand: &'a crate::brand::Brand,
}

#[tracing::instrument(skip_all)]
async fn done(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let linked = state.cookies.get(&req, LINKED);
    let Some(id) = linked.and_then(|s| ConnectionId::parse(&s).ok()) else { return Ok(to_start()) };
    let Some(conn) = state.store.connection(&id).await? else { return Ok(to_start()) };
    let page = ConnectedPage {
        company_id: conn.company_id.map(|c| c.to_string()),
        name: &conn.name,
        identified: conn.status != ConnectionStatus::Unidentified,
        brand: &state.brand,
    };
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(page.render().map_err(anyhow::Error::from)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_code_has_its_own_page() {
        assert_eq!(page_for("denied:access_denied").0, StatusCode::OK);
        assert_eq!(page_for("state_used").0, StatusCode::BAD_REQUEST);
        assert!(page_for("state_used").1.contains("already been used"));
        assert!(page_for("state_expired").1.contains("expired"));
        assert!(page_for("state_other_browser").1.contains("different browser"));
        assert_eq!(page_for("company_mismatch").0, StatusCode::CONFLICT);
        assert_eq!(page_for("user_unavailable").0, StatusCode::BAD_GATEWAY);
        assert!(page_for("bad_callback:missing_state").1.contains("no state"));
        assert_eq!(bad_callback_code(&CallbackError::TooLong), "too_long");
        assert_eq!(page_for("garbage").0, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(denial_code("access_denied"), "access_denied");
        assert_eq!(denial_code("invalid_scope"), "setup");
        assert_eq!(denial_code("server_error"), "temporarily_unavailable");
        assert_eq!(denial_code("made_up"), "other");
    }
}
