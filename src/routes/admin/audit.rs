//! The audit log: every admin action, connect, disconnect, exchange and failure, newest first,
//! paginated by id.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::{render, AdminUser, Nav};
use crate::{
    error::AppError,
    state::AppState,
    time::{ago, format_utc, now_ms},
};

const PAGE: i64 = 100;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/audit", web::get().to(audit));
}

pub struct Row {
    /// The UTC time, and apart from it how long ago (so the column stays narrow).
    pub at: String,
    pub ago: String,
    /// Who, as people read it: an admin's email, "API key billing", "command line".
    pub actor: String,
    pub action: String,
    pub connection: Option<String>,
    pub detail: String,
    /// A provider's answer the detail quoted, folded away under it.
    pub answer: Option<String>,
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
struct AuditPage {
    nav: Nav,
    rows: Vec<Row>,
    older: Option<i64>,
}

#[derive(Deserialize)]
struct Query {
    before: Option<i64>,
}

/// Audit entries as rows for the console.
pub fn rows(entries: Vec<crate::store::AuditEntry>) -> Vec<Row> {
    entries
        .into_iter()
        .map(|a| {
            let shown = super::provider_error::shown(a.detail.as_deref().unwrap_or_default());
            Row {
                at: format_utc(a.at),
                ago: ago(a.at, now_ms()),
                actor: actor_shown(&a.actor),
                action: a.action.replace('_', " "),
                connection: a.connection_id,
                detail: shown.sentence,
                answer: shown.detail,
            }
        })
        .collect()
}

/// The stored actor (`admin:ops@example.com`, `api:billing`, `cli`) as the console shows it.
pub fn actor_shown(actor: &str) -> String {
    match actor.split_once(':') {
        Some(("admin", email)) => email.to_owned(),
        Some(("api", name)) => format!("API key {name}"),
        _ if actor == "cli" => "command line".to_owned(),
        _ => actor.to_owned(),
    }
}

#[tracing::instrument(skip_all)]
async fn audit(
    admin: AdminUser,
    query: web::Query<Query>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let entries = state.store.audit_entries(None, query.before, PAGE + 1).await?;
    let older = (entries.len() as i64 > PAGE).then(|| entries[PAGE as usize - 1].id);
    let rows = rows(entries.into_iter().take(PAGE as usize).collect());
    render(AuditPage { nav: admin.nav("audit"), rows, older })
}

#[cfg(test)]
mod tests {
    use super::actor_shown;

    #[test]
    fn actors_read_as_people_know_them() {
        assert_eq!(actor_shown("admin:ops@example.com"), "ops@example.com");
        assert_eq!(actor_shown("api:billing"), "API key billing");
        assert_eq!(actor_shown("cli"), "command line");
        assert_eq!(actor_shown("end-user"), "end-user");
        assert_eq!(actor_shown("worker:a:b"), "worker:a:b");
    }
}
