//! Signing in and out: a double-submit CSRF cookie on the form, a cap on concurrent password checks,
//! a throttle counted before the check, a renewed session at sign-in and a purged one at sign-out.

use actix_session::Session;
use actix_web::{cookie::time::Duration, web, HttpRequest, HttpResponse};
use askama::Template;
use secrecy::SecretString;
use serde::Deserialize;

use super::{redirect, render, AdminUser, CsrfForm, ADMIN_EPOCH, ADMIN_ID, CSRF_SEED, LOGIN_AT};
use crate::{
    auth::{loggable, verify_password, Email},
    error::AppError,
    state::AppState,
    time::now_ms,
};

/// The encrypted cookie holding the sign-in form's CSRF seed.
const SIGN_IN_COOKIE: &str = "connect_hub_sign_in";
const SIGN_IN_PATH: &str = "/admin/login";

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
    /// The field `error` is about ("email", "password"), shown beside it; "" for the whole form.
    error_field: &'static str,
    limits: &'static crate::domain::limits::Limits,
    /// Just signed out: say so.
    signed_out: bool,
}

#[derive(Deserialize)]
struct LoginQuery {
    #[serde(default)]
    next: String,
    /// Set by the sign-out redirect.
    #[serde(default)]
    signed_out: Option<String>,
}

/// Only a path inside the console: never an open redirect to another site, never a control
/// character (a line break cannot go into a `Location` header).
fn safe_next(next: &str) -> &str {
    if next.starts_with("/admin")
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control)
    {
        next
    } else {
        "/admin"
    }
}

/// The sign-in page with a form token bound to the browser's encrypted seed cookie (made here
/// if it has none). Nothing is stored on the server.
fn sign_in_page(req: &HttpRequest, state: &AppState, page: LoginPage<'_>) -> Result<HttpResponse, AppError> {
    let seed = state
        .cookies
        .get(req, SIGN_IN_COOKIE)
        .unwrap_or_else(|| crate::domain::base32(&crate::domain::random_bytes::<20>()));
    let page = LoginPage { csrf: state.csrf.token(&seed), ..page };
    let mut res = render(page)?;
    let cookie =
        state.cookies.seal(SIGN_IN_COOKIE, &seed, SIGN_IN_PATH, Duration::hours(12), state.settings.is_https());
    res.add_cookie(&cookie).map_err(|e| AppError::Internal(anyhow::anyhow!("sign-in cookie: {e}")))?;
    Ok(res)
}

