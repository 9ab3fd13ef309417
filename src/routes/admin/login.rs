//! Signing in and out: CSRF even on the sign-in form, Argon2id, throttling per account and per
//! client address (429 with how long to wait), a renewed session id at sign-in, a purged session at
//! sign-out, and failures logged without the password.

use actix_session::Session;
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;
use secrecy::SecretString;
use serde::Deserialize;

use super::{ensure_csrf_seed, redirect, render, AdminUser, CsrfForm, ADMIN_EPOCH, ADMIN_ID, CSRF_SEED, LOGIN_AT};
use crate::{
    auth::{verify_password, Email},
    error::AppError,
    startup::AppState,
    time::now_ms,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/login", web::get().to(login_page))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout));
}

#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage<'a> {
    csrf: String,
    next: &'a str,
    email: &'a str,
    error: Option<&'a str>,
}

#[derive(Deserialize)]
struct LoginQuery {
    #[serde(default)]
    next: String,
}

/// Only a path inside the console: never an open redirect to another site.
fn safe_next(next: &str) -> &str {
    if next.starts_with("/admin") && !next.starts_with("//") && !next.contains('\\') {
        next
    } else {
        "/admin"
    }
}

fn csrf_for(state: &AppState, session: &Session) -> Result<String, AppError> {
    Ok(state.csrf.token(&ensure_csrf_seed(session)?))
}

#[tracing::instrument(skip_all)]
async fn login_page(
    query: web::Query<LoginQuery>,
    state: web::Data<AppState>,
    session: Session,
) -> Result<HttpResponse, AppError> {
    let csrf = csrf_for(&state, &session)?;
    render(LoginPage { csrf, next: safe_next(&query.next), email: "", error: None })
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: String,
}

fn too_many(wait: std::time::Duration) -> AppError {
    let secs = wait.as_secs().max(1);
    AppError::TooManyRequests {
        code: "too_many_sign_ins",
        message: format!("Too many failed sign-ins. Wait {secs} seconds, then try again."),
        retry_after_secs: secs,
    }
}

#[tracing::instrument(skip_all)]
async fn login(
    req: HttpRequest,
    form: web::Form<LoginForm>,
    state: web::Data<AppState>,
    session: Session,
) -> Result<HttpResponse, AppError> {
    let form = form.into_inner();
    let address = crate::routes::client_address(&req);
    if let Err(wait) = state.limits.sign_in.check(&address) {
        state.metrics.rate_limited.inc("sign_in");
        return Err(crate::routes::too_many("rate_limited", "Too many sign-in attempts from your address", wait));
    }
    let seed = session.get::<String>(CSRF_SEED).ok().flatten().unwrap_or_default();
    if seed.is_empty() || !state.csrf.verify(&seed, &form.csrf) {
        return Err(AppError::Forbidden {
            code: "csrf",
            message: "The sign-in form expired. Reload the sign-in page and try again.".into(),
        });
    }
    let email = Email::parse(&form.email);
    let account_key = format!("account:{}", email.as_ref().map(Email::as_str).unwrap_or(form.email.trim()));
    let address_key = format!("address:{address}");
    for key in [&account_key, &address_key] {
        if let Err(wait) = state.login_throttle.check(key) {
            tracing::warn!(address = %address, "sign-in refused: throttled");
            return Err(too_many(wait));
        }
    }

    let admin = match &email {
        Ok(e) => state.store.admin_by_email(e.as_str()).await?,
        Err(_) => None,
    };
    let password = SecretString::from(form.password);
    // Argon2 is deliberately slow: keep it off the async workers.
    let stored = admin.as_ref().map(|a| a.password_hash.clone());
    let ok = web::block(move || verify_password(&password, stored.as_deref()))
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("verifying the password: {e}")))?;

    let next = safe_next(&form.next).to_owned();
    let (true, Some(admin)) = (ok, admin) else {
        tracing::warn!(email = %form.email.trim().chars().take(100).collect::<String>(), address = %address, "sign-in failed");
        let shown = form.email.trim().chars().take(254).collect::<String>();
        let _ = state
            .store
            .audit(now_ms(), "anonymous", "sign_in_failed", None, &format!("as {shown} from {address}"))
            .await;
        let locked = [state.login_throttle.failure(&account_key), state.login_throttle.failure(&address_key)];
        if let Some(wait) = locked.into_iter().flatten().max() {
            return Err(too_many(wait));
        }
        let page = LoginPage {
            csrf: state.csrf.token(&seed),
            next: &next,
            email: &shown,
            error: Some("That email and password do not match an admin account."),
        };
        let mut res = render(page)?;
        *res.status_mut() = actix_web::http::StatusCode::UNAUTHORIZED;
        return Ok(res);
    };

    state.login_throttle.success(&account_key);
    // A new session id at sign-in (no fixation), holding only what the console needs.
    session.renew();
    session.clear();
    let fresh_seed = crate::domain::base32(&crate::domain::random_bytes::<20>());
    put(&session, ADMIN_ID, admin.id)?;
    put(&session, ADMIN_EPOCH, admin.session_epoch)?;
    put(&session, LOGIN_AT, now_ms())?;
    put(&session, CSRF_SEED, &fresh_seed)?;
    state.store.record_login(&admin, now_ms(), &address).await?;
    tracing::info!(admin = %admin.email, address = %address, "admin signed in");
    Ok(redirect(&next))
}

fn put(session: &Session, key: &str, value: impl serde::Serialize) -> Result<(), AppError> {
    session.insert(key, value).map_err(|e| AppError::Internal(anyhow::anyhow!("session: {e}")))
}

#[tracing::instrument(skip_all)]
async fn logout(
    admin: AdminUser,
    form: web::Form<CsrfForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    admin.check_csrf(&form.csrf)?;
    let _ = state.store.audit(now_ms(), &admin.actor(), "sign_out", None, "").await;
    admin.session.purge();
    Ok(redirect("/admin/login"))
}
