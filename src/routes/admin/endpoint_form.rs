//! Adding and editing an endpoint in the console (bad input comes back with the message beside the
//! field), and the page that shows a new signing secret, once.

use actix_web::{http::StatusCode, web, HttpResponse};
use askama::Template;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{redirect, render, AdminUser, FlashKind, Nav};
use crate::{
    delivery::manage::{self, EndpointInput, ManageError},
    error::AppError,
    state::AppState,
    store::Endpoint,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Before `/endpoints/{id}`: `new` is not an endpoint id.
    cfg.route("/endpoints/new", web::get().to(new_form))
        .route("/endpoints/new", web::post().to(create))
        .route("/endpoints/{id}/edit", web::get().to(edit_form))
        .route("/endpoints/{id}/edit", web::post().to(update));
}

#[derive(Deserialize, Default, Clone)]
pub struct EndpointForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    url: String,
    /// Comma-separated; blank: every type.
    #[serde(default)]
    events: String,
    #[serde(default)]
    description: String,
    /// The event types a warning was shown for: saving them again as they are means "keep them".
    #[serde(default)]
    warned: String,
}

impl EndpointForm {
    fn input(&self) -> EndpointInput {
        EndpointInput::with_csv(&self.url, &self.events, &self.description)
    }
}

#[derive(Template)]
#[template(path = "admin/endpoint_form.html")]
struct FormPage {
    nav: Nav,
    title: String,
    action: String,
    back: String,
    f: EndpointForm,
    error: Option<String>,
    /// The field the error is about: "url", "events" or "description".
    error_field: &'static str,
    /// About the event types: allowed, but likely to match nothing (shown beside the field).
    warnings: Vec<String>,
    limits: &'static crate::domain::limits::Limits,
}

impl FormPage {
    fn is_error(&self, field: &str) -> bool {
        self.error.is_some() && self.error_field == field
    }
}

fn form_page(
    admin: &AdminUser,
    editing: Option<&str>,
    f: EndpointForm,
    error: Option<(&'static str, String)>,
) -> Result<HttpResponse, AppError> {
    let (title, action, back) = match editing {
        Some(id) => {
            (format!("Edit endpoint {id}"), format!("/admin/endpoints/{id}/edit"), format!("/admin/endpoints/{id}"))
        }
        None => ("Add an endpoint".to_owned(), "/admin/endpoints/new".to_owned(), "/admin/endpoints".to_owned()),
    };
    let failed = error.is_some();
    let (error_field, error) = match error {
        Some((field, message)) => (field, Some(message)),
        None => ("", None),
    };
    let warnings = manage::warnings(&f.input());
    let limits = &crate::domain::limits::LIMITS;
    let page = FormPage { nav: admin.nav("endpoints"), title, action, back, f, error, error_field, warnings, limits };
    let mut res = render(page)?;
    if failed {
        *res.status_mut() = StatusCode::BAD_REQUEST;
    }
    Ok(res)
}

/// The form again with a warning beside the event types, unless it was shown for these very types:
/// an unknown type is allowed (SnapInspect may add types) once the person has seen it named.
fn unconfirmed_warning(
    admin: &AdminUser,
    editing: Option<&str>,
    mut f: EndpointForm,
) -> Option<Result<HttpResponse, AppError>> {
    if manage::warnings(&f.input()).is_empty() || f.warned == f.events {
        return None;
    }
    f.warned = f.events.clone();
    Some(form_page(admin, editing, f, None))
}

/// The form again with the message beside its field, or the error for anything else.
fn refused(
    admin: &AdminUser,
    editing: Option<&str>,
    f: EndpointForm,
    e: ManageError,
) -> Result<HttpResponse, AppError> {
    match e {
        ManageError::Invalid { field, message } => form_page(admin, editing, f, Some((field, message))),
        // Said above the form, which keeps what was typed: after removing another endpoint (or
        // raising the limit), saving again adds it.
        e @ ManageError::TooMany { .. } => {
            let mut res = form_page(admin, editing, f, Some(("", e.to_string())))?;
            *res.status_mut() = StatusCode::CONFLICT;
            Ok(res)
        }
        other => Err(other.into()),
    }
}

#[tracing::instrument(skip_all)]
async fn new_form(admin: AdminUser) -> Result<HttpResponse, AppError> {
    form_page(&admin, None, EndpointForm::default(), None)
}

#[tracing::instrument(skip_all)]
async fn create(
    admin: AdminUser,
    form: web::Form<EndpointForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    admin.check_csrf(&form.csrf)?;
    let f = form.into_inner();
    if let Some(page) = unconfirmed_warning(&admin, None, f.clone()) {
        return page;
    }
    let policy = state.worker.dispatcher().clients().policy();
    match manage::add(&state.store, policy, state.settings.endpoints_max, &f.input(), &admin.actor()).await {
        Ok((id, secret)) => {
            state.endpoints_changed().await;
            let e = manage::load(&state.store, id.as_str()).await?;
            SecretPage::render(&admin, &e, secret, "Events are delivered to it from now on.".into())
        }
        Err(e) => refused(&admin, None, f, e),
    }
}

#[tracing::instrument(skip_all, fields(endpoint_id = %id))]
async fn edit_form(
    admin: AdminUser,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let e = manage::load(&state.store, &id).await?;
    let events = e.event_types.as_slice().join(",");
    // Its stored types were warned about when saved: saving them unchanged asks nothing again.
    let f =
        EndpointForm { url: e.url, warned: events.clone(), events, description: e.description, ..Default::default() };
    form_page(&admin, Some(e.id.as_str()), f, None)
}

#[tracing::instrument(skip_all, fields(endpoint_id = %id))]
async fn update(
    admin: AdminUser,
    id: web::Path<String>,
    form: web::Form<EndpointForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    admin.check_csrf(&form.csrf)?;
    let f = form.into_inner();
    if let Some(page) = unconfirmed_warning(&admin, Some(id.trim()), f.clone()) {
        return page;
    }
    let policy = state.worker.dispatcher().clients().policy();
    match manage::edit(&state.store, policy, &id, &f.input(), &admin.actor()).await {
        Ok(e) => {
            state.endpoints_changed().await;
            admin.flash(FlashKind::Ok, "Saved. Deliveries from now on use the new settings.");
            Ok(redirect(&format!("/admin/endpoints/{}", e.id)))
        }
        Err(e) => refused(&admin, Some(id.trim()), f, e),
    }
}

/// A new signing secret, shown on this response only: not stored in the session, not sent through
/// a redirect, never cached.
#[derive(Template)]
#[template(path = "admin/endpoint_secret.html")]
pub struct SecretPage {
    nav: Nav,
    id: String,
    url: String,
    secret: String,
    note: String,
}

impl SecretPage {
    pub fn render(
        admin: &AdminUser,
        e: &Endpoint,
        secret: SecretString,
        note: String,
    ) -> Result<HttpResponse, AppError> {
        render(SecretPage {
            nav: admin.nav("endpoints"),
            id: e.id.to_string(),
            url: e.url.clone(),
            secret: secret.expose_secret().to_owned(),
            note,
        })
    }
}
