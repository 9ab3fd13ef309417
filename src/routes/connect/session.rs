//! A connect link's start (`GET /connect/s/{token}`: single use, 30 minutes): the session it names
//! begins the flow, and a link that is unknown, used or expired gets a page that says so.

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};

use super::result::link_problem_page;
use crate::{error::AppError, state::AppState, store::SessionRejection, time::now_ms};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/connect/s/{token}", web::get().to(open));
}

#[tracing::instrument(skip_all)]
async fn open(
    req: HttpRequest,
    token: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    if state.snapinspect.is_none() {
        return Err(super::not_configured());
    }
    // Before the link is used up, so a person who is slowed down can still use it afterwards.
    super::check_connect_limit(&req, &state)?;
    let opened = state.store.open_connect_session(&crate::domain::OpaqueToken::hash_of(&token), now_ms()).await?;
    let session = match opened {
        Ok(s) => s,
        Err(rejection) => {
            tracing::info!(?rejection, "connect link refused");
            let (status, reason) = match rejection {
                SessionRejection::Unknown => (
                    StatusCode::NOT_FOUND,
                    "This connect link is not one we issued. Please go back to the app that sent you and start again there.",
                ),
                SessionRejection::AlreadyUsed => (
                    StatusCode::GONE,
                    "This connect link has already been used: each link works once. Please go back to the app that sent you for a new one.",
                ),
                SessionRejection::Expired => (
                    StatusCode::GONE,
                    "This connect link has expired: links work for 30 minutes. Please go back to the app that sent you for a new one.",
                ),
            };
            return link_problem_page(&state, status, "This connect link cannot be used", reason);
        }
    };
    tracing::info!(session_id = %session.id, reconnect = session.connection_id.is_some(), "connect link opened");
    super::flow::begin(&req, &state, Some(&session.id)).await
}
