//! Endpoints in the console: the list with each endpoint's success rate and latency over the last
//! hour and day, its page, enable / disable, rotate the secret, send a test event, and remove.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::{endpoint_form::SecretPage, redirect, render, when, AdminUser, CsrfForm, FlashKind, Nav};
use crate::{
    delivery::manage,
    error::AppError,
    state::AppState,
    store::{Endpoint, EndpointStats},
    time::now_ms,
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/endpoints", web::get().to(list))
        .configure(super::endpoint_form::configure)
        .route("/endpoints/{id}", web::get().to(show))
        .route("/endpoints/{id}/enable", web::post().to(enable))
        .route("/endpoints/{id}/disable", web::post().to(disable))
        .route("/endpoints/{id}/rotate", web::post().to(rotate))
        .route("/endpoints/{id}/test", web::post().to(test))
        .route("/endpoints/{id}/remove", web::get().to(confirm_remove))
        .route("/endpoints/{id}/remove", web::post().to(remove));
}

const HOUR_MS: i64 = 3600 * 1000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// An endpoint as the console shows it.
pub struct Row {
    pub id: String,
    pub url: String,
    pub description: String,
    pub events: String,
    /// "enabled", "disabled" or "failing" (enabled, but its last attempt failed): the badge.
    pub state: &'static str,
    pub disabled_reason: String,
    pub last_result: String,
    pub hour: String,
    pub day: String,
}

/// "97 % of 1,024 · p50 12 ms · p95 80 ms", or "no attempts".
pub fn describe(s: Option<&EndpointStats>) -> String {
    match s.and_then(|s| s.success_percent().map(|p| (s, p))) {
        Some((s, p)) => format!(
            "{p} % of {} ok · p50 {} ms · p95 {} ms",
            s.attempts,
            s.p50_ms.unwrap_or_default(),
            s.p95_ms.unwrap_or_default()
        ),
        None => "no attempts".into(),
    }
}

async fn rows(state: &AppState, endpoints: Vec<Endpoint>) -> Result<Vec<Row>, AppError> {
    let now = now_ms();
    let hour = state.store.endpoint_stats(now - HOUR_MS).await?;
    let day = state.store.endpoint_stats(now - DAY_MS).await?;
    Ok(endpoints
        .into_iter()
        .map(|e| Row {
            state: if !e.enabled {
                "disabled"
            } else if manage::failing(&e) {
                "failing"
            } else {
                "enabled"
            },
            last_result: manage::last_result(&e),
            hour: describe(hour.get(e.id.as_str())),
            day: describe(day.get(e.id.as_str())),
            id: e.id.to_string(),
            events: if e.event_types.all() { "every type".into() } else { e.event_types.to_string() },
            url: e.url,
            description: e.description,
            disabled_reason: e.disabled_reason.unwrap_or_default(),
        })
        .collect())
}

#[derive(Template)]
#[template(path = "admin/endpoints.html")]
struct ListPage {
    nav: Nav,
    rows: Vec<Row>,
}

#[tracing::instrument(skip_all)]
async fn list(admin: AdminUser, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let endpoints = state.store.endpoints().await?;
    render(ListPage { nav: admin.nav("endpoints"), rows: rows(&state, endpoints).await? })
}

#[derive(Template)]
#[template(path = "admin/endpoint.html")]
struct ShowPage {
    nav: Nav,
    e: Row,
    forward: bool,
    created: String,
    overlap_until: Option<String>,
    last_error: Option<String>,
}

#[tracing::instrument(skip_all, fields(endpoint_id = %id))]
async fn show(admin: AdminUser, id: web::Path<String>, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let e = manage::load(&state.store, &id).await?;
    // `last_failure_at` is when the last failed attempt ended; it started at most a lease before.
    let last_failed = match e.last_failure_at {
        Some(at) => {
            let lease = state.settings.delivery_lease().as_millis() as i64;
            state.store.last_failed_attempt(&e.id, at - lease, at).await?
        }
        None => None,
    };
    let last_error = last_failed.map(|a| {
        let status = a.http_status.map_or_else(|| "no answer".to_owned(), |s| format!("HTTP {s}"));
        format!("{} ({status}, {})", a.error.unwrap_or_default(), when(Some(a.started_at)))
    });
    let forward = e.id.as_str() == crate::domain::endpoint::EndpointId::FORWARD;
    let created = when(Some(e.created_at));
    let overlap_until = e.previous_until.filter(|u| *u > now_ms()).map(|u| when(Some(u)));
    let row = rows(&state, vec![e]).await?.pop().expect("one row per endpoint");
    render(ShowPage { nav: admin.nav("endpoints"), e: row, forward, created, overlap_until, last_error })
}

