//! Connections in the console: the searchable list, the detail page (metadata, token state without
//! the token, events, audit) and its actions: exchange now, disconnect, assign a company.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::{audit, redirect, render, when, AdminUser, CsrfForm, FlashKind, Nav};
use crate::{
    domain::{CompanyId, ConnectionId, ConnectionStatus, EventState, Provider},
    error::AppError,
    state::AppState,
    store::{AssignRefusal, Connection, ConnectionFilter, EventFilter},
    time::now_ms,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/connections", web::get().to(list))
        .route("/connections/{id}", web::get().to(detail))
        .route("/connections/{id}/exchange", web::post().to(exchange))
        .route("/connections/{id}/disconnect", web::get().to(confirm_disconnect))
        .route("/connections/{id}/disconnect", web::post().to(disconnect))
        .route("/connections/{id}/assign", web::post().to(assign));
}

/// A connection as a row of the list.
pub struct Row {
    pub id: String,
    pub company: String,
    pub name: String,
    pub provider: &'static str,
    pub status: &'static str,
    /// The status as people read it: "not yet used" for a client-credentials connection that
    /// has never fetched a token (it is `active` in the store and the API).
    pub status_label: &'static str,
    /// Client-credentials connections have no SnapInspect company, exchanges or webhook events.
    pub snapinspect: bool,
    pub connected_at: String,
    pub last_exchange: String,
    pub last_used: String,
    pub last_error: String,
    /// The last health check: when, and what it found (`ok`, or the outcome and why).
    pub last_checked: String,
    pub last_check: String,
}

impl From<&Connection> for Row {
    fn from(c: &Connection) -> Self {
        Row {
            id: c.id.to_string(),
            company: c.company_id.map(|c| c.to_string()).unwrap_or_else(|| "—".into()),
            name: c.name.clone(),
            provider: c.provider.label(),
            status: c.status.as_str(),
            status_label: status_label(c),
            snapinspect: c.provider == Provider::SnapInspect,
            connected_at: when(Some(c.connected_at)),
            last_exchange: when(c.last_exchange_at),
            last_used: when(c.last_used_at),
            last_error: c.last_error.clone().unwrap_or_default(),
            last_checked: when(c.last_checked_at),
            last_check: match (&c.last_check, &c.last_check_error) {
                (Some(outcome), Some(why)) => format!("{outcome}: {why}"),
                (Some(outcome), None) => outcome.clone(),
                (None, _) => "not checked yet".into(),
            },
        }
    }
}

fn status_label(c: &Connection) -> &'static str {
    let never_fetched = c.token_obtained_at.is_none() && c.last_exchange_at.is_none() && !c.has_tokens;
    if c.provider != Provider::SnapInspect && c.status == ConnectionStatus::Active && never_fetched {
        "not yet used"
    } else {
        c.status.as_str()
    }
}

#[derive(Template)]
#[template(path = "admin/connections.html")]
struct ListPage {
    nav: Nav,
    rows: Vec<Row>,
    q: String,
    status: String,
    statuses: Vec<&'static str>,
    /// A status that is not one, explained beside the field (the list is shown without it).
    status_error: Option<String>,
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
}

#[tracing::instrument(skip_all)]
async fn list(
    admin: AdminUser,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let (status, status_error) = match query.status.trim() {
        "" => (None, None),
        s => match ConnectionStatus::parse(s) {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e.to_string())),
        },
    };
    // No stored name holds a NUL (it is written out as `\u{0}`), and PostgreSQL cannot compare one.
    if query.q.contains('\0') {
        return Err(AppError::bad_request("The search cannot hold a NUL character."));
    }
    let filter = ConnectionFilter { query: Some(query.q.clone()), status };
    let rows = state.store.find_connections(&filter, 500).await?.iter().map(Row::from).collect();
    let bad = status_error.is_some();
    let mut res = render(ListPage {
        nav: admin.nav("connections"),
        rows,
        q: query.q.clone(),
        status: query.status.clone(),
        statuses: ConnectionStatus::ALL.iter().map(|s| s.as_str()).collect(),
        status_error,
    })?;
    if bad {
        *res.status_mut() = actix_web::http::StatusCode::BAD_REQUEST;
    }
    Ok(res)
}

fn no_such_connection() -> AppError {
    AppError::not_found("There is no connection with that id.")
}

pub(super) fn parse_id(raw: &str) -> Result<ConnectionId, AppError> {
    ConnectionId::parse(raw).map_err(|_| no_such_connection())
}

