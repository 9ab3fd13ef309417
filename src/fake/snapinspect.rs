//! A fake SnapInspect that enforces the published contract, so a client that breaks it fails: the
//! authorize page (Allow / Deny), ExchangeToken (six fields, rotation, old pair invalidated),
//! `/user`, inspection reads, and firing webhooks. Tests steer it through [`FakeSnapInspect`].

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use askama::Template;
use serde_json::{json, Value};

use crate::domain::{base32, random_bytes};

/// The application the fake has "registered".
#[derive(Clone, Debug)]
pub struct FakeConfig {
    pub client_id: String,
    pub client_secret: String,
    /// Must match the `redirect_uri` of every request exactly.
    pub redirect_uri: String,
    /// Where the "fire a webhook" page posts to.
    pub webhook_url: Option<String>,
}

/// The fake's pages style themselves inline; they run no script, and anything may be the target
/// of their forms (the redirect back goes to the hub).
const FAKE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'";

/// The demo companies the authorize page offers.
pub const COMPANIES: &[(i64, &str)] =
    &[(6847, "Harbour View Realty"), (7012, "Northside Property Inspections"), (9001, "Coastal Strata Management")];

/// How `/user` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserShape {
    /// `{"iUserID": …, "iCompanyID": …, "sCompanyName": …}`
    TopLevel,
    /// `{"oUser": {…}, "oCompany": {"iCompanyID": …, "sName": …}}`
    Nested,
    /// Answers with this status and no company.
    Fail(u16),
}

/// A scripted misbehaviour of the next ExchangeToken call.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Answer with this status (and the usual error body) without rotating anything.
    Status(u16),
    /// Wait this long, then behave normally.
    Delay(Duration),
    /// Rotate the access token but send no `refresh_token` (the old one stays valid).
    NoRefreshToken,
}

#[derive(Clone)]
struct Grant {
    company: Option<i64>,
    user_id: i64,
}

#[derive(Default)]
struct State {
    /// access token -> grant
    access: HashMap<String, Grant>,
    /// refresh token -> its paired access token
    refresh: HashMap<String, String>,
    exchange_calls: u64,
    exchanges: u64,
    user_calls: u64,
    inspection_calls: u64,
    exchange_faults: VecDeque<Fault>,
    user_shape: Option<UserShape>,
    /// Status codes the next inspection reads answer with (e.g. 500, 401).
    inspection_faults: VecDeque<u16>,
    /// How long the next inspection reads take before answering.
    inspection_delays: VecDeque<Duration>,
}

/// A handle on one fake SnapInspect: mount it, steer it, read its counters.
#[derive(Clone)]
pub struct FakeSnapInspect {
    config: Arc<FakeConfig>,
    state: Arc<Mutex<State>>,
    http: reqwest::Client,
}

fn token(prefix: &str) -> String {
    format!("{prefix}{}", base32(&random_bytes::<20>()))
}

impl FakeSnapInspect {
    pub fn new(config: FakeConfig) -> Self {
        Self::with_client(config, crate::http_client::build())
    }

    /// With the client its "fire a webhook" page posts with (e.g. one trusting a demo certificate).
    pub fn with_client(config: FakeConfig, http: reqwest::Client) -> Self {
        Self { config: Arc::new(config), state: Arc::default(), http }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake state poisoned")
    }

    pub fn config(&self) -> &FakeConfig {
        &self.config
    }

    /// Issue a pair as if the user clicked Allow (what the authorize page does).
    pub fn grant(&self, company: Option<i64>) -> (String, String) {
        let (access, refresh) = (token("si_at_"), token("si_rt_"));
        let mut s = self.state();
        s.access.insert(access.clone(), Grant { company, user_id: 500 + company.unwrap_or(0) % 97 });
        s.refresh.insert(refresh.clone(), access.clone());
        (access, refresh)
    }

    /// Successful exchanges so far.
    pub fn exchanges(&self) -> u64 {
        self.state().exchanges
    }

    /// Every call to ExchangeToken, refused or not.
    pub fn exchange_calls(&self) -> u64 {
        self.state().exchange_calls
    }

    pub fn user_calls(&self) -> u64 {
        self.state().user_calls
    }

    pub fn inspection_calls(&self) -> u64 {
        self.state().inspection_calls
    }

    pub fn push_exchange_fault(&self, fault: Fault) {
        self.state().exchange_faults.push_back(fault);
    }

