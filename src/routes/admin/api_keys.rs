//! API keys in the console: the list, creating one (shown once, on the page that follows), and
//! revoking one (after a confirmation page: a revoked key cannot be restored).

use actix_web::{web, HttpResponse};
use askama::Template;
use secrecy::ExposeSecret;

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
    /// The form: what was typed (kept after a refusal), and why it was refused.
    form: Typed,
    choices: Vec<Choice>,
    error: Option<String>,
}

/// What the create form holds.
#[derive(Default)]
struct Typed {
    name: String,
    connections: Vec<String>,
    read_only: bool,
}

/// A connection a key may be limited to, as a checkbox.
struct Choice {
    id: String,
    label: String,
    checked: bool,
}

async fn page(
    admin: &AdminUser,
    state: &AppState,
    new_key: Option<(String, String)>,
    form: Typed,
    error: Option<String>,
) -> Result<HttpResponse, AppError> {
    let rows = state.api_keys.list().await?.into_iter().map(row).collect();
    let choices = state
        .store
        .connections()
        .await?
        .into_iter()
        .map(|c| Choice {
            checked: form.connections.iter().any(|id| id == c.id.as_str()),
            label: format!("{} · {} · {}", c.name, c.provider.label(), c.status.as_str()),
            id: c.id.to_string(),
        })
        .collect();
    render(ListPage { nav: admin.nav("api-keys"), rows, new_key, form, choices, error })
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
    page(&admin, &state, None, Typed::default(), None).await
}

/// The create form, read pair by pair: `connections` comes once per ticked box (each value may
/// also be a comma-separated list, as the form took before). The pairs come through `web::Form`,
/// so the console's form limit and its 413 page apply as to every other form.
fn read_form(pairs: Vec<(String, String)>) -> (String, Typed) {
    let (mut csrf, mut typed) = (String::new(), Typed::default());
    for (k, v) in pairs {
        match k.as_str() {
            "csrf" => csrf = v,
            "name" => typed.name = v,
            "connections" => {
                typed.connections.extend(v.split(',').map(str::trim).filter(|id| !id.is_empty()).map(str::to_owned))
            }
            "read_only" => typed.read_only = true,
            _ => {}
        }
    }
    (csrf, typed)
}

#[tracing::instrument(skip_all)]
async fn create(
    admin: AdminUser,
    pairs: web::Form<Vec<(String, String)>>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let (csrf, form) = read_form(pairs.into_inner());
    admin.check_csrf(&csrf)?;
    // A refusal re-draws the form with what was typed, and says why beside it.
    let refuse = |form: Typed, why: String| async {
        let mut res = page(&admin, &state, None, form, Some(why)).await?;
        *res.status_mut() = actix_web::http::StatusCode::BAD_REQUEST;
        Ok::<_, AppError>(res)
    };
    if crate::domain::limits::api_key_name(&form.name).is_err() {
        let max = crate::domain::limits::LIMITS.api_key_name;
        let why = format!("Give the key a name of 1 to {max} characters, e.g. the application that will use it.");
        return refuse(form, why).await;
    }
    let scope = match KeyScope::parse_connections(&form.connections.join(",")) {
        Ok(connections) => KeyScope { connections, read_only: form.read_only },
        Err(e) => return refuse(form, format!("Not created: {e}.")).await,
    };
    let (id, key) = match state.api_keys.create_scoped(&form.name, &scope, &admin.actor()).await {
        Ok(made) => made,
        Err(e) if e.to_string().starts_with("there is no connection") => {
            return refuse(form, format!("Not created: {e}.")).await
        }
        Err(e) => return Err(e.into()),
    };
    // Rendered on this response only (not stored, not redirected through the session), never cached.
    page(&admin, &state, Some((id, key.expose_secret().to_owned())), Typed::default(), None).await
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
