//! The console's "Check now" on a connection's page: runs the connection's health check at once,
//! says what it found, and the page shows the recorded outcome.

use actix_web::{web, HttpResponse};

use super::{
    connections::{load, parse_id},
    redirect, AdminUser, CsrfForm, FlashKind,
};
use crate::{error::AppError, state::AppState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/connections/{id}/check", web::post().to(check));
}

#[tracing::instrument(skip_all, fields(connection_id = %id))]
async fn check(
    admin: AdminUser,
    id: web::Path<String>,
    form: web::Form<CsrfForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    admin.check_csrf(&form.csrf)?;
    let id = parse_id(&id)?;
    load(&state, &id).await?;
    match state.checker.check_now(&id).await? {
        Some(outcome) if outcome.passed() => admin.flash(FlashKind::Ok, "Checked: ok, the connection works."),
        Some(outcome) => admin.flash(FlashKind::Bad, format!("Checked: {}", outcome.describe())),
        None => return Err(AppError::not_found("There is no connection with that id.")),
    }
    Ok(redirect(&format!("/admin/connections/{id}")))
}
