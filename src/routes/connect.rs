//! The end user's side of SnapInspect Connect: the landing page with the button, the start of the
//! flow (a fresh `state` bound to this browser), the callback, and the clean result page.

use actix_web::{
    http::header::{self, HeaderValue},
    middleware::DefaultHeaders,
    web, HttpRequest, HttpResponse,
};
use askama::Template;

use crate::{
    domain::{random_bytes, sha256, ConnectionId, ConnectionStatus},
    error::AppError,
    snapinspect::{
        connect::{authorize_url, parse_callback, Callback, CallbackError, State, STATE_TTL_MS},
        ApiCallError,
    },
    startup::AppState,
    store::{NewSnapInspectLink, StateRejection},
    time::now_ms,
};

/// Encrypted cookie with the random id that binds a `state` to this browser (no server row).
const BROWSER_ID: &str = "connect_hub_browser";
/// Encrypted cookie with the connection the last successful callback linked (for the result page).
const LINKED: &str = "connect_hub_linked";
/// Both cookies are only sent to the connect flow's pages.
const FLOW_PATH: &str = "/connect/snapinspect";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/connect/snapinspect", web::get().to(start))
        .service(
            web::resource("/connect/snapinspect/callback")
                // The callback URL carries tokens: never let it leak through a Referer, never cache.
                .wrap(
                    DefaultHeaders::new()
                        .add((header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
                        .add((header::CACHE_CONTROL, HeaderValue::from_static("no-store"))),
                )
                .route(web::get().to(callback)),
        )
        .route("/connect/snapinspect/done", web::get().to(done));
}

#[derive(Template)]
#[template(path = "index.html")]
struct IndexPage {
    configured: bool,
}

fn html(body: String) -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(body)
}

#[tracing::instrument(skip_all)]
async fn index(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    Ok(html(IndexPage { configured: state.snapinspect.is_some() }.render().map_err(anyhow::Error::from)?))
}

fn not_configured() -> AppError {
    AppError::unavailable(
        "not_configured",
        "SnapInspect Connect is not set up on this server yet: an operator has to set SNAPINSPECT_CLIENT_ID and SNAPINSPECT_CLIENT_SECRET.",
    )
}

fn cookie_error(e: impl std::fmt::Display) -> AppError {
    AppError::Internal(anyhow::anyhow!("cookie: {e}"))
}

/// A connect flow's cookie: as long as a `state` lives.
fn flow_cookie(state: &AppState, name: &str, value: &str) -> actix_web::cookie::Cookie<'static> {
    let max_age = actix_web::cookie::time::Duration::milliseconds(STATE_TTL_MS);
    state.cookies.seal(name, value, FLOW_PATH, max_age, state.settings.is_https())
}

/// The browser-binding id from this browser's encrypted cookie, or a new one (then the caller
/// sets the returned cookie).
fn browser_id(req: &HttpRequest, state: &AppState) -> (String, Option<actix_web::cookie::Cookie<'static>>) {
    if let Some(id) = state.cookies.get(req, BROWSER_ID) {
        return (id, None);
    }
    let id = crate::domain::base32(&random_bytes::<32>());
    let cookie = flow_cookie(state, BROWSER_ID, &id);
    (id, Some(cookie))
}

/// The hash a `state` row binds to: of this browser's id, if it has one.
fn browser_hash(req: &HttpRequest, state: &AppState) -> Option<Vec<u8>> {
    state.cookies.get(req, BROWSER_ID).map(|b| sha256(b.as_bytes()))
}

/// After a successful callback: to the result page, remembering (in a cookie) what was linked.
fn linked_redirect(state: &AppState, id: &ConnectionId) -> Result<HttpResponse, AppError> {
    let mut res = HttpResponse::SeeOther().insert_header((header::LOCATION, "/connect/snapinspect/done")).finish();
    res.add_cookie(&flow_cookie(state, LINKED, id.as_str())).map_err(cookie_error)?;
    Ok(res)
}

#[tracing::instrument(skip_all)]
async fn start(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let client = state.snapinspect.as_ref().ok_or_else(not_configured)?;
    if let Err(wait) = state.limits.connect.check(&crate::routes::client_limit_key(&req)) {
        state.metrics.rate_limited.inc("connect");
        return Err(crate::routes::too_many("rate_limited", "Too many connection attempts from your address", wait));
    }
    let (browser, new_cookie) = browser_id(&req, &state);
    let oauth_state = State::generate();
    let now = now_ms();
    state
        .store
        .insert_state(&State::hash_of(oauth_state.as_str()), &sha256(browser.as_bytes()), now, now + STATE_TTL_MS)
        .await?;
    let url = authorize_url(&client.settings().authorize_url, client.client_id(), client.redirect_uri(), &oauth_state);
    let mut res = HttpResponse::SeeOther()
        .insert_header((header::LOCATION, url.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish();
    if let Some(cookie) = new_cookie {
        res.add_cookie(&cookie).map_err(cookie_error)?;
    }
    Ok(res)
}

#[derive(Template)]
#[template(path = "not_connected.html")]
struct NotConnectedPage<'a> {
    reason: &'a str,
}

fn callback_error(message: impl Into<String>) -> AppError {
    AppError::BadRequest { code: "bad_callback", title: "SnapInspect was not connected", message: message.into() }
}

/// A denial whose `state` we cannot vouch for: nothing it carried is shown.
const UNVERIFIED_DENIAL: &str = "SnapInspect did not connect your account. Please start again from the Connect button.";

/// `/user` failed or timed out right after the connect: nothing was stored.
const USER_UNAVAILABLE: &str = "SnapInspect could not tell us which account you connected just now (it may be busy), so nothing was connected. Please try again in a few minutes.";

/// Our own words for the OAuth error codes (RFC 6749 §4.1.2.1), for a denial with a valid state.
fn denied_reason(error: &str) -> &'static str {
    match error {
        "access_denied" => "You chose not to allow access, so nothing was connected.",
        "server_error" | "temporarily_unavailable" => {
            "SnapInspect had a temporary problem, so nothing was connected. Please try again in a few minutes."
        }
        "invalid_request" | "unauthorized_client" | "unsupported_response_type" | "invalid_scope" | "invalid_client" => {
            "SnapInspect refused to start the connection because of a setup problem on our side, so nothing was connected. Please let the people who sent you here know."
        }
        _ => "SnapInspect did not connect your account. Please start again from the Connect button.",
    }
}

