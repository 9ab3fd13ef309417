//! The flow itself: the landing page with the button, the start (a fresh `state` bound to this
//! browser, maybe to a connect session), and the callback that links the company.

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use askama::Template;
use secrecy::SecretString;

use super::{
    check_connect_limit, cookie_error, flow_cookie, not_configured,
    result::{outcome_redirect, Problem},
};
use crate::{
    domain::connect_session::{EndUser, FailReason, ReturnUrl, SessionOutcome},
    domain::{random_bytes, sha256, ConnectionId, OpaqueToken},
    error::AppError,
    snapinspect::{
        connect::{authorize_url, parse_callback, Callback, STATE_TTL_MS},
        ApiCallError, SnapInspectClient,
    },
    state::AppState,
    store::{ConnectSession, ConsumedState, LinkRefusal, NewSnapInspectLink},
    time::now_ms,
};

/// Encrypted cookie with the random id that binds a `state` to this browser (no server row).
const BROWSER_ID: &str = "connect_hub_browser";

#[derive(Template)]
#[template(path = "index.html")]
struct IndexPage<'a> {
    configured: bool,
    public_start: bool,
    brand: &'a crate::brand::Brand,
}

#[tracing::instrument(skip_all)]
pub(super) async fn index(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let page = IndexPage {
        configured: state.snapinspect.is_some(),
        public_start: state.settings.connect_public_start,
        brand: &state.brand,
    };
    Ok(super::html(page.render().map_err(anyhow::Error::from)?))
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

#[tracing::instrument(skip_all)]
pub(super) async fn start(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    if !state.settings.connect_public_start {
        return super::result::link_problem_page(
            &state,
            actix_web::http::StatusCode::FORBIDDEN,
            "Connecting starts from your organisation's app",
            "Open your organisation's app, go to its settings and choose to connect SnapInspect there. It will send you a personal link.",
        );
    }
    check_connect_limit(&req, &state)?;
    begin(&req, &state, None).await
}

/// Issue a `state` bound to this browser (and to a connect session, if one started this) and
/// send the browser to SnapInspect's authorize page.
pub(super) async fn begin(
    req: &HttpRequest,
    state: &AppState,
    session: Option<&ConnectSession>,
) -> Result<HttpResponse, AppError> {
    let client = state.snapinspect.as_ref().ok_or_else(not_configured)?;
    let (browser, new_cookie) = browser_id(req, state);
    let oauth_state = OpaqueToken::generate();
    let now = now_ms();
    state
        .store
        .insert_state(
            &OpaqueToken::hash_of(oauth_state.as_str()),
            &sha256(browser.as_bytes()),
            session,
            now,
            now + STATE_TTL_MS,
        )
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

/// Every callback answer is a 303 to a clean URL, so the tokens leave the address bar: the
/// session's return URL, or our own result page (told what happened by an encrypted cookie).
#[tracing::instrument(skip_all)]
pub(super) async fn callback(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let mut session: Option<ConnectSession> = None;
    let result = handle_callback(&req, &state, &mut session).await;
    let return_url = session.as_ref().and_then(|s| s.return_url.as_deref()).and_then(ReturnUrl::stored);
    let target = session.as_ref().and_then(|s| s.connection_id.clone());
    let outcome = match result {
        Ok(id) => Ok(id),
        Err(Problem::Internal(e)) => {
            tracing::error!(error = ?e, "the connect callback failed");
            Err(Problem::Internal(e))
        }
        Err(p) => Err(p),
    };
    match (return_url, outcome) {
        (Some(r), Ok(id)) => Ok(see_other(&r.with_outcome(Some(id.as_str()), &SessionOutcome::Connected))),
        (Some(r), Err(p)) => {
            let o = match p.fail_reason() {
                None => SessionOutcome::Denied,
                Some(reason) => SessionOutcome::Failed(reason),
            };
            Ok(see_other(&r.with_outcome(target.as_ref().map(ConnectionId::as_str), &o)))
        }
        (None, Ok(id)) => super::result::linked_redirect(&state, &id),
        (None, Err(p)) => outcome_redirect(&state, &p),
    }
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, location)).finish()
}

impl From<AppError> for Problem {
    fn from(e: AppError) -> Self {
        Problem::Internal(anyhow::anyhow!(e))
    }
}

impl From<anyhow::Error> for Problem {
    fn from(e: anyhow::Error) -> Self {
        Problem::Internal(e)
    }
}

/// Verify and store; `session` is filled in as soon as the `state` names one.
async fn handle_callback(
    req: &HttpRequest,
    state: &AppState,
    session: &mut Option<ConnectSession>,
) -> Result<ConnectionId, Problem> {
    let client = state.snapinspect.as_ref().ok_or(Problem::NotConfigured)?;
    let parsed = parse_callback(req.query_string()).map_err(|e| {
        tracing::info!(error = %e, "callback refused: malformed");
        Problem::BadCallback(super::result::bad_callback_code(&e))
    })?;
    let browser_hash = browser_hash(req, state);
    let now = now_ms();

    let (state_value, access, refresh) = match parsed {
        Callback::Denied { state: st, error, description: _ } => {
            // Use the state up, so this link cannot be replayed. Only a state we issued to this
            // browser lets the page say anything about why: the words are ours, chosen by the
            // error code, never the link's own text (anyone can send a link to our domain).
            let consumed = match st {
                Some(st) => {
                    state.store.consume_state(&OpaqueToken::hash_of(&st), browser_hash.as_deref(), now).await?.ok()
                }
                None => None,
            };
            tracing::info!(error = %error.chars().take(60).collect::<String>().escape_debug(), valid_state = consumed.is_some(), "SnapInspect connect was declined");
            let Some(consumed) = consumed else { return Err(Problem::UnverifiedDenial) };
            *session = session_of(state, consumed).await?.0;
            return Err(Problem::Denied(super::result::denial_code(&error)));
        }
        Callback::Approved { state, access_token, refresh_token } => (state, access_token, refresh_token),
    };

    let gone =
        match state.store.consume_state(&OpaqueToken::hash_of(&state_value), browser_hash.as_deref(), now).await? {
            Ok(consumed) => {
                let (found, gone) = session_of(state, consumed).await?;
                *session = found;
                gone
            }
            Err(rejection) => {
                tracing::warn!(?rejection, "callback refused: bad state");
                return Err(Problem::State(rejection));
            }
        };
    let spare = refresh.clone();
    let result = if gone { Err(Problem::ConnectionGone) } else { link(state, client, session, access, refresh).await };
    if let Err(p) = &result {
        if p.drops_callback_tokens() {
            spend_callback_pair(client, spare);
        }
    }
    result
}

