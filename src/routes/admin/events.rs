//! Events in the console: the list filtered by status, type and company, paginated by keyset, the
//! detail page with the payload and every attempt, and replay of one event or of every dead one.

use actix_web::{web, HttpResponse};
use askama::Template;
use serde::Deserialize;

use super::{connections::EventRowView, redirect, render, when, AdminUser, CsrfForm, FlashKind, Nav};
use crate::{
    domain::{status::Status, CompanyId, EventId},
    error::AppError,
    state::AppState,
    store::{EventFilter, ReplayRefusal},
    time::now_ms,
};

const PAGE: i64 = 50;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/events", web::get().to(list))
        .route("/events/replay-dead", web::post().to(replay_dead))
        .route("/events/{id}", web::get().to(detail))
        .route("/events/{id}/replay", web::post().to(replay))
        .route("/events/{id}/dismiss", web::post().to(dismiss));
}

/// The filter as the form and the links carry it (all text, so a mistyped value reaches the
/// page and is explained beside its field, instead of failing to deserialize).
#[derive(Deserialize, Default, Clone)]
struct FilterForm {
    #[serde(default)]
    status: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    company: String,
    #[serde(default)]
    before: String,
    #[serde(default)]
    after: String,
}

/// A filter value that could not be used, and which field it came from.
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FilterForm {
    /// The filter, or the first field that is wrong.
    fn parse(&self) -> Result<EventFilter, AppError> {
        let (filter, errors) = self.parse_lenient();
        match errors.into_iter().next() {
            Some(e) => Err(AppError::bad_request(e.message)),
            None => Ok(filter),
        }
    }

    /// The filter with every wrong field left out, and what was wrong with each.
    fn parse_lenient(&self) -> (EventFilter, Vec<FieldError>) {
        let mut errors = Vec::new();
        let mut wrong = |field, message: String| errors.push(FieldError { field, message });
        let status = match self.status.trim() {
            "" => None,
            s => Status::parse_event(s).map_err(|e| wrong("status", e.to_string())).ok(),
        };
        let company = match self.company.trim() {
            "" => None,
            c => CompanyId::parse(c).map_err(|e| wrong("company", e.to_string())).ok(),
        };
        let mut cursor = |field, raw: &str| match raw.trim() {
            "" => None,
            r => r
                .parse::<i64>()
                .map_err(|_| wrong(field, "This page link is broken; showing the newest events instead.".into()))
                .ok(),
        };
        let (before, after) = (cursor("page", &self.before), cursor("page", &self.after));
        // No stored type holds a NUL (it is written out as `\u{0}`), and PostgreSQL cannot compare one.
        let kind = match self.kind.trim() {
            "" => None,
            k if k.contains('\0') => {
                wrong("type", "An event type cannot hold a NUL character.".into());
                None
            }
            k if k.chars().count() > crate::domain::limits::LIMITS.event_type => {
                let max = crate::domain::limits::LIMITS.event_type;
                wrong("type", format!("An event type has at most {max} characters."));
                None
            }
            k => Some(k.to_owned()),
        };
        (EventFilter { status, kind, company, before, after, since: None }, errors)
    }

    /// The query string for a page link, keeping the filter.
    fn link(&self, cursor: &str, rowid: i64) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [("status", &self.status), ("type", &self.kind), ("company", &self.company)] {
            if !v.trim().is_empty() {
                q.append_pair(k, v.trim());
            }
        }
        q.append_pair(cursor, &rowid.to_string());
        format!("/admin/events?{}", q.finish())
    }
}

#[derive(Template)]
#[template(path = "admin/events.html")]
struct ListPage {
    nav: Nav,
    rows: Vec<EventRowView>,
    status: String,
    kind: String,
    company: String,
    statuses: Vec<&'static str>,
    newer: Option<String>,
    older: Option<String>,
    dead_matching: i64,
    errors: Vec<FieldError>,
}

impl ListPage {
    /// What is wrong with `field`, to show beside it.
    fn error_for(&self, field: &str) -> Option<&str> {
        self.errors.iter().find(|e| e.field == field).map(|e| e.message.as_str())
    }
}