fn state_message(r: StateRejection) -> &'static str {
    match r {
        StateRejection::Unknown => "This link back from SnapInspect does not belong to a connection we started. Please start again from the Connect button.",
        StateRejection::Expired => "This connection attempt took longer than 10 minutes and has expired. Please start again.",
        StateRejection::AlreadyUsed => "This link back from SnapInspect has already been used. Please start again if you want to connect another account.",
        StateRejection::OtherBrowser => "This connection was started in a different browser. Please start again in the browser you want to use.",
    }
}

#[tracing::instrument(skip_all)]
async fn callback(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let client = state.snapinspect.as_ref().ok_or_else(not_configured)?;
    let parsed = parse_callback(req.query_string()).map_err(|e: CallbackError| callback_error(e.to_string()))?;
    let browser_hash = browser_hash(&req, &state);
    let now = now_ms();

    let (state_value, access, refresh) = match parsed {
        Callback::Denied { state: st, error, description: _ } => {
            // Use the state up, so this link cannot be replayed. Only a state we issued to this
            // browser lets the page say anything about why: the words are ours, chosen by the
            // error code, never the link's own text (anyone can send a link to our domain).
            let valid = match st {
                Some(st) => {
                    state.store.consume_state(&State::hash_of(&st), browser_hash.as_deref(), now).await?.is_ok()
                }
                None => false,
            };
            tracing::info!(error = %error.chars().take(60).collect::<String>().escape_debug(), valid_state = valid, "SnapInspect connect was declined");
            let reason = if valid { denied_reason(&error) } else { UNVERIFIED_DENIAL };
            return Ok(html(NotConnectedPage { reason }.render().map_err(anyhow::Error::from)?));
        }
        Callback::Approved { state, access_token, refresh_token } => (state, access_token, refresh_token),
    };

    if let Err(rejection) =
        state.store.consume_state(&State::hash_of(&state_value), browser_hash.as_deref(), now).await?
    {
        tracing::warn!(?rejection, "callback refused: bad state");
        return Err(callback_error(state_message(rejection)));
    }

    // Which company is this? Nothing public documents /user, so read it tolerantly. Only an
    // answer SnapInspect actually gave (200 without a company) makes an unidentified connection;
    // when /user fails or cannot be reached we store nothing, so made-up tokens never make a row.
    let (company_id, name, user_info) = match client.user(&access).await {
        Ok(info) => {
            let name = match (info.company_name, info.company_id) {
                (Some(n), _) => n,
                (None, Some(c)) => format!("SnapInspect company {c}"),
                (None, None) => "Unidentified SnapInspect account".to_owned(),
            };
            (info.company_id, name, Some(info.raw))
        }
        Err(ApiCallError::Unauthorized) => {
            return Err(AppError::upstream(
                "token_refused",
                "SnapInspect did not accept the access token it just issued, so nothing was connected. Please try again in a moment.",
            ));
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not identify the company; nothing stored");
            let page = NotConnectedPage { reason: USER_UNAVAILABLE }.render().map_err(anyhow::Error::from)?;
            return Ok(HttpResponse::BadGateway().content_type("text/html; charset=utf-8").body(page));
        }
    };
    let link = NewSnapInspectLink { company_id, name, user_info, access_token: access, refresh_token: refresh };
    let saved = state.store.save_snapinspect_link(&link, now_ms()).await?;
    tracing::info!(connection_id = %saved.id, company_id = ?company_id, reconnected = saved.reconnected, "SnapInspect connected");
    state.on_connected(&saved, company_id).await;

    linked_redirect(&state, &saved.id)
}

#[derive(Template)]
#[template(path = "connected.html")]
struct ConnectedPage<'a> {
    company_id: Option<String>,
    name: &'a str,
    identified: bool,
}

#[tracing::instrument(skip_all)]
async fn done(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let linked = state.cookies.get(&req, LINKED);
    let Some(id) = linked.and_then(|s| ConnectionId::parse(&s).ok()) else {
        return Ok(HttpResponse::SeeOther().insert_header((header::LOCATION, "/")).finish());
    };
    let Some(conn) = state.store.connection(&id).await? else {
        return Ok(HttpResponse::SeeOther().insert_header((header::LOCATION, "/")).finish());
    };
    let page = ConnectedPage {
        company_id: conn.company_id.map(|c| c.to_string()),
        name: &conn.name,
        identified: conn.status != ConnectionStatus::Unidentified,
    };
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(page.render().map_err(anyhow::Error::from)?))
}
