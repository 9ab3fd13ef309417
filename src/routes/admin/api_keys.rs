//! API keys in the console: the list, creating one (shown once, on the page that follows), and
//! revoking one (after a confirmation page: a revoked key cannot be restored).

use actix_web::{web, HttpResponse};
use askama::Template;
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::{redirect, render, when, AdminUser, CsrfForm, FlashKind, Nav};
use crate::{auth::api_keys::KeyScope, error::AppError, state::AppState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api-keys", web::get().to(list))
        .route("/api-keys", web::post().to(create))
        .route("/api-keys/{id}/revoke", web::get().to(confirm_revoke))
        .route("/api-keys/{id}/revoke", web::post().to(revoke));
}

pub struct Row {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub created: String,
    pub last_used: String,
    pub revoked: Option<String>,
    /// Which connections, and whether it may refresh.
    pub scope: String,
}

#[derive(Template)]
#[template(path = "admin/api_keys.html")]
struct ListPage {
    nav: Nav,
    rows: Vec<Row>,
    /// A key just created: shown this once.
    new_key: Option<(String, String)>,
}

async fn page(
    admin: &AdminUser,
    state: &AppState,
    new_key: Option<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let rows = state.api_keys.list().await?.into_iter().map(row).collect();
    render(ListPage { nav: admin.nav("api-keys"), rows, new_key })
}

fn row(k: crate::store::ApiKey) -> Row {
    Row {
        id: k.id,
        name: k.name,
        prefix: k.prefix,
        created: when(Some(k.created_at)),
        last_used: when(k.last_used_at),
        revoked: k.revoked_at.map(|t| when(Some(t))),
        scope: format!(
            "{}{}",
            k.connection_scope.as_deref().map_or("all connections".to_owned(), |c| c.replace(',', ", ")),
            if k.read_only { "; read-only" } else { "" }
        ),
    }
}

#[derive(Template)]
#[template(path = "admin/confirm_revoke.html")]
struct ConfirmPage {
    nav: Nav,
    k: Row,
}

#[tracing::instrument(skip_all)]
async fn confirm_revoke(
    admin: AdminUser,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let key = state.api_keys.list().await?.into_iter().find(|k| k.id == *id && k.revoked_at.is_none());
    let Some(key) = key else {
        return Err(AppError::not_found("There is no active API key with that id; was it already revoked?"));
    };
    render(ConfirmPage { nav: admin.nav("api-keys"), k: row(key) })
}

#[tracing::instrument(skip_all)]
async fn list(admin: AdminUser, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    page(&admin, &state, None).await
}

#[derive(Deserialize)]
struct CreateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    /// Comma-separated connection ids; blank: every connection.
    #[serde(default)]
    connections: String,
    /// A checkbox: present when ticked.
    #[serde(default)]
    read_only: Option<String>,
}

#[tracing::instrument(skip_all)]
async fn create(
    admin: AdminUser,
    form: web::Form<CreateForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    admin.check_csrf(&form.csrf)?;
    if form.name.trim().is_empty() || form.name.trim().len() > 100 {
        admin.flash(
            FlashKind::Bad,
            "Give the key a name of 1 to 100 characters, e.g. the application that will use it.",
        );
        return Ok(redirect("/admin/api-keys"));
    }
    let scope = match KeyScope::parse_connections(&form.connections) {
        Ok(connections) => KeyScope { connections, read_only: form.read_only.is_some() },
        Err(e) => {
            admin.flash(FlashKind::Bad, format!("Not created: {e}."));
            return Ok(redirect("/admin/api-keys"));
        }
    };
    let (id, key) = match state.api_keys.create_scoped(&form.name, &scope, &admin.actor()).await {
        Ok(made) => made,
        Err(e) if e.to_string().starts_with("there is no connection") => {
            admin.flash(FlashKind::Bad, format!("Not created: {e}."));
            return Ok(redirect("/admin/api-keys"));
        }
        Err(e) => return Err(e.into()),
    };
    // Rendered on this response only (not stored, not redirected through the session), never cached.
    page(&admin, &state, Some((id, key.expose_secret().to_owned()))).await
}

#[tracing::instrument(skip_all)]
async fn revoke(
    admin: AdminUser,
    id: web::Path<String>,
    form: web::Form<CsrfForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    admin.check_csrf(&form.csrf)?;
    if state.api_keys.revoke(&id, &admin.actor()).await? {
        admin.flash(FlashKind::Ok, format!("Revoked {id}: it no longer opens the API."));
    } else {
        admin.flash(FlashKind::Bad, "That key does not exist or was already revoked.");
    }
    Ok(redirect("/admin/api-keys"))
}