#[tracing::instrument(skip_all)]
async fn login_page(
    req: HttpRequest,
    query: web::Query<LoginQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let page = LoginPage {
        csrf: String::new(),
        next: safe_next(&query.next),
        email: "",
        error: None,
        error_field: "",
        limits: &crate::domain::limits::LIMITS,
        signed_out: query.signed_out.is_some(),
    };
    sign_in_page(&req, &state, page)
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

/// The email, when the form is a real attempt: an email address and a password, each within its
/// bound (`domain::limits`). Otherwise the field that is not, and what to do, as a person reads it.
fn malformed(form: &LoginForm) -> Result<Email, (&'static str, &'static str)> {
    let limits = crate::domain::limits::LIMITS;
    if form.email.trim().is_empty() {
        return Err(("email", "Enter your email."));
    }
    let Ok(email) = Email::parse(&form.email) else {
        return Err(("email", "Enter your email address as name@example.com."));
    };
    if form.password.is_empty() {
        return Err(("password", "Enter your password."));
    }
    if form.password.chars().count() > limits.password {
        return Err(("password", "That is longer than any admin's password can be (1024 characters)."));
    }
    Ok(email)
}

fn too_many(wait: std::time::Duration) -> AppError {
    let secs = wait.as_secs().max(1);
    AppError::TooManyRequests {
        code: "too_many_sign_ins",
        message: format!("Too many failed sign-ins. Wait {secs} seconds, then try again."),
        retry_after_secs: secs,
    }
}

fn busy() -> AppError {
    AppError::Unavailable {
        code: "sign_in_busy",
        message: "Too many sign-ins are being checked right now. Wait a second, then try again.".into(),
        retry_after_secs: Some(1),
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
    let limit_key = crate::routes::limit_key(&address);
    if let Err(wait) = state.limits.sign_in.check(&limit_key) {
        state.metrics.rate_limited.inc("sign_in");
        return Err(crate::routes::too_many("rate_limited", "Too many sign-in attempts from your address", wait));
    }
    let seed = state.cookies.get(&req, SIGN_IN_COOKIE).unwrap_or_default();
    if seed.is_empty() || !state.csrf.verify(&seed, &form.csrf) {
        return Err(AppError::Forbidden {
            code: "csrf",
            message: "The sign-in form expired. Reload the sign-in page and try again.".into(),
        });
    }
    // Only a well-formed attempt is a guess: an empty or malformed form is answered beside its
    // field, and neither counts towards the lock nor runs the password check.
    let email = match malformed(&form) {
        Ok(email) => email,
        Err((field, message)) => {
            let typed: String = form.email.trim().chars().take(crate::domain::limits::LIMITS.admin_email).collect();
            let page = LoginPage {
                csrf: String::new(),
                next: safe_next(&form.next),
                email: &typed,
                error: Some(message),
                error_field: field,
                limits: &crate::domain::limits::LIMITS,
                signed_out: false,
            };
            let mut res = sign_in_page(&req, &state, page)?;
            *res.status_mut() = actix_web::http::StatusCode::BAD_REQUEST;
            return Ok(res);
        }
    };
    let account = email.as_str().to_owned();
    let shown = loggable(&form.email);

    // Turned away before anything is counted or written: a busy server is not a failed guess.
    let Some(permit) = state.hash_gate.try_enter() else {
        tracing::warn!(address = %address, "sign-in turned away: password hashing at its cap");
        return Err(busy());
    };
    // Counted before the password is checked, so parallel guesses cannot outrun the count.
    let reserved = match state.login_throttle.reserve(&account, &limit_key, now_ms()).await? {
        Ok(r) => r,
        Err(wait) => {
            tracing::warn!(email = %shown, address = %address, "sign-in refused: throttled");
            return Err(too_many(wait));
        }
    };

    let admin = state.store.admin_by_email(email.as_str()).await?;
    let password = SecretString::from(form.password);
    // Argon2 is deliberately slow: keep it off the async workers, holding the permit.
    let stored = admin.as_ref().map(|a| a.password_hash.clone());
    let metrics = state.metrics.clone();
    let ok = web::block(move || {
        let _permit = permit;
        metrics.hashing_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        verify_password(&password, stored.as_deref())
    })
    .await
    .map_err(|e| AppError::Internal(anyhow::anyhow!("verifying the password: {e}")))?;

    let next = safe_next(&form.next).to_owned();
    let (true, Some(admin)) = (ok, admin) else {
        tracing::warn!(email = %shown, address = %address, "sign-in failed");
        let _ = state
            .store
            .audit(now_ms(), "anonymous", "sign_in_failed", None, &format!("as {shown} from {address}"))
            .await;
        if let Some(wait) = reserved.locked {
            return Err(too_many(wait));
        }
        let typed: String = form.email.trim().chars().take(254).collect();
        let page = LoginPage {
            csrf: String::new(),
            next: &next,
            email: &typed,
            error: Some("That email and password do not match an admin account."),
            error_field: "",
            limits: &crate::domain::limits::LIMITS,
            signed_out: false,
        };
        let mut res = sign_in_page(&req, &state, page)?;
        *res.status_mut() = actix_web::http::StatusCode::UNAUTHORIZED;
        return Ok(res);
    };

    state.login_throttle.success(&account, &limit_key).await?;
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
    // The session is gone, so no flash: the sign-in page says it from its address.
    Ok(redirect("/admin/login?signed_out=1"))
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_is_a_console_path_without_control_characters() {
        assert_eq!(safe_next("/admin/events?x=1"), "/admin/events?x=1");
        assert_eq!(safe_next("/admin\r\nSet-Cookie: a=b"), "/admin");
        assert_eq!(safe_next("/admin/x\u{7f}"), "/admin");
        assert_eq!(safe_next("/admin/x\t"), "/admin");
        assert_eq!(safe_next("//evil.example/admin"), "/admin");
        assert_eq!(safe_next("/admin\\@evil"), "/admin");
        assert_eq!(safe_next("https://evil.example/admin"), "/admin");
    }
}