#[tracing::instrument(skip_all)]
async fn list(
    admin: AdminUser,
    query: web::Query<FilterForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let form = query.into_inner();
    // A wrong field is left out of the filter and explained beside it, with a 400.
    let (filter, errors) = form.parse_lenient();
    let rows = state.store.events(&filter, PAGE).await?;
    let base = EventFilter { before: None, after: None, ..filter.clone() };
    let (newer, older) = match (rows.first(), rows.last()) {
        (Some(first), Some(last)) => (
            state.store.events_beyond(&base, first.rowid, false).await?.then(|| form.link("after", first.rowid)),
            state.store.events_beyond(&base, last.rowid, true).await?.then(|| form.link("before", last.rowid)),
        ),
        _ => (None, None),
    };
    let dead_filter = EventFilter { status: Some(Status::Dead), ..base };
    let dead_matching = if filter.status.is_none() || filter.status == Some(Status::Dead) {
        state.store.count_events(&dead_filter).await?
    } else {
        0
    };
    let page_has_errors = !errors.is_empty();
    render(ListPage {
        nav: admin.nav("events"),
        rows: rows.into_iter().map(EventRowView::from).collect(),
        status: form.status.clone(),
        kind: form.kind.clone(),
        company: form.company.clone(),
        statuses: Status::EVENT.iter().map(|s| s.as_str()).collect(),
        newer,
        older,
        dead_matching,
        errors,
    })
    .map(|mut res| {
        if page_has_errors {
            *res.status_mut() = actix_web::http::StatusCode::BAD_REQUEST;
        }
        res
    })
}

pub struct AttemptView {
    pub at: String,
    pub duration_ms: i64,
    pub outcome: String,
    pub http_status: String,
    pub error: String,
    /// The start of the receiver's answer (deliveries only).
    pub response: String,
}

impl AttemptView {
    /// An event's or a delivery's attempt as the page shows it (a dash for no HTTP status).
    fn new(
        started_at: i64,
        duration_ms: i64,
        outcome: String,
        http_status: Option<i64>,
        error: Option<String>,
        response: Option<String>,
    ) -> Self {
        Self {
            at: when(Some(started_at)),
            duration_ms,
            outcome,
            http_status: http_status.map(|s| s.to_string()).unwrap_or_else(|| "—".into()),
            error: error.unwrap_or_default(),
            response: response.unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "admin/event.html")]
struct DetailPage {
    nav: Nav,
    e: EventRowView,
    connection: Option<String>,
    status_text: Option<String>,
    inspection_id: Option<i64>,
    review_id: Option<i64>,
    duplicates: i64,
    next_attempt: Option<String>,
    completed: Option<String>,
    payload: String,
    inspection: Option<String>,
    attempts: Vec<AttemptView>,
    deliveries: Vec<DeliveryView>,
    replayable: bool,
    dismissable: bool,
}

/// One delivery on the event page, with its attempts.
pub struct DeliveryView {
    pub endpoint: String,
    pub url: String,
    pub state: String,
    pub attempts: Vec<AttemptView>,
}

fn pretty(raw: &str) -> String {
    serde_json::from_str::<serde_json::Value>(raw)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| raw.to_owned())
}

fn parse_id(raw: &str) -> Result<EventId, AppError> {
    EventId::parse(raw).map_err(|_| AppError::not_found("There is no event with that id."))
}

#[tracing::instrument(skip_all, fields(event_id = %id))]
async fn detail(admin: AdminUser, id: web::Path<String>, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let id = parse_id(&id)?;
    let e = state.store.event(&id).await?.ok_or_else(|| AppError::not_found("There is no event with that id."))?;
    let attempts = state
        .store
        .event_attempts(e.rowid)
        .await?
        .into_iter()
        .map(|a| AttemptView::new(a.started_at, a.duration_ms, a.outcome, a.http_status, a.error, None))
        .collect();
    let mut deliveries = Vec::new();
    for d in state.store.event_deliveries(e.rowid).await? {
        let attempts = state
            .store
            .delivery_attempts(d.id)
            .await?
            .into_iter()
            .map(|a| {
                AttemptView::new(a.started_at, a.duration_ms, a.outcome, a.http_status, a.error, a.response_excerpt)
            })
            .collect();
        deliveries.push(DeliveryView { endpoint: d.endpoint_id, url: d.url, state: d.state, attempts });
    }
    let waiting = matches!(e.state.as_str(), "pending" | "retrying");
    let page = DetailPage {
        nav: admin.nav("events"),
        connection: e.connection_id.clone(),
        status_text: e.status_text.clone(),
        inspection_id: e.inspection_id,
        review_id: e.review_id,
        duplicates: e.duplicates,
        next_attempt: waiting.then(|| when(Some(e.next_attempt_at))),
        completed: e.completed_at.map(|t| when(Some(t))),
        payload: pretty(&e.payload),
        inspection: e.inspection.as_deref().map(pretty),
        attempts,
        deliveries,
        replayable: matches!(e.state.as_str(), "dead" | "done" | "retrying" | "pending" | "rejected"),
        dismissable: matches!(e.state.as_str(), "unmatched" | "rejected"),
        e: EventRowView::from(e),
    };
    render(page)
}

