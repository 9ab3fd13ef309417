//! The dashboard: connections by status, events by status over the last 24 hours, dead and
//! unmatched events, and the last refresh failures, each a link to the filtered list.

use actix_web::{web, HttpResponse};
use askama::Template;

use super::{render, when, AdminUser, Nav};
use crate::{
    domain::{status::Status, EventState},
    error::AppError,
    state::AppState,
    time::now_ms,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("", web::get().to(dashboard)).route("/", web::get().to(dashboard));
}

pub struct Count {
    pub label: String,
    pub count: i64,
    pub href: String,
    pub class: String,
}

pub struct Failure {
    pub at: String,
    /// The connection's id (for the link) and name (what people recognise).
    pub connection: Option<(String, String)>,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "admin/dashboard.html")]
struct DashboardPage {
    nav: Nav,
    connections: Vec<Count>,
    events_24h: Vec<Count>,
    dead: i64,
    unmatched: i64,
    rejected: i64,
    failures: Vec<Failure>,
}

#[tracing::instrument(skip_all)]
async fn dashboard(admin: AdminUser, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let store = &state.store;
    // Counted by the status every screen shows, so each count is what its link lists.
    let by_status = store.shown_connection_counts().await?;
    let connections = Status::CONNECTION
        .iter()
        .map(|s| Count {
            label: s.label().to_owned(),
            count: by_status.iter().find(|(k, _)| k == s.as_str()).map_or(0, |(_, n)| *n),
            href: format!("/admin/connections?status={}", s.as_str()),
            class: s.class().to_owned(),
        })
        .collect();
    let recent = store.event_counts_since(now_ms() - 24 * 3600 * 1000).await?;
    // By the shown status too: a processed event whose delivery retries is not counted `done`.
    let events_24h = Status::EVENT
        .iter()
        .map(|s| Count {
            label: s.label().to_owned(),
            count: recent.iter().find(|(k, _)| k == s.as_str()).map_or(0, |(_, n)| *n),
            href: format!("/admin/events?status={}", s.as_str()),
            class: s.class().to_owned(),
        })
        .collect();
    let entries = store.recent_failures(10).await?;
    let names = if entries.is_empty() { Vec::new() } else { store.connections().await? };
    let failures = entries
        .into_iter()
        .map(|a| Failure {
            at: when(Some(a.at)),
            connection: a.connection_id.map(|id| {
                let name = names.iter().find(|c| c.id.as_str() == id).map_or_else(|| id.clone(), |c| c.name.clone());
                (id, name)
            }),
            detail: super::provider_error::shown(a.detail.as_deref().unwrap_or_default()).sentence,
        })
        .collect();
    render(DashboardPage {
        nav: admin.nav("dashboard"),
        connections,
        events_24h,
        dead: store.event_count_in(EventState::Dead).await?,
        unmatched: store.event_count_in(EventState::Unmatched).await?,
        rejected: store.event_count_in(EventState::Rejected).await?,
        failures,
    })
}
