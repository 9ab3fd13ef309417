//! Client-credentials connections in the console: add, edit (the secret is write-only), delete after
//! a confirmation, and "test connection" (fetch a token now and say what happened).

use actix_web::{web, HttpResponse};
use askama::Template;
use secrecy::SecretString;
use serde::Deserialize;

use super::{
    connections::{load, parse_id},
    redirect, render, when, AdminUser, CsrfForm, FlashKind, Nav,
};
use crate::{
    client_credentials::{AuthStyle, CredentialsInput, Settings},
    domain::Provider,
    error::AppError,
    state::AppState,
    time::now_ms,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/connections/new", web::get().to(new_form))
        .route("/connections/new", web::post().to(create))
        .route("/connections/{id}/edit", web::get().to(edit_form))
        .route("/connections/{id}/edit", web::post().to(update))
        .route("/connections/{id}/delete", web::get().to(confirm_delete))
        .route("/connections/{id}/delete", web::post().to(delete))
        .route("/connections/{id}/test", web::post().to(test));
}

/// The form's fields; everything is text, validated by the provider's preset.
#[derive(Deserialize, Default, Clone)]
pub struct CredentialsForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    client_secret: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    audience: String,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    environment: String,
    #[serde(default)]
    token_url: String,
    #[serde(default)]
    auth: String,
    #[serde(default)]
    api_url: String,
}

fn opt(s: &str) -> Option<String> {
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
}

impl CredentialsForm {
    fn input(&self) -> Result<(Provider, CredentialsInput), Invalid> {
        let provider = Provider::parse(&self.provider).map_err(|e| Invalid("provider", e.to_string()))?;
        let auth = match self.auth.trim() {
            "" => None,
            a => Some(AuthStyle::parse(a).map_err(|e| Invalid("auth", e.to_string()))?),
        };
        Ok((
            provider,
            CredentialsInput {
                client_id: self.client_id.clone(),
                scope: opt(&self.scope),
                audience: opt(&self.audience),
                domain: opt(&self.domain),
                environment: opt(&self.environment),
                token_url: opt(&self.token_url),
                auth,
                api_url: opt(&self.api_url),
            },
        ))
    }
}

#[derive(Template)]
#[template(path = "admin/credentials_form.html")]
struct FormPage {
    nav: Nav,
    title: String,
    action: String,
    editing: bool,
    f: CredentialsForm,
    error: Option<String>,
    /// The field the error is about (shown beside it), or empty for the whole form.
    error_field: &'static str,
    providers: Vec<(&'static str, &'static str)>,
    limits: &'static crate::domain::limits::Limits,
}

impl FormPage {
    /// Whether the error is shown beside its field; if not, it goes above the form.
    fn field_has_slot(&self) -> bool {
        ["name", "client_id", "client_secret", "scope", "environment", "domain", "token_url", "auth", "api_url"]
            .contains(&self.error_field)
    }

    /// The provider as people know it (the form carries its id).
    fn provider_label(&self) -> &'static str {
        Provider::parse(&self.f.provider).map(|p| p.label()).unwrap_or("unknown")
    }
}

fn providers() -> Vec<(&'static str, &'static str)> {
    Provider::ALL.iter().filter(|p| **p != Provider::SnapInspect).map(|p| (p.as_str(), p.label())).collect()
}

#[tracing::instrument(skip_all)]
async fn new_form(admin: AdminUser) -> Result<HttpResponse, AppError> {
    render(FormPage {
        nav: admin.nav("connections"),
        title: "Add a client-credentials connection".into(),
        action: "/admin/connections/new".into(),
        editing: false,
        f: CredentialsForm { provider: "snapdocs".into(), ..Default::default() },
        error: None,
        error_field: "",
        providers: providers(),
        limits: &crate::domain::limits::LIMITS,
    })
}