    pub fn set_user_shape(&self, shape: UserShape) {
        self.state().user_shape = Some(shape);
    }

    pub fn push_inspection_fault(&self, status: u16) {
        self.state().inspection_faults.push_back(status);
    }

    /// Make the next inspection read take this long (to outlast a client's timeout).
    pub fn push_inspection_delay(&self, delay: Duration) {
        self.state().inspection_delays.push_back(delay);
    }

    /// Whether this access token is currently valid (not rotated away).
    pub fn is_valid_access_token(&self, token: &str) -> bool {
        self.state().access.contains_key(token)
    }

    /// Invalidate every access token of a company (as if revoked), keeping the refresh tokens.
    pub fn revoke_access_tokens(&self, company: i64) {
        self.state().access.retain(|_, g| g.company != Some(company));
    }

    /// POST a webhook payload, as SnapInspect does: JSON, no signature. Returns the status.
    pub async fn fire_webhook(&self, url: &str, payload: &Value) -> Result<u16, String> {
        self.http
            .post(url)
            .json(payload)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| crate::snapinspect::client::describe_transport(&e))
    }

    /// The routes, relative to wherever the caller mounts them (`/` alone, `/fake/snapinspect` in
    /// `demo`): `integration/SnapInspectConnect`, `integration/ExchangeToken`, `user`,
    /// `inspections/{id}`, and `fire-webhook`.
    pub fn configure(&self) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + Sync + 'static {
        let fake = self.clone();
        move |cfg: &mut web::ServiceConfig| {
            cfg.app_data(web::Data::new(fake.clone()))
                .route("/integration/SnapInspectConnect", web::get().to(authorize_page))
                .route("/integration/SnapInspectConnect", web::post().to(authorize_decision))
                .route("/integration/ExchangeToken", web::post().to(exchange_token))
                .route("/user", web::get().to(user))
                .route("/inspections/{id}", web::get().to(inspection))
                .route("/fire-webhook", web::get().to(fire_webhook_page))
                .route("/fire-webhook", web::post().to(fire_webhook_submit));
        }
    }
}

/// Parse a form or query, refusing repeated fields (a real server might take either copy).
fn fields(raw: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw) {
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(format!("parameter `{k}` is repeated"));
        }
    }
    Ok(out)
}

#[derive(Template)]
#[template(path = "fake/authorize.html")]
struct AuthorizePage<'a> {
    client_id: &'a str,
    redirect_uri: &'a str,
    state: &'a str,
    companies: &'a [(i64, &'a str)],
}

#[derive(Template)]
#[template(path = "fake/refused.html")]
struct RefusedPage<'a> {
    reason: &'a str,
}

fn refused(reason: &str) -> HttpResponse {
    HttpResponse::BadRequest()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, FAKE_CSP))
        .body(RefusedPage { reason }.render().unwrap_or_else(|_| reason.to_owned()))
}

/// The checks the authorize endpoint makes on the four documented parameters.
fn check_authorize(fake: &FakeSnapInspect, p: &HashMap<String, String>) -> Result<(), String> {
    match p.get("response_type").map(String::as_str) {
        Some("code") => {}
        Some(other) => return Err(format!("response_type must be `code`, got `{other}`")),
        None => return Err("response_type is required".into()),
    }
    match p.get("client_id") {
        Some(id) if *id == fake.config.client_id => {}
        Some(_) => return Err("unknown client_id".into()),
        None => return Err("client_id is required".into()),
    }
    match p.get("redirect_uri") {
        Some(r) if *r == fake.config.redirect_uri => {}
        Some(_) => return Err("redirect_uri does not match the registered redirect URL".into()),
        None => return Err("redirect_uri is required".into()),
    }
    if p.get("state").is_none_or(|s| s.is_empty()) {
        return Err("state is required".into());
    }
    Ok(())
}

async fn authorize_page(req: HttpRequest, fake: web::Data<FakeSnapInspect>) -> HttpResponse {
    let p = match fields(req.query_string().as_bytes()) {
        Ok(p) => p,
        Err(e) => return refused(&e),
    };
    if let Err(reason) = check_authorize(&fake, &p) {
        return refused(&reason);
    }
    let page = AuthorizePage {
        client_id: &p["client_id"],
        redirect_uri: &p["redirect_uri"],
        state: &p["state"],
        companies: COMPANIES,
    };
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, FAKE_CSP))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(page.render().unwrap_or_default())
}

