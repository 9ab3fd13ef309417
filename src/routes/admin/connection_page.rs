//! A connection's console page: its details, tokens, credentials, API URL and proxied requests,
//! its last check, recent events and audit trail, and what can be done with it.

use actix_web::{web, HttpResponse};
use askama::Template;

use super::{
    audit,
    connections::{load, parse_id, EventRowView, Row},
    render, when, AdminUser, Nav,
};
use crate::{
    domain::{ConnectionStatus, Provider},
    error::AppError,
    state::AppState,
    store::{Connection, EventFilter},
    time::now_ms,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/connections/{id}", web::get().to(detail));
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
    /// Where the proxy sends its requests, and what it answered in the last hour (this instance).
    api_url: String,
    proxied: String,
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
            let waiting = EventFilter {
                company: Some(company),
                status: Some(crate::domain::status::Status::Unmatched),
                ..Default::default()
            };
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
    let proxied: Vec<String> =
        state.proxy.stats.last_hour(&id, now).iter().map(|(class, n)| format!("{class}: {n}")).collect();
    let api_url = crate::proxy::api_base(
        c.provider,
        c.api_url.as_deref(),
        c.domain.as_deref(),
        &state.settings.snapinspect.api_url,
    );
    let page = DetailPage {
        api_url: api_url.map_or_else(|| "none: the proxy answers 409 no_api_url".into(), String::from),
        proxied: if proxied.is_empty() { "none in the last hour".into() } else { proxied.join(" · ") },
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
