//! "Get reconnect link" on a connection that needs reconnecting: a single-use link (30 minutes)
//! that an admin sends to the customer, whose completion repairs that same connection.

use actix_web::{web, HttpResponse};
use askama::Template;

use super::{
    connections::{load, parse_id},
    render, when, AdminUser, CsrfForm, Nav,
};
use crate::{error::AppError, state::AppState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/connections/{id}/reconnect-link", web::post().to(create));
}

#[derive(Template)]
#[template(path = "admin/reconnect_link.html")]
struct LinkPage {
    nav: Nav,
    id: String,
    name: String,
    url: String,
    expires: String,
}

#[tracing::instrument(skip_all, fields(connection_id = %id))]
async fn create(
    admin: AdminUser,
    id: web::Path<String>,
    form: web::Form<CsrfForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    admin.check_csrf(&form.csrf)?;
    let id = parse_id(&id)?;
    let c = load(&state, &id).await?;
    if let Some(why) = c.reconnect_refusal() {
        return Err(AppError::conflict("cannot_reconnect", why));
    }
    let issued = state
        .store
        .issue_connect_session(&state.settings.public_url, &c.end_user(), None, Some(&id), &admin.actor())
        .await?;
    let mut res = render(LinkPage {
        nav: admin.nav("connections"),
        id: id.as_str().to_owned(),
        name: c.name,
        url: issued.connect_url,
        expires: when(Some(issued.expires_at)),
    })?;
    // The link is a credential for 30 minutes: never cached.
    res.headers_mut()
        .insert(actix_web::http::header::CACHE_CONTROL, actix_web::http::header::HeaderValue::from_static("no-store"));
    Ok(res)
}