async fn authorize_decision(body: web::Bytes, fake: web::Data<FakeSnapInspect>) -> HttpResponse {
    let mut p = match fields(&body) {
        Ok(p) => p,
        Err(e) => return refused(&e),
    };
    p.insert("response_type".into(), "code".into());
    if let Err(reason) = check_authorize(&fake, &p) {
        return refused(&reason);
    }
    let mut back = url::Url::parse(&fake.config.redirect_uri).expect("registered redirect_uri is a URL");
    if p.get("decision").map(String::as_str) == Some("allow") {
        let company = p.get("company").and_then(|c| c.trim().parse::<i64>().ok()).filter(|c| *c > 0);
        let (access, refresh) = fake.grant(company);
        back.query_pairs_mut()
            .append_pair("access_token", &access)
            .append_pair("token_type", "Bearer")
            .append_pair("state", &p["state"])
            .append_pair("refresh_token", &refresh);
    } else {
        back.query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("error_description", "The user declined to connect.")
            .append_pair("state", &p["state"]);
    }
    HttpResponse::SeeOther().insert_header((header::LOCATION, back.as_str())).finish()
}

fn oauth_error(status: u16, error: &str, description: &str) -> HttpResponse {
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::BAD_REQUEST),
    )
    .json(json!({ "error": error, "error_description": description }))
}

async fn exchange_token(req: HttpRequest, body: web::Bytes, fake: web::Data<FakeSnapInspect>) -> HttpResponse {
    let fault = {
        let mut s = fake.state();
        s.exchange_calls += 1;
        s.exchange_faults.pop_front()
    };
    match fault {
        Some(Fault::Status(code)) => return oauth_error(code, "server_error", "scripted failure"),
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::NoRefreshToken) | None => {}
    }
    let keep_refresh = matches!(fault, Some(Fault::NoRefreshToken));
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return oauth_error(400, "invalid_request", "the body must be application/x-www-form-urlencoded");
    }
    let p = match fields(&body) {
        Ok(p) => p,
        Err(e) => return oauth_error(400, "invalid_request", &e),
    };
    for name in ["response_type", "client_id", "client_secret", "redirect_uri", "state", "refresh_token"] {
        if p.get(name).is_none_or(|v| v.is_empty()) {
            return oauth_error(400, "invalid_request", &format!("{name} is required"));
        }
    }
    if p["response_type"] != "code" {
        return oauth_error(400, "unsupported_response_type", "response_type must be code");
    }
    if p["client_id"] != fake.config.client_id || p["client_secret"] != fake.config.client_secret {
        return oauth_error(401, "invalid_client", "unknown client or wrong secret");
    }
    if p["redirect_uri"] != fake.config.redirect_uri {
        return oauth_error(400, "invalid_request", "redirect_uri does not match the registered redirect URL");
    }
    let mut s = fake.state();
    let Some(old_access) = s.refresh.remove(&p["refresh_token"]) else {
        return oauth_error(400, "invalid_grant", "the refresh token is unknown or was already used");
    };
    // Rotate: the old pair stops working, a new one is issued for the same grant.
    let grant = s.access.remove(&old_access).unwrap_or(Grant { company: None, user_id: 0 });
    let access = token("si_at_");
    s.access.insert(access.clone(), grant);
    s.exchanges += 1;
    if keep_refresh {
        s.refresh.insert(p["refresh_token"].clone(), access.clone());
        return HttpResponse::Ok().json(json!({ "access_token": access, "token_type": "Bearer", "state": p["state"] }));
    }
    let refresh = token("si_rt_");
    s.refresh.insert(refresh.clone(), access.clone());
    HttpResponse::Ok().json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "state": p["state"],
        "refresh_token": refresh,
    }))
}

fn bearer(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
}

fn authorised(req: &HttpRequest, fake: &FakeSnapInspect) -> Option<Grant> {
    let token = bearer(req)?;
    fake.state().access.get(&token).cloned()
}

fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized().json(json!({ "error": "invalid_token" }))
}

