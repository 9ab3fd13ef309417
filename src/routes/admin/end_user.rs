//! Giving a connection to an end user of the organisation's app, from its console page: the only
//! way a connection changes hands (an end user's own flow never does), and audited.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::{connections::parse_id, redirect, AdminUser, FlashKind};
use crate::{domain::connect_session::EndUser, error::AppError, state::AppState, time::now_ms};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/connections/{id}/end-user", web::post().to(assign));
}

#[derive(Deserialize)]
struct EndUserForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    end_user_id: String,
    #[serde(default)]
    end_user_email: String,
    #[serde(default)]
    display_name: String,
}

/// An empty field is no value.
fn given(v: String) -> Option<String> {
    (!v.trim().is_empty()).then_some(v)
}

#[tracing::instrument(skip_all, fields(connection_id = %id))]
async fn assign(
    admin: AdminUser,
    id: web::Path<String>,
    form: web::Form<EndUserForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    admin.check_csrf(&form.csrf)?;
    let id = parse_id(&id)?;
    let f = form.into_inner();
    let user = match EndUser::parse(f.end_user_id, given(f.end_user_email), given(f.display_name), None) {
        Ok(u) => u,
        Err(e) => {
            admin.flash(FlashKind::Bad, format!("Not changed: {e}."));
            return Ok(redirect(&format!("/admin/connections/{id}")));
        }
    };
    if !state.store.assign_end_user(&id, &user, now_ms(), &admin.actor()).await? {
        return Err(AppError::not_found("There is no connection with that id."));
    }
    admin.flash(FlashKind::Ok, format!("The connection now belongs to end user {}.", user.id));
    Ok(redirect(&format!("/admin/connections/{id}")))
}