#[tracing::instrument(skip_all, fields(endpoint_id = %id))]
async fn enable(
    admin: AdminUser,
    id: web::Path<String>,
    form: web::Form<CsrfForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    set_enabled(admin, &id, &form, &state, true).await
}

#[tracing::instrument(skip_all, fields(endpoint_id = %id))]
async fn disable(
    admin: AdminUser,
    id: web::Path<String>,
    form: web::Form<CsrfForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    set_enabled(admin, &id, &form, &state, false).await
}

async fn set_enabled(
    admin: AdminUser,
    id: &str,
    form: &CsrfForm,
    state: &AppState,
    enabled: bool,
) -> Result<HttpResponse, AppError> {
    admin.check_csrf(&form.csrf)?;
    let e = manage::set_enabled(&state.store, id, enabled, &admin.actor()).await?;
    state.endpoints_changed().await;
    admin.flash(
        FlashKind::Ok,
        if enabled {
            "Enabled. Deliveries that waited go out now, in order."
        } else {
            "Disabled. Its deliveries wait (nothing is dropped) until you enable it again."
        },
    );
    Ok(redirect(&format!("/admin/endpoints/{}", e.id)))
}

#[derive(Deserialize)]
struct RotateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    overlap: String,
}

/// The overlaps the console offers.
const OVERLAPS: [(&str, u64); 3] = [("1h", 3600), ("24h", 24 * 3600), ("7d", 7 * 24 * 3600)];

#[tracing::instrument(skip_all, fields(endpoint_id = %id))]
async fn rotate(
    admin: AdminUser,
    id: web::Path<String>,
    form: web::Form<RotateForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    admin.check_csrf(&form.csrf)?;
    let Some((_, secs)) = OVERLAPS.iter().find(|(name, _)| *name == form.overlap) else {
        return Err(AppError::bad_request("Choose how long the old secret keeps signing: 1h, 24h or 7d."));
    };
    let (secret, until) =
        manage::rotate(&state.store, &id, std::time::Duration::from_secs(*secs), &admin.actor()).await?;
    state.endpoints_changed().await;
    let e = manage::load(&state.store, &id).await?;
    SecretPage::render(
        &admin,
        &e,
        secret,
        format!("Until {}, every delivery is signed with both the old and the new secret.", when(Some(until))),
    )
}

#[tracing::instrument(skip_all, fields(endpoint_id = %id))]
async fn test(
    admin: AdminUser,
    id: web::Path<String>,
    form: web::Form<CsrfForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    admin.check_csrf(&form.csrf)?;
    let clients = state.worker.dispatcher().clients();
    let t = manage::send_test(&state.store, clients, &id, &admin.actor()).await?;
    let answer =
        t.excerpt.map(|b| format!(" It answered: {}", b.chars().take(200).collect::<String>())).unwrap_or_default();
    if t.delivered {
        let status = t.status.unwrap_or_default();
        admin.flash(
            FlashKind::Ok,
            format!("Delivered test event {}: HTTP {status} in {} ms.{answer}", t.event_id, t.duration_ms),
        );
    } else {
        let error = t.error.unwrap_or_default();
        admin.flash(
            FlashKind::Bad,
            format!("The test event {} was not accepted: {error} ({} ms).{answer}", t.event_id, t.duration_ms),
        );
    }
    Ok(redirect(&format!("/admin/endpoints/{}", id.trim())))
}

#[derive(Template)]
#[template(path = "admin/confirm_remove_endpoint.html")]
struct ConfirmPage {
    nav: Nav,
    id: String,
    url: String,
    forward: bool,
}

#[tracing::instrument(skip_all, fields(endpoint_id = %id))]
async fn confirm_remove(
    admin: AdminUser,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let e = manage::load(&state.store, &id).await?;
    let forward = e.id.as_str() == crate::domain::endpoint::EndpointId::FORWARD;
    render(ConfirmPage { nav: admin.nav("endpoints"), id: e.id.to_string(), url: e.url, forward })
}

#[tracing::instrument(skip_all, fields(endpoint_id = %id))]
async fn remove(
    admin: AdminUser,
    id: web::Path<String>,
    form: web::Form<CsrfForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    admin.check_csrf(&form.csrf)?;
    manage::remove(&state.store, &id, &admin.actor()).await?;
    state.endpoints_changed().await;
    admin.flash(FlashKind::Ok, format!("Removed {}, with its deliveries.", id.trim()));
    Ok(redirect("/admin/endpoints"))
}
