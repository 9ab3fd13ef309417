//! The admin console (`/admin`): who may see it (the [`AdminUser`] extractor: a live session of an
//! existing admin), CSRF on every form, flash messages, and the page groups in the submodules.

mod api_keys;
mod audit;
mod checks;
mod connection_page;
mod connections;
mod credentials;
mod dashboard;
mod end_user;
mod endpoint_form;
mod endpoints;
mod error_page;
mod events;
mod login;
mod provider_error;
mod reconnect_link;

use std::future::Future;
use std::pin::Pin;

use actix_session::{Session, SessionExt};
use actix_web::{
    dev::Payload,
    http::{header, Method, StatusCode},
    web, FromRequest, HttpRequest, HttpResponse, ResponseError,
};
use serde::{Deserialize, Serialize};

use crate::{error::AppError, state::AppState, time::now_ms};

const ADMIN_ID: &str = crate::auth::session::SIGNED_IN;
const ADMIN_EPOCH: &str = "admin_epoch";
const LOGIN_AT: &str = "login_at";
const CSRF_SEED: &str = "csrf_seed";
const FLASH: &str = "flash";
/// However active, a sign-in lasts at most this long.
const ABSOLUTE_TIMEOUT_MS: i64 = 12 * 3600 * 1000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin")
            .wrap(actix_web::middleware::ErrorHandlers::new().default_handler(error_page::render))
            .app_data(web::FormConfig::default().limit(crate::routes::BODY_LIMIT).error_handler(|e, _| {
                match e {
                    actix_web::error::UrlencodedError::Overflow { .. } => AppError::PayloadTooLarge {
                        code: "payload_too_large",
                        message: "The form is larger than any form here can be.".into(),
                    }
                    .into(),
                    e => AppError::bad_request(format!("The form could not be read: {e}")).into(),
                }
            }))
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                // Not serde's words ("Query deserialize error"): the cause is enough.
                let cause = match e {
                    actix_web::error::QueryPayloadError::Deserialize(cause) => cause.to_string(),
                    other => other.to_string(),
                };
                AppError::bad_request(format!("The address has a parameter that could not be read ({cause}).")).into()
            }))
            .configure(login::configure)
            .configure(dashboard::configure)
            // Before connections: `/connections/new` must not be taken for a connection id.
            .configure(credentials::configure)
            .configure(connections::configure)
            .configure(connection_page::configure)
            .configure(checks::configure)
            .configure(reconnect_link::configure)
            .configure(end_user::configure)
            .configure(api_keys::configure)
            .configure(events::configure)
            .configure(endpoints::configure)
            .configure(audit::configure)
            // An address under /admin that is no page: the console's own 404, not an empty one.
            .default_service(web::to(no_such_page)),
    );
}

/// The scope's default service, which actix also uses for a known address asked with a method it
/// does not take: that is a 405 (drawn by [`error_page::render`]), not "no such page".
async fn no_such_page(req: actix_web::HttpRequest) -> Result<HttpResponse, AppError> {
    if req.match_pattern().is_some() {
        return Ok(HttpResponse::MethodNotAllowed().finish());
    }
    Err(AppError::not_found("There is no such page in the console. Check the address, or start from the dashboard."))
}

/// A signed-in admin, for handlers that require one.
pub struct AdminUser {
    pub id: i64,
    pub email: String,
    csrf_token: String,
    session: Session,
}

/// No (valid) admin session: pages redirect to the sign-in page, anything else is a 401.
#[derive(Debug)]
pub struct NotSignedIn {
    get: bool,
    next: String,
}

impl std::fmt::Display for NotSignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sign in to use the admin console")
    }
}

impl ResponseError for NotSignedIn {
    fn status_code(&self) -> StatusCode {
        if self.get {
            StatusCode::SEE_OTHER
        } else {
            StatusCode::UNAUTHORIZED
        }
    }

    fn error_response(&self) -> HttpResponse {
        if self.get {
            let target = format!(
                "/admin/login?next={}",
                url::form_urlencoded::byte_serialize(self.next.as_bytes()).collect::<String>()
            );
            HttpResponse::SeeOther().insert_header((header::LOCATION, target)).finish()
        } else {
            AppError::unauthorized("Your session has ended. Sign in again, then repeat what you were doing.")
                .error_response()
        }
    }
}