async fn user(req: HttpRequest, fake: web::Data<FakeSnapInspect>) -> HttpResponse {
    fake.state().user_calls += 1;
    let Some(grant) = authorised(&req, &fake) else {
        return unauthorized();
    };
    let shape = fake.state().user_shape.unwrap_or(UserShape::TopLevel);
    let name = grant
        .company
        .and_then(|c| COMPANIES.iter().find(|(id, _)| *id == c).map(|(_, n)| (*n).to_owned()))
        .or_else(|| grant.company.map(|c| format!("Company {c}")));
    let body = match (shape, grant.company) {
        (UserShape::Fail(code), _) => {
            return HttpResponse::build(
                actix_web::http::StatusCode::from_u16(code)
                    .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
            )
            .json(json!({ "error": "scripted failure" }))
        }
        (_, None) => {
            json!({ "iUserID": grant.user_id, "sName": "Demo Inspector", "sEmail": "inspector@example.com" })
        }
        (UserShape::TopLevel, Some(c)) => json!({
            "iUserID": grant.user_id, "sName": "Demo Inspector", "sEmail": "inspector@example.com",
            "iCompanyID": c, "sCompanyName": name,
        }),
        (UserShape::Nested, Some(c)) => json!({
            "oUser": { "iUserID": grant.user_id, "sName": "Demo Inspector" },
            "oCompany": { "iCompanyID": c, "sName": name },
        }),
    };
    HttpResponse::Ok().json(body)
}

async fn inspection(req: HttpRequest, path: web::Path<String>, fake: web::Data<FakeSnapInspect>) -> HttpResponse {
    let (fault, delay) = {
        let mut s = fake.state();
        s.inspection_calls += 1;
        (s.inspection_faults.pop_front(), s.inspection_delays.pop_front())
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    if let Some(code) = fault {
        return HttpResponse::build(
            actix_web::http::StatusCode::from_u16(code).unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
        )
        .json(json!({ "error": "scripted failure" }));
    }
    let Some(grant) = authorised(&req, &fake) else {
        return unauthorized();
    };
    let Ok(id) = path.parse::<i64>() else {
        return HttpResponse::NotFound().json(json!({ "error": "no such inspection" }));
    };
    HttpResponse::Ok().json(json!({
        "iInspectionID": id,
        "iCompanyID": grant.company,
        "sTitle": format!("Inspection {id}"),
        "sAddress": "12 Harbour Street",
        "sStatus": "Completed",
    }))
}

#[derive(Template)]
#[template(path = "fake/fire_webhook.html")]
struct FirePage<'a> {
    target: Option<String>,
    message: Option<String>,
    companies: &'a [(i64, &'a str)],
}

/// The webhook URL with its last path segment (the secret) masked, for display.
fn shown_target(fake: &FakeSnapInspect) -> Option<String> {
    let url = fake.config.webhook_url.as_deref()?;
    Some(match url.rsplit_once('/') {
        Some((head, _)) => format!("{head}/…"),
        None => "…".to_owned(),
    })
}

async fn fire_webhook_page(fake: web::Data<FakeSnapInspect>) -> HttpResponse {
    let page = FirePage { target: shown_target(&fake), message: None, companies: COMPANIES };
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, FAKE_CSP))
        .body(page.render().unwrap_or_default())
}

async fn fire_webhook_submit(body: web::Bytes, fake: web::Data<FakeSnapInspect>) -> HttpResponse {
    let p = fields(&body).unwrap_or_default();
    let company: i64 = p.get("company").and_then(|c| c.parse().ok()).unwrap_or(COMPANIES[0].0);
    let inspection: i64 = p.get("inspection").and_then(|c| c.parse().ok()).unwrap_or(1_388_563);
    let kind = p.get("type").map(String::as_str).unwrap_or("Create_Inspection");
    let payload = match kind {
        "Update_Inspection_Status" => {
            json!({ "sType": kind, "iInspectionID": inspection, "iCompanyID": company, "sStatus": "Completed" })
        }
        "Create_Review" | "Review_Signed" => {
            json!({ "sType": kind, "iInsReviewID": inspection + 1, "iInspectionID": inspection, "iCompanyID": company })
        }
        _ => {
            json!({ "sType": "Create_Inspection", "iInspectionID": inspection, "iCompanyID": company })
        }
    };
    let message = match fake.config.webhook_url.as_deref() {
        None => "No webhook URL is configured (start the fake with --webhook-url).".to_owned(),
        Some(url) => match fake.fire_webhook(url, &payload).await {
            Ok(status) => format!("Sent {payload}: the hub answered HTTP {status}."),
            Err(e) => format!("Sending failed: {e}"),
        },
    };
    let page = FirePage { target: shown_target(&fake), message: Some(message), companies: COMPANIES };
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, FAKE_CSP))
        .body(page.render().unwrap_or_default())
}
