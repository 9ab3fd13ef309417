//! Connections in the console: the searchable list and a connection's actions: exchange now,
//! disconnect, assign a company (its page is `connection_page.rs`).

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::{redirect, render, when, AdminUser, CsrfForm, FlashKind, Nav};
use crate::{
    domain::{status::Status, CompanyId, ConnectionId, Provider},
    error::AppError,
    state::AppState,
    store::{AssignRefusal, Connection, ConnectionFilter},
    time::now_ms,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/connections", web::get().to(list))
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
    /// The shown status's colour class and label (`domain::status`): "not yet used" for a
    /// client-credentials connection that has never fetched a token, as the API and CLI say too.
    pub status: &'static str,
    pub status_label: &'static str,
    /// Client-credentials connections have no SnapInspect company, exchanges or webhook events.
    pub snapinspect: bool,
    pub connected_at: String,
    pub last_exchange: String,
    pub last_used: String,
    /// The last error as a sentence, and the provider's answer it quoted (folded away on the page).
    pub last_error: String,
    pub last_error_detail: Option<String>,
    /// The last health check: when, and what it found (`ok`, or the outcome and why).
    pub last_checked: String,
    pub last_check: String,
}

impl From<&Connection> for Row {
    fn from(c: &Connection) -> Self {
        let last_error = super::provider_error::shown(c.last_error.as_deref().unwrap_or_default());
        Row {
            id: c.id.to_string(),
            company: c.company_id.map(|c| c.to_string()).unwrap_or_else(|| "—".into()),
            name: c.name.clone(),
            provider: c.provider.label(),
            status: c.shown_status().class(),
            status_label: c.shown_status().label(),
            snapinspect: c.provider == Provider::SnapInspect,
            connected_at: when(Some(c.connected_at)),
            last_exchange: when(c.last_exchange_at),
            last_used: when(c.last_used_at),
            last_error: last_error.sentence,
            last_error_detail: last_error.detail,
            last_checked: when(c.last_checked_at),
            last_check: match (&c.last_check, &c.last_check_error) {
                (Some(outcome), Some(why)) => format!("{outcome}: {why}"),
                (Some(outcome), None) => outcome.clone(),
                (None, _) => "not checked yet".into(),
            },
        }
    }
}

#[derive(Template)]
#[template(path = "admin/connections.html")]
struct ListPage {
    nav: Nav,
    rows: Vec<Row>,
    q: String,
    status: String,
    /// Every shown status: its name (the `status` parameter) and its label.
    statuses: Vec<(&'static str, &'static str)>,
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
        s => match Status::parse_connection(s) {
            Ok(s) => (Some(s), None),
            Err(e) => (None, Some(e.to_string())),
        },
    };
    // No stored name holds a NUL (it is written out as `\u{0}`), and PostgreSQL cannot compare one.
    if query.q.contains('\0') {
        return Err(AppError::bad_request("The search cannot hold a NUL character."));
    }
    crate::domain::limits::bounded("search", &query.q, crate::domain::limits::LIMITS.search)
        .map_err(|e| AppError::bad_request(format!("Shorten the search: {e}.")))?;
    let filter = ConnectionFilter { query: Some(query.q.clone()), status };
    let rows = state.store.find_connections(&filter, 500).await?.iter().map(Row::from).collect();
    let bad = status_error.is_some();
    let mut res = render(ListPage {
        nav: admin.nav("connections"),
        rows,
        q: query.q.clone(),
        status: query.status.clone(),
        statuses: Status::CONNECTION.iter().map(|s| (s.as_str(), s.label())).collect(),
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
    /// Its shown status (`domain::status`): colour class and label; a processed event whose
    /// delivery is retrying is not a green "done".
    pub status_class: &'static str,
    pub status_label: &'static str,
    pub attempts: i64,
    /// The last error as a sentence; the provider's raw answer, if it quoted one, is folded
    /// under it on the event page.
    pub last_error: String,
    pub last_error_detail: Option<String>,
}

impl From<crate::store::EventRow> for EventRowView {
    fn from(e: crate::store::EventRow) -> Self {
        let status = e.status();
        let last_error = super::provider_error::shown(e.last_error.as_deref().unwrap_or_default());
        EventRowView {
            status_class: status.class(),
            status_label: status.label(),
            id: e.public_id,
            received: when(Some(e.received_at)),
            kind: e.event_type.unwrap_or_else(|| "—".into()),
            company: e.company_id.map(|c| c.to_string()).unwrap_or_else(|| "—".into()),
            state: e.state,
            attempts: e.attempts,
            last_error: last_error.sentence,
            last_error_detail: last_error.detail,
        }
    }
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
        Err(e) => {
            let shown = super::provider_error::shown(&e.to_string());
            let more = if shown.detail.is_some() { " SnapInspect's own answer is under Last error." } else { "" };
            admin.flash(FlashKind::Bad, format!("The exchange did not happen: {}{more}", shown.sentence))
        }
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