impl FromRequest for AdminUser {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let not_signed_in = || NotSignedIn {
                get: matches!(*req.method(), Method::GET | Method::HEAD),
                next: match req.query_string() {
                    "" => req.path().to_owned(),
                    q => format!("{}?{q}", req.path()),
                },
            };
            let session = req.get_session();
            let state = req.app_data::<web::Data<AppState>>().expect("app state is registered").clone();
            let id = session.get::<i64>(ADMIN_ID).ok().flatten();
            let epoch = session.get::<i64>(ADMIN_EPOCH).ok().flatten();
            let login_at = session.get::<i64>(LOGIN_AT).ok().flatten().unwrap_or(0);
            let seed = session.get::<String>(CSRF_SEED).ok().flatten();
            let (Some(id), Some(epoch), Some(seed)) = (id, epoch, seed) else {
                return Err(not_signed_in().into());
            };
            let admin = state.store.admin_by_id(id).await.map_err(AppError::Internal)?;
            match admin {
                Some(a) if a.session_epoch == epoch && now_ms() - login_at < ABSOLUTE_TIMEOUT_MS => {
                    Ok(AdminUser { id: a.id, email: a.email, csrf_token: state.csrf.token(&seed), session })
                }
                _ => {
                    // Deleted, password reset, or signed in too long ago: this session is over.
                    session.purge();
                    Err(not_signed_in().into())
                }
            }
        })
    }
}

impl AdminUser {
    /// Who did it, for the audit log.
    pub fn actor(&self) -> String {
        format!("admin:{}", self.email)
    }

    /// Check a form's CSRF token (a 403 page if it is wrong or missing).
    pub fn check_csrf(&self, given: &str) -> Result<(), AppError> {
        if !given.is_empty() && bool::from(subtle::ConstantTimeEq::ct_eq(self.csrf_token.as_bytes(), given.as_bytes()))
        {
            Ok(())
        } else {
            Err(AppError::Forbidden {
                code: "csrf",
                message:
                    "This form has expired or did not come from this console. Go back, reload the page and try again."
                        .into(),
            })
        }
    }

    /// Show a message on the next page.
    pub fn flash(&self, kind: FlashKind, message: impl Into<String>) {
        let _ = self.session.insert(FLASH, Flash { kind, message: message.into() });
    }

    /// The header, navigation and flash every admin page shows.
    pub fn nav(&self, section: &'static str) -> Nav {
        // Only touch the session when there is a flash: a removal marks it changed, and a changed
        // session is written back.
        let flash = match self.session.get::<Flash>(FLASH) {
            Ok(None) => None,
            _ => self.session.remove_as::<Flash>(FLASH).and_then(Result::ok),
        };
        Nav { email: self.email.clone(), csrf: self.csrf_token.clone(), section, flash }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum FlashKind {
    Ok,
    Bad,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flash {
    pub kind: FlashKind,
    pub message: String,
}

impl Flash {
    pub fn class(&self) -> &'static str {
        match self.kind {
            FlashKind::Ok => "ok",
            FlashKind::Bad => "bad",
        }
    }
}

/// What the admin layout needs.
pub struct Nav {
    pub email: String,
    pub csrf: String,
    pub section: &'static str,
    pub flash: Option<Flash>,
}

impl Nav {
    /// `aria-current="page"` for the current section's link.
    pub fn current(&self, section: &str) -> &'static str {
        if self.section == section {
            "page"
        } else {
            "false"
        }
    }
}

/// Render an admin page: HTML, never cached.
pub fn render(page: impl askama::Template) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(page.render().map_err(anyhow::Error::from)?))
}

pub fn redirect(to: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, to)).finish()
}

/// A form that only carries the CSRF token.
#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// Times as the console shows them: UTC, and how long ago.
pub fn when(ms: Option<i64>) -> String {
    match ms {
        Some(ms) => format!("{} ({})", crate::time::format_utc(ms), crate::time::ago(ms, now_ms())),
        None => "never".into(),
    }
}