pub(super) async fn load(state: &AppState, id: &ConnectionId) -> Result<Connection, AppError> {
    state.store.connection(id).await?.ok_or_else(no_such_connection)
}

/// An event as a row of a list.
pub struct EventRowView {
    pub id: String,
    pub received: String,
    pub kind: String,
    pub company: String,
    pub state: String,
    pub attempts: i64,
    pub last_error: String,
}

impl From<crate::store::EventRow> for EventRowView {
    fn from(e: crate::store::EventRow) -> Self {
        EventRowView {
            id: e.public_id,
            received: when(Some(e.received_at)),
            kind: e.event_type.unwrap_or_else(|| "—".into()),
            company: e.company_id.map(|c| c.to_string()).unwrap_or_else(|| "—".into()),
            state: e.state,
            attempts: e.attempts,
            last_error: e.last_error.unwrap_or_default(),
        }
    }
}

/// A client-credentials connection's settings (nothing secret).
pub struct CredentialsView {
    pub client_id: String,
    pub scope: String,
    pub audience: String,
    pub domain: String,
    pub environment: String,
    pub token_url: String,
    pub auth: String,
    pub token_expires: String,
}

#[derive(Template)]
#[template(path = "admin/connection.html")]
struct DetailPage {
    nav: Nav,
    c: Row,
    credentials: Option<CredentialsView>,
    unidentified: bool,
    exchangeable: bool,
    /// Who it belongs to in the organisation's app (from its connect session), with its tags.
    end_user: Option<String>,
    /// Needs reconnecting: the page offers a reconnect link.
    reconnectable: bool,
    disconnected: bool,
    token_state: String,
    failures: i64,
    retry_after: Option<String>,
    last_error_at: String,
    /// What happened to the tokens that came in the connect link (SnapInspect only).
    callback_tokens: Option<String>,
    user_info: Option<String>,
    events: Vec<EventRowView>,
    unmatched_waiting: i64,
    audit: Vec<audit::Row>,
}

#[tracing::instrument(skip_all, fields(connection_id = %id))]
async fn detail(admin: AdminUser, id: web::Path<String>, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let id = parse_id(&id)?;
    let c = load(&state, &id).await?;
    let token_state = match (&c.token_fingerprint, c.token_obtained_at) {
        (Some(fp), Some(at)) if c.has_tokens => {
            format!("fingerprint {fp} · version {} · obtained {}", c.token_version, when(Some(at)))
        }
        _ => "no token stored".into(),
    };
    let events = match c.company_id {
        Some(company) => state
            .store
            .events(&EventFilter { company: Some(company), ..Default::default() }, 20)
            .await?
            .into_iter()
            .map(EventRowView::from)
            .collect(),
        None => Vec::new(),
    };
    let unmatched_waiting = match c.company_id {
        Some(company) => {
            let waiting =
                EventFilter { company: Some(company), state: Some(EventState::Unmatched), ..Default::default() };
            state.store.count_events(&waiting).await?
        }
        None => 0,
    };
    let now = now_ms();
    let credentials = (c.provider != Provider::SnapInspect).then(|| CredentialsView {
        client_id: c.client_id.clone().unwrap_or_default(),
        scope: c.scope.clone().unwrap_or_else(|| "—".into()),
        audience: c.audience.clone().unwrap_or_else(|| "—".into()),
        domain: c.domain.clone().unwrap_or_else(|| "—".into()),
        environment: c.environment.clone().unwrap_or_else(|| "—".into()),
        token_url: c.token_url.clone().unwrap_or_default(),
        auth: c.auth_style.clone().unwrap_or_default(),
        token_expires: when(c.token_expires_at).replace("never", "no token yet"),
    });
    let page = DetailPage {
        nav: admin.nav("connections"),
        credentials,
        unidentified: c.status == ConnectionStatus::Unidentified,
        exchangeable: c.provider == Provider::SnapInspect
            && c.has_tokens
            && !matches!(c.status, ConnectionStatus::Disconnected | ConnectionStatus::NeedsReconnect),
        end_user: end_user_line(&c),
        reconnectable: c.status == ConnectionStatus::NeedsReconnect && c.reconnect_refusal().is_none(),
        disconnected: c.status == ConnectionStatus::Disconnected,
        token_state,
        failures: c.failure_count,
        retry_after: c.retry_after.filter(|t| *t > now).map(|t| when(Some(t))),
        last_error_at: when(c.last_error_at),
        callback_tokens: callback_tokens_state(&c, now),
        user_info: c.user_info.as_deref().map(|raw| {
            serde_json::from_str::<serde_json::Value>(raw)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or_else(|| raw.to_owned())
        }),
        events,
        unmatched_waiting,
        audit: audit::rows(state.store.audit_entries(Some(&id), None, 30).await?),
        c: Row::from(&c),
    };
    render(page)
}

