//! The audit log: every admin action, connect, disconnect, exchange and failure, newest first,
//! paginated by id.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::{render, when, AdminUser, Nav};
use crate::{error::AppError, startup::AppState};

const PAGE: i64 = 100;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/audit", web::get().to(audit));
}

pub struct Row {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub connection: Option<String>,
    pub detail: String,
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
        .map(|a| Row {
            at: when(Some(a.at)),
            actor: a.actor,
            action: a.action.replace('_', " "),
            connection: a.connection_id,
            detail: a.detail.unwrap_or_default(),
        })
        .collect()
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