/// What is wrong with a submitted form, and the field it is about ("" for the whole form).
struct Invalid(&'static str, String);

impl From<String> for Invalid {
    fn from(message: String) -> Self {
        Invalid("", message)
    }
}

/// A preset's complaint, beside the field it is about, in its own plain words (no CLI flags).
impl From<crate::client_credentials::PresetError> for Invalid {
    fn from(e: crate::client_credentials::PresetError) -> Self {
        Invalid(e.field, e.message)
    }
}

fn form_again(
    admin: &AdminUser,
    mut f: CredentialsForm,
    action: String,
    editing: bool,
    error: impl Into<Invalid>,
) -> Result<HttpResponse, AppError> {
    let Invalid(error_field, error) = error.into();
    // The secret is never sent back, not even what was just typed.
    f.client_secret.clear();
    let mut res = render(FormPage {
        nav: admin.nav("connections"),
        title: if editing { "Edit the connection".into() } else { "Add a client-credentials connection".into() },
        action,
        editing,
        f,
        error: Some(error),
        error_field,
        providers: providers(),
        limits: &crate::domain::limits::LIMITS,
    })?;
    *res.status_mut() = actix_web::http::StatusCode::BAD_REQUEST;
    Ok(res)
}

#[tracing::instrument(skip_all)]
async fn create(
    admin: AdminUser,
    form: web::Form<CredentialsForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    admin.check_csrf(&form.csrf)?;
    let f = form.into_inner();
    let action = "/admin/connections/new".to_owned();
    let settings = match f.checked(&state) {
        Ok(s) => s,
        Err(e) => return form_again(&admin, f, action, false, e),
    };
    if f.client_secret.is_empty() {
        return form_again(&admin, f, action, false, Invalid("client_secret", "the client secret is required".into()));
    }
    let secret = SecretString::from(f.client_secret.clone());
    let id =
        state.store.add_credentials_connection(f.name.trim(), &settings, &secret, now_ms(), &admin.actor()).await?;
    admin.flash(FlashKind::Ok, "Added. Use \"Test connection\" to fetch a first token.");
    Ok(redirect(&format!("/admin/connections/{id}")))
}

#[tracing::instrument(skip_all, fields(connection_id = %id))]
async fn edit_form(
    admin: AdminUser,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let id = parse_id(&id)?;
    let c = load(&state, &id).await?;
    if c.provider == Provider::SnapInspect {
        return Err(AppError::conflict(
            "not_editable",
            "SnapInspect connections are made by the Connect with SnapInspect button, not edited here.",
        ));
    }
    let stored_api_url = c.api_url.clone();
    let mut f = CredentialsForm {
        provider: c.provider.as_str().into(),
        name: c.name,
        client_id: c.client_id.unwrap_or_default(),
        scope: c.scope.unwrap_or_default(),
        audience: c.audience.unwrap_or_default(),
        domain: c.domain.unwrap_or_default(),
        environment: c.environment.unwrap_or_default(),
        token_url: c.token_url.unwrap_or_default(),
        auth: c.auth_style.unwrap_or_default(),
        ..Default::default()
    };
    // The API URL is shown only when it is not the preset's, so a change of environment moves it.
    let preset = f.input().ok().and_then(|(p, i)| i.resolve(p).ok()).and_then(|s| s.api_url);
    f.api_url = stored_api_url.filter(|u| Some(u) != preset.as_ref()).unwrap_or_default();
    render(FormPage {
        nav: admin.nav("connections"),
        title: "Edit the connection".into(),
        action: format!("/admin/connections/{id}/edit"),
        editing: true,
        f,
        error: None,
        error_field: "",
        providers: providers(),
        limits: &crate::domain::limits::LIMITS,
    })
}

#[tracing::instrument(skip_all, fields(connection_id = %id))]
async fn update(
    admin: AdminUser,
    id: web::Path<String>,
    form: web::Form<CredentialsForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    admin.check_csrf(&form.csrf)?;
    let id = parse_id(&id)?;
    let c = load(&state, &id).await?;
    let mut f = form.into_inner();
    // The provider is fixed once a connection exists.
    f.provider = c.provider.as_str().into();
    let action = format!("/admin/connections/{id}/edit");
    let settings = match f.checked(&state) {
        Ok(s) => s,
        Err(e) => return form_again(&admin, f, action, true, e),
    };
    let secret = (!f.client_secret.is_empty()).then(|| SecretString::from(f.client_secret.clone()));
    // The stored secret may only keep going where it went before: whoever changes where it goes
    // must know it.
    let stored = state.store.credentials(&id).await?.map(|c| c.settings);
    if secret.is_none() && !stored.is_some_and(|old| old.same_destination(&settings)) {
        return form_again(
            &admin,
            f,
            action,
            true,
            Invalid(
                "client_secret",
                "enter the client secret again: the token URL, API URL, client id, authentication, domain or environment changed, and the stored secret and its tokens are only sent where they were sent before".into(),
            ),
        );
    }
    state
        .store
        .update_credentials_connection(&id, f.name.trim(), &settings, secret.as_ref(), now_ms(), &admin.actor())
        .await?;
    state.tokens.forget(&id);
    admin.flash(FlashKind::Ok, "Saved. The next request fetches a token with the new settings.");
    Ok(redirect(&format!("/admin/connections/{id}")))
}

/// The form's error when the token URL is an address outbound calls may not reach (a name is
/// checked again, on what it resolves to, at every call).
fn blocked_token_url(state: &AppState, settings: &Settings) -> Option<Invalid> {
    let policy = state.settings.token_url_policy();
    if let Ok(Some(api)) = settings.resolved_api_url() {
        if let Err(blocked) = policy.check_url(&api) {
            return Some(Invalid("api_url", format!("this API URL cannot be used: {blocked}")));
        }
    }
    let url = settings.resolved_token_url().ok()?;
    let blocked = policy.check_url(&url).err()?;
    Some(Invalid("token_url", format!("this token URL cannot be used: {blocked}")))
}

impl CredentialsForm {
    /// What adding and editing both check, in this order: the provider's rules (each field within
    /// its bound), the token URL against the outbound guard, a name and the secret's length.
    fn checked(&self, state: &AppState) -> Result<Settings, Invalid> {
        let settings = self.input().and_then(|(p, i)| i.resolve(p).map_err(Invalid::from))?;
        if let Some(e) = blocked_token_url(state, &settings) {
            return Err(e);
        }
        crate::domain::limits::connection_name(&self.name).map_err(|e| Invalid("name", e.to_string()))?;
        let max_secret = crate::domain::limits::LIMITS.client_secret;
        if self.client_secret.chars().count() > max_secret {
            return Err(Invalid("client_secret", format!("the client secret is longer than {max_secret} characters")));
        }
        Ok(settings)
    }
}

#[derive(Template)]
#[template(path = "admin/confirm_delete.html")]
struct ConfirmPage {
    nav: Nav,
    id: String,
    name: String,
}

#[tracing::instrument(skip_all, fields(connection_id = %id))]
async fn confirm_delete(
    admin: AdminUser,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let id = parse_id(&id)?;
    let c = load(&state, &id).await?;
    refuse_snapinspect(&c)?;
    render(ConfirmPage { nav: admin.nav("connections"), id: id.to_string(), name: c.name })
}

/// Only client-credentials connections are deleted here: a SnapInspect connection is
/// disconnected (its history and reconnect links stay meaningful), never deleted from the console.
fn refuse_snapinspect(c: &crate::store::Connection) -> Result<(), AppError> {
    match c.deletion_refusal() {
        Some(why) => {
            Err(AppError::conflict("not_deletable", format!("{why}: use Disconnect on the connection's page.")))
        }
        None => Ok(()),
    }
}

#[tracing::instrument(skip_all, fields(connection_id = %id))]
async fn delete(
    admin: AdminUser,
    id: web::Path<String>,
    form: web::Form<CsrfForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    admin.check_csrf(&form.csrf)?;
    let id = parse_id(&id)?;
    if let Some(c) = state.store.connection(&id).await? {
        refuse_snapinspect(&c)?;
    }
    if state.store.delete_connection(&id, now_ms(), &admin.actor()).await? {
        state.tokens.forget(&id);
        admin.flash(FlashKind::Ok, "Deleted, with its secret and token.");
        Ok(redirect("/admin/connections"))
    } else {
        Err(AppError::not_found("There is no connection with that id; was it already deleted?"))
    }
}

#[tracing::instrument(skip_all, fields(connection_id = %id))]
async fn test(
    admin: AdminUser,
    id: web::Path<String>,
    form: web::Form<CsrfForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    admin.check_csrf(&form.csrf)?;
    let id = parse_id(&id)?;
    let c = load(&state, &id).await?;
    match state.tokens.refresh(&id, &admin.actor()).await {
        Ok(t) => admin.flash(
            FlashKind::Ok,
            match t.expires_at {
                Some(exp) => {
                    format!("It works: {} issued a token, valid until {}.", c.provider.label(), when(Some(exp)))
                }
                None => format!("It works: {} issued a token.", c.provider.label()),
            },
        ),
        Err(e) => admin.flash(FlashKind::Bad, format!("{} did not issue a token: {e}", c.provider.label())),
    }
    Ok(redirect(&format!("/admin/connections/{id}")))
}