/// `tenant-42 · ops@harbour.example · Harbour ops · plan=pro`, or nothing without an end user.
fn end_user_line(c: &Connection) -> Option<String> {
    let id = c.end_user_id.as_ref()?;
    let mut parts = vec![id.clone()];
    parts.extend(c.end_user_email.clone());
    parts.extend(c.end_user_display_name.clone());
    parts.extend(c.tags.iter().map(|(k, v)| format!("{k}={v}")));
    Some(parts.join(" · "))
}

/// "exchanged at …" or "not yet exchanged, next try in …" for the pair from the connect link.
fn callback_tokens_state(c: &Connection, now: i64) -> Option<String> {
    if c.provider != Provider::SnapInspect {
        return None;
    }
    if c.callback_tokens_pending {
        let next = match c.retry_after.filter(|t| *t > now) {
            Some(t) => format!("next try in {} s", (t - now + 999) / 1000),
            None => "next try within seconds".to_owned(),
        };
        return Some(format!("not yet exchanged, {next}"));
    }
    c.last_exchange_at.filter(|at| *at >= c.connected_at).map(|at| format!("exchanged at {}", when(Some(at))))
}

#[tracing::instrument(skip_all, fields(connection_id = %id))]
async fn exchange(
    admin: AdminUser,
    id: web::Path<String>,
    form: web::Form<CsrfForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    admin.check_csrf(&form.csrf)?;
    let id = parse_id(&id)?;
    load(&state, &id).await?;
    match state.tokens.refresh(&id, &admin.actor()).await {
        Ok(t) => admin.flash(FlashKind::Ok, format!("Exchanged: a new token pair is stored (version {}).", t.version)),
        Err(e) => admin.flash(FlashKind::Bad, format!("The exchange did not happen: {e}")),
    }
    Ok(redirect(&format!("/admin/connections/{id}")))
}

#[derive(Template)]
#[template(path = "admin/confirm_disconnect.html")]
struct ConfirmPage {
    nav: Nav,
    c: Row,
}

#[tracing::instrument(skip_all, fields(connection_id = %id))]
async fn confirm_disconnect(
    admin: AdminUser,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let c = load(&state, &parse_id(&id)?).await?;
    render(ConfirmPage { nav: admin.nav("connections"), c: Row::from(&c) })
}

#[tracing::instrument(skip_all, fields(connection_id = %id))]
async fn disconnect(
    admin: AdminUser,
    id: web::Path<String>,
    form: web::Form<CsrfForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    admin.check_csrf(&form.csrf)?;
    let id = parse_id(&id)?;
    load(&state, &id).await?;
    let disconnected = state.store.disconnect(&id, now_ms(), &admin.actor()).await?;
    // Whatever this process holds in memory for it goes now, not when the cache runs out.
    state.tokens.forget(&id);
    if disconnected {
        tracing::info!(admin = %admin.email, "connection disconnected");
        admin.flash(FlashKind::Ok, "Disconnected. Its tokens are deleted; the end user can connect again at any time.");
    } else {
        admin.flash(FlashKind::Bad, "This connection was already disconnected.");
    }
    Ok(redirect(&format!("/admin/connections/{id}")))
}

#[derive(Deserialize)]
struct AssignForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    company_id: String,
}

#[tracing::instrument(skip_all, fields(connection_id = %id))]
async fn assign(
    admin: AdminUser,
    id: web::Path<String>,
    form: web::Form<AssignForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    admin.check_csrf(&form.csrf)?;
    let id = parse_id(&id)?;
    let company = match CompanyId::parse(&form.company_id) {
        Ok(c) => c,
        Err(e) => {
            admin.flash(FlashKind::Bad, format!("Not assigned: {e}."));
            return Ok(redirect(&format!("/admin/connections/{id}")));
        }
    };
    match state.store.assign_company(&id, company, now_ms(), &admin.actor()).await? {
        Ok(queued) => {
            if queued > 0 {
                state.worker.wake();
            }
            admin.flash(
                FlashKind::Ok,
                format!("Assigned SnapInspect company {company}; {queued} waiting events are now queued."),
            );
        }
        Err(AssignRefusal::NotFound) => return Err(no_such_connection()),
        Err(refusal) => admin.flash(FlashKind::Bad, format!("Not assigned: {refusal}.")),
    }
    Ok(redirect(&format!("/admin/connections/{id}")))
}