/// The connect session a consumed state names: read back, or, for a reconnect link whose
/// connection (and with it the session) was deleted meanwhile, rebuilt from what the state kept.
/// The flag says that connection is gone.
async fn session_of(state: &AppState, c: ConsumedState) -> anyhow::Result<(Option<ConnectSession>, bool)> {
    let found = match &c.session_id {
        Some(id) => state.store.connect_session(id).await?,
        None => None,
    };
    Ok(match (found, c.reconnect_of) {
        (Some(s), _) => (Some(s), false),
        (None, Some(target)) => {
            let rebuilt = ConnectSession {
                id: String::new(),
                end_user: EndUser::default(),
                return_url: c.return_url,
                connection_id: Some(target),
            };
            (Some(rebuilt), true)
        }
        (None, None) => (None, false),
    })
}

/// A pair that travelled in the callback's URL and will not be kept is exchanged once, so it
/// dies (SnapInspect tokens never expire on their own); the new pair is dropped unseen. Off the
/// person's path: their page does not wait for SnapInspect.
fn spend_callback_pair(client: &SnapInspectClient, refresh: SecretString) {
    let client = client.clone();
    tokio::spawn(async move {
        match client.exchange(&refresh).await {
            Ok(_) => tracing::info!("the refused callback's tokens were exchanged once and dropped"),
            Err(e) => tracing::warn!(error = %e, "the refused callback's tokens could not be spent"),
        }
    });
}

/// Identify the company and store the link: a new connection, the same end user's again, or the
/// connection a reconnect link repairs.
async fn link(
    state: &AppState,
    client: &SnapInspectClient,
    session: &Option<ConnectSession>,
    access: SecretString,
    refresh: SecretString,
) -> Result<ConnectionId, Problem> {
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
        Err(ApiCallError::Unauthorized) => return Err(Problem::TokenRefused),
        Err(e) => {
            tracing::warn!(error = %e, "could not identify the company; nothing stored");
            return Err(Problem::UserUnavailable);
        }
    };
    let end_user = session.as_ref().filter(|s| s.connection_id.is_none()).map(|s| s.end_user.clone());
    let link =
        NewSnapInspectLink { company_id, name, user_info, access_token: access, refresh_token: refresh, end_user };
    let saved = match session.as_ref().and_then(|s| s.connection_id.as_ref()) {
        Some(target) => state.store.reconnect_snapinspect_link(target, &link, now_ms()).await?,
        None => state.store.save_snapinspect_link(&link, now_ms()).await?,
    };
    let saved = saved.map_err(|refusal| {
        tracing::warn!(company_id = ?company_id, ?refusal, "link refused; nothing stored");
        match refusal {
            LinkRefusal::CompanyMismatch => Problem::CompanyMismatch,
            LinkRefusal::ConnectionGone => Problem::ConnectionGone,
            LinkRefusal::CompanyAlreadyConnected => Problem::CompanyAlreadyConnected,
        }
    })?;
    tracing::info!(connection_id = %saved.id, company_id = ?company_id, reconnected = saved.reconnected, session = session.is_some(), "SnapInspect connected");
    state.on_connected(&saved, company_id).await;
    Ok(saved.id)
}

impl Problem {
    /// Whether the callback's pair is left unstored, so it must be spent: every refusal after
    /// SnapInspect issued it (a malformed or unverified callback carries nothing we trust).
    fn drops_callback_tokens(&self) -> bool {
        matches!(
            self,
            Problem::UserUnavailable
                | Problem::TokenRefused
                | Problem::CompanyMismatch
                | Problem::CompanyAlreadyConnected
                | Problem::ConnectionGone
        )
    }

    /// What a session's return URL is told (`None`: the person said no).
    fn fail_reason(&self) -> Option<FailReason> {
        Some(match self {
            Problem::Denied(code) if *code == "access_denied" => return None,
            Problem::Denied(_) => FailReason::ProviderError,
            Problem::BadCallback(_) | Problem::UnverifiedDenial | Problem::State(_) => FailReason::BadCallback,
            Problem::UserUnavailable => FailReason::UserUnavailable,
            Problem::TokenRefused => FailReason::TokenRefused,
            Problem::CompanyMismatch => FailReason::CompanyMismatch,
            Problem::CompanyAlreadyConnected => FailReason::CompanyAlreadyConnected,
            Problem::ConnectionGone => FailReason::ConnectionGone,
            Problem::NotConfigured | Problem::Internal(_) => FailReason::Internal,
        })
    }
}