#[tracing::instrument(skip_all, fields(event_id = %id))]
async fn replay(
    admin: AdminUser,
    id: web::Path<String>,
    form: web::Form<CsrfForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    admin.check_csrf(&form.csrf)?;
    let id = parse_id(&id)?;
    // A processed event: its failed deliveries (or, if none failed, all of them) go out again.
    if state.store.event(&id).await?.is_some_and(|e| e.state == "done") {
        match state.store.replay_deliveries(&id, None, now_ms(), &admin.actor()).await? {
            Ok(n) => {
                state.worker.wake();
                admin.flash(FlashKind::Ok, format!("{n} deliveries are queued again."));
            }
            Err(refusal) => admin.flash(FlashKind::Bad, format!("Not replayed: {refusal}.")),
        }
        return Ok(redirect(&format!("/admin/events/{id}")));
    }
    match state.store.replay_event(&id, now_ms(), &admin.actor()).await? {
        Ok(previous) => {
            state.worker.wake();
            admin.flash(
                FlashKind::Ok,
                format!("Queued again (it was {previous}); the worker picks it up within a second."),
            );
        }
        Err(ReplayRefusal::NotFound(_)) => return Err(AppError::not_found("There is no event with that id.")),
        Err(refusal) => admin.flash(FlashKind::Bad, format!("Not replayed: {refusal}.")),
    }
    Ok(redirect(&format!("/admin/events/{id}")))
}

/// An event that waits for a company that may never connect (or names none) is removed.
#[tracing::instrument(skip_all, fields(event_id = %id))]
async fn dismiss(
    admin: AdminUser,
    id: web::Path<String>,
    form: web::Form<CsrfForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    admin.check_csrf(&form.csrf)?;
    let id = parse_id(&id)?;
    if state.store.dismiss_event(&id, now_ms(), &admin.actor()).await? {
        admin.flash(FlashKind::Ok, format!("Event {id} is dismissed: deleted, and noted in the audit log."));
        return Ok(redirect("/admin/events"));
    }
    match state.store.event(&id).await? {
        Some(e) => {
            admin.flash(
                FlashKind::Bad,
                format!("Not dismissed: only unmatched or rejected events can be, and this one is {}.", e.state),
            );
            Ok(redirect(&format!("/admin/events/{id}")))
        }
        None => Err(AppError::not_found("There is no event with that id.")),
    }
}

#[derive(Deserialize)]
struct ReplayDeadForm {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    filter: FilterForm,
}

#[tracing::instrument(skip_all)]
async fn replay_dead(
    admin: AdminUser,
    form: web::Form<ReplayDeadForm>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    admin.check_csrf(&form.csrf)?;
    let filter = FilterForm { before: String::new(), after: String::new(), ..form.filter.clone() }.parse()?;
    let n = state.store.replay_dead(&filter, None, now_ms(), &admin.actor()).await?;
    if n > 0 {
        state.worker.wake();
    }
    admin.flash(FlashKind::Ok, format!("{n} dead events are queued again."));
    let back = FilterForm { status: "dead".into(), before: String::new(), after: String::new(), ..form.filter.clone() };
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in [("status", &back.status), ("type", &back.kind), ("company", &back.company)] {
        if !v.trim().is_empty() {
            q.append_pair(k, v.trim());
        }
    }
    Ok(redirect(&format!("/admin/events?{}", q.finish())))
}
